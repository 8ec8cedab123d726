"""Symmetric quantizers and I-ViT dyadic requantization.

Follows I-ViT (zkkli/I-ViT, ``models/quantization_utils/quant_utils.py``):

* ``symmetric_linear_quantization_params``: S = max(|min|, |max|) / (2^(b-1) - 1), at least float32 eps.
* ``SymmetricQuantFunction``: q = clamp(round(x / S), -2^(b-1), 2^(b-1) - 1).
* ``batch_frexp`` + ``fixedpoint_mul``: a real ratio S_in / S_out becomes m_int / 2^e with
  (m, e') = frexp(ratio), m_int = round_half_up(m * 2^31), e = 31 - e'; an accumulator z becomes
  clamp(round_half_even(z * m_int / 2^e)).

Differences from the published code, all deliberate:

* Everything here is float64 / exact int64. I-ViT's ``round(1/S * x)`` multiplies by a float32 reciprocal;
  we divide, ``round(x / S)`` in float64 (the rounding of the two can differ on ties).
* ``dyadic`` renormalizes the one case where rounding carries m_int to 2^31: it returns (2^30, e - 1),
  which is the same ratio, so every requantized value is identical, and m_int always fits in 31 bits.
* ``requantize`` always clamps (I-ViT clamps only for 4, 8, 16 and 32 bits).
"""

from __future__ import annotations

import math

import torch

from compiler.numerics._intops import (
    as_int64,
    check_abs_below,
    check_bits,
    round_shift,
    scalar_scale,
)

__all__ = [
    "dequantize",
    "dyadic",
    "dyadic_per_channel",
    "quantize",
    "requantize",
    "requantize_add",
    "requantize_per_channel",
    "symmetric_scale",
]

_FLOAT32_EPS = float(torch.finfo(torch.float32).eps)
M_BITS = 31
"""m_int is in [2^30, 2^31 - 1]: an unsigned 31-bit multiplier."""


def _int_range(bits: int, signed: bool) -> tuple[int, int]:
    if signed:
        return -(1 << (bits - 1)), (1 << (bits - 1)) - 1
    return 0, (1 << bits) - 1


def _along(t: torch.Tensor, ndim: int, axis: int) -> torch.Tensor:
    """Reshape a 1-D per-channel tensor so it broadcasts along ``axis`` of an ``ndim``-D tensor."""
    if t.dim() != 1:
        raise ValueError(f"per-channel values must be 1-D, got shape {tuple(t.shape)}")
    axis = axis % ndim
    shape = [1] * ndim
    shape[axis] = t.shape[0]
    return t.reshape(shape)


def symmetric_scale(x: torch.Tensor, bits: int, per_channel_axis: int | None = None) -> torch.Tensor:
    """Symmetric quantization scale of ``x`` for ``bits``-bit signed integers (I-ViT's rule).

    S = max|x| / (2^(bits-1) - 1), floored at float32 eps (so an all-zero tensor gets a usable scale).
    Per tensor (a 0-d float64 tensor) or, with ``per_channel_axis``, one scale per index of that axis
    (a 1-D float64 tensor): I-ViT quantizes weights per output channel. Units: those of ``x`` per step.
    """
    bits = check_bits(bits, "bits", 2, 32)
    if not isinstance(x, torch.Tensor) or not x.dtype.is_floating_point:
        raise TypeError("symmetric_scale needs a floating-point tensor")
    a = x.detach().to(torch.float64).abs()
    if per_channel_axis is None:
        amax = a.max() if a.numel() else torch.zeros((), dtype=torch.float64)
    else:
        axis = per_channel_axis % a.dim()
        amax = a.movedim(axis, 0).reshape(a.shape[axis], -1).amax(dim=1)
    return torch.clamp(amax / float((1 << (bits - 1)) - 1), min=_FLOAT32_EPS)


def quantize(
    x: torch.Tensor,
    scale: float | torch.Tensor,
    bits: int,
    per_channel_axis: int | None = None,
) -> torch.Tensor:
    """Signed ``bits``-bit codes of ``x``: clamp(round_half_even(x / scale), -2^(bits-1), 2^(bits-1) - 1).

    Computed in float64. ``scale`` is a float, a 0-d tensor, or (with ``per_channel_axis``) a 1-D tensor
    with one scale per index of that axis. Returns int64. int8 is ``bits=8``, int4 ``bits=4``.
    """
    bits = check_bits(bits, "bits", 2, 32)
    if not isinstance(x, torch.Tensor) or not x.dtype.is_floating_point:
        raise TypeError("quantize needs a floating-point tensor")
    s = torch.as_tensor(scale, dtype=torch.float64)
    if per_channel_axis is not None:
        s = _along(s, x.dim(), per_channel_axis)
    if not bool(torch.isfinite(s).all()) or bool((s <= 0).any()):
        raise ValueError("quantize: every scale must be finite and > 0")
    lo, hi = _int_range(bits, signed=True)
    return torch.clamp(torch.round(x.to(torch.float64) / s), lo, hi).to(torch.int64)


def dequantize(q: torch.Tensor, scale: float | torch.Tensor, per_channel_axis: int | None = None) -> torch.Tensor:
    """``q * scale`` in float64 (``scale`` per tensor, or 1-D along ``per_channel_axis``)."""
    q = as_int64(q, "q")
    s = torch.as_tensor(scale, dtype=torch.float64)
    if per_channel_axis is not None:
        s = _along(s, q.dim(), per_channel_axis)
    return q.to(torch.float64) * s


