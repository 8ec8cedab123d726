"""Exact int64 building blocks shared by the numerics kernels (private).

Every kernel in this package is integer arithmetic on ``torch.int64``. Floors are arithmetic shifts or
``torch.div(..., rounding_mode="floor")``; nothing goes through floating point except the constants a
kernel derives from a (float) scale, and those are computed in float64 with the same operation order
as the published code. These helpers keep that discipline in one place.
"""

from __future__ import annotations

import math

import torch

INT64_SAT = 1 << 60
"""Magnitude that saturating left shifts clamp to. Far above any 32-bit output range, far below 2^63."""


def as_int64(x: torch.Tensor, name: str) -> torch.Tensor:
    """``x`` as int64, refusing float, complex and bool tensors (a float here is always a caller bug)."""
    if not isinstance(x, torch.Tensor):
        raise TypeError(f"{name} must be a torch.Tensor of integers, got {type(x).__name__}")
    if x.dtype.is_floating_point or x.dtype.is_complex or x.dtype == torch.bool:
        raise TypeError(f"{name} must be an integer tensor, got dtype {x.dtype}")
    return x.to(torch.int64)


def as_rows(x: torch.Tensor, name: str) -> torch.Tensor:
    """``x`` as int64 with at least one dimension and a non-empty last dimension (the row)."""
    x = as_int64(x, name)
    if x.dim() == 0 or x.shape[-1] == 0:
        raise ValueError(f"{name} needs a non-empty last dimension, got shape {tuple(x.shape)}")
    return x


def scalar_scale(scale: float | torch.Tensor, name: str = "scale") -> float:
    """A per-tensor scale as a Python float (float64), checked finite and positive."""
    if isinstance(scale, torch.Tensor):
        if scale.numel() != 1:
            raise ValueError(f"{name} must be a single per-tensor value, got shape {tuple(scale.shape)}")
        scale = scale.item()
    s = float(scale)
    if not math.isfinite(s) or s <= 0.0:
        raise ValueError(f"{name} must be finite and > 0, got {s!r}")
    return s


def check_bits(bits: int, name: str, lo: int, hi: int) -> int:
    """``bits`` as an int in ``[lo, hi]``."""
    if isinstance(bits, bool) or not isinstance(bits, int) or not lo <= bits <= hi:
        raise ValueError(f"{name} must be an int in [{lo}, {hi}], got {bits!r}")
    return bits


def check_abs_below(x: torch.Tensor, limit_log2: int, name: str) -> None:
    """Raise ValueError unless every ``|x| < 2**limit_log2`` (keeps int64 products exact)."""
    if x.numel() and int(x.abs().max()) >= (1 << limit_log2):
        raise ValueError(f"{name} must satisfy |{name}| < 2**{limit_log2}, got max {int(x.abs().max())}")


def floor_div(a: torch.Tensor | int, b: torch.Tensor | int) -> torch.Tensor:
    """floor(a / b) exactly, for int64 tensors (either operand may be a Python int)."""
    if not isinstance(a, torch.Tensor):
        a = torch.tensor(a, dtype=torch.int64)
    return torch.div(a, b, rounding_mode="floor")


def sat_shl(v: torch.Tensor, k: torch.Tensor) -> torch.Tensor:
    """``v * 2**k`` for ``k >= 0``, exact while the result stays below 2^60 in magnitude, else ±2^60."""
    k = torch.clamp(k, min=0, max=61)  # any nonzero v shifted by 61 is past the saturation point already
    v = v.clone()
    while bool((k > 0).any()):
        step = torch.clamp(k, max=20)
        lim = torch.bitwise_right_shift(torch.full_like(step, INT64_SAT), step)  # past lim: saturated anyway
        v = torch.bitwise_left_shift(torch.maximum(torch.minimum(v, lim), -lim), step)
        k = k - step
    return torch.clamp(v, -INT64_SAT, INT64_SAT)


def round_shift(p: torch.Tensor, e: torch.Tensor | int) -> torch.Tensor:
    """round_half_even(p / 2**e) exactly, for int64 ``p`` and integer ``e`` of any sign (broadcast).

    ``e <= 0`` is a saturating left shift (see :func:`sat_shl`). For ``e >= 1``: q = p >> e (a floor),
    remainder r = p - q*2^e in [0, 2^e), round up when r > 2^(e-1) or r == 2^(e-1) and q is odd.
    """
    if isinstance(e, int) and 1 <= e <= 62:  # the common per-tensor case, without the other branches
        q = torch.bitwise_right_shift(p, e)
        rem = p - torch.bitwise_left_shift(q, e)
        half = 1 << (e - 1)
        return q + ((rem > half) | ((rem == half) & (torch.bitwise_and(q, 1) == 1))).to(torch.int64)
    et: torch.Tensor
    p, et = torch.broadcast_tensors(p, torch.as_tensor(e, dtype=torch.int64))
    ep = torch.clamp(et, min=1, max=62)
    q = torch.bitwise_right_shift(p, ep)
    rem = p - torch.bitwise_left_shift(q, ep)
    half = torch.bitwise_left_shift(torch.ones_like(ep), ep - 1)
    up = (rem > half) | ((rem == half) & (torch.bitwise_and(q, 1) == 1))
    rounded = q + up.to(torch.int64)
    # |p| < 2^63, so p / 2^63 rounds to ±1 only past ±2^62 (a tie at 2^62 goes to the even 0).
    big = torch.where(p > (1 << 62), 1, torch.where(p < -(1 << 62), -1, 0)).to(torch.int64)
    big = torch.where(et == 63, big, torch.zeros_like(big))
    left = sat_shl(p, -et)
    return torch.where(et <= 0, left, torch.where(et <= 62, rounded, big))


def round_half_even_div(a: torch.Tensor, d: int) -> torch.Tensor:
    """round_half_even(a / d) exactly for int64 ``a`` and a positive Python int ``d``."""
    q = floor_div(a, d)
    twice_rem = 2 * (a - q * d)
    up = (twice_rem > d) | ((twice_rem == d) & (torch.bitwise_and(q, 1) == 1))
    return q + up.to(torch.int64)
