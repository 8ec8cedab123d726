"""compiler.numerics.quant against I-ViT's published quantizers, transliterated to float64 / exact ints."""

from __future__ import annotations

import decimal
import math
from decimal import Decimal
from fractions import Fraction

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from compiler.numerics import (
    dequantize,
    dyadic,
    dyadic_per_channel,
    quantize,
    requantize,
    requantize_add,
    requantize_per_channel,
    symmetric_scale,
)

# ---- oracles: I-ViT quant_utils.py, float64 -------------------------------------------------------


def ivit_batch_frexp(scale: float) -> tuple[int, int]:
    """I-ViT batch_frexp for one value: frexp, Decimal ROUND_HALF_UP of m * 2^31, e = 31 - e'."""
    m, e = np.frexp(np.float64(scale))
    m_int = int(Decimal(float(m) * 2**31).quantize(Decimal("1"), rounding=decimal.ROUND_HALF_UP))
    return m_int, int(31.0 - float(e))


def ivit_fixedpoint_mul(z: np.ndarray, m: int, e: int, bits: int) -> np.ndarray:
    """I-ViT fixedpoint_mul's integer core in float64: clamp(round(z * m / 2^e)) (np.round: half even)."""
    out = np.round(z.astype(np.float64) * np.float64(m) / (2.0**e))
    return np.clip(out, -(2 ** (bits - 1)), 2 ** (bits - 1) - 1)


def exact_requant(z: int, m: int, e: int, lo: int, hi: int) -> int:
    """Arbitrary-precision reference: round-half-even of the rational z * m / 2^e, clamped."""
    return min(max(round(Fraction(z * m) / Fraction(2) ** e), lo), hi)


ratios = st.floats(min_value=1e-9, max_value=1e3, allow_nan=False, allow_infinity=False)


# ---- dyadic ----------------------------------------------------------------------------------------


@settings(max_examples=2000, deadline=None)
@given(ratios)
def test_dyadic_matches_ivit_batch_frexp(scale: float) -> None:
    m_int, e = dyadic(scale)
    ref_m, ref_e = ivit_batch_frexp(scale)
    if ref_m == 2**31:  # the one case we renormalize: same ratio, m fits 31 bits
        assert (m_int, e) == (2**30, ref_e - 1)
    else:
        assert (m_int, e) == (ref_m, ref_e)
    assert 2**30 <= m_int < 2**31
    assert abs(m_int / 2.0**e - scale) <= scale * 2.0**-31


def test_dyadic_renormalizes_carry_to_2_pow_31() -> None:
    just_below_one = math.nextafter(1.0, 0.0)
    assert ivit_batch_frexp(just_below_one) == (2**31, 31)
    assert dyadic(just_below_one) == (2**30, 30)


@pytest.mark.parametrize("bad", [0.0, -0.5, float("nan"), float("inf")])
def test_dyadic_rejects_nonpositive_and_nonfinite(bad: float) -> None:
    with pytest.raises(ValueError, match="dyadic scale must be finite and > 0"):
        dyadic(bad)


def test_dyadic_per_channel_matches_scalar() -> None:
    scales = torch.tensor([[0.1, 3.0e-5], [7.25, 1.0]], dtype=torch.float64)
    m, e = dyadic_per_channel(scales)
    assert m.shape == e.shape == (2, 2) and m.dtype == e.dtype == torch.int64
    for idx in [(0, 0), (0, 1), (1, 0), (1, 1)]:
        assert (int(m[idx]), int(e[idx])) == dyadic(float(scales[idx]))


# ---- requantize -------------------------------------------------------------------------------------


