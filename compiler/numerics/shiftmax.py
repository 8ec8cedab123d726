"""I-ViT Shiftmax (``IntSoftmax``, n = 15) and its shift-based exponential.

Source: zkkli/I-ViT ``models/quantization_utils/quant_modules.py`` (``IntSoftmax``, ``int_exp_shift``).
The published code emulates integers in float32, which drops bits once a product passes 2^24; our
semantics are that code evaluated in float64, where every step is exact integer arithmetic. Here each
step is int64 arithmetic with floors written as shifts / floor divisions.
"""

from __future__ import annotations

import math

import torch

from compiler.numerics._intops import as_int64, as_rows, check_bits, floor_div, sat_shl, scalar_scale

__all__ = ["SHIFTMAX_N", "shift_exp", "shiftmax"]

SHIFTMAX_N = 15
"""I-ViT's "sufficiently large integer" n for softmax: exp values carry n extra bits."""

_SUM_MAX = (1 << 31) - 1


def shift_exp(x_int: torch.Tensor, scale: float, n: int) -> torch.Tensor:
    """I-ViT ``int_exp_shift``: integer e with e * scale / 2^n ~= exp(x_int * scale).

    Steps (all integers; x0 and the clamp come from ``scale`` in float64)::

        x  = x + floor(x / 2) - floor(x / 16)       # x * log2(e), with log2(e) ~ 1.4375
        x0 = floor(-1 / scale)                      # "-1" on the integer grid (x0 <= -1)
        x  = max(x, n * x0)
        q  = floor(x / x0)                          # integer part of -x * log2(e)
        r  = x - x0 * q                             # in (x0, 0]
        e  = max(0, floor((r / 2 - x0) * 2^(n - q)))  = ((r - 2 x0) << (n - q)) >> 1

    For x <= 0 (softmax, GELU numerator) the result is exact and below 2 |x0| 2^n. Positive x (the
    e^(-max) term of ShiftGELU) can be astronomically large; values past 2^59 saturate there, which is
    harmless because callers clamp every sum containing it to 2^31 - 1 (as I-ViT does).
    Requires scale > 2^-29 so that |x0| < 2^29.
    """
    x_int = as_int64(x_int, "x_int")
    s = scalar_scale(scale)
    if isinstance(n, bool) or not isinstance(n, int) or not 0 <= n <= 30:
        raise ValueError(f"n must be an int in [0, 30], got {n!r}")
    x0 = math.floor(-1.0 / s)
    if x0 <= -(1 << 29):
        raise ValueError(f"scale {s!r} is too small for shift_exp: floor(-1/scale) must exceed -2**29")
    x = x_int + torch.bitwise_right_shift(x_int, 1) - torch.bitwise_right_shift(x_int, 4)
    x = torch.clamp(x, min=n * x0)
    q = floor_div(x, x0)
    r = x - x0 * q
    return torch.bitwise_right_shift(sat_shl(r - 2 * x0, n - q), 1)


def shiftmax(x_int: torch.Tensor, scale: float, out_bits: int = 8) -> tuple[torch.Tensor, float]:
    """I-ViT Shiftmax along the last dimension: (y_int, out_scale) with y_int * out_scale ~= softmax.

    ``x_int``: integer tensor (attention scores, |x| < 2^32) with real value x_int * ``scale``.
    Per row::

        d   = x - max(x)                        # <= 0
        e   = shift_exp(d, scale, n=15)
        sum = min(sum(e), 2^31 - 1)
        f   = floor((2^31 - 1) / sum)
        y   = floor(e * f / 2^(32 - b))         # b = out_bits, out_scale = 2^-(b - 1)

    While the row sum stays below 2^31, y is in [0, 2^(b-1) - 1]. Each e is below 2^15 * |floor(-1/S)|;
    for tiny scales (S < ~2^-16) or long rows the sum clamps, the output then shrinks towards 0 and a
    single e above 2^31 can exceed 2^(b-1) - 1: that is I-ViT's behaviour and we keep it.
    ViT/DeiT use out_bits=16, Swin 8.
    """
    x = as_rows(x_int, "x_int")
    b = check_bits(out_bits, "out_bits", 2, 32)
    e = shift_exp(x - x.amax(dim=-1, keepdim=True), scale, SHIFTMAX_N)
    total = torch.clamp(e.sum(dim=-1, keepdim=True), max=_SUM_MAX)
    factor = floor_div(_SUM_MAX, total)
    y = torch.bitwise_right_shift(e * factor, 32 - b)
    return y, 2.0 ** -(b - 1)
