"""Lower ONNX ``Einsum`` nodes to Transpose / Reshape / ReduceSum / MatMul / Mul before recognition.

An einsum of one or two operands is a batched matrix product once its letters are sorted into roles: batch letters
(in both operands and the output), contracted letters (in both, not in the output), and each operand's free letters
(its own, kept in the output). Letters of one operand that the output drops are summed first (ReduceSum). Each
operand is then permuted to [batch, free, contracted] (the right one to [batch, contracted, free]), flattened to a
3-D (or 2-D) matrix, multiplied, and the product is unflattened and permuted to the output's letter order. Without a
contracted letter the product is an element-wise Mul of the two operands aligned (with size-1 axes) to the output.

Rewriting to existing ops before recognition lets the attention matcher and the GEMM lowering see the products
(Funnel Transformer writes its attention scores and A.V with ``torch.einsum``) and costs them exactly as MatMuls.
A constant operand is permuted and reshaped here, so a weight stays a constant the GEMM reads. Equations these rules
do not cover (a letter repeated within one operand: a diagonal; more than two operands; batch letters whose sizes
differ by broadcasting) raise one `InputError` line naming the node.
"""

from __future__ import annotations

import math

import numpy as np

from compiler.frontend.graph import Graph, Node
from hw.errors import InputError

__all__ = ["lower_einsums", "parse_equation"]


def parse_equation(equation: str, ranks: list[int]) -> tuple[list[str], str]:
    """The operands' letter strings and the output's, with ``...`` expanded to capital letters (one per broadcast
    axis, right-aligned as NumPy does) and an implicit output (no ``->``) made explicit: the letters that appear
    once, in alphabetical order after the ellipsis axes. Raises ValueError on a malformed equation."""
    eq = equation.replace(" ", "")
    lhs, arrow, out = eq.partition("->")
    terms = lhs.split(",")
    if len(terms) != len(ranks):
        raise ValueError(f"{len(terms)} terms for {len(ranks)} operands")
    ell_rank = max((r - len(t.replace("...", "")) for t, r in zip(terms, ranks) if "..." in t), default=0)
    ell = "".join(chr(ord("Z") - i) for i in range(ell_rank))[::-1]  # capitals never clash with torch's lowercase

    def expand(term: str, rank: int | None) -> str:
        if "..." not in term:
            return term
        n = ell_rank if rank is None else rank - len(term.replace("...", ""))
        return term.replace("...", ell[ell_rank - n:] if n else "")

    letters = [expand(t, r) for t, r in zip(terms, ranks)]
    for term, rank in zip(letters, ranks):
        if len(term) != rank or not term.isalpha():
            raise ValueError(f"term '{term}' does not fit an operand of rank {rank}")
    if arrow:
        output = expand(out, None)
    else:
        counts = "".join(letters)
        output = ell + "".join(sorted(c for c in set(counts) if counts.count(c) == 1 and c not in ell))
    return letters, output


class _Lowering:
    """Appends the nodes replacing one Einsum; constants are transformed in NumPy rather than by nodes."""

    def __init__(self, graph: Graph, node: Node) -> None:
        self.g, self.node, self.nodes, self.count = graph, node, [], 0
        self.dtype = graph.dtypes.get(node.outputs[0], np.dtype(np.float32))

    def _name(self, what: str) -> str:
        self.count += 1
        return f"{self.node.name}/einsum_{what}_{self.count}"

    def _const(self, value: np.ndarray, what: str) -> str:
        name = self._name(what)
        self.g.constants[name] = value
        self.g.shapes[name], self.g.dtypes[name] = value.shape, value.dtype
        return name

    def emit(self, op: str, inputs: list[str], shape: tuple[int, ...], attrs: dict | None = None,
             out: str | None = None) -> str:
        out = out or self._name(op.lower()) + "_output_0"
        self.g.shapes[out], self.g.dtypes[out] = tuple(shape), self.dtype
        self.nodes.append(Node(op, self._name(op), inputs, [out], dict(attrs or {})))
        return out

    def permute(self, x: str, perm: list[int]) -> str:
        if perm == sorted(perm):
            return x
        if self.g.is_const(x):
            return self._const(np.ascontiguousarray(np.transpose(self.g.constants[x], perm)), "const")
        shape = self.g.shapes[x]
        return self.emit("Transpose", [x], tuple(shape[p] for p in perm), {"perm": perm})

    def reshape(self, x: str, shape: tuple[int, ...]) -> str:
        if tuple(self.g.shapes[x]) == tuple(shape):
            return x
        if self.g.is_const(x):
            return self._const(self.g.constants[x].reshape(shape), "const")
        target = self._const(np.array(shape, dtype=np.int64), "shape")
        return self.emit("Reshape", [x, target], shape)

    def reduce(self, x: str, axes: list[int]) -> str:
        shape = self.g.shapes[x]
        kept = tuple(s for i, s in enumerate(shape) if i not in axes)
        if self.g.is_const(x):
            return self._const(self.g.constants[x].sum(axis=tuple(axes)).astype(self.g.constants[x].dtype), "const")
        return self.emit("ReduceSum", [x, self._const(np.array(axes, dtype=np.int64), "axes")], kept,
                         {"keepdims": 0})


