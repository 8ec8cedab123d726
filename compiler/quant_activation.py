"""Activation-side recipes the quantize pass (compiler/passes/quantize.py) mixes into its quantizer.

* ``--act-granularity per-token``: a static GEMM's input on a 16-bit grid (per tensor, or per channel when the
  input comes from an integer op other than a GELU and :func:`balances` says so: ``repq`` at the calibrated maxima
  for inputs with an outlier channel, ``smoothquant`` as its search picks; folded into the weights' rows) and the
  GEMM op carries ``PER_TOKEN_ATTR``: it takes each row's max, quantizes the row to int8 on its own step and
  rescales the result per row (compiler/numerics/pertoken.py has the arithmetic, the simulator runs it,
  compiler/schedule/lower.py costs it). A GELU output is shifted by a static offset to >= 0 and takes unsigned
  codes (0..255): its -0.17 floor would otherwise spend half of a signed grid.
* An approximate integer GELU's output gets :func:`compiler.quant_recipes.gelu_correction`'s gain in its scale and
  its offset in the bias of the GEMMs that read it; the integer kernel (and its RTL) is unchanged.
"""

# pyright: reportAttributeAccessIssue=false, reportArgumentType=false
# (a mixin: the quantize pass's _Quantizer supplies the helpers these methods call; see ActivationRecipes)
from __future__ import annotations

from typing import Any

import numpy as np
from xdsl.dialects.builtin import DictionaryAttr, IntegerAttr, IntegerType, UnitAttr, i64
from xdsl.ir import Operation, SSAValue

from compiler.dialect import dataflow as df
from compiler.quant_format import PER_TOKEN_ATTR
from compiler.quant_format import Fmt as _Fmt
from compiler.quant_format import layer_of as _layer
from compiler.quant_format import tensor_type as _ttype
from compiler.quant_recipes import gelu_correction, smooth_scales
from compiler.simulate import approx as A

__all__ = ["COLUMN_SPREAD", "GRANULARITY", "TOKEN_HEADROOM", "ActivationRecipes", "balances", "spread_out"]

#: Activation granularity of static-weight GEMM inputs: one calibrated int8 step per tensor, or per token (a row
#: max and a per-row step at run time, compiler/numerics/pertoken.py).
GRANULARITY = ("per-tensor", "per-token")
#: A per-token GEMM reads its input on a 16-bit grid this many times wider than the calibrated range: the row steps
#: are dynamic, so a row louder than any calibration row should not clip (one bit of the 16 spent on it).
TOKEN_HEADROOM = 2.0
_Q16 = (1 << 15) - 1
_Q8 = (1 << 7) - 1
#: The right operand of a product of two activations gets one int8 step per column when its columns' calibrated
#: maxima reach this many times their median (:meth:`ActivationRecipes.q_columns`): one step for the tensor then
#: leaves the median column 2 bits short. Measured (int8, 4 samples): timm's EfficientViT-B's linear attention
#: spreads 11-51, its output cosine 0.931 -> 0.999 per column; the other timm models with such products (CoaT-Lite,
#: EfficientViT-M, EfficientFormerV2, Twins-SVT) spread 1.0-1.7, where per column on every product moved their
#: cosine by at most 0.0002 and their latency by -0.2% .. +3.7%.
#: ``--balance repq`` balances a GEMM input per channel only past the same spread (:func:`balances`).
COLUMN_SPREAD = 4.0


def spread_out(maxima: np.ndarray) -> bool:
    """Whether per-channel (per-column) calibrated ``maxima`` reach :data:`COLUMN_SPREAD` times their median (an
    outlier channel; all of them when the median is 0)."""
    median = float(np.median(maxima))
    return not (median > 0 and float(maxima.max()) < COLUMN_SPREAD * median)


def balances(balance: str, maxima: np.ndarray) -> bool:
    """Whether ``--balance balance`` may give a static GEMM's input with per-channel calibrated ``maxima`` one step
    per channel (the per-tensor int8 steps of Quantizer.q_balanced and the per-token path's 16-bit ones alike):
    never with ``none``; with ``repq`` only when the maxima are :func:`spread_out` (an outlier channel, what
    RepQ-ViT's per-channel steps are for: without one, per-channel maxima of a few calibration rows overfit them and
    a channel quiet in calibration clips on new data; benchmarks/bench_int8_peer.py); ``smoothquant`` decides by
    its own search (compiler/quant_recipes.py)."""
    return balance != "none" and (balance != "repq" or spread_out(maxima))


