"""I-BERT i-exp softmax and i-GELU against float64 transliterations of I-BERT's published code."""

from __future__ import annotations

import decimal
from decimal import Decimal
from fractions import Fraction

import numpy as np
import pytest
import torch
from hypothesis import assume, given, settings
from hypothesis import strategies as st

from compiler.numerics import ibert_exp, ibert_gelu, ibert_softmax

# ---- oracles: kssteven418/I-BERT fairseq/quantization/utils/quant_modules.py, float64 --------------

COEF = [0.35815147, 0.96963238 / 0.35815147, 1.0 / 0.35815147]  # IntSoftmax.coef after __init__


def ibert_int_exp(x: np.ndarray, s: float) -> tuple[np.ndarray, float]:
    x0_int = np.floor(-0.6931 / s)
    x = np.maximum(x, 30 * x0_int)
    q = np.floor(x / x0_int)
    r = x - x0_int * q
    b_int, c_int = np.floor(COEF[1] / s), np.floor(COEF[2] / s**2)
    z = r * (r + b_int) + c_int
    exp_int = np.clip(np.floor(z * 2.0 ** (30 - q)), 0, None)
    return exp_int, COEF[0] * s**2 / 2**30


def ivit_style_frexp(ratio: float) -> tuple[int, int]:
    m, e = np.frexp(np.float64(ratio))
    return int(Decimal(float(m) * 2**31).quantize(Decimal("1"), rounding=decimal.ROUND_HALF_UP)), int(31 - e)


def ibert_int_softmax(x_int: np.ndarray, s: float, out_bits: int) -> tuple[np.ndarray, float]:
    x = x_int.astype(np.float64)
    x = x - x.max(axis=-1, keepdims=True)
    exp_int, _ = ibert_int_exp(x, s)
    # QuantAct(16) calibrated on these rows: range = largest exponential = c_int * 2^30
    e0 = np.floor(COEF[2] / s**2) * 2.0**30
    m, e = ivit_style_frexp(32767 / e0)
    exp16 = np.clip(np.round(exp_int * m / 2.0**e), -32768, 32767)
    total = exp16.sum(axis=-1, keepdims=True)
    factor = np.floor(2**32 / total)
    return np.floor(exp16 * factor / 2 ** (32 - out_bits)), 1 / 2**out_bits


def ibert_int_gelu(x_int: np.ndarray, s: float) -> tuple[np.ndarray, float]:
    coeff = [-0.2888, -1.769, 1.0 / -0.2888]
    sf = s / 1.4142
    b_int, c_int = np.floor(coeff[1] / sf), np.floor(coeff[2] / sf**2)
    x = x_int.astype(np.float64)
    abs_int = np.minimum(np.abs(x), -b_int)
    y = np.sign(x) * ((abs_int + b_int) ** 2 + c_int)
    sig_sf = sf**2 * coeff[0]
    y = np.floor(y / 2**14)
    sig_sf = sig_sf * 2**14
    shift_int = np.floor(1.0 / sig_sf)
    return x * (y + shift_int), s * sig_sf / 2


def exact_ibert_softmax_row(row: list[int], s: float, out_bits: int) -> list[int]:
    """Python-int version of the same steps, for scales where float64 would round (c_int >= 2^22)."""
    x0 = int(np.floor(-0.6931 / s))
    b_int, c_int = int(np.floor(COEF[1] / s)), int(np.floor(COEF[2] / s**2))
    mx = max(row)
    exps = []
    for v in row:
        d = max(v - mx, 30 * x0)
        q = d // x0
        r = d - x0 * q
        exps.append(max(r * (r + b_int) + c_int, 0) * 2 ** (30 - q))
    m, e = ivit_style_frexp(32767 / (c_int * 2**30))
    e16 = [min(max(round(Fraction(v * m, 2**e)), -32768), 32767) for v in exps]
    factor = 2**32 // sum(e16)
    return [(v * factor) >> (32 - out_bits) for v in e16]


# ---- softmax ------------------------------------------------------------------------------------------


@st.composite
def softmax_case(draw: st.DrawFn) -> tuple[np.ndarray, float]:
    rows, width = draw(st.integers(1, 4)), draw(st.integers(1, 24))
    scale = draw(st.floats(min_value=1e-3, max_value=1.0))
    rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
    span = draw(st.sampled_from([3, 300, 2**16, 2**31 - 1]))
    if draw(st.booleans()):
        return np.full((rows, width), rng.integers(-span, span, endpoint=True)), scale
    return rng.integers(-span, span, size=(rows, width), endpoint=True), scale


@settings(max_examples=500, deadline=None)
@given(softmax_case(), st.sampled_from([8, 16]))
def test_ibert_softmax_equals_ibert_float64(case: tuple[np.ndarray, float], out_bits: int) -> None:
    x, scale = case
    y, out_scale = ibert_softmax(torch.from_numpy(x), scale, out_bits)
    ref, ref_scale = ibert_int_softmax(x, scale, out_bits)
    assert y.tolist() == ref.astype(np.int64).tolist() and out_scale == ref_scale


@settings(max_examples=200, deadline=None)
@given(st.floats(min_value=3e-5, max_value=1e-3), st.integers(0, 2**32 - 1))
def test_ibert_softmax_is_exact_at_fine_scales(scale: float, seed: int) -> None:
    x = np.random.default_rng(seed).integers(-(2**16), 2**16, size=(2, 12))
    y, _ = ibert_softmax(torch.from_numpy(x), scale, 8)
    assert y.tolist() == [exact_ibert_softmax_row(r, scale, 8) for r in x.tolist()]


