"""The quantize pass's rewrite of a ``dataflow.moe`` block (mixed into compiler/quant_rewrite.py's Quantizer).

Input int8 (channel-balanced like a GEMM's when it comes from a LayerNorm), expert weights w1 / w2 int8 (int4) per
expert and output channel, biases int32, int32 accumulators; dyadic requants fc1 -> activation input (16 bits, 8 for
ReLU) -> int8 -> fc2 -> int16 output; gated (SwiGLU / GeGLU) experts add w3 int8 per expert and output channel,
its accumulator requantized to int8, and the int8 x int8 product of activation and up projection requantized to
int8 before fc2. The gate stays at up to 16 bits per tensor: routing decisions are discrete,
and a gate step that flips a top-k choice costs far more accuracy than the T x D x E gate GEMM costs cycles
(Edge-MoE's gate runs in its ap_fixed<32,10> datapath). Expert formats are sized on the calibration data per expert;
compiler/simulate/moe.py has the arithmetic.
"""

# pyright: reportAttributeAccessIssue=false
# (a mixin: the Quantizer supplies the helpers these methods call; see MoeRewrite)
from __future__ import annotations

from typing import Any

import numpy as np
from xdsl.dialects.builtin import FloatAttr, IntegerAttr, IntegerType, StringAttr, UnitAttr, f64, i64
from xdsl.ir import SSAValue

from compiler.dialect import dataflow as df
from compiler.quant_format import Fmt as _Fmt
from compiler.quant_format import layer_of as _layer
from compiler.quant_format import tensor_type as _ttype
from compiler.simulate.moe import HIDDEN_BITS_ATTR, OUT_BITS, REQUANT_ATTR, MoeRanges, activation_int, hidden_bits

__all__ = ["MoeRewrite"]


def _qmax(bits: int) -> int:
    return (1 << (bits - 1)) - 1


class MoeRewrite:
    """The MoE method of the quantize pass's ``Quantizer`` (whose fields and helpers it uses)."""

    weights: dict[str, np.ndarray]
    moe_ranges: dict[int, MoeRanges]
    w_bits: int
    fmt: dict[SSAValue, Any]

    def moe(self, op: df.MoeOp) -> None:
        consts = [op.gate, op.w1, op.w2] + [v for v in (op.b1, op.b2, op.w3) if v is not None]
        ranges = self.moe_ranges.get(id(op))
        if ranges is None or not all(isinstance(v.owner, df.WeightOp) for v in consts):
            return  # stays float behind a dequantize (the report's quant.float_layers names it)
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
        w3 = None if op.w3 is None else value(op.w3) * fold[None, :, None]
        # Gate bits: as many as 16, while an int8 x int-b dot product over D still fits the int32 accumulator.
        g_bits = int(min(16, np.floor(np.log2((2**31 - 1) / (128 * gate.shape[0]))) + 1))
        s_g = max(float(np.abs(gate).max(initial=0)), 1e-12) / _qmax(g_bits)
        gate_q = self.weight(name(op.gate, g_bits), np.round(gate / s_g).astype(np.int16), IntegerType(g_bits), op)
        self.weights[df.layer_of(gate_q.owner) + ".scale"] = np.asarray(s_g)  # type: ignore[arg-type]
        wb = self.w_bits
        s_w1 = np.maximum(np.abs(w1).max(axis=1), 1e-12) / _qmax(wb)  # [E, H]: per expert, per output channel
        s_w2 = np.maximum(np.abs(w2).max(axis=1), 1e-12) / _qmax(wb)  # [E, D]
        s_w3 = None if w3 is None else np.maximum(np.abs(w3).max(axis=1), 1e-12) / _qmax(wb)  # [E, H]
        experts = []
        stacks: list[tuple[SSAValue, np.ndarray, np.ndarray]] = [(op.w1, w1, s_w1), (op.w2, w2, s_w2)]
        if op.w3 is not None and w3 is not None and s_w3 is not None:
            stacks.append((op.w3, w3, s_w3))
        for v, w, s in stacks:
            q = np.clip(np.round(w / s[:, None, :]), -_qmax(wb) - 1, _qmax(wb)).astype(np.int8)
            experts.append(self.weight(name(v, wb), q, IntegerType(wb), op))
            self.weights[df.layer_of(experts[-1].owner) + ".scale"] = s  # type: ignore[arg-type]
        up_q = experts.pop() if w3 is not None else None
        h_bits = hidden_bits(act)
        s_h = np.maximum(ranges.pick("hidden"), 1e-8) / _qmax(h_bits)  # [E]
        s_acc1 = s_x * s_w1
        prefix = self.unique(f"{layer}.requant")
        e, h, d = w1.shape[0], w1.shape[2], w1.shape[1]
        self.weights[prefix + ".fc1"] = self._dyadic_rows((s_acc1 / s_h[:, None]).reshape(-1)).reshape(2, e, h)
        self.weights[prefix + ".act.scale"] = s_h
        if h_bits == 8:  # ReLU / identity: the int8 grid in is the grid out
            s_a = s_h
        else:  # gated: the activation's own range (the product's is what w2 reads)
            raw = np.array([activation_int(act, np.zeros((1, 1), np.int64), float(s))[1] for s in s_h])
            s_a = np.maximum(ranges.pick("gact" if w3 is not None else "act"), 1e-8) / _qmax(8)
            self.weights[prefix + ".act"] = self._dyadic_rows(raw / s_a)
        if s_w3 is not None:  # up projection to int8, then the int16 product a * u to int8
            s_u = np.maximum(ranges.pick("up"), 1e-8) / _qmax(8)  # [E]
            self.weights[prefix + ".up"] = self._dyadic_rows((s_x * s_w3 / s_u[:, None]).reshape(-1)).reshape(2, e, h)
            s_p = np.maximum(ranges.pick("act"), 1e-8) / _qmax(8)
            self.weights[prefix + ".gated"] = self._dyadic_rows(s_a * s_u / s_p)
            s_a = s_p
        s_acc2 = s_a[:, None] * s_w2
        s_out = max(float(ranges.pick("out").max(initial=0)), self.range_of(op.result), 1e-8) / _qmax(OUT_BITS)
        self.weights[prefix + ".fc2"] = self._dyadic_rows((s_acc2 / s_out).reshape(-1)).reshape(2, e, d)
        biases = []
        for key, v, s in (("b1", op.b1, s_acc1), ("b2", op.b2, s_acc2)):
            if v is not None:
                b_int = np.clip(np.round(value(v) / s), -(2**31), 2**31 - 1).astype(np.int32)
                biases.append(self.weight(self.unique(f"{layer}.{key}.q32"), b_int, IntegerType(32), op))
        new = df.MoeOp.create(operands=[x, gate_q, *experts, *biases, *([up_q] if up_q is not None else [])],
                              result_types=[_ttype(op.result, IntegerType(OUT_BITS))],
                              properties=dict(op.properties), attributes=dict(op.attributes))
        new.attributes[REQUANT_ATTR] = StringAttr(prefix)
        new.attributes["scale"] = FloatAttr(s_out, f64)
        new.attributes[HIDDEN_BITS_ATTR] = IntegerAttr(h_bits, i64)
        if not fx.per_tensor:
            new.attributes["balanced"] = UnitAttr()
        self.produce(op, new, _Fmt(OUT_BITS, s_out))

