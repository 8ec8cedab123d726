"""The quantize pass's rewriter (compiler/passes/quantize.py has the formats it writes and the IR conventions).

:class:`Quantizer` walks ``main`` once and replaces each float op it can with its integer form: static GEMMs (weights
from compiler/quant_weights.py, per-channel input steps from :meth:`Quantizer.q_balanced`), attention, the integer
nonlinearities, RoPE, residual adds (16-bit, I-ViT's ``QuantAct``), products of two activations (gated FFNs) and
scale-keeping moves (a slice too: Phi-3's fused gate-and-up projection is split by two). The recipes it mixes in
live in their own modules: compiler/quant_activation.py (per-token GEMM inputs, the GELU correction) and
compiler/quant_moe.py (MoE blocks). Every integer value's format is kept in ``fmt``; a dequantize cast after each
rewritten op keeps float readers working until they are rewritten too.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from xdsl.dialects import func
from xdsl.dialects.builtin import (
    DictionaryAttr,
    FloatAttr,
    IntegerAttr,
    IntegerType,
    StringAttr,
    TensorType,
    UnitAttr,
    f32,
    f64,
    i64,
)
from xdsl.ir import Operation, SSAValue

from compiler.dialect import dataflow as df
from compiler.numerics.quant import dyadic, dyadic_per_channel
from compiler.quant_activation import ActivationRecipes, balances
from compiler.quant_format import Fmt as _Fmt
from compiler.quant_format import layer_of as _layer
from compiler.quant_format import shape_of as _shape
from compiler.quant_format import tensor_type as _ttype
from compiler.quant_groups import GROUP_SCALE_SUFFIX
from compiler.quant_moe import MoeRewrite
from compiler.quant_recipes import smooth_scales
from compiler.quant_weights import WeightFit
from compiler.simulate import approx as A
from compiler.simulate.kernels import softmax_bits
from compiler.simulate.moe import MoeRanges
from compiler.simulate.rope import ROPE_FRAC_BITS, ROPE_OUT_BITS, rope_tables_q
from compiler.weight_fit_cache import fit_static_weight
from hw.errors import InputError

__all__ = ["Quantizer", "attrs_of"]

_KEEP_SCALE = ("reshape", "flatten", "squeeze", "unsqueeze", "transpose", "slice")


def _qmax(bits: int) -> int:
    return (1 << (bits - 1)) - 1


def _input_rows(w: np.ndarray) -> np.ndarray:
    """A static GEMM weight as ``[C, *]``, one row per input channel: a batched weight ``[..., C, N]`` (DeBERTa's
    relative-position keys) puts every batch's columns beside each other, since one per-channel input step scales
    the same channel of every batch."""
    w = np.asarray(w)
    return np.moveaxis(w, -2, 0).reshape(w.shape[-2], -1)


#: Element-wise kinds whose output is bounded whatever their input: a gate an integer product can take at 8 bits.
_GATES = ("sigmoid", "tanh", "hardsigmoid")


def _is_gate(v: SSAValue) -> bool:
    return isinstance(v.owner, df.ElementwiseOp) and v.owner.kind_value() in _GATES


def attrs_of(**kw: Any) -> DictionaryAttr:
    """An IR ``attrs`` dictionary from Python strings, ints and floats."""
    conv = {k: StringAttr(v) if isinstance(v, str) else (IntegerAttr(v, i64) if isinstance(v, int)
                                                        else FloatAttr(float(v), f64)) for k, v in kw.items()}
    return DictionaryAttr(conv)


@dataclass
class Quantizer(ActivationRecipes, MoeRewrite):
    """The rewrite state of one quantize run (module docstring); :meth:`run` rewrites a function in place."""

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
        owner = v.owner
        if amax is None and isinstance(owner, df.WeightOp) and df.layer_of(owner) in self.weights:
            # A constant the frontend folded (Pegasus-X's global-token queries, a Gather of a table at constant
            # indices) can sit where an activation goes; calibration never runs it, but its range is its data's.
            data = np.asarray(self.weights[df.layer_of(owner)])
            amax = float(np.abs(data).max()) if data.size and data.dtype.kind == "f" else None
        if amax is None:
            what = f"a value of '{_layer(owner)}'" if isinstance(owner, Operation) else \
                f"model input #{getattr(v, 'index', '?')}"
            raise InputError(f"quantize: no calibrated range for {what} (it was never computed on the calibration "
                             "data)")
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
                            attrs_of(quant="dequantize"), old)
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
                            attrs_of(quant="quantize", scale=scale, bits=bits), before)
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
        integer sources qualify: the per-channel dyadic requant is where the channel scales are applied. With
        ``repq``, only inputs whose channel maxima reach COLUMN_SPREAD times their median: without an outlier
        channel, per-channel maxima of a few calibration rows only overfit them (a channel quiet in calibration
        clips on new data: held-out GPT-2 tiny 0.9816 balanced everywhere, 0.9993 so; benchmarks/
        bench_int8_peer.py).
        """
        iv = self.int_view(v)
        chan = self.channels.get(v)
        if iv is None or chan is None or not balances(self.balance, chan):
            return None  # with repq: no outlier channel, per-channel maxima of a few calibration rows would overfit
        key = (id(iv), -8)
        if key in self.cache:
            got = self.cache[key]
            return (got, self.fmt[got]) if got is not None else None
        scale = np.maximum(chan, self.range_of(v) * 1e-3) / _qmax(8)
        if self.balance == "smoothquant" and v in self.rows:
            consumers = [u.operation for u in v.uses if isinstance(u.operation, df.GemmOp)
                         and u.operation.lhs is v and isinstance(u.operation.rhs.owner, df.WeightOp)]
            if consumers:
                w = np.concatenate([_input_rows(self.weights[df.layer_of(c.rhs.owner)])  # type: ignore[arg-type]
                                    for c in consumers], axis=1)
                choice = smooth_scales(self.rows[v], w, self.w_bits, group=self.group)
                for c in consumers:
                    self.choices.setdefault(_layer(c), {}).update(alpha=choice.alpha, smoothing=choice.family)
                if choice.scale is None:
                    self.cache[key] = None  # type: ignore[assignment]
                    return None
                scale = choice.scale
        out = self.requant_channels(iv, scale, 8, "requant8c", before)
        self.amax[out] = self.range_of(v)
        self.cache[key] = out
        return out, self.fmt[out]

    def requant_channels(self, iv: SSAValue, scale: np.ndarray, bits: int, suffix: str, before: Operation) -> SSAValue:
        """Integer ``iv`` requantized to ``bits`` with one step per channel (last axis), ``scale``: a requant whose
        ``[m, e]`` rows are per channel and whose output steps sit under ``<layer>.scale`` (the simulator and the
        backend read them there), named ``<producer>.<suffix>`` and inserted before ``before``."""
        producer = _layer(iv.owner) if isinstance(iv.owner, Operation) else "input"
        name = self.unique(f"{producer}.{suffix}")
        ratio = np.broadcast_to(np.atleast_1d(np.asarray(self.fmt[iv].scale, dtype=np.float64)), scale.shape) / scale
        self.weights[name] = self._dyadic_rows(ratio)
        self.weights[name + ".scale"] = scale
        op = df.RequantOp.create(operands=[iv], result_types=[_ttype(iv, IntegerType(bits))],
                                 properties={"layer": StringAttr(name), "out_bits": IntegerAttr(bits, i64)})
        out = self.insert_before(op, before).results[0]
        self.fmt[out] = _Fmt(bits, scale)
        return out

    def static_weight(self, op: df.GemmOp, w_bits: int, group: int, fx: _Fmt, in_bits: int = 8,
                      tag: str = "") -> tuple[SSAValue, WeightFit]:
        """The static weight of ``op`` as integer codes (compiler/quant_weights.py), stored and inserted before
        ``op``; its group multipliers under ``<codes>.gscale``. ``fx``: the GEMM input's format (per-channel steps
        move into the weights' rows: x_c s_c W_cn = x_c (s_c W_cn)); GPTQ sees the input in the units of its
        integer codes. ``in_bits``: the widest input code (9 for unsigned per-token codes); ``tag``: a name part."""
        wname = df.layer_of(op.rhs.owner)  # type: ignore[arg-type]
        rows = self.rows.get(op.lhs)
        x_rows = (np.concatenate(rows) / np.asarray(fx.scale, np.float64)
                  if self.rounding == "gptq" and rows is not None else None)
        fit = fit_static_weight(self.weights[wname], None if fx.per_tensor else np.asarray(fx.scale), w_bits, group,
                                x_rows, in_bits)
        parts = [t for t in (tag, "balanced" if not fx.per_tensor and not fit.tag else "", fit.tag) if t]
        key = self.unique(f"{wname}.{'.'.join(parts)}.q{w_bits}") if parts else f"{wname}.q{w_bits}"
        if key not in self.weights:  # an unbalanced round-to-nearest weight is shared by the GEMMs reading it
            self.weights[key + ".scale"] = fit.scale
        if fit.q is not None:
            self.weights[key + GROUP_SCALE_SUFFIX] = fit.q.astype(np.int16)
            self.choices.setdefault(_layer(op), {})["weight_group"] = fit.group
        if fit.gptq:
            self.choices.setdefault(_layer(op), {})["rounding"] = "gptq"
        return self.weight(key, np.asarray(fit.codes).astype(np.int8), IntegerType(w_bits), op), fit

    # ----- ops ----------------------------------------------------------------------------------------------------
    def gemm(self, op: df.GemmOp) -> None:
        layer = _layer(op)
        static = isinstance(op.rhs.owner, df.WeightOp)
        if static and self.granularity == "per-token" and len(_shape(op.rhs)) == 2:
            self.gemm_per_token(op)
            return
        got = self.q_balanced(op.lhs, op) if static else None
        x, fx = got if got is not None else self.q(op.lhs, 8, op)
        fit = None
        if static:
            w_bits, group = self.layer_recipes.get(layer, (self.w_bits, self.group))
            rhs, fit = self.static_weight(op, w_bits, group, fx)
            s_w = fit.scale
        else:
            got = self.q_columns(op.rhs, op)
            rhs, fw = got if got is not None else self.q(op.rhs, 8, op)
            s_w = np.asarray(fw.scale)
        s_acc = (float(fx.scale) if fx.per_tensor else 1.0) * s_w
        bias = None
        b = self.bias_real(op, self.weights[df.layer_of(op.rhs.owner)]  # type: ignore[arg-type]
                           ) if static else (None if op.bias is None else self.bias_real(op, np.zeros(0)))
        if b is not None:
            b_int = np.clip(np.round(b / s_acc), -(2**31), 2**31 - 1).astype(np.int32)
            bias = self.weight(self.unique(f"{layer}.bias.q32"), b_int, IntegerType(32), op)
        new = df.GemmOp(layer, x, rhs, bias, _ttype(op.result, IntegerType(32)), IntegerType(32))
        for key, value in op.attributes.items():
            new.attributes[key] = value
        for key, size in (fit.attributes() if fit is not None else {}).items():
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
                _, out = A.layernorm_int(op.approx_choice(), probe, s, gamma, beta, op.epsilon_value(), in_bits=bits,
                                         rms=op.norm_kind() == df.LayerNormKind.RMSNORM)
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

    def scaled_branch(self, v: SSAValue) -> tuple[SSAValue, np.ndarray] | None:
        """``v = x * c`` for an integer ``x`` and a positive constant ``c`` per tensor or per channel (DINOv2's and
        BEiT's LayerScale, Granite's residual multiplier): ``x`` and its step times ``c``, so a residual add takes the
        branch with ``c`` folded into its multiplier; else None."""
        owner = v.owner
        if not (isinstance(owner, df.ElementwiseOp) and owner.kind_value() == "mul" and len(owner.inputs) == 2):
            return None
        channels = _shape(v)[-1] if _shape(v) else 1
        for x, c in (owner.inputs, owner.inputs[::-1]):
            ix = self.int_view(x)
            if ix is None or not isinstance(c.owner, df.WeightOp) or _shape(x) != _shape(v):
                continue
            data = self.weights.get(df.layer_of(c.owner))
            step = np.asarray(self.fmt[ix].scale, np.float64)
            if data is None or step.ndim > 1:
                continue
            factor = np.asarray(data, np.float64)
            if factor.size not in (1, channels) or factor.shape[-1:] not in ((), (1,), (channels,)) or \
                    not (np.isfinite(factor).all() and (factor > 0).all()):
                continue
            return ix, step * factor.reshape(-1)
        return None

    def table(self, v: SSAValue, like: SSAValue, before: Operation) -> SSAValue | None:
        """A constant ``v`` that varies along more than the last axis (a per-position table: Whisper's, YOLOS's and
        BlenderBot-Small's position embeddings) added to an integer of ``like``'s shape: ``v`` broadcast to that
        shape as an int16 weight on its own per-tensor step, so the add is an integer add of two operands; else
        None (a per-channel constant stays where it is: a GEMM bias, an island's per-column step)."""
        owner = v.owner
        if not isinstance(owner, df.WeightOp):
            return None
        data = self.weights.get(df.layer_of(owner))
        if data is None or np.asarray(data).dtype.kind != "f" or not np.isfinite(data).all():
            return None
        data = np.asarray(data, np.float64)
        shape = _shape(like)
        if sum(1 for d in data.shape[:-1] if d != 1) == 0:
            return None
        try:
            full = np.broadcast_to(data, shape)
        except ValueError:
            return None
        amax = float(np.abs(full).max())
        scale = max(amax, 1e-8) / _qmax(16)
        codes = np.clip(np.rint(full / scale), -_qmax(16), _qmax(16)).astype(np.int16)
        name = self.unique(f"{df.layer_of(owner)}.q16")
        out = self.weight(name, codes, IntegerType(16), before)
        self.weights[name + ".scale"] = np.asarray(scale)  # the simulator's step of a quantized weight
        self.fmt[out] = _Fmt(16, scale)
        self.amax[out] = amax
        return out

    def residual_add(self, op: df.ElementwiseOp) -> bool:
        a, b = op.inputs[0], op.inputs[1]
        consts = [isinstance(x.owner, df.WeightOp) for x in (a, b)]
        constant = table = None  # a per-position table beside an integer, and its integer weight
        if any(consts):
            x, constant = (b, a) if consts[0] else (a, b)
            if all(consts) or self.int_view(x) is None or _shape(x) != _shape(op.result):
                return False
            table = self.table(constant, x, op)
            if table is None:
                return False
            a, b = (table, x) if consts[0] else (x, table)
        if _shape(a) != _shape(b):
            return False
        views = [v if v is table else self.int_view(v) for v in (a, b)]
        scaled = [self.scaled_branch(v) if iv is None else None for iv, v in zip(views, (a, b))]
        if all(iv is None and sc is None for iv, sc in zip(views, scaled)):
            return False
        branches = []  # (integer operand, its step per tensor or channel)
        for v, iv, sc in zip((a, b), views, scaled):
            x = iv if iv is not None else sc[0] if sc is not None else self.q(v, 16, op)[0]
            branches.append((x, sc[1] if sc is not None else self.fmt[x].scale))
        (ia, step_a), (ib, step_b) = branches
        scale = self.range_of(op.result) / _qmax(16)
        name = self.unique(_layer(op))
        s_a = np.atleast_1d(np.asarray(step_a, np.float64))
        s_b = np.atleast_1d(np.asarray(step_b, np.float64))
        width = np.broadcast_shapes(s_a.shape, s_b.shape)
        # Rows m0, e0, m1, e1 (one column per channel, or one column): each branch's own dyadic ratio to the output.
        self.weights[name] = np.concatenate([self._dyadic_rows(np.broadcast_to(s_a, width) / scale),
                                             self._dyadic_rows(np.broadcast_to(s_b, width) / scale)])
        new = df.ElementwiseOp.create(operands=[ia, ib], result_types=[_ttype(op.result, IntegerType(16))],
                                      properties={"layer": StringAttr(name), "kind": StringAttr("add"),
                                                  "attrs": attrs_of(quant="add", scale=scale, bits=16)})
        self.produce(op, new, _Fmt(16, scale))
        if constant is not None and not constant.uses and isinstance(constant.owner, Operation):
            constant.owner.detach()  # the float table, now read as integers
            constant.owner.erase()
        for v, sc in zip((a, b), scaled):  # a folded multiply nobody else reads
            if sc is not None and not v.uses and isinstance(v.owner, Operation):
                v.owner.detach()
                v.owner.erase()
        return True

    def product(self, op: df.ElementwiseOp) -> bool:
        """A product of two activations of one shape as integers: a gated FFN's ``gelu(x W) * (x V)`` (GeGLU), and
        a gate's ``x * sigmoid(x)`` (SiLU, SwiGLU's). Integer operands go in at 16 bits per tensor (a wider one
        requantized to its calibrated range); a float gate (sigmoid, tanh, hard sigmoid of anything: bounded) beside
        an integer operand is quantized to 8 bits, so the device evaluates it as a monotone island of 255 thresholds
        (compiler/backend/island.py), at the 2^-7 step ShiftGELU gives its own sigmoid. Then their exact product
        (under 2^30) and one dyadic requant to the 16-bit output step; ``[m, e]`` under the op's layer."""
        a, b = op.inputs[0], op.inputs[1]
        integer = [self.int_view(v) is not None for v in (a, b)]
        if _shape(a) != _shape(b) or not any(integer) or not all(i or _is_gate(v) for i, v in zip(integer, (a, b))):
            return False
        (ia, fa), (ib, fb) = (self.q(v, 16 if i else 8, op) for i, v in zip(integer, (a, b)))
        scale = self.range_of(op.result) / _qmax(16)
        name = self.unique(_layer(op))
        self.weights[name] = np.array(dyadic(float(fa.scale) * float(fb.scale) / scale), dtype=np.int64)
        new = df.ElementwiseOp.create(operands=[ia, ib], result_types=[_ttype(op.result, IntegerType(16))],
                                      properties={"layer": StringAttr(name), "kind": StringAttr("mul"),
                                                  "attrs": attrs_of(quant="mul", scale=scale, bits=16)})
        # Its readers take it per tensor, as they took the float product: per-channel steps from the calibration
        # rows (balance) overfit a gated FFN's channels (held-out cosine: mT5 0.9950 -> 0.9886, UMT5 0.9964 -> 0.9813)
        self.channels.pop(op.result, None)
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
            elif isinstance(op, df.LayerNormOp) and (op.norm_kind() == df.LayerNormKind.LAYERNORM
                                                     or op.approx_choice() == df.LayerNormApprox.ILAYERNORM):
                self.unary(op, 16)  # an RMSNorm only as I-LayerNorm's integer RMS (compiler/numerics/ilayernorm.py)
            elif isinstance(op, df.SoftmaxOp) and self.int_view(op.input) is not None:
                self.unary(op, 16)
            elif isinstance(op, df.ElementwiseOp) and op.kind_value() == "add" and len(op.inputs) == 2:
                self.residual_add(op)
            elif isinstance(op, df.ElementwiseOp) and op.kind_value() == "mul" and len(op.inputs) == 2:
                self.product(op)
            elif isinstance(op, df.MoveOp):
                self.move(op)
        for op in reversed(list(fn.body.block.ops)):  # casts nobody reads any more
            if isinstance(op, df.ElementwiseOp) and all(not r.uses for r in op.results) and \
                    isinstance(op.attrs, DictionaryAttr) and "quant" in op.attrs.data:
                op.detach()
                op.erase()