def _sum_own(low: _Lowering, x: str, term: str, keep: set[str]) -> tuple[str, str]:
    """Sum the axes of ``x`` whose letters no other term or the output reads."""
    axes = [i for i, c in enumerate(term) if c not in keep]
    if not axes:
        return x, term
    return low.reduce(x, axes), "".join(c for c in term if c in keep)


def _lower(graph: Graph, node: Node) -> list[Node]:
    fail = f"{graph.source}: unsupported op Einsum (node '{node.name}')"
    equation = node.attrs.get("equation", "")
    equation = equation.decode() if isinstance(equation, bytes) else str(equation)
    ranks = [len(graph.shapes.get(i, ())) for i in node.inputs]
    try:
        terms, output = parse_equation(equation, ranks)
    except ValueError as exc:
        raise InputError(f"{fail}: equation '{equation}': {exc}") from None
    if len(terms) not in (1, 2):
        raise InputError(f"{fail}: equation '{equation}' has {len(terms)} operands; only one or two are lowered")
    if any(len(set(t)) != len(t) for t in terms) or len(set(output)) != len(output):
        raise InputError(f"{fail}: equation '{equation}' repeats a letter within one term (a diagonal or trace); "
                         "only products, transposes and sums are lowered")
    sizes: dict[str, int] = {}
    for term, name in zip(terms, node.inputs):
        for c, n in zip(term, graph.shapes[name]):
            if sizes.setdefault(c, n) != n:
                raise InputError(f"{fail}: equation '{equation}': letter '{c}' has sizes {sizes[c]} and {n} "
                                 "(broadcast batch letters are not lowered)")
    if any(c not in sizes for c in output):
        raise InputError(f"{fail}: equation '{equation}': an output letter is in no operand")
    low = _Lowering(graph, node)
    result = node.outputs[0]
    if len(terms) == 1:
        x, term = _sum_own(low, node.inputs[0], terms[0], set(output))
        x = low.permute(x, [term.index(c) for c in output])
        if x == node.inputs[0] or graph.is_const(x):  # nothing to compute, or a constant: one Identity keeps names
            low.emit("Identity", [x], tuple(sizes[c] for c in output), out=result)
        else:
            low.nodes[-1].outputs[0] = result
        return low.nodes
    (a, ta), (b, tb) = (_sum_own(low, x, t, set(output) | set(o)) for x, t, o in
                        ((node.inputs[0], terms[0], terms[1]), (node.inputs[1], terms[1], terms[0])))
    batch = [c for c in ta if c in tb and c in output]
    contract = [c for c in ta if c in tb and c not in output]
    free_a = [c for c in ta if c not in tb]
    free_b = [c for c in tb if c not in ta]
    out_shape = tuple(sizes[c] for c in output)
    if not contract:
        # No sum across the operands: an element-wise product broadcast over the output's letters.
        aligned = []
        for x, t in ((a, ta), (b, tb)):
            order = [c for c in output if c in t]
            x = low.permute(x, [t.index(c) for c in order])
            aligned.append(low.reshape(x, tuple(sizes[c] if c in t else 1 for c in output)))
        low.emit("Mul", aligned, out_shape, out=result)
        return low.nodes
    n_batch = [sizes[c] for c in batch]
    m, k, n = (math.prod(sizes[c] for c in part) for part in (free_a, contract, free_b))
    lhs = low.reshape(low.permute(a, [ta.index(c) for c in batch + free_a + contract]), (*n_batch, m, k))
    rhs = low.reshape(low.permute(b, [tb.index(c) for c in batch + contract + free_b]), (*n_batch, k, n))
    prod = low.emit("MatMul", [lhs, rhs], (*n_batch, m, n))
    letters = batch + free_a + free_b
    prod = low.reshape(prod, tuple(sizes[c] for c in letters))
    perm = [letters.index(c) for c in output]
    if perm != sorted(perm):
        low.emit("Transpose", [prod], out_shape, {"perm": perm}, out=result)
    else:
        low.nodes[-1].outputs[0] = result
        graph.shapes[result] = out_shape
    return low.nodes


def lower_einsums(graph: Graph, keep: set[int] | frozenset[int] = frozenset()) -> int:
    """Replace every Einsum node of ``graph`` in place by the ops it computes, except those whose ``id`` is in
    ``keep`` (taken by a recognised block); returns how many were lowered."""
    if not any(n.op_type == "Einsum" and id(n) not in keep for n in graph.nodes):
        return 0
    nodes: list[Node] = []
    lowered = 0
    for node in graph.nodes:
        if node.op_type != "Einsum" or id(node) in keep:
            nodes.append(node)
            continue
        nodes += _lower(graph, node)
        lowered += 1
    graph.nodes[:] = nodes
    return lowered
