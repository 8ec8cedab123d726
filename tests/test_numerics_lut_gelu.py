"""lut_gelu (Edge-MoE delta table, Q10.22) against its written definition and the erf GELU."""

from __future__ import annotations

import math

import numpy as np
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from compiler.numerics import GELU_DELTA_LUT, dyadic, lut_gelu, requantize

Q = 2**22


def lut_gelu_ref(x: int) -> int:
    """The module docstring's formula, one Python int at a time."""
    a = abs(x)
    if a >= 176 << 17:
        delta = 0
    else:
        i, t = a >> 17, a & ((1 << 17) - 1)
        delta = GELU_DELTA_LUT[i] + ((t * (GELU_DELTA_LUT[i + 1] - GELU_DELTA_LUT[i])) >> 17)
    return max(x, 0) - delta


def test_delta_table_shape_and_values() -> None:
    assert len(GELU_DELTA_LUT) == 177 and GELU_DELTA_LUT[0] == 0 and GELU_DELTA_LUT[-1] == 0
    for j, d in enumerate(GELU_DELTA_LUT):  # delta(a) = a (1 - Phi(a)), Phi from erf this time
        a = j / 32
        assert abs(d - Q * a * (1 - 0.5 * (1 + math.erf(a / math.sqrt(2))))) <= 0.5 + 1e-6
    assert max(GELU_DELTA_LUT) == GELU_DELTA_LUT[24]  # delta peaks at a = 0.75
    # agrees with Edge-MoE's published table (src/gelu.cpp) at these entries, in units of 2^-22
    assert (GELU_DELTA_LUT[1], GELU_DELTA_LUT[2], GELU_DELTA_LUT[24]) == (63902, 124540, 712908)


@settings(max_examples=500, deadline=None)
@given(st.lists(st.integers(-(2**31), 2**31 - 1), min_size=1, max_size=32))
def test_lut_gelu_q22_matches_definition(xs: list[int]) -> None:
    y, out_scale = lut_gelu(torch.tensor(xs), 2.0**-22)
    assert out_scale == 2.0**-22
    assert y.tolist() == [lut_gelu_ref(v) for v in xs]


def test_lut_gelu_is_within_1e_minus_4_of_gelu() -> None:
    """Edge-MoE quotes a max error of 9.7e-5; linear interpolation of delta at step 1/32 bounds it by
    max|delta''| / 8 / 32^2 = 0.8 / 8192 ~ 9.7e-5, plus 2^-22 from rounding; measured 9.76e-5."""
    x = torch.arange(-8 * Q, 8 * Q + 1, 997)
    y, s = lut_gelu(x, 2.0**-22)
    err = (y.double() * s - torch.nn.functional.gelu(x.double() / Q)).abs()
    assert float(err.max()) < 1e-4


def test_lut_gelu_odd_part_is_exact() -> None:
    """GELU(x) - GELU(-x) = x exactly, because delta is even: the table respects it bit for bit."""
    x = torch.randint(0, 2**31, (5000,), generator=torch.Generator().manual_seed(4))
    assert torch.equal(lut_gelu(x, 2.0**-22)[0] - lut_gelu(-x, 2.0**-22)[0], x)


def test_lut_gelu_other_scales_requantize_to_q22_first() -> None:
    x = torch.arange(-128, 128)
    y, s = lut_gelu(x, 0.05)
    xq = requantize(x, *dyadic(0.05 * Q), 32)
    assert torch.equal(y, lut_gelu(xq, 2.0**-22)[0]) and s == 2.0**-22
    err = (y.double() * s - torch.nn.functional.gelu(x.double() * 0.05)).abs()
    assert float(err.max()) < 1e-4


def test_lut_gelu_large_magnitudes_are_relu() -> None:
    x = torch.tensor([int(5.5 * Q), int(5.5 * Q) + 1, 2**31 - 1, -(2**31), -int(5.5 * Q)])
    assert lut_gelu(x, 2.0**-22)[0].tolist() == [int(5.5 * Q), int(5.5 * Q) + 1, 2**31 - 1, 0, 0]
    assert np.isclose(float(lut_gelu(torch.tensor([int(5.4 * Q)]), 2.0**-22)[0]) / Q, 5.4, atol=1e-6)
