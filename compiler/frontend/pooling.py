"""Lower non-overlapping ``AveragePool`` / ``MaxPool`` nodes to Reshape + ReduceMean / ReduceMax before recognition.

A pool whose windows tile its input exactly (kernel == stride on every spatial axis, no padding, no dilation, each
spatial size a multiple of its kernel) averages or maximises disjoint blocks: the input reshaped so that each
spatial axis ``X`` becomes ``(X / k, k)`` and reduced over the ``k`` axes computes the same tensor, with the vector
work a reduction costs (no MACs, as torch's FlopCounterMode counts none for pooling). Funnel Transformer pools its
sequence this way (``avg_pool2d`` with kernel (2, 1)). Where a spatial size is not a multiple of its kernel (SEW
pools 39 frames by 2) a floor-mode pool drops the last partial window: a Slice to the whole windows comes first.
Overlapping, padded or ceil-mode partial pools raise one `InputError` line naming the node.
"""

from __future__ import annotations

import numpy as np

from compiler.frontend.graph import Graph, Node
from hw.errors import InputError

__all__ = ["lower_pools"]

_REDUCE = {"AveragePool": "ReduceMean", "MaxPool": "ReduceMax"}


def _lower(graph: Graph, node: Node) -> list[Node]:
    shape = graph.shapes[node.inputs[0]]
    spatial = shape[2:]
    kernel = [int(k) for k in node.attrs.get("kernel_shape", [])]
    strides = [int(s) for s in node.attrs.get("strides", [1] * len(kernel))]
    pads = [int(p) for p in node.attrs.get("pads", [0] * 2 * len(kernel))]
    dilations = [int(d) for d in node.attrs.get("dilations", [1] * len(kernel))]
    auto_pad = node.attrs.get("auto_pad", "NOTSET")
    auto_pad = auto_pad.decode() if isinstance(auto_pad, bytes) else auto_pad
    if (len(kernel) != len(spatial) or kernel != strides or any(pads) or any(d != 1 for d in dilations)
            or auto_pad not in ("NOTSET", "VALID")
            or int(node.attrs.get("ceil_mode", 0)) and any(s % k for s, k in zip(spatial, kernel))
            or len(node.outputs) > 1 and node.outputs[1]):
        raise InputError(f"{graph.source}: unsupported op {node.op_type} (node '{node.name}'): only pools whose "
                         f"windows tile the input are lowered (kernel {kernel}, strides {strides}, pads {pads}, "
                         f"input {list(shape)})")
    blocked = list(shape[:2])
    for s, k in zip(spatial, kernel):
        blocked += [s // k, k]
    nodes: list[Node] = []
    src = node.inputs[0]
    dtype = graph.dtypes.get(src, np.dtype(np.float32))
    whole = [s - s % k for s, k in zip(spatial, kernel)]
    if whole != list(spatial):  # floor mode: the last partial window is not pooled
        names = []
        for what, value in (("starts", [0] * len(whole)), ("ends", whole), ("axes", range(2, 2 + len(whole)))):
            names.append(f"{node.name}/whole_{what}")
            graph.constants[names[-1]] = np.array(list(value), dtype=np.int64)
            graph.shapes[names[-1]], graph.dtypes[names[-1]] = (len(whole),), np.dtype(np.int64)
        cut = f"{node.name}/whole_output_0"
        graph.shapes[cut], graph.dtypes[cut] = (*shape[:2], *whole), dtype
        nodes.append(Node("Slice", f"{node.name}/whole", [src, *names], [cut]))
        src = cut
    axes = [3 + 2 * i for i in range(len(kernel))]
    target = f"{node.name}/blocks_shape"
    graph.constants[target] = np.array(blocked, dtype=np.int64)
    graph.shapes[target], graph.dtypes[target] = (len(blocked),), np.dtype(np.int64)
    axes_name = f"{node.name}/block_axes"
    graph.constants[axes_name] = np.array(axes, dtype=np.int64)
    graph.shapes[axes_name], graph.dtypes[axes_name] = (len(axes),), np.dtype(np.int64)
    blocks = f"{node.name}/blocks_output_0"
    graph.shapes[blocks] = tuple(blocked)
    graph.dtypes[blocks] = dtype
    return nodes + [Node("Reshape", f"{node.name}/blocks", [src, target], [blocks]),
                    Node(_REDUCE[node.op_type], node.name, [blocks, axes_name], [node.outputs[0]], {"keepdims": 0})]


def lower_pools(graph: Graph) -> int:
    """Replace every AveragePool / MaxPool of ``graph`` in place; returns how many were lowered."""
    if not any(n.op_type in _REDUCE for n in graph.nodes):
        return 0
    nodes: list[Node] = []
    lowered = sum(n.op_type in _REDUCE for n in graph.nodes)
    for node in graph.nodes:
        nodes += _lower(graph, node) if node.op_type in _REDUCE else [node]
    graph.nodes[:] = nodes
    return lowered
