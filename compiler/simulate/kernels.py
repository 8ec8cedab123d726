"""Kernels of the ``dataflow`` ops (registered on import; the package, compiler/simulate/__init__.py, imports it).

Float data is computed in float32 like ONNX Runtime; integer data with scales is exact int64 arithmetic
(:mod:`compiler.simulate.intkernels`). Integer matrix products run as float64 BLAS products when every partial sum
is below 2^53 (then they are exact), else in int64.

Quantization markers written by the ``quantize`` pass (see compiler/passes/quantize.py for the formats):

* ``dataflow.elementwise`` ``cast`` with ``attrs.quant = "quantize"`` (``scale``, ``bits``): float -> integer;
  ``attrs.quant = "dequantize"``: integer -> float32.
* ``dataflow.elementwise`` ``add`` with ``attrs.quant = "add"`` (``scale``, ``bits``): I-ViT residual add, the
  multipliers ``[m0, e0, m1, e1]`` (rows, one column per channel) in the WeightStore under the op's layer.
* ``dataflow.elementwise`` ``mul`` with ``attrs.quant = "mul"`` (``scale``, ``bits``): the exact product of two
  integer activations requantized by the ``[m, e]`` under the op's layer.
* ``dataflow.requant``: multipliers ``[m, e]`` under its layer, output scale in its ``scale`` attribute, or one
  scale per channel under ``<layer>.scale`` (a requant feeding a ``balanced`` GEMM, whose weights absorbed them, or
  the right operand of a product of two activations, whose output columns keep them).
* ``dataflow.gemm`` with a ``weight_group`` attribute: per-group weight steps, the group multipliers under
  ``<weight>.gscale`` (compiler/quant_groups.py: integer products per group, times the group's multiplier, summed).
* attention / softmax ops: ``softmax_bits`` attribute, the output width of the softmax unit.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import torch
from xdsl.dialects.builtin import DictionaryAttr, FloatAttr, IntegerAttr
from xdsl.ir import Operation

from compiler.dialect import dataflow as df
from compiler.frontend.onnx_index_ops import checked_indices
from compiler.frontend.onnx_ops import run_node
from compiler.numerics.softmax_free import soft_landmarks, softmax_free_attention
from compiler.quant_format import PER_TOKEN_ATTR
from compiler.quant_groups import GROUP_ATTR, GROUP_SCALE_SUFFIX, group_matmul
from compiler.simulate import approx as A
from compiler.simulate import intkernels as K
from compiler.simulate.registry import Kernel, SimContext, Tensor, py_attr, register_kernel

__all__ = ["ATTENTION_ALGORITHMS", "DEFAULT_SOFTMAX_BITS", "PER_TOKEN_ATTR", "causal_bias", "im2col", "int_matmul",
           "masked_rows", "matmul", "op_attrs", "register_attention", "softmax_bits", "standard_attention"]

#: Width of the softmax unit's output when an op does not say (I-ViT uses 16 bits for ViT / DeiT).
DEFAULT_SOFTMAX_BITS = 16
_NEG = np.float32(np.finfo(np.float32).min)
_SCALE_KEEPING = ("reshape", "flatten", "squeeze", "unsqueeze", "transpose", "slice", "gather", "expand", "split",
                  "tile", "identity")


def matmul(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """``a @ b``; a stacked lhs times a matrix runs as one 2-D product (NumPy only uses BLAS for that form)."""
    if b.ndim == 2 and a.ndim > 2:
        return np.matmul(a.reshape(-1, a.shape[-1]), b).reshape(*a.shape[:-1], b.shape[-1])
    return np.matmul(a, b)


def int_matmul(a: np.ndarray, b: np.ndarray, b_cache: dict[str, Any] | None = None) -> np.ndarray:
    """Exact ``a @ b`` of integer arrays as int64 (float32 / float64 BLAS when no partial sum can reach 2^24 / 2^53).

    ``b_cache``: a dict that lives as long as ``b`` does not change (an op's memo, for a constant weight); ``b``'s
    max and float32 copy are kept there instead of being recomputed per call.
    """
    def maxima(x: np.ndarray, axis: int) -> tuple[float, float]:  # max |x| and the largest L1 norm along axis
        if not x.size:
            return 0.0, 0.0
        ax = np.abs(x)
        return float(ax.max()), float(ax.sum(axis=axis).max())

    if b_cache is not None:
        if "amax" not in b_cache:
            b_cache["amax"], b_cache["l1"] = maxima(b, -2)
            b_cache["f32"] = b.astype(np.float32)
        b_max, b_l1, b32 = b_cache["amax"], b_cache["l1"], b_cache["f32"]
    else:
        (b_max, b_l1), b32 = maxima(b, -2), None
    a_max, a_l1 = maxima(a, -1)
    per_term = a_max * b_max
    # No partial sum of an output element exceeds sum_k |a_mk| |b_kn|, which is at most a row's L1 norm times
    # max|b| or max|a| times a column's L1 norm: far below per_term * k for activations that are mostly small
    # (a GELU's int8 output into a K = 1536 product stays under 2^24 and needs no split).
    bound = min(per_term * a.shape[-1], a_l1 * b_max, a_max * b_l1)
    if bound < 2.0**24:  # every partial sum is an integer float32 holds exactly: twice the BLAS speed
        return matmul(a.astype(np.float32), b32 if b32 is not None else b.astype(np.float32)).astype(np.int64)
    chunk = int(2.0**24 // per_term) if per_term else 0
    if chunk >= 128 and bound < 2.0**53:
        # Split the reduction so each float32 product stays exact, then add the chunks exactly in int64.
        k = a.shape[-1]
        a32, b32 = a.astype(np.float32), b32 if b32 is not None else b.astype(np.float32)
        total = None
        for start in range(0, k, chunk):
            part = matmul(a32[..., start:start + chunk], b32[..., start:start + chunk, :]).astype(np.int64)
            total = part if total is None else total + part
        assert total is not None, "k >= chunk >= 128: at least one chunk"
        return total
    if bound < 2.0**53:
        return matmul(a.astype(np.float64), b.astype(np.float64)).astype(np.int64)
    return matmul(a.astype(np.int64), b.astype(np.int64))


def op_attrs(op: Operation, ctx: SimContext) -> dict[str, Any]:
    """The op's ``attrs`` dictionary as Python values (cached per op)."""
    memo = ctx.memo(op)
    if "attrs" not in memo:
        attr = op.properties.get("attrs")
        memo["attrs"] = py_attr(attr) if isinstance(attr, DictionaryAttr) else {}
    return memo["attrs"]


def softmax_bits(op: Operation, approx: str) -> int:
    """Output width of the op's softmax unit: its ``softmax_bits`` attribute, else 4 for log2q, else 16."""
    attr = op.attributes.get("softmax_bits")
    if isinstance(attr, IntegerAttr) and attr.value.data > 0:
        return int(attr.value.data)
    return 4 if approx == "log2q" else DEFAULT_SOFTMAX_BITS


def _float_attr(op: Operation, key: str) -> float:
    attr = op.attributes.get(key)
    assert isinstance(attr, FloatAttr), f"{op.name} needs a '{key}' attribute"
    return float(attr.value.data)


def _generic(op: Operation, ins: list[Tensor], ctx: SimContext) -> list[Tensor]:
    """Run the ONNX op the frontend recorded in ``attrs`` (``onnx_op``, ``nin``, constant params ``#i``)."""
    attrs = op_attrs(op, ctx)
    memo = ctx.memo(op)
    if "call" not in memo:
        onnx_attrs = {k: v for k, v in attrs.items() if k not in ("onnx_op", "nin") and not k.startswith("#")}
        layout = [attrs.get(f"#{i}") for i in range(int(attrs.get("nin", len(ins))))]
        memo["call"] = (attrs["onnx_op"], onnx_attrs, layout)
    onnx_op, onnx_attrs, layout = memo["call"]
    data = iter(t.real().astype(np.float32) if t.quantized else t.data for t in ins)
    args = [next(data) if p is None else (None if isinstance(p, str) else p) for p in layout]
    with np.errstate(all="ignore"):  # e.g. -inf masks through Mul, as the loader's folding allows
        outs = run_node(onnx_op, args, onnx_attrs, len(op.results))
    return [Tensor(np.asarray(o)) for o in outs]


@register_kernel("dataflow.gemm")
def _gemm(op: Operation, ins: list[Tensor], ctx: SimContext) -> list[Tensor]:
    x, w = ins[0], ins[1]
    bias = ins[2] if len(ins) > 2 else None
    if x.quantized:
        constant = isinstance(op.operands[1].owner, df.WeightOp)
        cache = ctx.memo(op).setdefault("rhs", {}) if constant else None
        token = op.attributes.get(PER_TOKEN_ATTR)
        group = op.attributes.get(GROUP_ATTR)
        grouped = isinstance(group, IntegerAttr) and constant
        if grouped:  # per-group steps: compiler/quant_groups.py's datapath
            memo = ctx.memo(op)
            if "q" not in memo:
                owner = op.operands[1].owner
                assert isinstance(owner, df.WeightOp)  # ``constant``
                memo["q"] = ctx.weights[owner.layer_name() + GROUP_SCALE_SUFFIX]
        if isinstance(token, DictionaryAttr):  # per-token int8 codes of a 16-bit input (compiler/numerics/pertoken.py)
            p = {k: v.value.data for k, v in token.data.items()}  # type: ignore[attr-defined]
            if grouped:
                size = group.value.data  # type: ignore[union-attr]
                memo = ctx.memo(op)
                if "colsum" not in memo:
                    full = np.repeat(np.asarray(memo["q"], np.int64), size, axis=0)[: w.data.shape[0]]
                    memo["colsum"] = (w.data.astype(np.int64) * full).sum(axis=0)
                acc = K.per_token_gemm(x.data, w.data, p["offset"], bool(p["unsigned"]), p["shift"],
                                       lambda a, b: group_matmul(a, b, memo["q"], size, int_matmul, cache),
                                       memo["colsum"])
            else:
                acc = K.per_token_gemm(x.data, w.data, p["offset"], bool(p["unsigned"]), p["shift"],
                                       lambda a, b: int_matmul(a, b, cache))
            if bias is not None:
                acc = acc + bias.data.astype(np.int64)
            acc = np.clip(acc, -(2**31), 2**31 - 1)
            x_scale = 1.0 if "balanced" in op.attributes else x.step()  # per-channel input steps: in the weights
            return [Tensor(acc, x_scale * np.asarray(w.scale, np.float64) * 2.0 ** p["shift"])]
        if grouped:
            acc = group_matmul(x.data, w.data, memo["q"], group.value.data, int_matmul, cache)  # type: ignore[union-attr]
        else:
            acc = int_matmul(x.data, w.data, cache)
        if bias is not None:
            acc = acc + bias.data.astype(np.int64)
        w_scale = np.asarray(1.0 if w.scale is None else w.scale, dtype=np.float64)
        if "balanced" in op.attributes:
            # The input's per-channel scales were folded into the weights (quantize pass): acc * S_w is real.
            return [Tensor(acc, w_scale)]
        return [Tensor(acc, x.step() * w_scale)]
    y = matmul(x.data, w.data)
    return [Tensor(y + bias.data if bias is not None else y)]


@register_kernel("dataflow.requant")
def _requant(op: Operation, ins: list[Tensor], ctx: SimContext) -> list[Tensor]:
    memo = ctx.memo(op)
    if "m" not in memo:
        assert isinstance(op, df.RequantOp)
        me = np.asarray(ctx.weights[op.layer_name()], dtype=np.int64)
        memo["m"], memo["e"] = (me[0, 0], me[1, 0]) if me.shape[1] == 1 else (me[0], me[1])
        layer = op.layer_name()
        per_channel = ctx.weights.get(layer + ".scale")  # a balanced requant: one output scale per channel
        memo["bits"] = op.out_bits_value()
        memo["scale"] = per_channel if per_channel is not None else _float_attr(op, "scale")
    x = ins[0]
    if not x.quantized:
        raise ValueError("requant needs an integer input with a scale")
    return [Tensor(K.requantize(x.data, memo["m"], memo["e"], memo["bits"]), memo["scale"])]


def _heads(x: np.ndarray, heads: int) -> np.ndarray:
    b, s, d = x.shape
    return x.reshape(b, s, heads, d // heads).transpose(0, 2, 1, 3)


def _kv_heads(x: np.ndarray, kv: int, heads: int) -> np.ndarray:
    """K or V split into its ``kv`` heads, each repeated for the ``heads // kv`` query heads that share it."""
    split = _heads(x, kv)
    return split if kv == heads else np.repeat(split, heads // kv, axis=1)


def _merge(x: np.ndarray) -> np.ndarray:
    b, h, s, d = x.shape
    return x.transpose(0, 2, 1, 3).reshape(b, s, h * d)


def _attention_params(op: Operation, ctx: SimContext) -> dict[str, Any]:
    memo = ctx.memo(op)
    if "heads" not in memo:
        assert isinstance(op, df.AttentionOp)
        memo["heads"] = op.num_heads_value()
        memo["kv_heads"] = op.kv_heads_value()
        memo["scale"] = op.scale_value()
        memo["causal"] = op.causal_value()
        memo["softmax"] = df.SoftmaxApprox.EXACT if ctx.exact else op.softmax_choice()
        memo["bits"] = softmax_bits(op, memo["softmax"])
        memo["algorithm"] = op.algorithm_choice()
        memo["softcap"] = op.softcap_value()
        sinks = op.sinks_value()
        memo["sinks"] = None if sinks is None else np.asarray(sinks, np.float64).reshape(-1, 1, 1)
        memo["masked_rows_zero"] = op.masked_rows_zero_value()
    return memo


def masked_rows(op: Operation, mask: np.ndarray | None, causal: np.ndarray | None,
                shape: tuple[int, ...]) -> np.ndarray | None:
    """[B, H, Sq, 1] True at the query rows of [B, H, Sq, Sk] scores ``shape`` whose every key is masked (``mask``
    -inf there, or ``causal`` [Sq, Sk] True) when ``op`` gives such rows 0 (``masked_rows_zero``); None when it
    does not or no row is. Every attention kernel zeroes these rows of its output (or probabilities)."""
    assert isinstance(op, df.AttentionOp)
    if not op.masked_rows_zero_value() or (mask is None and causal is None):
        return None
    blocked = np.zeros(shape[-2:], dtype=bool) if mask is None else np.isneginf(np.broadcast_to(mask, shape))
    if causal is not None:
        blocked = blocked | causal
    rows = np.asarray(np.broadcast_to(blocked, shape).all(axis=-1, keepdims=True))
    return rows if rows.any() else None


def causal_bias(op: Operation, mask: np.ndarray | None, causal: np.ndarray, shape: tuple[int, ...]) -> np.ndarray:
    """The float scores' additive bias of a causal ``op``: ``mask`` (broadcast to ``shape``, zero without one) with
    the blocked keys (``causal`` [Sq, Sk] True) at float32 min, or, when the fill comes first (the op's
    ``causal_first``), at min + mask in float32, as the graph computes it: -inf where the mask is as low."""
    assert isinstance(op, df.AttentionOp)
    dtype = np.float32 if mask is None else np.result_type(mask.dtype, np.float32)
    base = np.zeros(shape, dtype) if mask is None else np.broadcast_to(mask, shape)
    if not op.causal_first_value() or mask is None:
        return np.where(causal, _NEG, base).astype(dtype, copy=False)
    with np.errstate(over="ignore"):
        fill = (_NEG + base.astype(np.float32)).astype(dtype)
    return np.where(causal, fill, base)


def _softcap_int(x: np.ndarray, step: float, cap: float) -> np.ndarray:
    """Soft-capped integer scores on the same grid: round(c * tanh(x * step / c) / step). The tanh is the vector
    unit's transcendental (priced as one in compiler/schedule/attention.py) and is modelled here in float64, as
    there is no integer tanh kernel in compiler.numerics; its result lies in (-c, c), so it is requantised onto the
    scores' own step and the integer softmax reads the grid it would read without the cap."""
    return np.round(cap * np.tanh(x.astype(np.float64) * (step / cap)) / step).astype(np.int64)


#: algorithm name -> kernel for ``dataflow.attention`` ops with that ``algorithm`` (see the package docstring).
ATTENTION_ALGORITHMS: dict[str, Kernel] = {}


def register_attention(algorithm: str, fn: Kernel, *, replace: bool = False) -> Kernel:
    """Compute attention ops whose ``algorithm`` is ``algorithm`` with ``fn`` instead of the standard kernel."""
    if algorithm in ATTENTION_ALGORITHMS and not replace and ATTENTION_ALGORITHMS[algorithm] is not fn:
        raise ValueError(f"an attention kernel for algorithm '{algorithm}' is already registered")
    ATTENTION_ALGORITHMS[algorithm] = fn
    return fn


@register_kernel("dataflow.attention")
def _attention(op: Operation, ins: list[Tensor], ctx: SimContext) -> list[Tensor]:
    p = _attention_params(op, ctx)
    if p["algorithm"] in ATTENTION_ALGORITHMS:
        return ATTENTION_ALGORITHMS[p["algorithm"]](op, ins, ctx)
    return standard_attention(op, ins, ctx)


def standard_attention(op: Operation, ins: list[Tensor], ctx: SimContext,
                       key_order: np.ndarray | None = None) -> list[Tensor]:
    """softmax(scale QK^T + mask) V per head with the op's softmax choice; integer when q, k, v are quantized.

    ``key_order`` ([Sq, Sk], a permutation of the keys per query row): the order in which an integer softmax visits
    each row's keys (Edge-MoE's rotated lanes). It matters for a running-sum softmax whose rescaling shifts floor;
    the probabilities are put back in key order before A.V."""
    p = _attention_params(op, ctx)
    q, k, v = ins[0], ins[1], ins[2]
    mask = ins[3].real() if len(ins) > 3 else None
    heads, approx = p["heads"], p["softmax"]
    if approx == "softmax-free":
        if p["sinks"] is not None:
            raise ValueError(f"attention '{df.layer_of(op)}': softmax-free attention cannot hold attention sinks")
        # SOFT replaces the whole attention (K = Q, Gaussian kernel); it ignores the mask and the QK^T scale.
        qh, vh = _heads(q.real(), heads), _kv_heads(v.real(), p["kv_heads"], heads)
        out = softmax_free_attention(torch.from_numpy(np.ascontiguousarray(qh)),
                                     torch.from_numpy(np.ascontiguousarray(vh)),
                                     num_landmarks=soft_landmarks(qh.shape[-2])).numpy()
        empty = masked_rows(op, mask, None, qh.shape[:-1] + (vh.shape[-2],))
        return [Tensor(_merge(out if empty is None else np.where(empty, 0, out)).astype(np.float32))]
    qh, kh, vh = _heads(q.data, heads), _kv_heads(k.data, p["kv_heads"], heads), _kv_heads(v.data, p["kv_heads"], heads)
    sq, sk = qh.shape[-2], kh.shape[-2]
    # Causal as the frontend finds it: query i (of the last sq) sees keys up to i + sk - sq (a cache before them).
    causal = np.triu(np.ones((sq, sk), dtype=bool), 1 + sk - sq) if p["causal"] else None
    empty = masked_rows(op, mask, causal, qh.shape[:-1] + (sk,)) if p["masked_rows_zero"] else None
    if q.quantized:
        s = float(q.step()) * float(k.step()) * p["scale"]
        x = int_matmul(qh, kh.swapaxes(-1, -2))
        if p["softcap"] is not None:
            x = _softcap_int(x, s, p["softcap"])
        if mask is not None:
            # The additive mask on the scores' grid. -inf-like entries go to -2^32 so that, after the int32 clamp
            # below, a fully masked row is all -2^31 (uniform, as float gives) rather than scores - 2^31.
            with np.errstate(over="ignore"):
                x = x + np.clip(np.round(mask.astype(np.float64) / s), -(2.0**32), 2.0**32).astype(np.int64)
        if causal is not None:
            x = np.where(causal, -(2**31), x)
        x = np.clip(x, -(2**31), 2**31 - 1)
        if key_order is None:
            prob, ps = A.softmax_int(approx, x, s, p["bits"], p["sinks"])
        else:
            idx = np.broadcast_to(key_order, x.shape)
            visited, ps = A.softmax_int(approx, np.take_along_axis(x, idx, axis=-1), s, p["bits"], p["sinks"])
            prob = np.empty_like(visited)
            np.put_along_axis(prob, idx, visited, axis=-1)
        if empty is not None:
            prob = np.where(empty, 0, prob)
        acc = int_matmul(prob, vh)
        return [Tensor(_merge(acc), ps * float(v.step()))]
    scores = np.matmul(qh, kh.swapaxes(-1, -2)) * np.float32(p["scale"])
    if p["softcap"] is not None:
        cap = np.float32(p["softcap"])
        scores = cap * np.tanh(scores / cap)
    bias = None
    if causal is not None:
        bias = causal_bias(op, mask, causal, scores.shape)
    elif mask is not None:
        bias = np.broadcast_to(mask, scores.shape)
    with np.errstate(over="ignore", invalid="ignore" if empty is not None else None):  # those NaN rows are zeroed
        prob = A.softmax_float(approx, scores, bias, p["bits"], p["sinks"])
    if empty is not None:
        prob = np.where(empty, np.zeros((), prob.dtype), prob)
    return [Tensor(_merge(np.matmul(prob.astype(vh.dtype), vh)))]


@register_kernel("dataflow.softmax")
def _softmax(op: Operation, ins: list[Tensor], ctx: SimContext) -> list[Tensor]:
    memo = ctx.memo(op)
    if "approx" not in memo:
        assert isinstance(op, df.SoftmaxOp)
        memo["approx"] = df.SoftmaxApprox.EXACT if ctx.exact else op.approx_choice()
        memo["axis"] = op.axis_value()
        memo["bits"] = softmax_bits(op, memo["approx"])
    x, axis = ins[0], memo["axis"]
    data = np.moveaxis(x.data, axis, -1)
    if x.quantized:
        prob, ps = A.softmax_int(memo["approx"], data, float(x.step()), memo["bits"])
        return [Tensor(np.moveaxis(prob, -1, axis), ps)]
    with np.errstate(over="ignore"):
        return [Tensor(np.moveaxis(A.softmax_float(memo["approx"], data, None, memo["bits"]), -1, axis))]


@register_kernel("dataflow.layernorm")
def _layernorm(op: Operation, ins: list[Tensor], ctx: SimContext) -> list[Tensor]:
    memo = ctx.memo(op)
    if "kind" not in memo:
        assert isinstance(op, df.LayerNormOp)
        memo["kind"] = op.norm_kind()
        memo["approx"] = df.LayerNormApprox.EXACT if ctx.exact else op.approx_choice()
        memo["eps"] = op.epsilon_value()
        memo["in_bits"] = df.int_bits(op.operands[0]) or 16  # quantized data has an integer type
    x, gamma = ins[0], ins[1].real()
    beta = ins[2].real() if len(ins) > 2 else None
    rms = memo["kind"] == df.LayerNormKind.RMSNORM
    if rms and memo["approx"] == df.LayerNormApprox.EXACT:
        data = x.real().astype(np.float32)
        y = data / np.sqrt((data * data).mean(axis=-1, keepdims=True) + np.float32(memo["eps"])) * gamma
        return [Tensor((y + beta if beta is not None else y).astype(np.float32))]
    if x.quantized:
        y, ys = A.layernorm_int(memo["approx"], x.data, float(x.step()), gamma.astype(np.float64),
                                None if beta is None else beta.astype(np.float64), memo["eps"],
                                in_bits=memo["in_bits"], rms=rms)
        return [Tensor(y, ys)]
    return [Tensor(A.layernorm_float(memo["approx"], x.data, gamma, beta, memo["eps"], rms))]


@register_kernel("dataflow.gelu")
def _gelu(op: Operation, ins: list[Tensor], ctx: SimContext) -> list[Tensor]:
    memo = ctx.memo(op)
    if "approx" not in memo:
        assert isinstance(op, df.GeluOp)
        approx = op.approx_choice()
        found = (df.GeluApprox.TANH, df.GeluApprox.SIGMOID)  # the model's own forms: its exact function
        memo["approx"] = (approx if approx in found else df.GeluApprox.EXACT) if ctx.exact else approx
    x = ins[0]
    if x.quantized:
        y, ys = A.gelu_int(memo["approx"], x.data, float(x.step()))
        return [Tensor(y, ys)]
    return [Tensor(A.gelu_float(memo["approx"], x.data))]


@register_kernel("dataflow.embedding")
def _embedding(op: Operation, ins: list[Tensor], ctx: SimContext) -> list[Tensor]:
    table, idx = ins
    rows = checked_indices(idx.data, table.data.shape[0], "the embedding table's rows")
    return [Tensor(np.take(table.data, rows, axis=0), table.scale)]


def _quant_cast(op: Operation, x: Tensor, attrs: dict[str, Any]) -> Tensor:
    if attrs["quant"] == "quantize":
        if x.quantized:
            raise ValueError("quantize expects a float input")
        return Tensor(K.quantize(x.data, attrs["scale"], int(attrs["bits"])), float(attrs["scale"]))
    if attrs["quant"] == "dequantize":
        return Tensor(x.real().astype(np.float32))
    raise ValueError(f"unknown quant marker '{attrs['quant']}'")


@register_kernel("dataflow.elementwise")
def _elementwise(op: Operation, ins: list[Tensor], ctx: SimContext) -> list[Tensor]:
    attrs = op_attrs(op, ctx)
    quant = attrs.get("quant")
    if quant == "add":
        memo = ctx.memo(op)
        if "me" not in memo:
            me = np.asarray(ctx.weights[df.layer_of(op)], dtype=np.int64)
            memo["me"] = [row[0] if me.shape[1] == 1 else row for row in me]
        m0, e0, m1, e1 = memo["me"]
        a, b = ins
        if not (a.quantized and b.quantized):
            raise ValueError("a quantized add needs two integer inputs with scales")
        return [Tensor(K.requantize_add(a.data, m0, e0, b.data, m1, e1, int(attrs["bits"])), float(attrs["scale"]))]
    if quant == "mul":
        m, e = (int(v) for v in np.asarray(ctx.weights[df.layer_of(op)], dtype=np.int64).reshape(2))
        a, b = ins
        if not (a.quantized and b.quantized):
            raise ValueError("a quantized product needs two integer inputs with scales")
        product = np.asarray(a.data, np.int64) * np.asarray(b.data, np.int64)
        return [Tensor(K.requantize(product, m, e, int(attrs["bits"])), float(attrs["scale"]))]
    if quant is not None:
        return [_quant_cast(op, ins[0], attrs)]
    return _generic(op, ins, ctx)


def im2col(x: np.ndarray, attrs: dict[str, Any]) -> np.ndarray:
    """The unfolded matrix of a convolution's input ``x`` [B, C, *spatial] (compiler/frontend/conv.py's layout).

    Rows are output positions, columns (channel, kernel offsets) in the order of ONNX's weight [Cout, C/G, *k];
    groups 1: [B, L, C*k], groups G: [G, B*L, C/G*k]. Any number of spatial dims (1-D audio, 2-D images, 3-D video
    tubelets): each output position's window is a strided, dilated view of the zero-padded input (exact for integers
    too: zero point 0).
    """
    kernel, strides, dil, pads = (list(attrs[key]) for key in ("kernel", "strides", "dilations", "pads"))
    groups = int(attrs["groups"])
    rank = len(kernel)
    padded = np.pad(x, [(0, 0), (0, 0)] + [(pads[i], pads[rank + i]) for i in range(rank)])
    span = [d * (k - 1) + 1 for k, d in zip(kernel, dil, strict=True)]
    axes = tuple(range(2, 2 + rank))
    windows = np.lib.stride_tricks.sliding_window_view(padded, span, axis=axes)  # [B, C, *P', *span]
    windows = windows[(slice(None), slice(None)) + tuple(slice(None, None, s) for s in strides)
                      + tuple(slice(None, None, d) for d in dil)]  # [B, C, *out, *kernel]
    b, c = x.shape[:2]
    out_sp = windows.shape[2:2 + rank]
    positions = math.prod(out_sp)
    perm = (0, *range(2, 2 + rank), 1, *range(2 + rank, 2 + 2 * rank))
    cols = windows.transpose(perm).reshape(b, positions, c * math.prod(kernel))  # [B, L, C*k]
    if groups > 1:
        cols = cols.reshape(b, positions, groups, -1).transpose(2, 0, 1, 3).reshape(groups, b * positions, -1)
    return np.ascontiguousarray(cols)


@register_kernel("dataflow.move")
def _move(op: Operation, ins: list[Tensor], ctx: SimContext) -> list[Tensor]:
    assert isinstance(op, df.MoveOp)
    kind = op.kind_value()
    if kind == "patchify":
        x = ins[0].data
        kh, kw = (int(v) for v in op_attrs(op, ctx)["kernel"])
        b, c, h, w = x.shape
        p = x.reshape(b, c, h // kh, kh, w // kw, kw).transpose(0, 2, 4, 1, 3, 5)
        return [Tensor(p.reshape(b, (h // kh) * (w // kw), c * kh * kw), ins[0].scale)]
    if kind == "im2col":
        return [Tensor(im2col(ins[0].data, op_attrs(op, ctx)), ins[0].scale)]
    scaled = [t for t in ins if t.quantized]
    if scaled and kind in _SCALE_KEEPING and np.ndim(scaled[0].step()) == 0:
        # Pure movement keeps a per-tensor scale: run it on the integers themselves.
        outs = _generic(op, [Tensor(t.data) for t in ins], ctx)
        return [Tensor(o.data, scaled[0].scale) for o in outs]
    return _generic(op, ins, ctx)


_REDUCE = {"mean": np.mean, "sum": np.sum, "max": np.max, "min": np.min, "prod": np.prod}


@register_kernel("dataflow.reduce")
def _reduce(op: Operation, ins: list[Tensor], ctx: SimContext) -> list[Tensor]:
    memo = ctx.memo(op)
    if "axes" not in memo:
        assert isinstance(op, df.ReduceOp)
        memo["kind"] = op.kind_value()
        memo["axes"] = op.axes_value()
        memo["keep"] = op.keepdims_value()
    x = ins[0].real().astype(np.float32) if ins[0].quantized else ins[0].data
    axes = tuple(a % x.ndim for a in memo["axes"])
    if memo["kind"] == "argmax":
        y = np.argmax(x, axis=axes[0])
        return [Tensor(np.expand_dims(y, axes[0]) if memo["keep"] else y)]
    return [Tensor(np.asarray(_REDUCE[memo["kind"]](x, axis=axes, keepdims=memo["keep"])).astype(x.dtype))]