class ActivationRecipes:
    """Methods of the quantize pass's ``_Quantizer`` (whose fields and helpers they use) for the recipes above."""

    weights: dict[str, np.ndarray]
    rows: dict[SSAValue, list[np.ndarray]]
    offsets: dict[SSAValue, float]
    gelu_offsets: dict[Operation, float]
    choices: dict[str, dict[str, Any]]
    fmt: dict[SSAValue, Any]
    channels: dict[SSAValue, np.ndarray]
    balance: str
    rounding: str
    w_bits: int
    group: int
    layer_recipes: dict[str, tuple[int, int]]

    def gelu_gain(self, op: Operation, bits: int, scale: float) -> float:
        """The calibrated gain of GELU ``op``'s integer output on its input grid (``bits``, ``scale``); its offset is
        kept for :meth:`mark_offset`. 1 without calibration rows, for an exact GELU, and for the row-max ShiftGELU
        (``shiftgelu-row``): its error depends on each row's max, so a per-element fit does not carry over (fitted,
        it lowered MiniLM's cosine from 0.94 to 0.86, tests/test_accuracy.py)."""
        samples = self.rows.get(op.operands[0])
        assert isinstance(op, df.GeluOp)
        approx = op.approx_choice()
        if not samples or approx in (df.GeluApprox.EXACT, df.GeluApprox.TANH, df.GeluApprox.SIGMOID,
                                     df.GeluApprox.SHIFTGELU_ROW):
            return 1.0
        gain, offset = gelu_correction(lambda q, s: A.gelu_int(approx, q, s), np.concatenate(samples), bits, scale)
        if gain != 1.0 or offset:
            self.choices.setdefault(op.layer_name(), {}).update(gelu_gain=gain, gelu_offset=offset)
            self.gelu_offsets[op] = offset
        return gain

    def mark_offset(self, new: Operation, offset: float) -> None:
        """The real ``offset`` the integer op ``new``'s output (and the dequantize cast after it) lacks."""
        self.offsets[new.results[0]] = offset
        for use in new.results[0].uses:
            self.offsets[use.operation.results[0]] = offset

    def bias_real(self, op: df.GemmOp, w: np.ndarray) -> np.ndarray | None:
        """The GEMM's float bias, plus ``offset * colsum(w)`` (summed in float64) when its input lacks a calibrated
        offset. ``w`` may be the stored float32 weight: it is widened only when an offset needs its column sums."""
        b = None
        if op.bias is not None:
            b = np.asarray(self.weights[df.layer_of(op.bias.owner)], dtype=np.float64)  # type: ignore
        offset = self.offsets.get(op.lhs, 0.0)
        if offset and w.ndim == 2:
            b = (0.0 if b is None else b) + offset * np.asarray(w, np.float64).sum(axis=0)
        return b

    def gelu_floor(self, out: SSAValue) -> float:
        """The most negative real value the integer GELU producing ``out`` can give (-0.17 for the exact one), in
        ``out``'s format (a calibrated gain included)."""
        gelu = out.owner
        assert isinstance(gelu, df.GeluOp)
        s_in = float(self.fmt[gelu.operands[0]].scale)
        n = min(1 << 15, int(np.ceil(8.0 / s_in)) + 1)
        y, _ = A.gelu_int(gelu.approx_choice(), -np.arange(n, dtype=np.int64).reshape(-1, 1), s_in)
        return float(min(int(y.min()), 0)) * float(self.fmt[out].scale)

    def q_columns(self, v: SSAValue, before: Operation) -> tuple[SSAValue, _Fmt] | None:
        """``v``, the right operand ([.., K, N]) of a product of two activations, as int8 with one step per column
        (its calibrated max) when those maxima reach :data:`COLUMN_SPREAD` times their median; None otherwise, and
        with ``--balance none`` (one step for the tensor then, from the observer's range).

        Column j of ``A @ B`` is sum_k A_k B_kj: a step per column of B becomes a step per output column, as a
        static weight's per-channel steps do, at no cost in the product; only the requant producing B turns per
        channel (fused into a producing GEMM, its multipliers are the per-channel rows static weights use). The
        case: a column much louder than the rest (linear attention's ``k^T [v, 1]``, whose last column sums k over
        the tokens) otherwise leaves the others a few bits. An integer ``v`` is requantized from its own format, a
        float one quantized to 16 bits first (the quantize cast takes one step; the requant unit one per channel).
        """
        chan = self.channels.get(v)
        if self.balance == "none" or chan is None or chan.size < 2 or not np.any(chan > 0):
            return None
        if not spread_out(chan):
            return None
        median = float(np.median(chan))
        iv = self.int_view(v)
        key = (id(iv if iv is not None else v), -8, None)
        if key not in self.cache:
            src = iv if iv is not None else self.q(v, 16, before)[0]
            scale = np.maximum(chan, self.range_of(v) * 1e-3) / _Q8
            out = self.requant_channels(src, scale, 8, "requant8col", before)
            self.amax[out] = self.range_of(v)
            self.cache[key] = out
        spread = float(chan.max()) / median if median > 0 else float("inf")
        self.choices.setdefault(_layer(before), {}).update(rhs_steps="per-column", rhs_column_spread=round(spread, 1))
        got = self.cache[key]
        return got, self.fmt[got]

    def gemm_per_token(self, op: df.GemmOp) -> None:
        """A static GEMM whose int8 input steps are per token: the input on a 16-bit grid, the GEMM op carries
        ``PER_TOKEN_ATTR`` (row max, per-row step and rescale inside it; compiler/numerics/pertoken.py). The grid is
        per tensor, or per channel under the per-row steps where :func:`balances` says so (with ``repq``, only an
        input with an outlier channel: per-channel maxima of a few calibration rows otherwise overfit them, held-out
        GPT-2 tiny 0.9987 -> 0.9995). A GELU output is shifted by a static offset to >= 0 and takes unsigned codes
        (0..255)."""
        layer = _layer(op)
        iv = self.int_view(op.lhs)
        chan = self.channels.get(op.lhs)
        steps = None
        w_bits, group = self.layer_recipes.get(layer, (self.w_bits, self.group))
        if (iv is not None and chan is not None and not isinstance(iv.owner, df.GeluOp)
                and balances(self.balance, chan)):
            # Outlier channels too: a 16-bit step per channel (its calibrated max, RepQ-ViT; or SmoothQuant's alpha
            # searched for this GEMM's weight width), folded into the weights' rows, then the per-token steps on top.
            steps = TOKEN_HEADROOM * np.maximum(chan, self.range_of(op.lhs) * 1e-3) / _Q16
            if self.balance == "smoothquant" and self.rows.get(op.lhs):
                w = np.asarray(self.weights[df.layer_of(op.rhs.owner)], np.float32)  # type: ignore[arg-type]
                choice = smooth_scales(self.rows[op.lhs], w, w_bits, group=group)
                self.choices.setdefault(op.layer_name(), {}).update(alpha=choice.alpha, smoothing=choice.family)
                steps = None if choice.scale is None else TOKEN_HEADROOM * choice.scale * 127 / _Q16
        if steps is not None:
            x = self.requant_channels(iv, steps, 16, "requant16c", op)  # pyright: ignore[reportArgumentType] (iv is an int view: a value)
            fx = self.fmt[x]
        else:
            x, fx = self.q(op.lhs, 16, op, scale=TOKEN_HEADROOM * self.range_of(op.lhs) / _Q16)
        s_x = float(fx.scale) if fx.per_tensor else 1.0
        offset, unsigned = 0, False
        if iv is not None and isinstance(iv.owner, df.GeluOp):
            floor = self.gelu_floor(iv)
            offset, unsigned = int(np.ceil(-floor / s_x)) + 1, True
        w_real = np.asarray(self.weights[df.layer_of(op.rhs.owner)], dtype=np.float64)  # type: ignore
        # Per-group steps work as on the per-tensor path: the group rescale sits between the array's partial sums
        # and the per-row rescale (compiler/numerics/pertoken.py); unsigned codes are 9 bits wide for its bound.
        rhs, fit = self.static_weight(op, w_bits, group, fx, in_bits=9 if unsigned else 8,
                                      tag="token")
        s_w = fit.scale
        codes = fit.integer()
        # Largest |acc * t - offset * colsum| any 16-bit input can give: |x'| <= 2^15 + offset, plus a step per row.
        l1 = float(np.abs(codes).sum(axis=0).max(initial=0))
        bound = ((1 << 15) + 2 * offset + 256) * l1
        shift = max(0, int(np.ceil(np.log2(max(bound, 1.0) / (2**31 - 1)))))
        s_acc = s_x * np.asarray(s_w, np.float64) * 2.0**shift
        bias = None
        b = self.bias_real(op, w_real)
        if b is not None:
            b_int = np.clip(np.round(b / s_acc), -(2**31), 2**31 - 1).astype(np.int32)
            bias = self.weight(self.unique(f"{layer}.bias.q32"), b_int, IntegerType(32), op)
        new = df.GemmOp(layer, x, rhs, bias, _ttype(op.result, IntegerType(32)), IntegerType(32))
        for k, value in op.attributes.items():
            new.attributes[k] = value
        for k, size in fit.attributes().items():
            new.attributes[k] = IntegerAttr(size, i64)
        new.attributes[PER_TOKEN_ATTR] = DictionaryAttr({"offset": IntegerAttr(offset, i64),
                                                         "unsigned": IntegerAttr(int(unsigned), i64),
                                                         "shift": IntegerAttr(shift, i64)})
        if not fx.per_tensor:
            new.attributes["balanced"] = UnitAttr()
        self.choices.setdefault(layer, {}).update(granularity="per-token", **({"unsigned": True} if unsigned else {}),
                                                  **({"per_channel": True} if not fx.per_tensor else {}))
        self.produce(op, new, _Fmt(32, s_acc))