@settings(max_examples=2000, deadline=None)
@given(
    st.integers(0, 2**32 - 1),
    st.sampled_from([2**4, 2**12, 2**21]),
    ratios.filter(lambda r: r < 4.0),
    st.sampled_from([4, 8, 16]),
)
def test_requantize_matches_ivit_float64(seed: int, span: int, ratio: float, bits: int) -> None:
    acc = np.random.default_rng(seed).integers(-span, span, size=16, endpoint=True)
    acc[:2] = [span, -span]
    m, e = dyadic(ratio)
    got = requantize(torch.from_numpy(acc), m, e, bits)
    ref = ivit_fixedpoint_mul(acc, m, e, bits)
    assert got.dtype == torch.int64
    assert got.tolist() == ref.astype(np.int64).tolist()


@settings(max_examples=500, deadline=None)
@given(
    st.integers(0, 2**32 - 1),
    st.integers(0, 2**31),
    st.integers(-40, 70),
    st.sampled_from([(8, True), (16, True), (32, True), (8, False), (32, False)]),
)
def test_requantize_is_exact_on_the_whole_int32_accumulator_range(
    seed: int, m: int, e: int, fmt: tuple[int, bool]
) -> None:
    bits, signed = fmt
    lo, hi = (-(2 ** (bits - 1)), 2 ** (bits - 1) - 1) if signed else (0, 2**bits - 1)
    acc = np.random.default_rng(seed).integers(-(2**32) + 1, 2**32 - 1, size=8, endpoint=True)
    acc[0] >>= int(acc[1]) & 31  # mix in small magnitudes
    got = requantize(torch.from_numpy(acc), m, e, bits, signed=signed).tolist()
    assert got == [exact_requant(a, m, e, lo, hi) for a in acc.tolist()]


def test_requantize_rounds_ties_to_even() -> None:
    acc = torch.tensor([1, 3, 5, 7, -1, -3, -5, 2])
    # m / 2^e = 1/2 exactly
    assert requantize(acc, 2**30, 31, 8).tolist() == [0, 2, 2, 4, 0, -2, -2, 1]


def test_requantize_clamps_signed_and_unsigned() -> None:
    acc = torch.tensor([-(2**20), -1, 0, 2**20])
    assert requantize(acc, 2**30, 30, 8).tolist() == [-128, -1, 0, 127]
    assert requantize(acc, 2**30, 30, 8, signed=False).tolist() == [0, 0, 0, 255]
    assert requantize(acc, 2**30, 30, 4).tolist() == [-8, -1, 0, 7]


def test_requantize_large_ratio_saturates_instead_of_overflowing() -> None:
    m, e = dyadic(2.0**40)
    assert e < 0
    assert requantize(torch.tensor([3, -3, 0]), m, e, 32).tolist() == [2**31 - 1, -(2**31), 0]


def test_requantize_rejects_accumulators_past_2_pow_32() -> None:
    with pytest.raises(ValueError, match=r"acc must satisfy \|acc\| < 2\*\*32"):
        requantize(torch.tensor([2**32]), 2**30, 31, 8)


def test_requantize_rejects_float_input() -> None:
    with pytest.raises(TypeError, match="acc_int must be an integer tensor, got dtype torch.float32"):
        requantize(torch.tensor([1.0]), 2**30, 31, 8)


@settings(max_examples=300, deadline=None)
@given(st.integers(0, 2**31 - 1), st.lists(ratios, min_size=3, max_size=3))
def test_requantize_per_channel_is_requantize_per_column(seed: int, scales: list[float]) -> None:
    gen = torch.Generator().manual_seed(seed)
    acc = torch.randint(-(2**24), 2**24, (5, 3), generator=gen)
    m, e = dyadic_per_channel(torch.tensor(scales))
    got = requantize_per_channel(acc, m, e, 8, axis=1)
    for c, s in enumerate(scales):
        assert torch.equal(got[:, c], requantize(acc[:, c], *dyadic(s), 8))


def test_requantize_add_rounds_each_branch_then_clamps() -> None:
    acc, ident = torch.tensor([1, 1, 300]), torch.tensor([1, 3, 300])
    half = (2**30, 31)  # each branch: x / 2, ties to even
    assert requantize_add(acc, *half, ident, *half, 8).tolist() == [0 + 0, 0 + 2, 127]


