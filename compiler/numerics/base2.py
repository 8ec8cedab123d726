"""Base-2 integer softmax in the style of Softermax (Stevens et al., DAC 2021).

Softermax replaces e^x with 2^x, keeps the row maximum as an *integer* so that renormalising is a
shift, and evaluates 2^f for the fraction f with a small piecewise-linear table. The paper leaves the
bit widths open; this module fixes them, and :mod:`compiler.numerics.online_softmax` runs the same
arithmetic in one pass. The definition (every step an integer operation)::

    (m_c, e_c) = dyadic(scale * log2(e) * 2^F)      F = 8 fraction bits in the log2 domain
    u   = requantize(x, m_c, e_c, 32)               # x * scale * log2(e), Q23.8, half-to-even
    c   = ceil(u / 2^F) = -((-u) >> F)              # integer part, rounded up
    m   = max(c)                                    # the integer row max
    d   = u - m * 2^F                               # <= 0
    k   = -(d >> F)                                 # whole halvings, >= 0
    f   = d & (2^F - 1)                             # fraction, 2^(f / 2^F) in [1, 2)
    i, t = f >> 4, f & 15                           # 16 segments of 16 steps
    p   = T[i] + (((T[i+1] - T[i]) * t) >> 4)       # Q1.15: 2^(f / 256) in [2^15, 2^16)
    e   = p >> min(k, 20)                           # Q1.15 value of 2^d, floored
    s   = min(sum(e), 2^31 - 1)                     # never clamps for rows of up to 2^15 elements
    r   = floor((2^31 - 1) / s)
    y   = (e * r) >> (32 - b)                       # out_scale = 2^-(b - 1), y in [0, 2^(b-1) - 1]

T[j] = round_half_even(2^15 * 2^(j / 16)), j = 0..16 (:data:`EXP2_LUT`). The element at the max has
k <= 1, so s >= 2^14. The constant scale * log2(e) * 2^F is a float64 product in that order.
"""

from __future__ import annotations

import math

import torch

from compiler.numerics._intops import as_rows, check_abs_below, check_bits, floor_div, scalar_scale
from compiler.numerics.quant import dyadic, requantize

__all__ = ["BASE2_FRAC_BITS", "EXP2_LUT", "base2_softmax"]

BASE2_FRAC_BITS = 8
"""F: fraction bits of x * log2(e)."""

_SEG_BITS = 4  # 16 segments of 2^(F - 4) = 16 steps
_P_BITS = 15  # Q1.15 for 2^f
EXP2_LUT: tuple[int, ...] = tuple(round(2.0 ** (j / 16) * (1 << _P_BITS)) for j in range(17))
"""T[j] = round(2^15 * 2^(j/16)), j = 0..16: 32768 .. 65536 (17 entries, 17 bits)."""

_LUT = torch.tensor(EXP2_LUT, dtype=torch.int64)
_SUM_MAX = (1 << 31) - 1


def to_log2_domain(x_int: torch.Tensor, scale: float) -> torch.Tensor:
    """u = round_half_even(x_int * scale * log2(e) * 2^F) via a dyadic multiply, clamped to int32."""
    x = as_rows(x_int, "x_int")
    check_abs_below(x, 32, "x_int")
    m_c, e_c = dyadic(scalar_scale(scale) * math.log2(math.e) * (1 << BASE2_FRAC_BITS))
    return requantize(x, m_c, e_c, 32)


def ceil_int(u: torch.Tensor) -> torch.Tensor:
    """ceil(u / 2^F): the integer part of a log2-domain value, rounded up."""
    return -torch.bitwise_right_shift(-u, BASE2_FRAC_BITS)


def exp2_q15(u: torch.Tensor, m: torch.Tensor) -> torch.Tensor:
    """Q1.15 value of 2^(u / 2^F - m) for u / 2^F <= m, floored (the table step above)."""
    d = u - torch.bitwise_left_shift(m, BASE2_FRAC_BITS)
    k = -torch.bitwise_right_shift(d, BASE2_FRAC_BITS)
    f = torch.bitwise_and(d, (1 << BASE2_FRAC_BITS) - 1)
    seg_steps = BASE2_FRAC_BITS - _SEG_BITS
    i = torch.bitwise_right_shift(f, seg_steps)
    t = torch.bitwise_and(f, (1 << seg_steps) - 1)
    lo, hi = _LUT[i], _LUT[i + 1]
    p = lo + torch.bitwise_right_shift((hi - lo) * t, seg_steps)
    return torch.bitwise_right_shift(p, torch.clamp(k, max=20))


def normalize(e: torch.Tensor, s: torch.Tensor, out_bits: int) -> torch.Tensor:
    """y = (e * floor((2^31 - 1) / min(s, 2^31 - 1))) >> (32 - out_bits)."""
    r = floor_div(_SUM_MAX, torch.clamp(s, max=_SUM_MAX))
    return torch.bitwise_right_shift(e * r, 32 - out_bits)


def base2_softmax(x_int: torch.Tensor, scale: float, out_bits: int = 8) -> tuple[torch.Tensor, float]:
    """Two-pass base-2 integer softmax along the last dimension (module docstring has the definition).

    ``x_int``: integer tensor, |x| < 2^32, real value x_int * ``scale``. Returns (y_int, 2^-(b - 1)) with
    y_int in [0, 2^(b-1) - 1], b = ``out_bits`` in [2, 32].
    """
    b = check_bits(out_bits, "out_bits", 2, 32)
    u = to_log2_domain(x_int, scale)
    m = ceil_int(u).amax(dim=-1, keepdim=True)
    e = exp2_q15(u, m)
    return normalize(e, e.sum(dim=-1, keepdim=True), b), 2.0 ** -(b - 1)
