"""Data movement traced on indices, and ``dequantize -> movement -> quantize`` islands as threshold tables.

A pure movement op (reshape, split, gather, slice ...) is the permutation or selection its kernel applies to an
index array: :func:`trace_moves` runs the simulator's own kernels on ``arange`` indices, and :func:`as_view` turns
the result into a 2-D strided DRAM window when it is one (the DMA's address pattern), so the backend never needs
one code path per ONNX op.

Between two integer ops a graph may leave a float island: a dequantize, movement, then a quantize to a new scale
(GPT-2's fused QKV split, ViT's class-token gather). Composed, ``x -> quantize(float32(x * s_in), s_out)`` is a
non-decreasing step function of the integer ``x`` (for ``s_in > 0``), so it equals ``min(lo + #{l : x >= t_l},
cap)`` for the thresholds ``t_l`` where it first reaches each level: a comparator unit evaluates it exactly
(``VEC threshold``, docs/ISA.md). :func:`threshold_table` finds the thresholds by bisection over the input's
integer range, evaluating the simulator's own cast kernels, so the device gives the simulator's integers.

The same holds with element-wise float ops in the island that are non-decreasing functions of their input and read
no other tensor than constants (:func:`pointwise_step`): ReLU between a GEMM and the next one (T5, OPT, the
original Transformer's FFN: the accumulator dequantized, rectified, quantized again), Clip, a sigmoid, a constant
added or a positive one multiplied, per tensor or per channel (a per-channel shift, a positive scale such as a
LayerScale that meets no residual add, a depthwise convolution's bias, MobileBERT's NoNorm), and a square or
positive power of a never-negative step (squared ReLU, ``relu(x) * relu(x)``: Primer, Persimmon, Nemotron, Arcee).
The table holds one function per column of the island's window, so a constant must give each column one value
(:func:`column_constants`); each step is evaluated inside the threshold search by the simulator's own kernel. The
window may be turned around (:class:`Window`, ``transposed``: an NCHW value read back as tokens), which a
transposing ``LOAD`` reads; a per-channel constant along the source's rows then gives each column one value
(:func:`per_column_island` checks every quantize of the island before it is one).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

import numpy as np
from xdsl.dialects.builtin import DictionaryAttr
from xdsl.ir import Operation, SSAValue

from compiler.dialect import dataflow as df
from compiler.simulate import intkernels as K
from compiler.simulate.registry import KERNELS, SimContext, Tensor

__all__ = ["trace_moves", "as_view_pattern", "Window", "island_window", "column_constants", "island_function",
           "pointwise_step", "per_column_island", "threshold_table", "MONOTONE_KINDS"]

#: Element-wise kinds that are non-decreasing in their (first) input whatever their constant operands.
MONOTONE_KINDS = frozenset({"relu", "sigmoid", "tanh", "erf", "clip", "softplus", "hardsigmoid", "identity", "exp",
                            "max", "min", "add"})
#: Kinds non-decreasing in their first input for a positive constant second operand (and only the first input).
_POSITIVE_OPERAND = frozenset({"mul", "div"})
#: Kinds non-decreasing in their first input for any constant second operand (and only the first input).
_FIRST_OPERAND = frozenset({"sub"})
#: Kinds non-decreasing for a non-negative ``alpha`` attribute.
_ALPHA = frozenset({"leaky_relu", "elu", "celu"})
#: Element-wise kinds whose output is never negative, whatever their input: a square or a positive power of it is
#: non-decreasing (squared ReLU: Primer, Persimmon, Nemotron, Arcee).
_NON_NEGATIVE = frozenset({"relu", "sigmoid", "exp", "softplus", "hardsigmoid"})


def trace_moves(ops: Sequence[Operation], source: SSAValue, shape: tuple[int, ...],
                consts: Mapping[SSAValue, Tensor], ctx: SimContext) -> dict[SSAValue, np.ndarray]:
    """The flat index into ``source`` of every element of every value ``ops`` compute from it (in order); an
    element-wise op (a pointwise step) keeps its island operand's indices. An element that comes from no source
    element is -1: a padding zero (a ``pad``, an ``im2col``'s border) or a constant concatenated beside the source
    (a class token), so no such value passes for a DMA window of the source. The kernels run on indices plus one,
    zero standing for "no source"."""
    values: dict[SSAValue, np.ndarray] = {source: np.arange(1, int(np.prod(shape, dtype=np.int64)) + 1).reshape(shape)}
    for op in ops:
        if isinstance(op, df.ElementwiseOp):  # a pointwise step (pointwise_step): each element stays where it is
            shape = tuple(op.results[0].type.get_shape())  # type: ignore[attr-defined]
            values[op.results[0]] = np.broadcast_to(next(values[v] for v in op.operands if v in values), shape)
            continue
        concat = isinstance(op, df.MoveOp) and op.kind_value() == "concat"
        ins = []
        for v in op.operands:
            if v in values:
                ins.append(Tensor(values[v]))
            elif concat:  # data beside the source, not a parameter of the move
                ins.append(Tensor(np.zeros(tuple(v.type.get_shape()), np.int64)))  # type: ignore[attr-defined]
            else:
                ins.append(consts[v])
        outs = KERNELS[op.name](op, ins, ctx)
        for r, t in zip(op.results, outs):
            values[r] = np.asarray(t.data).astype(np.int64)
    return {v: idx - 1 for v, idx in values.items()}


def as_view_pattern(idx: np.ndarray, src_cols: int) -> tuple[int, int, int, int] | None:
    """``(first element, rows, cols, row pitch in elements)`` when ``idx`` (flat source indices) is a 2-D window
    with contiguous rows of its last axis, else None; ``src_cols``: the source's row length (pitch must keep whole
    source rows aligned, so a window's columns are the same source channels in every row)."""
    cols = idx.shape[-1] if idx.ndim else 1
    flat = idx.reshape(-1, cols)
    if (flat < 0).any():  # an element from no source element (padding, a concatenated constant)
        return None
    rows = flat.shape[0]
    base = int(flat[0, 0])
    if not np.array_equal(flat[0], base + np.arange(cols)):
        return None
    pitch = int(flat[1, 0] - base) if rows > 1 else src_cols
    if pitch <= 0 or pitch % src_cols or not np.array_equal(flat, flat[:1] + pitch * np.arange(rows)[:, None]):
        return None
    return base, rows, cols, pitch


@dataclass(frozen=True)
class Window:
    """Where an island's ``rows`` x ``cols`` output elements sit in its source (flat element indices): element
    ``(r, c)`` at ``base + r * pitch + c``, or, ``transposed``, at ``base + c * pitch + r`` (output column ``c`` is
    source row ``c``: an NCHW value read as ``[H*W, C]``, which the transposing ``LOAD`` turns around)."""

    base: int
    rows: int
    cols: int
    pitch: int
    transposed: bool = False


def island_window(idx: np.ndarray, src_cols: int) -> Window | None:
    """``idx`` (the flat source index of every output element, :func:`trace_moves`) as a :class:`Window`: a 2-D
    window of the source (:func:`as_view_pattern`), else one whose transpose is (each output column a run of
    contiguous source elements, whole source rows apart), else None."""
    pattern = as_view_pattern(idx, src_cols)
    if pattern is not None:
        return Window(*pattern)
    cols = idx.shape[-1] if idx.ndim else 1
    flat = idx.reshape(-1, cols)
    if flat.shape[0] < 2:
        return None
    pattern = as_view_pattern(np.ascontiguousarray(flat.T), src_cols)
    if pattern is None:
        return None
    base, cols_, rows, pitch = pattern
    return Window(base, rows, cols_, pitch, transposed=True)


def _one_axis(data: np.ndarray) -> bool:
    """Whether a constant varies along at most one axis (a per-channel vector in whatever layout: a bias of shape
    ``[C, 1, 1]`` on an NCHW value)."""
    return sum(1 for d in np.shape(data) if d != 1) <= 1


def pointwise_step(op: Operation, island: SSAValue, consts: Mapping[SSAValue, Tensor], ctx: SimContext,
                   bind: Mapping[SSAValue, np.ndarray] | None = None,
                   off_axis: bool = False) -> Callable[[np.ndarray], np.ndarray] | None:
    """``op`` as a function of its ``island`` operand's float values (the simulator's kernel, constants bound),
    when it is an element-wise op non-decreasing in that operand whose other operands are constants that vary along
    the channel (last) axis at most (``off_axis``: or along any one axis, which the island's window may turn into
    its columns: :func:`per_column_island` decides); else None. ``bind`` gives a constant's value per column of the
    island's window ([1, C], :func:`column_constants`); without it the constant is read as stored
    (classification)."""
    if not isinstance(op, df.ElementwiseOp) or len(op.results) != 1:
        return None
    kind = op.kind_value()
    if _power_of_non_negative(op, island, consts):
        return _kernel_step(op, island, consts, ctx, bind)
    others = [v for v in op.operands if v is not island]
    if len(others) != len(op.operands) - 1 or any(v not in consts or consts[v].quantized for v in others):
        return None
    rank = len(op.results[0].type.get_shape())  # type: ignore[attr-defined]
    if bind is None and any(any(d != 1 for d in (1,) * (rank - np.ndim(consts[v].data)) + np.shape(consts[v].data)[:-1])
                            and not (off_axis and _one_axis(consts[v].data)) for v in others):
        return None  # a constant varying along more than the channel (last) axis: a per-position table
    positive = all(bool((np.asarray(consts[v].real()) > 0).all()) for v in others)
    first = op.operands[0] is island
    alpha = op.attrs.data.get("alpha") if isinstance(op.attrs, DictionaryAttr) else None
    if not (kind in MONOTONE_KINDS or (kind in _FIRST_OPERAND and first)
            or (kind in _POSITIVE_OPERAND and first and positive) or (kind == "mul" and positive)
            or (kind in _ALPHA and not others and (alpha is None or float(alpha.value.data) >= 0))):  # type: ignore
        return None
    return _kernel_step(op, island, consts, ctx, bind)


def _kernel_step(op: Operation, island: SSAValue, consts: Mapping[SSAValue, Tensor], ctx: SimContext,
                 bind: Mapping[SSAValue, np.ndarray] | None) -> Callable[[np.ndarray], np.ndarray]:
    """``op``'s simulator kernel as a function of its ``island`` operand's float values (every operand that is the
    island value takes them), the other operands ``bind``'s per-column values or the stored constants."""
    bound = bind or {}

    def step(real: np.ndarray) -> np.ndarray:
        ins = [Tensor(real) if v is island else Tensor(bound[v]) if v in bound else consts[v] for v in op.operands]
        return np.asarray(KERNELS[op.name](op, ins, ctx)[0].data)

    return step


def _power_of_non_negative(op: df.ElementwiseOp, island: SSAValue, consts: Mapping[SSAValue, Tensor]) -> bool:
    """``op`` is ``x * x`` or ``x ** p`` (one constant ``p > 0``) of an ``island`` value that a never-negative step
    made (:data:`_NON_NEGATIVE`): non-decreasing on the values it can meet."""
    src = island.owner
    if not (isinstance(src, df.ElementwiseOp) and src.kind_value() in _NON_NEGATIVE and len(src.operands) == 1):
        return False
    kind, operands = op.kind_value(), list(op.operands)
    if kind == "mul":
        return len(operands) == 2 and all(v is island for v in operands)
    if kind == "pow" and len(operands) == 2 and operands[0] is island and operands[1] in consts:
        p = np.asarray(consts[operands[1]].real())
        return p.size == 1 and bool((p > 0).all())
    return False


def column_constants(chain: Sequence[Operation], op: Operation, value: SSAValue, consts: Mapping[SSAValue, Tensor],
                     ctx: SimContext, cols: int, islands: set[SSAValue]) -> dict[SSAValue, np.ndarray] | None:
    """Each constant operand of ``op`` (a pointwise step of ``chain``) as one value per column of ``value`` viewed
    as ``[rows, cols]`` (the island's window): ``{constant: [1, cols]}``, or None when some column reads different
    values in different rows (a per-position table such as Whisper's position embeddings), which no per-column
    threshold table evaluates. The constant's broadcast over ``op``'s output is carried through the moves after it
    by the same index tracing as the island's window (:func:`trace_moves`)."""
    out = op.results[0]
    shape = tuple(out.type.get_shape())  # type: ignore[attr-defined]
    after = list(chain[list(chain).index(op) + 1:])
    where = trace_moves(after, out, shape, consts, ctx)[value].reshape(-1, cols) if value is not out \
        else np.arange(int(np.prod(shape, dtype=np.int64))).reshape(-1, cols)
    bind: dict[SSAValue, np.ndarray] = {}
    for v in op.operands:
        if v in islands:
            continue
        data = np.asarray(consts[v].real())
        flat = np.broadcast_to(data, np.broadcast_shapes(data.shape, shape)).reshape(-1)
        per = flat[where]
        if not (per == per[:1]).all():
            return None
        bind[v] = per[:1]
    return bind


def island_function(s_in: np.ndarray, s_out: float, bits: int,
                    steps: Sequence[Callable[[np.ndarray], np.ndarray]] = ()):
    """``x -> quantize(steps(dequantize(x)))`` as the simulator computes it (kernels._quant_cast): x times its scale
    in float64, rounded to float32, through each pointwise step, divided by ``s_out``, rounded half to even and
    clamped; per channel ``s_in``."""

    def f(x: np.ndarray) -> np.ndarray:
        real = Tensor(x, s_in).real().astype(np.float32)
        for step in steps:
            real = step(real)
        return K.quantize(real, s_out, bits)

    return f


def threshold_table(s_in: np.ndarray, s_out: float, bits: int, lo: int, hi: int,
                    steps: Sequence[Callable[[np.ndarray], np.ndarray]] = ()) -> np.ndarray:
    """``(2^bits) x C`` int64: row 0 the cap ``f(hi)``, rows ``1 .. 2^bits - 1`` the first input in ``[lo, hi]``
    reaching levels ``-2^(b-1) + 1 ..`` (clamped into ``[lo, hi]``: a level never reached gets ``hi``, where the
    cap corrects the count). ``s_in``: per-channel scales (C,), all positive."""
    s_in = np.asarray(s_in, np.float64).reshape(-1)
    c = s_in.size
    f = island_function(s_in, s_out, bits, steps)
    levels = np.arange(-(1 << (bits - 1)) + 1, 1 << (bits - 1), dtype=np.int64)[:, None]
    low = np.full((levels.shape[0], c), lo - 1, np.int64)  # f(low) < level (or low is below the range)
    high = np.full((levels.shape[0], c), hi + 1, np.int64)  # f(high) >= level (or high is above the range)
    while True:
        open_ = high - low > 1
        if not open_.any():
            break
        mid = (low + high) // 2
        reached = f(np.where(open_, mid, lo)) >= levels
        high = np.where(open_ & reached, mid, high)
        low = np.where(open_ & ~reached, mid, low)
    cap = f(np.full((1, c), hi, np.int64))
    return np.concatenate([cap, np.clip(high, lo, hi)], axis=0)


def per_column_island(members: Sequence[Operation], consts: Mapping[SSAValue, Tensor], ctx: SimContext) -> bool:
    """Whether every ``quantize`` of an island (``members``: its ``dequantize`` first, then its moves, steps and
    quantizes in program order) reads a :class:`Window` of the source through which each step's constants give one
    value per column: what a per-column threshold table evaluates. A per-channel bias on an NCHW value passes when
    the island transposes channels into columns (SegFormer's and PVT-v2's depthwise convolution), not when the
    channels stay rows."""
    dequant = members[0]
    root, source = dequant.results[0], dequant.operands[0]
    shape = tuple(source.type.get_shape())  # type: ignore[attr-defined]
    inner = [m for m in members[1:] if not _is_quantize(m)]
    islands: set[SSAValue] = {root, *(r for o in inner for r in o.results)}
    for q in members[1:]:
        if not _is_quantize(q):
            continue
        value = q.operands[0]
        chain = _path(inner, value)
        window = island_window(trace_moves(chain, root, shape, consts, ctx)[value], shape[-1] if shape else 1)
        if window is None:
            return False
        for o in chain:
            if isinstance(o, df.ElementwiseOp) and column_constants(
                    chain, o, value, consts, ctx, window.cols, islands) is None:
                return False
    return True


def _path(ops: Sequence[Operation], value: SSAValue) -> list[Operation]:
    """The ops of ``ops`` (program order) whose results ``value`` is computed from, in program order."""
    need, path = {value}, []
    for op in reversed(ops):
        if any(r in need for r in op.results):
            path.append(op)
            need.update(op.operands)
    return path[::-1]


def _is_quantize(op: Operation) -> bool:
    attrs = op.properties.get("attrs") if isinstance(op, df.ElementwiseOp) else None
    quant = attrs.data.get("quant") if isinstance(attrs, DictionaryAttr) else None
    return getattr(quant, "data", None) == "quantize"