# ---- quantizers --------------------------------------------------------------------------------------


@settings(max_examples=500, deadline=None)
@given(
    st.lists(st.floats(-1e4, 1e4, allow_nan=False, width=32), min_size=1, max_size=32),
    st.sampled_from([4, 8]),
)
def test_symmetric_quantize_matches_ivit(xs: list[float], bits: int) -> None:
    x = torch.tensor(xs, dtype=torch.float32)
    s = symmetric_scale(x, bits)
    xa = np.array(xs, dtype=np.float64)
    ref_s = max(max(-xa.min(), xa.max()) / float(2 ** (bits - 1) - 1), float(np.finfo(np.float32).eps))
    assert float(s) == ref_s
    q = quantize(x, s, bits)
    n = 2 ** (bits - 1) - 1
    assert q.tolist() == np.clip(np.round(xa / ref_s), -n - 1, n).astype(np.int64).tolist()
    # symmetric scale never clips, so the round trip is within half a step
    assert float((dequantize(q, s) - x.double()).abs().max()) <= ref_s / 2 * (1 + 1e-12)


def test_int4_and_int8_ranges_and_clamp() -> None:
    x = torch.tensor([-100.0, -7.6, -0.5, 0.5, 1.5, 7.4, 100.0])
    assert quantize(x, 1.0, 4).tolist() == [-8, -8, 0, 0, 2, 7, 7]
    assert quantize(x, 1.0, 8).tolist() == [-100, -8, 0, 0, 2, 7, 100]
    assert quantize(x, 0.5, 8).tolist() == [-128, -15, -1, 1, 3, 15, 127]


def test_per_channel_scale_and_quantize_follow_the_axis() -> None:
    w = torch.tensor([[1.0, -2.0, 0.5], [0.0, 0.0, 0.0], [10.0, 3.0, -12.7]])
    s = symmetric_scale(w, 8, per_channel_axis=0)
    assert s.shape == (3,)
    top = float(torch.tensor(-12.7, dtype=torch.float32))  # the float32 value, exactly
    assert s.tolist() == [2.0 / 127, float(torch.finfo(torch.float32).eps), -top / 127]
    q = quantize(w, s, 8, per_channel_axis=0)
    for r in range(3):
        assert torch.equal(q[r], quantize(w[r], float(s[r]), 8))
    assert q[2, 2] == -127 and q[0, 1] == -127


def test_quantize_rejects_bad_scale_and_bits() -> None:
    with pytest.raises(ValueError, match="every scale must be finite and > 0"):
        quantize(torch.tensor([1.0]), 0.0, 8)
    with pytest.raises(ValueError, match=r"bits must be an int in \[2, 32\], got 1"):
        quantize(torch.tensor([1.0]), 1.0, 1)


@settings(max_examples=300, deadline=None)
@given(st.lists(st.floats(min_value=1e-30, max_value=1e12, allow_nan=False, allow_infinity=False), min_size=1,
                max_size=40))
def test_dyadic_per_channel_is_dyadic_of_each(scales: list[float]) -> None:
    # The tensor form (torch.frexp) equals the scalar one element by element, the round-up to 2^31 included.
    scales += [1.0 - 2.0**-40, 0.5, 2.0**31]
    m, e = dyadic_per_channel(torch.tensor(scales, dtype=torch.float64))
    assert [(int(a), int(b)) for a, b in zip(m, e)] == [dyadic(s) for s in scales]


@pytest.mark.parametrize("bad", [0.0, -0.5, float("nan"), float("inf")])
def test_dyadic_per_channel_rejects_nonpositive_and_nonfinite(bad: float) -> None:
    with pytest.raises(ValueError, match="dyadic scale must be finite and > 0"):
        dyadic_per_channel(torch.tensor([0.25, bad]))
