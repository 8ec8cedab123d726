"""Edge-MoE's table GELU: GELU(x) = ReLU(x) - delta(|x|), delta from a 177-entry table.

Source: sharc-lab/Edge-MoE ``src/gelu.cpp``. delta(a) = ReLU(a) - GELU(a) = a * Phi(-a) is even in x,
bounded (max 0.17 at a = 0.75) and below 2^-23 past 5.5, so a table with step 1/32 on [0, 5.5] plus
linear interpolation gives GELU to within ~1e-4 (Edge-MoE quotes 9.7e-5).

Fixed-point format (Edge-MoE's fm_t, ap_fixed<32,10>): values are signed 32-bit integers with 22
fraction bits (Q10.22, scale 2^-22). The table is unsigned Q0.22::

    D[j] = round_half_even(2^22 * (j/32) * Phi(-j/32)),  j = 0..176,  Phi(-a) = erfc(a / sqrt 2) / 2

For an input X in Q10.22 (other scales are first requantized to it with ``dyadic``/``requantize``)::

    a     = |X|                                   # int64, so |-2^31| is fine
    delta = 0                                     if a >= 5.5 * 2^22 (= 176 << 17)
          = D[i] + floor(t * (D[i+1] - D[i]) / 2^17) otherwise, i = a >> 17, t = a & (2^17 - 1)
    y     = max(X, 0) - delta                     # Q10.22

(1/32 is 2^17 in Q22, so i is the table index and t the 17-bit interpolation weight; the product is
floored like ap_fixed's default truncation.) The table is built once in float64 from math.erfc.
"""

from __future__ import annotations

import math

import torch

from compiler.numerics._intops import as_rows, check_abs_below, scalar_scale
from compiler.numerics.quant import dyadic, requantize

__all__ = ["GELU_DELTA_LUT", "LUT_GELU_FRAC_BITS", "lut_gelu"]

LUT_GELU_FRAC_BITS = 22
_STEP_BITS = 17  # 1/32 in Q22
_ENTRIES = 177  # 0, 1/32, ..., 176/32 = 5.5


def _delta(a: float) -> float:
    return a * 0.5 * math.erfc(a / math.sqrt(2.0))


GELU_DELTA_LUT: tuple[int, ...] = tuple(
    round(_delta(j / 32) * (1 << LUT_GELU_FRAC_BITS)) for j in range(_ENTRIES)
)
"""D[j] = round(2^22 * delta(j / 32)), j = 0..176, unsigned Q0.22 (at most 20 bits used)."""

_LUT = torch.tensor(GELU_DELTA_LUT, dtype=torch.int64)
_LIMIT = (_ENTRIES - 1) << _STEP_BITS


def lut_gelu(x_int: torch.Tensor, scale: float) -> tuple[torch.Tensor, float]:
    """Edge-MoE table GELU: (y_int, 2^-22) with y_int * 2^-22 ~= GELU(x_int * scale), |error| < 1e-4.

    ``x_int`` (|x| < 2^32) with real value x_int * ``scale``. When scale is exactly 2^-22 the input is
    used as is; otherwise it is first requantized to Q10.22: X = requantize(x, *dyadic(scale * 2^22), 32)
    (round half to even, saturating at the int32 range, i.e. at +-512). See the module docstring.
    """
    x = as_rows(x_int, "x_int")
    check_abs_below(x, 32, "x_int")
    s = scalar_scale(scale)
    if s != 2.0**-LUT_GELU_FRAC_BITS:
        x = requantize(x, *dyadic(s * (1 << LUT_GELU_FRAC_BITS)), 32)
    a = x.abs()
    i = torch.clamp(torch.bitwise_right_shift(a, _STEP_BITS), max=_ENTRIES - 2)
    t = torch.bitwise_and(a, (1 << _STEP_BITS) - 1)
    lo, hi = _LUT[i], _LUT[i + 1]
    delta = lo + torch.bitwise_right_shift(t * (hi - lo), _STEP_BITS)
    delta = torch.where(a >= _LIMIT, torch.zeros_like(delta), delta)
    return torch.clamp(x, min=0) - delta, 2.0**-LUT_GELU_FRAC_BITS
