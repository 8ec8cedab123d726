"""``quantize``: post-training integer quantization in I-ViT's style, made visible in the IR.

What changes (``mode=int8``; ``w4a8`` the same with 4-bit weights):

* every GEMM with a constant weight: weights symmetric per output channel (int8 / int4, scale max|w| / (2^(b-1)-1);
  a grouped convolution's batched [G, K, N] weight: per group and channel, [G, 1, N]; with ``group`` a step per
  ``group`` rows of K and output channel as 8-bit multipliers under the channel's step, compiler/quant_groups.py),
  activations symmetric per tensor int8,
  bias int32 at S_x * S_w; operands become ``i8``, the accumulator ``i32``;
* attention: q, k, v int8; scores and A.V accumulate in integers, the softmax unit in between (``set-softmax``);
* GELU takes int8 (ShiftGELU, as I-ViT; int16 where its x0 needs a finer grid, ``approx.gelu_input_format``) or
  int16 (the others), LayerNorm int16; their outputs stay integers with the scale their kernel defines;
* MoE blocks (``dataflow.moe``): input int8 (channel-balanced like a GEMM's when it comes from a LayerNorm),
  expert weights w1 / w2 int8 (int4) per expert and output channel, biases int32, int32 accumulators; dyadic
  requants fc1 -> activation input (16 bits, 8 for ReLU) -> int8 -> fc2 -> int16 output; the gate stays at up to
  16 bits per tensor (routing decisions are discrete: a gate step that flips a top-k choice costs far more accuracy
  than the T x D x E gate GEMM costs cycles; Edge-MoE's gate runs in its ap_fixed<32,10> datapath). Expert formats
  are sized on the calibration data per expert (compiler/simulate/moe.py has the arithmetic);
* residual adds (an add of two activations) are I-ViT's ``QuantAct(16)``: each branch requantized to the 16-bit
  output scale, summed, clamped;
* wherever a consumer needs a narrower per-tensor format, a ``dataflow.requant`` (dyadic multiplier m / 2^e per
  channel, I-ViT's ``fixedpoint_mul``) is inserted; where a float op reads an integer, a dequantize cast.

Recipes (compiler/quant_recipes.py), none of which changes the integer datapath: ``balance`` gives a GEMM input fed
by an integer op one int8 step per channel (``repq``: its calibrated max, RepQ-ViT; ``smoothquant``: SmoothQuant's
or a weight-blind migration, alpha chosen per GEMM input by cross-validated output error on the calibration rows,
or per tensor if that wins), applied by a per-channel requant and folded into the weights' rows; ``observer`` sizes
per-tensor int8 activations (max, percentile, MSE or entropy); ``rounding=gptq`` rounds static weights with GPTQ.
``granularity=per-token`` does change the datapath: static GEMMs quantize their (16-bit) input per row at run time
(compiler/quant_activation.py, compiler/numerics/pertoken.py).

Activation scales come from calibration (compiler/calibrate.py): the data in ``env.artifacts["calibration"]``
(``{"names": [...], "data": {name: array with a leading sample axis}, "source": "..."}``) or, without it,
deterministic synthetic samples; the report's ``numerics.calibration`` says which.

IR conventions (the simulator reads them, compiler/simulate/kernels.py):
``dataflow.elementwise`` ``cast`` with ``attrs = {quant = "quantize", scale, bits}`` / ``{quant = "dequantize"}``;
``dataflow.elementwise`` ``add`` with ``attrs = {quant = "add", scale, bits}`` and ``[m0, e0, m1, e1]`` (rows x
channels) in the WeightStore under its layer; ``dataflow.requant`` with ``[m, e]`` there and its output scale
in the ``scale`` attribute; quantized weights as ``<name>.q8`` + ``<name>.q8.scale`` (per channel); a per-group
GEMM carries ``weight_group`` / ``group_scale_bits`` and its multipliers [G, N] under ``<weight>.gscale``.
An integer ``dataflow.moe`` carries ``requant`` (its WeightStore prefix), ``scale`` (its int16 output's) and
``hidden_bits`` attributes; the entries and the arithmetic are listed in compiler/simulate/moe.py.

Derived scales (accumulators, kernel outputs) are computed by calling the simulator's kernels on a zero input, so
the pass and the simulator cannot disagree about a format.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from xdsl.context import Context
from xdsl.dialects import func
from xdsl.dialects.builtin import (
    DictionaryAttr,
    FloatAttr,
    IntegerAttr,
    IntegerType,
    ModuleOp,
    StringAttr,
    TensorType,
    UnitAttr,
    f32,
    f64,
    i64,
)
from xdsl.ir import Operation, SSAValue
from xdsl.passes import ModulePass

from compiler.calibrate import activation_ranges, synthetic_inputs
from compiler.context import env_of
from compiler.dialect import dataflow as df
from compiler.frontend.qdq import QDQ_RANGE_ATTR
from compiler.numerics.quant import dyadic, dyadic_per_channel
from compiler.quant_activation import GRANULARITY, ActivationRecipes
from compiler.quant_format import GPTQ_DAMP
from compiler.quant_format import Fmt as _Fmt
from compiler.quant_format import layer_of as _layer
from compiler.quant_format import shape_of as _shape
from compiler.quant_format import tensor_type as _ttype
from compiler.quant_groups import (
    GROUP_ATTR,
    GROUP_SCALE_SUFFIX,
    GROUP_SIZES,
    MAX_ROWS_GROUPED,
    SCALE_BITS_ATTR,
    fit_grouped,
)
from compiler.quant_recipes import OBSERVERS, gptq_quantize, observe_range, quantize_weight, smooth_scales
from compiler.simulate import approx as A
from compiler.simulate._threads import single_threaded
from compiler.simulate.kernels import softmax_bits
from compiler.simulate.moe import (
    HIDDEN_BITS_ATTR,
    OUT_BITS,
    REQUANT_ATTR,
    MoeRanges,
    activation_int,
    hidden_bits,
    moe_ranges,
)
from compiler.simulate.rope import ROPE_FRAC_BITS, ROPE_OUT_BITS, rope_tables_q
from hw.errors import InputError

__all__ = ["Quantize", "QUANT_MODES"]

QUANT_MODES = {"int8": 8, "w4a8": 4}
#: How GEMM inputs with outlier channels get their int8 steps: ``none`` one step per tensor; ``repq`` one per
#: channel (its calibrated max, RepQ-ViT), folded into the weights; ``smoothquant`` per channel with SmoothQuant's
#: alpha searched per GEMM input (compiler/quant_recipes.py), or per tensor where that is more accurate.
BALANCE = ("none", "repq", "smoothquant")
ROUNDING = ("nearest", "gptq")
#: At most this many calibration rows per GEMM input are kept for the searches (alpha, GPTQ's Hessian).
MAX_ROWS = 512
_KEEP_SCALE = ("reshape", "flatten", "squeeze", "unsqueeze", "transpose")


def _qmax(bits: int) -> int:
    return (1 << (bits - 1)) - 1


def _attrs(**kw: Any) -> DictionaryAttr:
    conv = {k: StringAttr(v) if isinstance(v, str) else (IntegerAttr(v, i64) if isinstance(v, int)
                                                        else FloatAttr(float(v), f64)) for k, v in kw.items()}
    return DictionaryAttr(conv)


@dataclass
class _Quantizer(ActivationRecipes):
    weights: dict[str, np.ndarray]
    ranges: dict[SSAValue, float]
    w_bits: int
    fmt: dict[SSAValue, _Fmt] = field(default_factory=dict)
    amax: dict[SSAValue, float] = field(default_factory=dict)
    cache: dict[tuple[int, int] | tuple[int, int, float | None], SSAValue] = field(default_factory=dict)
    names: set[str] = field(default_factory=set)
    channels: dict[SSAValue, np.ndarray] = field(default_factory=dict)
    balance: str = "repq"
    moe_ranges: dict[int, MoeRanges] = field(default_factory=dict)
    rows: dict[SSAValue, list[np.ndarray]] = field(default_factory=dict)
    ranges8: dict[SSAValue, float] = field(default_factory=dict)
    rounding: str = "nearest"
    choices: dict[str, dict[str, Any]] = field(default_factory=dict)
    granularity: str = "per-tensor"
    offsets: dict[SSAValue, float] = field(default_factory=dict)
    gelu_offsets: dict[Operation, float] = field(default_factory=dict)
    group: int = 0
    #: layer -> (weight bits, group size or 0) where a layer differs from ``w_bits`` / ``group`` (--quant auto)
    layer_recipes: dict[str, tuple[int, int]] = field(default_factory=dict)

    # ----- helpers -----------------------------------------------------------------------------------------------
    def unique(self, name: str) -> str:
        base, i = name, 1
        while name in self.names or name in self.weights:
            i += 1
            name = f"{base}_{i}"
        self.names.add(name)
        return name

    def range_of(self, v: SSAValue) -> float:
        amax = self.amax.get(v, self.ranges.get(v))
        if amax is None:
            raise InputError(f"quantize: no calibrated range for a value of '{_layer(v.owner)}'"  # type: ignore[arg-type]
                             " (it was never computed on the calibration data)")
        return max(amax, 1e-8)

    def int_view(self, v: SSAValue) -> SSAValue | None:
        """The integer value behind ``v`` when ``v`` is one of our dequantize casts."""
        owner = v.owner
        if isinstance(owner, df.ElementwiseOp) and owner.operands and owner.operands[0] in self.fmt:
            attrs = owner.attrs
            if isinstance(attrs, DictionaryAttr) and attrs.data.get("quant") == StringAttr("dequantize"):
                return owner.operands[0]
        return None

    def weight(self, name: str, value: np.ndarray, el: Any, before: Operation) -> SSAValue:
        self.weights[name] = value
        op = df.WeightOp(name, TensorType(el, list(value.shape)))
        before.parent_block().insert_op_before(op, before)  # type: ignore[union-attr]
        return op.result

    def insert_before(self, op: Operation, before: Operation) -> Operation:
        before.parent_block().insert_op_before(op, before)  # type: ignore[union-attr]
        return op

    def cast(self, layer: str, x: SSAValue, el: Any, attrs: DictionaryAttr, before: Operation) -> SSAValue:
        op = df.ElementwiseOp.create(operands=[x], result_types=[_ttype(x, el)], properties={
            "layer": StringAttr(self.unique(layer)), "kind": StringAttr("cast"), "attrs": attrs})
        return self.insert_before(op, before).results[0]

    def produce(self, old: Operation, new: Operation, fmt: _Fmt | None) -> None:
        """``new`` (inserted before ``old``) replaces ``old``; a dequantize cast keeps float readers working."""
        self.insert_before(new, old)
        out, res = old.results[0], new.results[0]
        self._carry(out, res)
        if fmt is None:
            self.amax[res] = self.range_of(out)
            if out in self.channels:
                self.channels[res] = self.channels[out]
            out.replace_all_uses_with(res)
        else:
            self.fmt[res] = fmt
            self.amax[res] = self.range_of(out)
            deq = self.cast(_layer(new) + ".dequant", res, out.type.get_element_type(),  # type: ignore[attr-defined]
                            _attrs(quant="dequantize"), old)
            self.amax[deq] = self.amax[res]
            self._carry(out, deq)
            if out in self.channels:
                self.channels[res] = self.channels[deq] = self.channels[out]
            out.replace_all_uses_with(deq)
        old.detach()
        old.erase()

    def _carry(self, old: SSAValue, new: SSAValue) -> None:
        for table in (self.rows, self.ranges8):
            if old in table:
                table[new] = table[old]  # type: ignore[index]

    # ----- formats consumers ask for ------------------------------------------------------------------------------
    def q(self, v: SSAValue, bits: int, before: Operation, scale: float | None = None) -> tuple[SSAValue, _Fmt]:
        """``v`` as a per-tensor integer of at most ``bits`` bits (inserting a quantize or requant if needed).

        ``scale``: a step the consumer asks for (default: the calibrated range over the ``bits`` grid)."""
        iv = self.int_view(v)
        if scale is None and iv is not None and self.fmt[iv].per_tensor and self.fmt[iv].bits <= bits:
            return iv, self.fmt[iv]
        key = (id(iv if iv is not None else v), bits, scale)
        if key in self.cache:
            got = self.cache[key]
            return got, self.fmt[got]
        if scale is None:
            observed = self.ranges8.get(v) if bits <= 8 else None
            scale = (max(observed, 1e-8) if observed else self.range_of(v)) / _qmax(bits)
        src = iv if iv is not None else v
        producer = _layer(src.owner) if isinstance(src.owner, Operation) else "input"
        if iv is None:
            out = self.cast(f"{producer}.quant{bits}", v, IntegerType(bits),
                            _attrs(quant="quantize", scale=scale, bits=bits), before)
        else:
            out = self.requant(iv, scale, bits, f"{producer}.requant{bits}", before)
        self.fmt[out] = _Fmt(bits, scale)
        self.amax[out] = self.range_of(v)
        self.cache[key] = out
        return out, self.fmt[out]

    @staticmethod
    def _dyadic_rows(ratios: np.ndarray) -> np.ndarray:
        """[[m...], [e...]] (int64, 2 x len) for the real ratios S_in / S_out (I-ViT's frexp rule)."""
        m, e = dyadic_per_channel(torch.from_numpy(np.ascontiguousarray(ratios, dtype=np.float64)).reshape(-1))
        return np.stack([m.numpy(), e.numpy()])

    def requant(self, x: SSAValue, scale: float, bits: int, layer: str, before: Operation) -> SSAValue:
        name = self.unique(layer)
        ratio = np.atleast_1d(np.asarray(self.fmt[x].scale, np.float64)) / scale
        rows = self._dyadic_rows(ratio.reshape(-1))
        # A grouped GEMM's [G, 1, N] scales keep their shape: [2, G, 1, N] broadcasts on its [G, M, N] result.
        self.weights[name] = rows.reshape((2, *ratio.shape)) if ratio.ndim > 1 else rows
        op = df.RequantOp.create(operands=[x], result_types=[_ttype(x, IntegerType(bits))],
                                 properties={"layer": StringAttr(name), "out_bits": IntegerAttr(bits, i64)})
        op.attributes["scale"] = FloatAttr(float(scale), f64)
        return self.insert_before(op, before).results[0]

    def q_balanced(self, v: SSAValue, before: Operation) -> tuple[SSAValue, _Fmt] | None:
        """``v`` as int8 with one scale per channel (last axis), for a GEMM that folds them into its weights.

        RepQ-ViT's post-LayerNorm reparameterization in requant form: channels with outliers (BERT's LayerNorm and
        FFN outputs have a few 10-50x larger than the rest) no longer set the step of every other channel. Only
        integer sources qualify: the per-channel dyadic requant is where the channel scales are applied.
        """
        iv = self.int_view(v)
        chan = self.channels.get(v)
        if self.balance == "none" or iv is None or chan is None:
            return None
        key = (id(iv), -8)
        if key in self.cache:
            got = self.cache[key]
            return (got, self.fmt[got]) if got is not None else None
        scale = np.maximum(chan, self.range_of(v) * 1e-3) / _qmax(8)
        if self.balance == "smoothquant" and v in self.rows:
            consumers = [u.operation for u in v.uses if isinstance(u.operation, df.GemmOp)
                         and u.operation.lhs is v and isinstance(u.operation.rhs.owner, df.WeightOp)]
            if consumers:
                w = np.concatenate([self.weights[df.layer_of(c.rhs.owner)]  # type: ignore[arg-type]
                                    for c in consumers], axis=1)
                choice = smooth_scales(self.rows[v], w, self.w_bits, group=self.group)
                for c in consumers:
                    self.choices.setdefault(_layer(c), {}).update(alpha=choice.alpha, smoothing=choice.family)
                if choice.scale is None:
                    self.cache[key] = None  # type: ignore[assignment]
                    return None
                scale = choice.scale
        producer = _layer(iv.owner) if isinstance(iv.owner, Operation) else "input"
        name = self.unique(f"{producer}.requant8c")
        ratio = np.broadcast_to(np.atleast_1d(np.asarray(self.fmt[iv].scale, dtype=np.float64)), scale.shape) / scale
        self.weights[name] = self._dyadic_rows(ratio)
        op = df.RequantOp.create(operands=[iv], result_types=[_ttype(iv, IntegerType(8))],
                                 properties={"layer": StringAttr(name), "out_bits": IntegerAttr(8, i64)})
        self.weights[name + ".scale"] = scale
        out = self.insert_before(op, before).results[0]
        self.fmt[out] = _Fmt(8, scale)
        self.amax[out] = self.range_of(v)
        self.cache[key] = out
        return out, self.fmt[out]

    # ----- ops ----------------------------------------------------------------------------------------------------
    def gemm(self, op: df.GemmOp) -> None:
        layer = _layer(op)
        static = isinstance(op.rhs.owner, df.WeightOp)
        if static and self.granularity == "per-token" and len(_shape(op.rhs)) == 2:
            self.gemm_per_token(op)
            return
        got = self.q_balanced(op.lhs, op) if static else None
        x, fx = got if got is not None else self.q(op.lhs, 8, op)
        grouped: dict[str, int] = {}
        if static:
            wname = df.layer_of(op.rhs.owner)  # type: ignore[arg-type]
            w = np.asarray(self.weights[wname], dtype=np.float64)
            w_bits, group = self.layer_recipes.get(layer, (self.w_bits, self.group))
            key = f"{wname}.q{w_bits}"
            if not fx.per_tensor:
                # Channel scales of the input move into the weights' rows: x_c s_c W_cn = x_c (s_c W_cn).
                w = w * np.asarray(fx.scale)[:, None]
                key = self.unique(f"{wname}.balanced.q{w_bits}")
            rows = self.rows.get(op.lhs)
            fit = None
            if group and w.ndim == 2 and w.shape[0] > group:  # per-group steps (compiler/quant_groups.py)
                x_rows = (np.concatenate(rows) / np.asarray(fx.scale, np.float64)
                          if self.rounding == "gptq" and rows is not None else None)
                with single_threaded():  # GPTQ's factorizations: a BLAS thread pool on 2 busy cores costs 5x
                    fit = fit_grouped(w, w_bits, group, x_rows)
            if fit is not None:
                codes, s_w = fit.codes, fit.s_n
                key = self.unique(f"{wname}.g{group}.q{w_bits}")
                self.weights[key + GROUP_SCALE_SUFFIX] = fit.q.astype(np.int16)
                grouped = {GROUP_ATTR: group, SCALE_BITS_ATTR: fit.scale_bits}
                self.choices.setdefault(layer, {}).update(
                    weight_group=group, **({"rounding": "gptq"} if x_rows is not None else {}))
            elif w.ndim == 3:  # a grouped conv's [G, K, N]: per group and output channel, [G, 1, N] (broadcasts)
                s_w = np.maximum(np.abs(w).max(axis=-2, keepdims=True), 1e-12) / _qmax(w_bits)
                codes = np.clip(np.round(w / s_w), -_qmax(w_bits) - 1, _qmax(w_bits))
            elif self.rounding == "gptq" and rows is not None:
                # GPTQ sees the GEMM's input in the units of its integer codes (per-channel steps included).
                with single_threaded():
                    codes, s_w = gptq_quantize(w, np.concatenate(rows) / np.asarray(fx.scale, np.float64), w_bits,
                                                 damp=GPTQ_DAMP)
                key = self.unique(f"{wname}.gptq.q{w_bits}")
                self.choices.setdefault(layer, {})["rounding"] = "gptq"
            else:
                codes, s_w = quantize_weight(w, w_bits)
            if key not in self.weights:
                self.weights[key + ".scale"] = s_w
            rhs = self.weight(key, codes.astype(np.int8), IntegerType(w_bits), op)
        else:
            rhs, fw = self.q(op.rhs, 8, op)
            s_w = np.asarray(fw.scale)
        s_acc = (float(fx.scale) if fx.per_tensor else 1.0) * s_w
        bias = None
        b = self.bias_real(op, np.asarray(self.weights[df.layer_of(op.rhs.owner)], np.float64)  # type: ignore
                           ) if static else (None if op.bias is None else self.bias_real(op, np.zeros(0)))
        if b is not None:
            b_int = np.clip(np.round(b / s_acc), -(2**31), 2**31 - 1).astype(np.int32)
            bias = self.weight(self.unique(f"{layer}.bias.q32"), b_int, IntegerType(32), op)
        new = df.GemmOp(layer, x, rhs, bias, _ttype(op.result, IntegerType(32)), IntegerType(32))
        for key, value in op.attributes.items():
            new.attributes[key] = value
        for key, size in grouped.items():
            new.attributes[key] = IntegerAttr(size, i64)
        if not fx.per_tensor:
            new.attributes["balanced"] = UnitAttr()
        self.produce(op, new, _Fmt(32, s_acc))

    def attention(self, op: df.AttentionOp) -> None:
        approx = op.softmax_choice()
        (q, fq), (k, fk), (v, fv) = (self.q(x, 8, op) for x in (op.q, op.k, op.v))
        out_el = f32 if approx == df.SoftmaxApprox.SOFTMAX_FREE else IntegerType(32)
        new = df.AttentionOp.create(
            operands=[q, k, v] + ([op.mask] if op.mask is not None else []),
            result_types=[_ttype(op.result, out_el)],
            properties=dict(op.properties), attributes=dict(op.attributes))
        if approx == df.SoftmaxApprox.SOFTMAX_FREE:
            self.produce(op, new, None)
            return
        s = float(fq.scale) * float(fk.scale) * op.scale_value()
        _, ps = A.softmax_int(approx, np.zeros((1, 2), np.int64), s, softmax_bits(op, approx))
        self.produce(op, new, _Fmt(32, ps * float(fv.scale)))

    def unary(self, op: Operation, bits: int, scale: float | None = None) -> None:
        x, fx = self.q(op.operands[0], bits, op, scale)
        bits = fx.bits
        new = op.__class__.create(operands=[x] + list(op.operands[1:]),
                                  result_types=[_ttype(op.results[0], IntegerType(32))],
                                  properties=dict(op.properties), attributes=dict(op.attributes))
        probe = np.zeros((1, _shape(op.operands[0])[-1]), np.int64)
        s = float(fx.scale)
        if isinstance(op, df.GeluOp):
            _, out = A.gelu_int(op.approx_choice(), probe, s)
            out *= self.gelu_gain(op, bits, s)
        elif isinstance(op, df.SoftmaxOp):
            approx = op.approx_choice()
            _, out = A.softmax_int(approx, probe, s, softmax_bits(op, approx))
        else:
            assert isinstance(op, df.LayerNormOp)
            gamma = np.asarray(self.weights[df.layer_of(op.operands[1].owner)], np.float64)  # type: ignore
            beta = (np.asarray(self.weights[df.layer_of(op.operands[2].owner)], np.float64)  # type: ignore
                    if len(op.operands) > 2 else None)
            try:
                _, out = A.layernorm_int(op.approx_choice(), probe, s, gamma, beta, op.epsilon_value())
            except ValueError as err:
                raise InputError(f"quantize: layernorm '{_layer(op)}': {err}") from None
        self.produce(op, new, _Fmt(32, out))
        if op in self.gelu_offsets:
            self.mark_offset(new, self.gelu_offsets.pop(op))

    def rope(self, op: df.RopeOp) -> None:
        """int8 x, Q1.14 int16 tables, int32 multiply-add pairs, a dyadic requant to int8 at the calibrated output
        step (compiler/simulate/rope.py has the arithmetic)."""
        x, fx = self.q(op.input, 8, op)
        tables = []
        for v in (op.cos, op.sin):
            name = df.layer_of(v.owner)  # type: ignore[arg-type]
            tables.append((f"{name}.q{ROPE_FRAC_BITS}", np.asarray(self.weights[name], np.float64)))
        (cos_name, cos), (sin_name, sin) = tables
        cos_q, sin_q = rope_tables_q(cos, sin)
        s_y = self.range_of(op.result) / _qmax(ROPE_OUT_BITS)
        name = self.unique(_layer(op))
        self.weights[name] = np.array(dyadic(float(fx.scale) * 2.0**-ROPE_FRAC_BITS / s_y), dtype=np.int64)
        operands = [x, self.weight(cos_name, cos_q, IntegerType(16), op),
                    self.weight(sin_name, sin_q, IntegerType(16), op)]
        properties = dict(op.properties)
        properties["layer"] = StringAttr(name)
        new = df.RopeOp.create(operands=operands, result_types=[_ttype(op.result, IntegerType(ROPE_OUT_BITS))],
                               properties=properties, attributes=dict(op.attributes))
        new.attributes["scale"] = FloatAttr(s_y, f64)
        self.produce(op, new, _Fmt(ROPE_OUT_BITS, s_y))

    def residual_add(self, op: df.ElementwiseOp) -> bool:
        a, b = op.inputs[0], op.inputs[1]
        ia, ib = self.int_view(a), self.int_view(b)
        if ia is None and ib is None:
            return False
        if any(isinstance(x.owner, df.WeightOp) for x in (a, b)) or _shape(a) != _shape(b):
            return False
        ia = ia if ia is not None else self.q(a, 16, op)[0]
        ib = ib if ib is not None else self.q(b, 16, op)[0]
        scale = self.range_of(op.result) / _qmax(16)
        name = self.unique(_layer(op))
        s_a = np.atleast_1d(np.asarray(self.fmt[ia].scale, np.float64))
        s_b = np.atleast_1d(np.asarray(self.fmt[ib].scale, np.float64))
        width = np.broadcast_shapes(s_a.shape, s_b.shape)
        # Rows m0, e0, m1, e1 (one column per channel, or one column): each branch's own dyadic ratio to the output.
        self.weights[name] = np.concatenate([self._dyadic_rows(np.broadcast_to(s_a, width) / scale),
                                             self._dyadic_rows(np.broadcast_to(s_b, width) / scale)])
        new = df.ElementwiseOp.create(operands=[ia, ib], result_types=[_ttype(op.result, IntegerType(16))],
                                      properties={"layer": StringAttr(name), "kind": StringAttr("add"),
                                                  "attrs": _attrs(quant="add", scale=scale, bits=16)})
        self.produce(op, new, _Fmt(16, scale))
        return True

    def move(self, op: df.MoveOp) -> bool:
        if op.kind_value() not in _KEEP_SCALE or len(op.inputs) != 1 or len(op.outputs) != 1:
            return False
        iv = self.int_view(op.inputs[0])
        if iv is None:
            return False
        x, fx = (iv, self.fmt[iv]) if self.fmt[iv].per_tensor else self.q(op.inputs[0], 16, op)
        new = df.MoveOp.create(operands=[x], result_types=[_ttype(op.outputs[0], x.type.get_element_type())],  # type: ignore
                               properties=dict(op.properties), attributes=dict(op.attributes))
        self.produce(op, new, _Fmt(fx.bits, fx.scale))
        return True

    def moe(self, op: df.MoeOp) -> None:
        consts = [op.gate, op.w1, op.w2] + [v for v in (op.b1, op.b2) if v is not None]
        ranges = self.moe_ranges.get(id(op))
        if ranges is None or not all(isinstance(v.owner, df.WeightOp) for v in consts):
            return  # stays float behind a dequantize: nothing to size its formats by
        layer, act = _layer(op), op.activation_value()
        got = self.q_balanced(op.input, op)
        x, fx = got if got is not None else self.q(op.input, 8, op)

        def value(v: SSAValue) -> np.ndarray:
            return np.asarray(self.weights[df.layer_of(v.owner)], np.float64)  # type: ignore[arg-type]

        def name(v: SSAValue, bits: int) -> str:
            return self.unique(f"{df.layer_of(v.owner)}.q{bits}")  # type: ignore[arg-type]

        # Balanced input: its channel scales move into the rows of the gate and of every expert's w1.
        fold = np.ones(1) if fx.per_tensor else np.asarray(fx.scale, np.float64)
        s_x = float(fx.scale) if fx.per_tensor else 1.0
        gate, w1, w2 = value(op.gate) * fold[:, None], value(op.w1) * fold[None, :, None], value(op.w2)
        # Gate bits: as many as 16, while an int8 x int-b dot product over D still fits the int32 accumulator.
        g_bits = int(min(16, np.floor(np.log2((2**31 - 1) / (128 * gate.shape[0]))) + 1))
        s_g = max(float(np.abs(gate).max(initial=0)), 1e-12) / _qmax(g_bits)
        gate_q = self.weight(name(op.gate, g_bits), np.round(gate / s_g).astype(np.int16), IntegerType(g_bits), op)
        self.weights[df.layer_of(gate_q.owner) + ".scale"] = np.asarray(s_g)  # type: ignore[arg-type]
        wb = self.w_bits
        s_w1 = np.maximum(np.abs(w1).max(axis=1), 1e-12) / _qmax(wb)  # [E, H]: per expert, per output channel
        s_w2 = np.maximum(np.abs(w2).max(axis=1), 1e-12) / _qmax(wb)  # [E, D]
        experts = []
        for v, w, s in ((op.w1, w1, s_w1), (op.w2, w2, s_w2)):
            q = np.clip(np.round(w / s[:, None, :]), -_qmax(wb) - 1, _qmax(wb)).astype(np.int8)
            experts.append(self.weight(name(v, wb), q, IntegerType(wb), op))
            self.weights[df.layer_of(experts[-1].owner) + ".scale"] = s  # type: ignore[arg-type]
        h_bits = hidden_bits(act)
        s_h = np.maximum(ranges.pick("hidden"), 1e-8) / _qmax(h_bits)  # [E]
        s_acc1 = s_x * s_w1
        prefix = self.unique(f"{layer}.requant")
        e, h, d = w1.shape[0], w1.shape[2], w1.shape[1]
        self.weights[prefix + ".fc1"] = self._dyadic_rows((s_acc1 / s_h[:, None]).reshape(-1)).reshape(2, e, h)
        self.weights[prefix + ".act.scale"] = s_h
        if h_bits == 8:  # ReLU / identity: the int8 grid in is the grid out
            s_a = s_h
        else:
            raw = np.array([activation_int(act, np.zeros((1, 1), np.int64), float(s))[1] for s in s_h])
            s_a = np.maximum(ranges.pick("act"), 1e-8) / _qmax(8)
            self.weights[prefix + ".act"] = self._dyadic_rows(raw / s_a)
        s_acc2 = s_a[:, None] * s_w2
        s_out = max(float(ranges.pick("out").max(initial=0)), self.range_of(op.result), 1e-8) / _qmax(OUT_BITS)
        self.weights[prefix + ".fc2"] = self._dyadic_rows((s_acc2 / s_out).reshape(-1)).reshape(2, e, d)
        biases = []
        for key, v, s in (("b1", op.b1, s_acc1), ("b2", op.b2, s_acc2)):
            if v is not None:
                b_int = np.clip(np.round(value(v) / s), -(2**31), 2**31 - 1).astype(np.int32)
                biases.append(self.weight(self.unique(f"{layer}.{key}.q32"), b_int, IntegerType(32), op))
        new = df.MoeOp.create(operands=[x, gate_q, *experts, *biases],
                              result_types=[_ttype(op.result, IntegerType(OUT_BITS))],
                              properties=dict(op.properties), attributes=dict(op.attributes))
        new.attributes[REQUANT_ATTR] = StringAttr(prefix)
        new.attributes["scale"] = FloatAttr(s_out, f64)
        new.attributes[HIDDEN_BITS_ATTR] = IntegerAttr(h_bits, i64)
        if not fx.per_tensor:
            new.attributes["balanced"] = UnitAttr()
        self.produce(op, new, _Fmt(OUT_BITS, s_out))

    def run(self, fn: func.FuncOp) -> None:
        for op in list(fn.body.block.ops):
            if isinstance(op, df.GemmOp) and op.lhs.type.get_element_type() == f32:  # type: ignore[attr-defined]
                self.gemm(op)
            elif isinstance(op, df.MoeOp) and op.input.type.get_element_type() == f32:  # type: ignore[attr-defined]
                self.moe(op)
            elif isinstance(op, df.AttentionOp):
                self.attention(op)
            elif isinstance(op, df.RopeOp) and op.input.type.get_element_type() == f32:  # type: ignore[attr-defined]
                self.rope(op)
            elif isinstance(op, df.GeluOp):
                self.unary(op, *A.gelu_input_format(op.approx_choice(), self.range_of(op.input)))
            elif isinstance(op, df.LayerNormOp) and op.norm_kind() == df.LayerNormKind.LAYERNORM:
                self.unary(op, 16)
            elif isinstance(op, df.SoftmaxOp) and self.int_view(op.input) is not None:
                self.unary(op, 16)
            elif isinstance(op, df.ElementwiseOp) and op.kind_value() == "add" and len(op.inputs) == 2:
                self.residual_add(op)
            elif isinstance(op, df.MoveOp):
                self.move(op)
        for op in reversed(list(fn.body.block.ops)):  # casts nobody reads any more
            if isinstance(op, df.ElementwiseOp) and all(not r.uses for r in op.results) and \
                    isinstance(op.attrs, DictionaryAttr) and "quant" in op.attrs.data:
                op.detach()
                op.erase()


@dataclass(frozen=True)
class Quantize(ModulePass):
    """Quantize the module (``mode`` int8 | w4a8) with activation ranges from calibration.

    ``percentile``: the statistic of |x| per value (100 = max); ``samples``: synthetic samples when no data.
    ``observer``: how an int8 activation's per-tensor range is taken from each calibration sample's values
    (``minmax``, ``percentile`` at ``percentile`` or 99.99, ``mse``, ``entropy``: compiler/quant_recipes.py); wider
    values (16-bit residuals, kernel inputs) keep the max. ``balance``: per-channel steps for GEMM inputs
    (:data:`BALANCE`). ``rounding``: ``gptq`` rounds static weights with GPTQ on the calibration rows.
    ``granularity``: ``per-token`` quantizes static GEMM inputs per row at run time (:data:`GRANULARITY`).
    ``group``: static 2-D weights get one step per ``group`` input rows and output channel (0: per channel;
    compiler/quant_groups.py has the format and its integer datapath). ``mode=auto``: per GEMM the cheapest weight
    recipe that keeps the output cosine on the calibration data at ``accuracy_target`` (compiler/quant_auto.py);
    ``layers``: JSON ``{layer: [weight bits, group]}`` overriding ``mode`` / ``group`` per GEMM (what auto chose).
    """

    name = "quantize"
    mode: str = "int8"
    percentile: float = 100.0
    samples: int = 4
    balance: str = "repq"
    observer: str = "minmax"
    rounding: str = "nearest"
    granularity: str = "per-tensor"
    group: int = 0
    accuracy_target: float = 0.99
    layers: str = ""

    def apply(self, ctx: Context, op: ModuleOp) -> None:
        if self.mode == "auto":
            from compiler.quant_auto import choose_recipes

            choose_recipes(self, ctx, op)
            return
        if self.group not in (0, *GROUP_SIZES):
            raise InputError(f"--weight-group {self.group}: unknown choice (valid: none, "
                             f"{', '.join(map(str, GROUP_SIZES))})")
        if self.mode not in QUANT_MODES:
            raise InputError(f"--quant {self.mode}: unknown choice (valid: none, {', '.join(QUANT_MODES)})")
        for key, value, valid in (("observer", self.observer, OBSERVERS), ("balance", self.balance, BALANCE),
                                  ("rounding", self.rounding, ROUNDING),
                                  ("granularity", self.granularity, GRANULARITY)):
            if value not in valid:
                raise InputError(f"quantize: {key}={value}: unknown choice (valid: {', '.join(valid)})")
        env = env_of(ctx, self.name, "the model's weights and calibration data")
        fn = next(o for o in op.walk() if isinstance(o, func.FuncOp))
        calib = env.artifacts.get("calibration")
        if calib is not None:
            names, data = list(calib["names"]), calib["data"]
            count = len(next(iter(data.values())))
            label = f"{calib.get('source', 'data')} ({count} samples)"
        else:
            names = [f"arg{i}" for i in range(len(fn.body.block.args))]
            data = synthetic_inputs(op, names, self.samples)
            label = f"synthetic ({self.samples} samples, seed 0)"
        channels: dict[Any, np.ndarray] = {}
        rows: dict[Any, list[np.ndarray]] = {}
        if self.balance == "smoothquant" or self.rounding == "gptq":
            rows = {o.lhs: [] for o in op.walk() if isinstance(o, df.GemmOp) and isinstance(o.rhs.owner, df.WeightOp)}
        # an approximate integer GELU's output gets its calibrated affine correction (quant_recipes.gelu_correction)
        rows.update({o.input: [] for o in op.walk() if isinstance(o, df.GeluOp)
                     and o.approx_choice() not in (df.GeluApprox.EXACT, df.GeluApprox.TANH)})
        ranges = activation_ranges(op, env.weights, names, data, self.percentile, channels, rows=rows)
        ranges8: dict[Any, float] = {}
        if self.observer != "minmax":
            pct = self.percentile if self.percentile < 100 else 99.99
            ranges8 = activation_ranges(op, env.weights, names, data,
                                        statistic=lambda a: observe_range(a, self.observer, 8, pct))
        kept = {v: _subsample(r, MAX_ROWS_GROUPED if self.group else MAX_ROWS) for v, r in rows.items() if r}
        imported = 0
        for inner in op.walk():  # ranges a QDQ model brings (compiler/frontend/qdq.py) win over calibration
            attr = inner.attributes.get(QDQ_RANGE_ATTR)
            if isinstance(attr, FloatAttr) and inner.results:
                ranges[inner.results[0]] = float(attr.value.data)
                imported += 1
        if imported:
            label += f"; {imported} ranges from the model's QDQ nodes"
        moes = moe_ranges(op, env.weights, names, data) if any(isinstance(o, df.MoeOp) for o in op.walk()) else {}
        quantizer = _Quantizer(env.weights, ranges, QUANT_MODES[self.mode], channels=channels, balance=self.balance,
                               moe_ranges=moes, rows=kept, ranges8=ranges8, rounding=self.rounding,
                               granularity=self.granularity, group=self.group,
                               layer_recipes={k: (int(b), int(g)) for k, (b, g) in
                                              (json.loads(self.layers) if self.layers else {}).items()})
        quantizer.run(fn)
        section = env.artifacts.setdefault("report", {}).setdefault("numerics", {})
        section.update({"quant": self.mode, "weight_bits": QUANT_MODES[self.mode], "activation_bits": 8,
                        "residual_bits": 16, "calibration": label, "calibration_statistic":
                        "max" if self.percentile >= 100 else f"p{self.percentile:g}",
                        "observer": self.observer, "balance": self.balance, "weight_rounding": self.rounding,
                        "activation_granularity": self.granularity})
        if self.group:
            section["weight_group"] = self.group
        if quantizer.choices:
            section["recipe_per_layer"] = quantizer.choices


def _subsample(samples: list[np.ndarray], limit: int = MAX_ROWS) -> list[np.ndarray]:
    """Each sample's rows, evenly thinned (deterministic) to at most ``limit`` in all, so the searches cost the same
    for any amount of calibration data."""
    total = sum(len(r) for r in samples)
    if total <= limit:
        return samples
    keep = max(1, limit // len(samples))
    return [r[np.linspace(0, len(r) - 1, min(keep, len(r))).astype(np.int64)] for r in samples]
