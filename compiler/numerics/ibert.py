"""I-BERT integer softmax (i-exp) and GELU (i-GELU).

Source: Kim et al., "I-BERT: Integer-only BERT Quantization" (ICML 2021) and its code,
kssteven418/I-BERT ``fairseq/quantization/utils/quant_modules.py`` (``IntSoftmax``, ``IntGELU``).
The constants are the code's literals (x0 = -0.6931, not -ln 2 to 16 digits; sqrt(2) = 1.4142), and the
constants derived from the scale use the code's float operation order, evaluated in float64.
"""

from __future__ import annotations

import math

import torch

from compiler.numerics._intops import (
    as_rows,
    check_abs_below,
    check_bits,
    floor_div,
    round_shift,
    scalar_scale,
)
from compiler.numerics.quant import dyadic

__all__ = ["IBERT_EXP_N", "IBERT_GELU_N", "ibert_exp", "ibert_gelu", "ibert_softmax"]

IBERT_EXP_N = 30
IBERT_GELU_N = 14

_X0 = -0.6931  # -ln 2 as written in I-BERT
_EXP_A = 0.35815147  # exp(r) ~ a r^2 + b r + c = a (r^2 + (b/a) r + c/a) on (-ln 2, 0]
_EXP_B = 0.96963238 / 0.35815147
_EXP_C = 1.0 / 0.35815147
_ERF_A = -0.2888
_ERF_B = -1.769
_ERF_C = 1.0 / -0.2888
_SQRT2 = 1.4142
_EXP16_MAX = (1 << 15) - 1


def _exp_parts(x: torch.Tensor, s: float) -> tuple[torch.Tensor, torch.Tensor, int]:
    """i-exp split as (z, k, c_int): exp_int = z * 2^k with the polynomial value z and k = n - q >= 0."""
    x0 = math.floor(_X0 / s)
    b_int = math.floor(_EXP_B / s)
    c_int = math.floor(_EXP_C / s**2)
    if not 2.9e-5 < s <= 1.0:
        raise ValueError(f"scale {s!r} is out of range for I-BERT i-exp (needs 2.9e-5 < scale <= 1)")
    x = torch.clamp(x, min=IBERT_EXP_N * x0)
    q = floor_div(x, x0)
    r = x - x0 * q
    z = torch.clamp(r * (r + b_int) + c_int, min=0)
    return z, IBERT_EXP_N - q, c_int


def ibert_exp(x_int: torch.Tensor, scale: float) -> tuple[torch.Tensor, float]:
    """I-BERT i-exp for x_int <= 0: (exp_int, exp_scale) with exp_int * exp_scale ~= exp(x_int * scale).

    With x0 = floor(-0.6931 / S), b = floor((0.96963238 / 0.35815147) / S), c = floor((1 / 0.35815147) / S^2)::

        x = max(x, 30 x0);  q = floor(x / x0);  r = x - x0 q           # r in (x0, 0]
        exp_int = max(0, r (r + b) + c) * 2^(30 - q)
        exp_scale = 0.35815147 * S^2 / 2^30

    Needs x_int <= 0 and 2.9e-5 < S <= 1 (then c < 2^32, so exp_int < 2^62).
    """
    x = as_rows(x_int, "x_int")
    if bool((x > 0).any()):
        raise ValueError("ibert_exp is defined for x_int <= 0 (subtract the row max first)")
    z, k, _ = _exp_parts(x, scalar_scale(scale))
    return torch.bitwise_left_shift(z, k), _EXP_A * scalar_scale(scale) ** 2 / 2**IBERT_EXP_N


def ibert_softmax(x_int: torch.Tensor, scale: float, out_bits: int = 8) -> tuple[torch.Tensor, float]:
    """I-BERT integer softmax along the last dimension: (y_int, out_scale = 2^-b), b = ``out_bits``.

    Per row: d = x - max(x), exp_int = i-exp(d) (see :func:`ibert_exp`). I-BERT then re-quantizes the
    exponentials to 16 bits with a calibrated ``QuantAct(16)``. Its calibrated range is the largest
    exponential, which every row attains at d = 0: E0 = c * 2^30. So that activation's scale is
    E0 * exp_scale / 32767 and the requantization ratio is exactly 32767 / E0; we take that ratio
    (I-BERT divides two float32-rounded scales, which can move it by an ulp)::

        (m, e) = dyadic(32767 / E0)
        e16    = clamp(round_half_even(exp_int * m / 2^e), -32768, 32767)   # exact, no float
        sum    = sum(e16)
        y      = floor(e16 * floor(2^32 / sum) / 2^(32 - b))

    y is in [0, 2^b] (I-BERT's numerator is 2^32, so a lone dominant element can reach 2^b).
    """
    x = as_rows(x_int, "x_int")
    b = check_bits(out_bits, "out_bits", 2, 32)
    s = scalar_scale(scale)
    z, k, c_int = _exp_parts(x - x.amax(dim=-1, keepdim=True), s)
    m_int, e = dyadic(32767 / (c_int * 2**IBERT_EXP_N))
    # exp_int * m / 2^e == z * m / 2^(e - k); z < 2^32 keeps z * m exact.
    e16 = torch.clamp(round_shift(z * m_int, e - k), -(1 << 15), _EXP16_MAX)
    total = e16.sum(dim=-1, keepdim=True)
    y = torch.bitwise_right_shift(e16 * floor_div(1 << 32, total), 32 - b)
    return y, 2.0**-b


def ibert_gelu(x_int: torch.Tensor, scale: float) -> tuple[torch.Tensor, float]:
    """I-BERT i-GELU: (y_int, out_scale) with y_int * out_scale ~= GELU(x_int * scale), out_scale > 0.

    erf(t) ~ sign(t) [a (min(|t|, -b) + b)^2 + 1], a = -0.2888, b = -1.769, evaluated on the grid of
    S' = S / 1.4142 (so t = x / sqrt 2). In integers, with b_int = floor(b / S'), c_int = floor((1/a) / S'^2)::

        erf_int   = floor(sign(x) * ((min(|x|, -b_int) + b_int)^2 + c_int) / 2^14)
        erf_scale = S'^2 * a * 2^14                  # negative, since a < 0
        one       = floor(1 / erf_scale)             # "1" on that grid (negative)
        y         = x * (erf_int + one),  scale S * erf_scale / 2

    I-BERT returns that negative scale; we return (-y, -scale), the same real values with a positive
    scale, because every requantizer downstream expects S > 0. Requires |x_int| < 2^32 and S > ~1e-5.
    """
    x = as_rows(x_int, "x_int")
    check_abs_below(x, 32, "x_int")
    s = scalar_scale(scale)
    sp = s / _SQRT2
    b_int = math.floor(_ERF_B / sp)
    c_int = math.floor(_ERF_C / sp**2)
    if -c_int >= 1 << 40:
        raise ValueError(f"scale {s!r} is too small for I-BERT i-GELU (needs scale > ~1e-5)")
    clipped = torch.clamp(x.abs(), max=-b_int)
    poly = torch.sign(x) * ((clipped + b_int) ** 2 + c_int)
    erf_int = torch.bitwise_right_shift(poly, IBERT_GELU_N)
    erf_scale = sp**2 * _ERF_A * 2**IBERT_GELU_N
    one = math.floor(1.0 / erf_scale)
    y = x * (erf_int + one)
    return -y, -(s * erf_scale / 2)
