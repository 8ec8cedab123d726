"""The ``dataflow.rope`` kernel: rotary position embedding in float and in integers.

Float: ``y = x * cos + x[partner] * sin`` in float32, the same products and sum, in the same order and precision, as
the exported graph's ``q * cos + rotate_half(q) * sin``, so the result is bit-identical to it (and to onnxruntime).

Integer (written by ``quantize``): x is int8 with a per-tensor step ``s_x``; the tables are Q1.14 fixed point,
``cos_q = round_half_even(cos * 2^14)`` and likewise ``sin_q``, held as int16 (|cos|, |sin| <= 1 fit with room).
Each rotated element is one multiply-add pair into an int32 sum ``acc = x * cos_q + x[partner] * sin_q`` (at most
2 * 128 * 2^14 = 2^22 in magnitude), real value ``acc * s_x * 2^-14``; a dyadic requant (I-ViT's
``fixedpoint_mul``: ``[m, e]`` in the WeightStore under the op's layer, ``m / 2^e = s_x * 2^-14 / s_y``) rounds
it half-to-even to int8 at the output step ``s_y`` (the op's ``scale`` attribute, from calibration). Dims past
``rotary_dim`` pass through: ``x * 2^14`` through the same requant.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from xdsl.ir import Operation

from compiler.dialect import dataflow as df
from compiler.simulate import intkernels as K
from compiler.simulate.registry import SimContext, Tensor, register_kernel

__all__ = ["ROPE_FRAC_BITS", "ROPE_OUT_BITS", "rope_float", "rope_int", "rope_partner", "rope_tables_q"]

#: Fraction bits of the integer cos / sin tables (Q1.14 in int16).
ROPE_FRAC_BITS = 14
#: Width of an integer rope's output.
ROPE_OUT_BITS = 8


def rope_partner(style: str, rotary_dim: int) -> np.ndarray:
    """The dim each of the first ``rotary_dim`` dims reads besides itself (``rotate_half`` or ``interleaved``)."""
    i = np.arange(rotary_dim)
    if style == "rotate_half":
        return (i + rotary_dim // 2) % rotary_dim
    if style == "interleaved":
        return i ^ 1
    raise ValueError(f"unknown rope style '{style}'")


def _split(x: np.ndarray, head_dim: int) -> np.ndarray:
    b, s, d = x.shape
    return x.reshape(b, s, d // head_dim, head_dim)


def rope_float(x: np.ndarray, cos: np.ndarray, sin: np.ndarray, style: str, head_dim: int) -> np.ndarray:
    """The rotation of a [B, S, H*head_dim] array in ``x``'s float type; tables [S, R]."""
    r = cos.shape[-1]
    x4 = _split(x, head_dim)
    rot = x4[..., :r]
    c, s = cos.astype(x.dtype)[None, :, None, :], sin.astype(x.dtype)[None, :, None, :]
    y = np.array(x4, copy=True)
    y[..., :r] = rot * c + rot[..., rope_partner(style, r)] * s
    return y.reshape(x.shape)


def rope_tables_q(cos: np.ndarray, sin: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The Q1.14 int16 tables of float cos / sin tables."""
    one = float(1 << ROPE_FRAC_BITS)
    lo, hi = -(1 << 15), (1 << 15) - 1
    return tuple(np.clip(np.round(np.asarray(t, np.float64) * one), lo, hi).astype(np.int16)  # type: ignore
                 for t in (cos, sin))


def rope_int(x: np.ndarray, cos_q: np.ndarray, sin_q: np.ndarray, style: str, head_dim: int, m: int, e: int
             ) -> np.ndarray:
    """int8 codes of the rotation of int8 ``x`` with Q1.14 tables, requantized by ``m / 2^e`` (int64 exact)."""
    r = cos_q.shape[-1]
    x4 = _split(np.asarray(x, np.int64), head_dim)
    rot = x4[..., :r]
    c, s = cos_q.astype(np.int64)[None, :, None, :], sin_q.astype(np.int64)[None, :, None, :]
    acc = np.left_shift(x4, ROPE_FRAC_BITS)
    acc[..., :r] = rot * c + rot[..., rope_partner(style, r)] * s
    return K.requantize(acc, m, e, ROPE_OUT_BITS).reshape(x.shape)


def _params(op: Operation, ctx: SimContext) -> dict[str, Any]:
    memo = ctx.memo(op)
    if "style" not in memo:
        assert isinstance(op, df.RopeOp)
        memo["style"] = op.style_value()
        memo["head_dim"] = op.head_dim_value()
        me = ctx.weights.get(op.layer_name())
        if me is not None:
            me = np.asarray(me, np.int64).reshape(2)
            memo["m"], memo["e"] = int(me[0]), int(me[1])
            memo["scale"] = op.attributes["scale"].value.data  # type: ignore[attr-defined]
    return memo


@register_kernel("dataflow.rope")
def rope_kernel(op: Operation, ins: list[Tensor], ctx: SimContext) -> list[Tensor]:
    """``dataflow.rope`` on a float input, or on an int8 one with its integer tables (module docstring)."""
    memo = _params(op, ctx)
    x, cos, sin = ins
    if x.quantized:
        if "m" not in memo:
            raise ValueError("an integer rope needs its [m, e] requant in the WeightStore")
        y = rope_int(x.data, cos.data, sin.data, memo["style"], memo["head_dim"], memo["m"], memo["e"])
        return [Tensor(y, memo["scale"])]
    return [Tensor(rope_float(x.data, cos.real(), sin.real(), memo["style"], memo["head_dim"]))]
