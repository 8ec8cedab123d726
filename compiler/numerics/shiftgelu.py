"""I-ViT ShiftGELU (``IntGELU``, n = 23): GELU(x) ~= x * sigmoid(1.702 x) with integer shifts.

Source: zkkli/I-ViT ``models/quantization_utils/quant_modules.py`` (``IntGELU``). Semantics are the
published float32 code evaluated in float64 (exact integers); the 1.702 is folded into the scale of the
exponential, also in float64.
"""

from __future__ import annotations

import math

import torch

from compiler.numerics._intops import as_rows, check_abs_below, check_bits, floor_div, scalar_scale
from compiler.numerics.shiftmax import shift_exp

__all__ = ["E0_BITS", "SHIFTGELU_N", "STABILIZERS", "e_shift", "shiftgelu"]

SHIFTGELU_N = 23
"""I-ViT's n for GELU (more fraction bits than softmax's 15: the sigmoid needs them near 0)."""

E0_BITS = 27
"""e^0 = shift_exp(0) = |x0| 2^23 is kept at or below 2^E0_BITS: I-ViT's own operating point (|x0| <= 16; 13 at
its 8-bit grid of +-6) keeps the 31-bit sum of two exponentials from clamping."""

_SUM_MAX = (1 << 31) - 1

STABILIZERS = ("row", "element")
"""Where the exponent's offset ``m`` comes from: the row max (I-ViT as published) or ``max(x, 0)`` per element."""


def e_shift(x0: int) -> int:
    """The right shift k applied to ShiftGELU's exponentials for ``x0 = floor(-1 / (1.702 scale))``: 0 while
    |x0| <= 2^(E0_BITS - 23) = 16 (the published algorithm), else the smallest k with |x0| 2^(23 - k) <= 2^27,
    i.e. ceil(log2 |x0|) - 4. A leading-one detector on |x0| - 1 in hardware."""
    return max(0, (-x0 - 1).bit_length() - (E0_BITS - SHIFTGELU_N))


def shiftgelu(x_int: torch.Tensor, scale: float, out_bits: int = 8, *,
              stabilizer: str = "row") -> tuple[torch.Tensor, float]:
    """I-ViT ShiftGELU: (y_int, out_scale) with y_int * out_scale ~= GELU(x_int * scale).

    With S_sig = scale * 1.702 (float64) and m = max over the last dimension (``stabilizer="row"``, the
    published algorithm) or m = max(x, 0) per element (``stabilizer="element"``)::

        k     = e_shift(floor(-1 / S_sig))           # 0 on I-ViT's grids; see below
        e     = shift_exp(x - m, S_sig, n=23) >> k   # ~ e^(1.702 (x - m))
        e_max = shift_exp(-m, S_sig, n=23) >> k      # ~ e^(-1.702 m); may saturate, see shift_exp
        sum   = min(e + e_max, 2^31 - 1)
        sig   = floor(e * floor((2^31 - 1) / sum) / 2^(32 - b))   # sigmoid, scale 2^-(b - 1)
        y     = x * sig

    out_scale = scale * 2^-(b - 1), b = ``out_bits``. y is not requantized: |y| < |x| * 2^(b - 1), so the
    next QuantAct (``requantize``) brings it back to 8 bits. Requires |x_int| < 2^32.

    Accuracy envelope (inherited from I-ViT, measured in the tests): the sigmoid has only about
    log2(256 / |x0|) significant bits, x0 = floor(-1 / S_sig), because floor((2^31 - 1) / sum) is a small
    integer (|x0| = 13 at S = 6/127 gives ~4% steps); and exponentials are relative to the row max with
    n = 23 bits, so rows whose max exceeds ~9.4 (23 / (1.702 log2 e)) lose everything more than that
    below it. 8-bit inputs with a range of about +-3 to +-6 stay within 0.25 of GELU.

    ``stabilizer="element"`` is our one departure from the published code, and only in where m comes from.
    sigmoid(z) = e^(z - m) / (e^(z - m) + e^(-m)) holds for any m; with m = max(x, 0) both exponents are
    <= 0 and one of them is e^0, so no element underflows because a *different* element of its row is
    large (MiniLM's FFN rows carry +-25 outlier channels next to values near 0). It is also cheaper in
    hardware: the unit needs no row buffer and no max pass. The row form stays the default here because
    this function is the documented oracle of I-ViT's ``IntGELU``.
    """
    x = as_rows(x_int, "x_int")
    b = check_bits(out_bits, "out_bits", 2, 32)
    check_abs_below(x, 32, "x_int")
    s = scalar_scale(scale)
    if stabilizer not in STABILIZERS:
        raise ValueError(f"stabilizer must be one of {', '.join(STABILIZERS)}, got {stabilizer!r}")
    s_sig = s * 1.702
    k = e_shift(math.floor(-1.0 / s_sig))
    m = x.amax(dim=-1, keepdim=True) if stabilizer == "row" else torch.clamp(x, min=0)
    e = torch.bitwise_right_shift(shift_exp(x - m, s_sig, SHIFTGELU_N), k)
    e_max = torch.bitwise_right_shift(shift_exp(-m, s_sig, SHIFTGELU_N), k)
    total = torch.clamp(e + e_max, max=_SUM_MAX)
    sig = torch.bitwise_right_shift(e * floor_div(_SUM_MAX, total), 32 - b)
    return x * sig, s * 2.0 ** -(b - 1)