def dyadic(scale: float) -> tuple[int, int]:
    """The dyadic number m_int / 2^e closest (I-ViT's way) to the positive real ``scale``.

    ``scale`` is the requantization ratio S_in / S_out. (m, e') = frexp(scale) with m in [0.5, 1);
    m_int = floor(m * 2^31 + 1/2) (round half up, as I-ViT's Decimal ROUND_HALF_UP; m * 2^31 + 1/2 is
    exact in float64); e = 31 - e'. If the rounding gives m_int = 2^31 we return (2^30, e - 1) instead:
    the same ratio, so m_int is always in [2^30, 2^31 - 1]. ``e`` may be <= 0 for ratios >= 2^31.
    """
    s = scalar_scale(scale, "dyadic scale")
    m, exp2 = math.frexp(s)
    m_int = math.floor(m * (1 << M_BITS) + 0.5)
    e = M_BITS - exp2
    if m_int == 1 << M_BITS:
        m_int, e = 1 << (M_BITS - 1), e - 1
    return m_int, e


def dyadic_per_channel(scales: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """:func:`dyadic` of each element of ``scales`` (any shape), as two int64 tensors (m_int, e).

    The same arithmetic on whole tensors (``torch.frexp``; ``m * 2^31 + 1/2`` is exact in float64), so a quantized
    ViT-Base's hundred thousand per-channel ratios cost one call instead of one Python call each."""
    s = torch.as_tensor(scales).detach().to(torch.float64)
    bad = ~torch.isfinite(s) | (s <= 0)
    if bool(bad.any()):
        raise ValueError(f"dyadic scale must be finite and > 0, got {float(s[bad].reshape(-1)[0])!r}")
    mant, exp2 = torch.frexp(s)
    m = torch.floor(mant * float(1 << M_BITS) + 0.5).to(torch.int64)
    e = M_BITS - exp2.to(torch.int64)
    top = m == 1 << M_BITS
    return torch.where(top, torch.full_like(m, 1 << (M_BITS - 1)), m), torch.where(top, e - 1, e)


def _scaled(acc: torch.Tensor, m_int: int | torch.Tensor, e: int | torch.Tensor) -> torch.Tensor:
    """round_half_even(acc * m_int / 2^e) exactly, unclamped (saturating at ±2^60 when e < 0)."""
    m = torch.as_tensor(m_int, dtype=torch.int64)
    if m.numel() and (int(m.min()) < 0 or int(m.max()) > (1 << M_BITS)):
        raise ValueError(f"m_int must be in [0, 2**31], got range [{int(m.min())}, {int(m.max())}]")
    check_abs_below(acc, 32, "acc")
    return round_shift(acc * m, e)


def requantize(
    acc_int: torch.Tensor,
    m_int: int | torch.Tensor,
    e: int | torch.Tensor,
    out_bits: int,
    signed: bool = True,
) -> torch.Tensor:
    """I-ViT's fixed-point multiply: clamp(round_half_even(acc * m_int / 2^e)) as int64.

    ``acc_int``: integer tensor with |acc| < 2^32 (an int32 accumulator or wider by one bit) so that the
    product with m_int <= 2^31 is exact in int64. ``m_int``, ``e``: from :func:`dyadic`, Python ints or
    integer tensors broadcastable against ``acc_int`` (per-channel: see :func:`requantize_per_channel`).
    Rounding is half to even (torch.round in I-ViT). The result is clamped to the signed range
    [-2^(b-1), 2^(b-1) - 1] or, with ``signed=False``, to [0, 2^b - 1], b = ``out_bits`` in [2, 32].
    """
    acc = as_int64(acc_int, "acc_int")
    out_bits = check_bits(out_bits, "out_bits", 2, 32)
    lo, hi = _int_range(out_bits, signed)
    return torch.clamp(_scaled(acc, m_int, e), lo, hi)


def requantize_per_channel(
    acc_int: torch.Tensor,
    m_int: torch.Tensor,
    e: torch.Tensor,
    out_bits: int,
    axis: int = -1,
    signed: bool = True,
) -> torch.Tensor:
    """:func:`requantize` with 1-D ``m_int`` and ``e`` (one pair per index of ``axis``)."""
    acc = as_int64(acc_int, "acc_int")
    m = _along(torch.as_tensor(m_int, dtype=torch.int64), acc.dim(), axis)
    ee = _along(torch.as_tensor(e, dtype=torch.int64), acc.dim(), axis)
    return requantize(acc, m, ee, out_bits, signed)


def requantize_add(
    acc_int: torch.Tensor,
    m_int: int | torch.Tensor,
    e: int | torch.Tensor,
    identity_int: torch.Tensor,
    m_id: int | torch.Tensor,
    e_id: int | torch.Tensor,
    out_bits: int,
    signed: bool = True,
) -> torch.Tensor:
    """Residual add as I-ViT's QuantAct does it: each branch rounded on its own, summed, then clamped.

    clamp(round_half_even(acc * m_int / 2^e) + round_half_even(identity * m_id / 2^e_id)).
    """
    acc = as_int64(acc_int, "acc_int")
    ident = as_int64(identity_int, "identity_int")
    out_bits = check_bits(out_bits, "out_bits", 2, 32)
    lo, hi = _int_range(out_bits, signed)
    return torch.clamp(_scaled(acc, m_int, e) + _scaled(ident, m_id, e_id), lo, hi)