def test_ibert_exp_matches_oracle_and_scale() -> None:
    x = torch.arange(-10_000, 1)
    e, s = ibert_exp(x, 1e-3)
    ref, ref_s = ibert_int_exp(x.numpy().astype(np.float64), 1e-3)
    assert e.tolist() == ref.astype(np.int64).tolist() and s == ref_s
    # the second-order polynomial on (-ln 2, 0]: measured 1.93e-3
    assert float((e.double() * s - torch.exp(x.double() * 1e-3)).abs().max()) < 2.5e-3
    with pytest.raises(ValueError, match="ibert_exp is defined for x_int <= 0"):
        ibert_exp(torch.tensor([1]), 1e-2)
    with pytest.raises(ValueError, match="out of range for I-BERT i-exp"):
        ibert_exp(torch.tensor([0]), 1e-6)


@pytest.mark.parametrize(("out_bits", "tol"), [(8, 7e-3), (16, 3e-3)])
def test_ibert_softmax_is_close_to_float_softmax(out_bits: int, tol: float) -> None:
    """ViT-like rows at scale 5e-3. Measured max |error| 5.5e-3 (8 bits: the 2^-8 output steps
    dominate) and 2.5e-3 (16 bits: the polynomial and the 16-bit re-quantisation of exponentials)."""
    gen = torch.Generator().manual_seed(5)
    scores = torch.randn(32, 197, generator=gen, dtype=torch.float64) * 3
    x = torch.round(scores / 5e-3).to(torch.int64)
    y, out_scale = ibert_softmax(x, 5e-3, out_bits)
    err = (y.double() * out_scale - torch.softmax(x.double() * 5e-3, dim=-1)).abs()
    assert float(err.max()) < tol


# ---- GELU -----------------------------------------------------------------------------------------------


@settings(max_examples=500, deadline=None)
@given(
    st.floats(min_value=1e-5, max_value=0.5),
    st.integers(0, 2**32 - 1),
    st.sampled_from([10, 2**12, 2**20, 2**31 - 1]),
)
def test_ibert_gelu_equals_ibert_float64(scale: float, seed: int, span: int) -> None:
    x = np.random.default_rng(seed).integers(-span, span, size=(3, 16), endpoint=True)
    x[0, 0] = 0
    ref, ref_scale = ibert_int_gelu(x, scale)
    assume(float(np.abs(ref).max()) < 2**53)  # where the float64 oracle is itself exact
    y, out_scale = ibert_gelu(torch.from_numpy(x), scale)
    assert y.tolist() == (-ref).astype(np.int64).tolist()  # we flip I-BERT's negative scale
    assert out_scale == -ref_scale > 0


@pytest.mark.parametrize(("scale", "tol"), [(1e-3, 0.023), (1e-4, 0.0185), (1e-5, 0.0185)])
def test_ibert_gelu_is_close_to_gelu(scale: float, tol: float) -> None:
    """I-BERT reports an L-inf error of 1.8e-2 for i-GELU. Measured over [-6, 6]: 0.0182 at int32
    accumulator scales (1e-4, 1e-5), 0.0218 at 1e-3 where the 2^-14 drop starts to show."""
    x = torch.linspace(-6 / scale, 6 / scale, 20001).round().to(torch.int64)
    y, out_scale = ibert_gelu(x, scale)
    err = (y.double() * out_scale - torch.nn.functional.gelu(x.double() * scale)).abs()
    assert float(err.max()) < tol


@pytest.mark.parametrize("scale", [1e-7, 3e-6, 2.9e-5, 0.3, 1.0, 7.5])
def test_scores_outside_i_exps_steps_are_moved_onto_one(scale: float) -> None:
    """The simulator's I-BERT softmax takes any score step: one finer than i-exp's 2.9e-5 (small weights give scores
    spanning less than 0.06) is coarsened by a shift, one coarser than 2^-10 refined (i-exp misplaces ln 2 on a
    coarse grid), and the result stays the softmax to within the 8-bit output's step."""
    from compiler.simulate.approx import IBERT_MAX_STEP, IBERT_MIN_STEP, ibert_grid, softmax_int

    rng = np.random.default_rng(0)
    real = rng.standard_normal((4, 50)) * 0.05 if scale < 1e-3 else rng.standard_normal((4, 50)) * 3
    x = np.round(real / scale).astype(np.int64)
    grid_x, grid_scale = ibert_grid(x, scale)
    assert IBERT_MIN_STEP < grid_scale <= IBERT_MAX_STEP or grid_scale == scale <= IBERT_MAX_STEP
    assert grid_scale == scale or grid_scale / scale in (2.0 ** k for k in range(-16, 20))
    p, ps = softmax_int("ibert", x, scale, 8)
    want = torch.softmax(torch.from_numpy(x * scale), dim=-1).numpy()
    assert np.abs(p * ps - want).max() < 2 ** -7


def test_i_gelu_input_step_keeps_its_output_in_32_bits() -> None:
    """gelu_input_format gives I-BERT's i-GELU a 16-bit grid no finer than IBERT_GELU_MIN_STEP, where a full-scale
    input's output still fits the 32-bit requantizer after it; a narrower range (small weights) used to exceed it."""
    from compiler.simulate.approx import IBERT_GELU_MIN_STEP, gelu_input_format
    from compiler.simulate.intkernels import ibert_gelu as gelu_kernel

    bits, step = gelu_input_format("ibert", 0.6)  # amax / 32767 would be 1.8e-5
    assert (bits, step) == (16, IBERT_GELU_MIN_STEP)
    x = np.arange(-32767, 32768, 7, dtype=np.int64)
    y, _ = gelu_kernel(x, step)
    assert int(np.abs(y).max()) < 2**31
    assert gelu_input_format("ibert", 20.0) == (16, 20.0 / 32767)  # a wide range keeps its own step
