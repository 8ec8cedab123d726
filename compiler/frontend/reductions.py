"""Lower the norm-style reductions ``ReduceL2``, ``ReduceL1`` and ``ReduceSumSquare`` to element-wise ops and a
``ReduceSum`` before recognition.

``torch.nn.functional.normalize`` exports as ``x / max(ReduceL2(x), eps)`` (YOSO's LSH attention normalises Q and
K; Swin-v2's cosine attention does the same): the same tensor is ``Sqrt(ReduceSum(x * x))``, a multiply, a sum and a
square root the vector unit runs, so the dialect needs no reduction kind of its own. ``ReduceL1`` is
``ReduceSum(Abs(x))`` and ``ReduceSumSquare`` is ``ReduceSum(x * x)``.
"""

from __future__ import annotations

import numpy as np

from compiler.frontend.emitter import lower_each
from compiler.frontend.graph import Graph, Node

__all__ = ["lower_norm_reductions"]

_LOWERED = ("ReduceL2", "ReduceL1", "ReduceSumSquare")


def _tensor(graph: Graph, name: str, like: str, shape: tuple[int, ...]) -> str:
    graph.shapes[name] = shape
    graph.dtypes[name] = graph.dtypes.get(like, np.dtype(np.float32))
    return name


def _lower(graph: Graph, node: Node) -> list[Node]:
    x = node.inputs[0]
    shape = graph.shapes[x]
    inputs = [x]
    axes = node.attrs.get("axes")  # an attribute before opset 18, the second input from it on
    if len(node.inputs) > 1 and node.inputs[1]:
        inputs.append(node.inputs[1])
    elif axes is not None:
        axes_name = f"{node.name}/axes"
        graph.constants[axes_name] = np.array(axes, dtype=np.int64)
        graph.shapes[axes_name], graph.dtypes[axes_name] = (len(axes),), np.dtype(np.int64)
        inputs.append(axes_name)
    attrs = {k: v for k, v in node.attrs.items() if k in ("keepdims", "noop_with_empty_axes")}
    term = _tensor(graph, f"{node.name}/term_output_0", x, shape)
    pre = Node("Abs", f"{node.name}/abs", [x], [term]) if node.op_type == "ReduceL1" \
        else Node("Mul", f"{node.name}/square", [x, x], [term])
    out = node.outputs[0]
    if node.op_type != "ReduceL2":
        return [pre, Node("ReduceSum", node.name, [term, *inputs[1:]], [out], attrs)]
    total = _tensor(graph, f"{node.name}/sum_output_0", x, graph.shapes[out])
    return [pre, Node("ReduceSum", f"{node.name}/sum", [term, *inputs[1:]], [total], attrs),
            Node("Sqrt", node.name, [total], [out])]


def lower_norm_reductions(graph: Graph) -> int:
    """Replace every ReduceL2 / ReduceL1 / ReduceSumSquare of ``graph`` in place; returns how many were lowered."""
    return lower_each(graph, _LOWERED, _lower)
