"""Building blocks of the frontend's lowerings: an emitter of replacement nodes, and the loop that replaces them.

A lowering rewrites one ONNX node into several simpler ones (compiler/frontend/col2im.py, conv_transpose.py,
instancenorm.py, reductions.py): each new tensor needs its shape and dtype registered in the graph, each new
constant its value, and the last node must write the original node's output so that its readers are unchanged.
"""

from __future__ import annotations

from collections.abc import Callable, Collection, Sequence

import numpy as np

from compiler.frontend.graph import Graph, Node

__all__ = ["Emitter", "int_attrs", "lower_each"]


def int_attrs(node: Node, attr: str, default: list[int]) -> list[int]:
    """A list-of-ints attribute of ``node`` (strides, pads, dilations, kernel_shape), ``default`` when absent."""
    return [int(v) for v in node.attrs.get(attr, default)]


class Emitter:
    """Appends the nodes replacing ``node`` to ``nodes``, registering each new tensor's shape and dtype (the node's
    input dtype) and each constant's value. Names are the node's name, a slash and a tag; the op that writes one of
    the node's own outputs (``out``) keeps the node's name."""

    def __init__(self, graph: Graph, node: Node) -> None:
        self.graph, self.base, self.nodes = graph, node.name, list[Node]()
        self.dtype = graph.dtypes.get(node.inputs[0], np.dtype(np.float32))

    def const(self, what: str, value: np.ndarray | Sequence[int]) -> str:
        """A constant: an array as given, a sequence of ints as int64 (shapes, pads, axes)."""
        name = f"{self.base}/{what}"
        array = value if isinstance(value, np.ndarray) else np.array(list(value), dtype=np.int64)
        self.graph.constants[name] = array
        self.graph.shapes[name], self.graph.dtypes[name] = tuple(array.shape), array.dtype
        return name

    def op(self, op_type: str, what: str, inputs: list[str], shape: Sequence[int], attrs: dict | None = None,
           out: str | None = None) -> str:
        name = out or f"{self.base}/{what}_output_0"
        self.graph.shapes[name], self.graph.dtypes[name] = tuple(shape), self.dtype
        self.nodes.append(Node(op_type, f"{self.base}/{what}" if out is None else self.base, inputs, [name],
                               attrs or {}))
        return name

    def reshape(self, what: str, src: str, shape: Sequence[int], out: str | None = None) -> str:
        return self.op("Reshape", what, [src, self.const(f"{what}_shape", shape)], shape, out=out)

    def pad(self, what: str, src: str, shape: Sequence[int], axis: int, begin: int, end: int) -> str:
        """Zero-pad ``src`` (of ``shape``) on ``axis``; ``src`` itself when there is nothing to add."""
        if not begin and not end:
            return src
        pads = [0] * (2 * len(shape))
        pads[axis], pads[len(shape) + axis] = begin, end
        grown = list(shape)
        grown[axis] += begin + end
        return self.op("Pad", what, [src, self.const(f"{what}_pads", pads)], grown)

    def split(self, what: str, src: str, part: Sequence[int], axis: int, parts: int) -> list[str]:
        """``src`` cut on ``axis`` into ``parts`` tensors of shape ``part``: one pass over it, not one per part."""
        names = [f"{self.base}/{what}_output_{i}" for i in range(parts)]
        for name in names:
            self.graph.shapes[name], self.graph.dtypes[name] = tuple(part), self.dtype
        self.nodes.append(Node("Split", f"{self.base}/{what}", [src, self.const(f"{what}_sizes", [part[axis]] * parts)],
                               names, {"axis": axis}))
        return names

    def slice(self, what: str, src: str, shape: Sequence[int], axis: int, start: int, end: int) -> str:
        cut = list(shape)
        cut[axis] = end - start
        return self.op("Slice", what, [src, self.const(f"{what}_starts", [start]), self.const(f"{what}_ends", [end]),
                                       self.const(f"{what}_axes", [axis])], cut)


def lower_each(graph: Graph, op_types: Collection[str], lower: Callable[[Graph, Node], list[Node]],
               where: Callable[[Graph, Node], bool] | None = None) -> int:
    """Replace every node of ``graph`` whose op is in ``op_types`` (and for which ``where(graph, node)`` holds,
    if given) by ``lower(graph, node)``, in place and in order; returns how many were replaced."""
    if not any(n.op_type in op_types for n in graph.nodes):
        return 0
    nodes: list[Node] = []
    lowered = 0
    for node in graph.nodes:
        if node.op_type in op_types and (where is None or where(graph, node)):
            nodes += lower(graph, node)
            lowered += 1
        else:
            nodes.append(node)
    graph.nodes[:] = nodes
    return lowered
