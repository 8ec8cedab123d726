"""Rewrite the Gemm and MatMul forms the GEMM lowering does not read into ones it does, after recognition.

``dataflow.gemm`` reads ``A[..., M, K] x B[K, N]`` or a batched ``B`` whose batch axes are ``A``'s, with an optional
[N] bias, and a ``Gemm`` whose constant ``B`` carries ``transB`` / ``alpha``. The ONNX operator specification
(onnx/onnx ``docs/Operators.md``, Gemm and MatMul) allows more, and exporters write it:

* ``Gemm`` with ``transA = 1`` (``torch.addmm(c, a.t(), b)``) -> a Transpose of ``A`` (a constant ``A`` is
  transposed here), then the Gemm;
* ``Gemm`` with an activation ``B`` and ``transB`` / ``alpha`` -> a Transpose of ``B``; ``alpha`` a Mul of the
  product (it cannot be folded into an activation);
* ``Gemm`` whose ``C`` is not a constant [N] row (a scalar, an [M, 1] column, an [M, N] matrix, an activation; each
  broadcast unidirectionally to [M, N]) -> the Gemm without ``C``, then an Add of ``beta * C``. An [M, 1] column
  of length N used to be read as the [N] row: a silent wrong answer when M == N;
* ``MatMul`` whose operands' batch axes differ (NumPy broadcasting: ``[B, H, S, D] x [1, H, D, S]``,
  ``[S, K] x [B, K, N]``) -> a constant right operand whose batch axes are all 1 is viewed as [K, N]; otherwise
  each operand is expanded (an Expand; a constant is broadcast here) to the broadcast batch axes, and a Reshape
  gives the product the output's shape when ranks differ.

The rewrites run after recognition (compiler/frontend/recognize.py) on nodes no match took, so matchers that read a
broadcast K/V head (Falcon's QK^T) see the graph as exported. Each computes what the spec defines; the Transpose,
Expand and Add they add are the data movement and element-wise work a device does for those forms.
"""

from __future__ import annotations

from collections.abc import Collection

import numpy as np

from compiler.frontend.emitter import Emitter, lower_each
from compiler.frontend.graph import Graph, Node

__all__ = ["lower_gemm_forms"]


def _row_bias(graph: Graph, c: str, n: int) -> bool:
    """Whether ``C`` is what the GEMM's bias reads: a constant broadcast along M only ([N], [1, N], or one value
    when N == 1)."""
    if not graph.is_const(c):
        return False
    shape = graph.constants[c].shape
    return graph.constants[c].size == n and (not shape or shape[-1] == n)


def _gemm_needs_rewrite(graph: Graph, node: Node) -> bool:
    b_const = graph.is_const(node.inputs[1])
    c = node.inputs[2] if len(node.inputs) > 2 else ""
    return bool(node.attrs.get("transA", 0)) \
        or (not b_const and (bool(node.attrs.get("transB", 0)) or float(node.attrs.get("alpha", 1.0)) != 1.0)) \
        or (bool(c) and not _row_bias(graph, c, graph.shapes[node.outputs[0]][-1]))


def _transposed(e: Emitter, graph: Graph, what: str, name: str) -> str:
    shape = graph.shapes[name]
    if graph.is_const(name):
        return e.const(what, np.ascontiguousarray(graph.constants[name].T))
    return e.op("Transpose", what, [name], shape[::-1], {"perm": [1, 0]})


def _gemm(graph: Graph, node: Node) -> list[Node]:
    e = Emitter(graph, node)
    a, b = node.inputs[0], node.inputs[1]
    c = node.inputs[2] if len(node.inputs) > 2 else ""
    out = node.outputs[0]
    shape = graph.shapes[out]
    alpha, beta = float(node.attrs.get("alpha", 1.0)), float(node.attrs.get("beta", 1.0))
    b_const = graph.is_const(b)
    if node.attrs.get("transA", 0):
        a = _transposed(e, graph, "a_transposed", a)
    attrs: dict = {}
    if b_const:
        attrs = {k: node.attrs[k] for k in ("transB", "alpha") if k in node.attrs}
    elif node.attrs.get("transB", 0):
        b = _transposed(e, graph, "b_transposed", b)
    keep_c = bool(c) and _row_bias(graph, c, shape[-1])
    if keep_c:
        attrs["beta"] = beta
    scaled = not b_const and alpha != 1.0
    last = not scaled and (keep_c or not c)
    y = e.op("Gemm", "gemm", [a, b] + ([c] if keep_c else []), shape, attrs, out=out if last else None)
    if scaled:
        y = e.op("Mul", "alpha", [y, e.const("alpha_value", np.array(alpha, dtype=e.dtype))], shape,
                 out=out if not c or keep_c else None)
    if c and not keep_c:
        if graph.is_const(c):
            value = graph.constants[c]
            term = e.const("beta_c", np.asarray(value.astype(np.float64) * beta).astype(value.dtype))
        elif beta != 1.0:
            term = e.op("Mul", "beta", [c, e.const("beta_value", np.array(beta, dtype=e.dtype))], graph.shapes[c])
        else:
            term = c
        e.op("Add", "bias", [y, term], shape, out=out)
    return e.nodes


def _matmul_needs_rewrite(graph: Graph, node: Node) -> bool:
    sa, sb = graph.shapes.get(node.inputs[0]), graph.shapes.get(node.inputs[1])
    return sa is not None and sb is not None and len(sa) >= 2 and len(sb) > 2 and tuple(sa[:-2]) != tuple(sb[:-2])


def _matmul(graph: Graph, node: Node) -> list[Node]:
    e = Emitter(graph, node)
    a, b = node.inputs
    sa, sb = graph.shapes[a], graph.shapes[b]
    out_shape = graph.shapes[node.outputs[0]]
    if graph.is_const(b) and int(np.prod(sb[:-2])) == 1:
        b = e.const("weight_2d", graph.constants[b].reshape(sb[-2:]))
        product = tuple(sa[:-2]) + (sa[-2], sb[-1])
    else:
        batch = tuple(np.broadcast_shapes(tuple(sa[:-2]), tuple(sb[:-2])))
        operands = []
        for what, name, shape in (("lhs", a, sa), ("rhs", b, sb)):
            target = batch + tuple(shape[-2:])
            if tuple(shape) == target:
                operands.append(name)
            elif graph.is_const(name):
                operands.append(e.const(f"{what}_broadcast",
                                        np.ascontiguousarray(np.broadcast_to(graph.constants[name], target))))
            else:
                operands.append(e.op("Expand", f"{what}_broadcast", [name, e.const(f"{what}_batch", target)], target))
        a, b = operands
        product = batch + (sa[-2], sb[-1])
    if product == tuple(out_shape):
        e.op("MatMul", "matmul", [a, b], out_shape, out=node.outputs[0])
    else:
        y = e.op("MatMul", "matmul", [a, b], product)
        e.reshape("output", y, out_shape, out=node.outputs[0])
    return e.nodes


def lower_gemm_forms(graph: Graph, taken: Collection[int] = frozenset()) -> int:
    """Rewrite, in place, each Gemm / MatMul of the module docstring whose ``id`` is not in ``taken`` (nodes a match
    replaces); returns how many were rewritten."""

    def needs(g: Graph, node: Node) -> bool:
        if id(node) in taken or len(node.inputs) < 2:
            return False
        return _gemm_needs_rewrite(g, node) if node.op_type == "Gemm" else _matmul_needs_rewrite(g, node)

    return lower_each(graph, ("Gemm", "MatMul"), lambda g, n: _gemm(g, n) if n.op_type == "Gemm" else _matmul(g, n),
                      needs)
