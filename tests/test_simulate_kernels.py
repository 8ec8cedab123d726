"""The simulator's NumPy integer kernels are bit-exact to the PyTorch oracle (compiler.numerics).

Property tests: hypothesis picks shapes, regimes (small, wide, int32 extremes, constant rows, all-negative rows,
saturating values) and scales; numpy fills the arrays. Every kernel sees a few hundred cases.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

import compiler.numerics as N
from compiler.simulate import intkernels as K

I32_MIN, I32_MAX = -(2**31), 2**31 - 1
EXAMPLES = settings(max_examples=300, deadline=None)


@st.composite
def int_rows(draw: st.DrawFn, lo: int = I32_MIN, hi: int = I32_MAX, max_width: int = 24) -> np.ndarray:
    """Integer rows in one of several regimes (constant rows, all negative, extremes, ...)."""
    rows, width = draw(st.integers(1, 4)), draw(st.integers(1, max_width))
    kind = draw(st.sampled_from(["small", "wide", "full", "constant", "negative", "extremes"]))
    rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
    if kind == "constant":
        return np.full((rows, width), draw(st.integers(lo, hi)), dtype=np.int64)
    if kind == "extremes":
        return rng.choice(np.array([lo, lo + 1, -1, 0, 1, hi - 1, hi], dtype=np.int64), size=(rows, width))
    bounds = {"small": (max(lo, -300), min(hi, 300)), "wide": (max(lo, -(2**16)), min(hi, 2**16)),
              "full": (lo, hi), "negative": (lo, min(hi, -1))}[kind]
    return rng.integers(bounds[0], bounds[1], size=(rows, width), endpoint=True, dtype=np.int64)


def log_scales(lo: float, hi: float) -> st.SearchStrategy[float]:
    return st.floats(min_value=lo, max_value=hi).map(lambda t: float(2.0**t))


def same(got: tuple[np.ndarray, object], want: tuple[torch.Tensor, object]) -> None:
    np.testing.assert_array_equal(got[0], want[0].numpy())
    scale = want[1].numpy() if isinstance(want[1], torch.Tensor) else want[1]
    np.testing.assert_array_equal(np.asarray(got[1], dtype=np.float64), np.asarray(scale, dtype=np.float64))


@EXAMPLES
@given(int_rows(), log_scales(-23, 1.5), st.sampled_from([8, 16]))
def test_shiftmax(x: np.ndarray, scale: float, bits: int) -> None:
    same(K.shiftmax(x, scale, bits), N.shiftmax(torch.from_numpy(x), scale, bits))


@EXAMPLES
@given(int_rows(), log_scales(-20, 2), st.sampled_from([8, 16]))
def test_base2_softmax(x: np.ndarray, scale: float, bits: int) -> None:
    same(K.base2_softmax(x, scale, bits), N.base2_softmax(torch.from_numpy(x), scale, bits))


@EXAMPLES
@given(int_rows(), log_scales(-20, 2), st.sampled_from([8, 16]))
def test_online_softmax(x: np.ndarray, scale: float, bits: int) -> None:
    same(K.online_softmax(x, scale, bits), N.online_softmax(torch.from_numpy(x), scale, bits))


@EXAMPLES
@given(int_rows(), log_scales(-15, 0), st.sampled_from([8, 16]))
def test_ibert_softmax(x: np.ndarray, scale: float, bits: int) -> None:
    same(K.ibert_softmax(x, scale, bits), N.ibert_softmax(torch.from_numpy(x), scale, bits))


@EXAMPLES
@given(int_rows(-(2**20), 2**20), log_scales(-16, 1))
def test_shiftgelu(x: np.ndarray, scale: float) -> None:
    same(K.shiftgelu(x, scale, 8), N.shiftgelu(torch.from_numpy(x), scale, 8))


@EXAMPLES
@given(int_rows(-(2**20), 2**20), log_scales(-16, 1), st.sampled_from([8, 16]))
def test_shiftgelu_element(x: np.ndarray, scale: float, bits: int) -> None:
    same(K.shiftgelu(x, scale, bits, "element"), N.shiftgelu(torch.from_numpy(x), scale, bits, stabilizer="element"))


@pytest.mark.parametrize("span, scale", [(128, 0.2), (300, 1 / (1.702 * 10.5)), (32767, 1e-3), (5, 0.5)])
def test_shiftgelu_element_table_path(span: int, scale: float) -> None:
    """Activation-sized tensors with a narrow range go through the per-value table: still bit-exact."""
    x = np.random.default_rng(span).integers(-span, span + 1, size=(48, 1536))
    x[0, :3] = [-span, 0, span]
    same(K.shiftgelu(x, scale, 8, "element"), N.shiftgelu(torch.from_numpy(x), scale, 8, stabilizer="element"))


@EXAMPLES
@given(int_rows(-(2**16), 2**16), log_scales(-14, 1))
def test_ibert_gelu(x: np.ndarray, scale: float) -> None:
    same(K.ibert_gelu(x, scale), N.ibert_gelu(torch.from_numpy(x), scale))


@EXAMPLES
@given(int_rows(), log_scales(-30, 0))
def test_lut_gelu(x: np.ndarray, scale: float) -> None:
    same(K.lut_gelu(x, scale), N.lut_gelu(torch.from_numpy(x), scale))


@EXAMPLES
@given(int_rows(-(2**20), 2**20, max_width=48), st.integers(0, 2**32 - 1))
def test_ilayernorm(x: np.ndarray, seed: int) -> None:
    rng = np.random.default_rng(seed)
    c = x.shape[-1]
    gamma = rng.uniform(0.05, 3, c) * rng.choice([-1.0, 1.0], c)
    beta = rng.uniform(-2, 2, c)
    same(K.ilayernorm(x, 0.01, gamma, beta), N.ilayernorm(torch.from_numpy(x), 0.01, torch.from_numpy(gamma),
                                                         torch.from_numpy(beta)))
    eps = int(rng.integers(0, 1 << 40))  # the model's epsilon in variance units
    same(K.ilayernorm(x, 0.01, gamma, beta, eps), N.ilayernorm(torch.from_numpy(x), 0.01, torch.from_numpy(gamma),
                                                              torch.from_numpy(beta), eps))


@EXAMPLES
@given(int_rows(-(2**32) + 1, 2**32 - 1), log_scales(-40, 33), st.sampled_from([4, 8, 16, 32]))
def test_requantize(acc: np.ndarray, ratio: float, bits: int) -> None:
    m, e = N.dyadic(ratio)
    np.testing.assert_array_equal(K.requantize(acc, m, e, bits), N.requantize(torch.from_numpy(acc), m, e, bits).numpy())


@pytest.mark.parametrize("m, e", [(1 << 30, 31), (3 << 29, 32), ((1 << 31) - 1, 40), (1 << 30, 1), (1 << 31, 61),
                                  (1 << 30, 0), (1 << 30, -3), (1 << 30, -30), ((1 << 31) - 1, 1000), ((1 << 31) - 1, 1070)])
def test_requantize_ties(m: int, e: int) -> None:
    """Exact halves (acc * m / 2^e = k + 1/2) round to the even neighbour, both signs, at every shift width."""
    acc = np.arange(-4096, 4097, dtype=np.int64) << max(0, e - 31)
    acc = acc[np.abs(acc) < 2**32]
    for bits in (8, 32):
        np.testing.assert_array_equal(K.requantize(acc, m, e, bits),
                                      N.requantize(torch.from_numpy(acc), m, e, bits).numpy())


@EXAMPLES
@given(int_rows(-(2**31), 2**31), st.integers(0, 2**32 - 1), st.sampled_from([8, 16]))
def test_requantize_per_channel_and_add(acc: np.ndarray, seed: int, bits: int) -> None:
    rng = np.random.default_rng(seed)
    c = acc.shape[-1]
    m, e = N.dyadic_per_channel(torch.from_numpy(2.0 ** rng.uniform(-30, 2, c)))
    want = N.requantize_per_channel(torch.from_numpy(acc), m, e, bits)
    np.testing.assert_array_equal(K.requantize(acc, m.numpy(), e.numpy(), bits), want.numpy())
    ident = rng.integers(-(2**15), 2**15, size=acc.shape)
    m_id, e_id = N.dyadic(float(2.0 ** rng.uniform(-4, 2)))
    want = N.requantize_add(torch.from_numpy(acc), m, e, torch.from_numpy(ident), m_id, e_id, bits)
    np.testing.assert_array_equal(K.requantize_add(acc, m.numpy(), e.numpy(), ident, m_id, e_id, bits), want.numpy())


@EXAMPLES
@given(int_rows(-(2**62) + 1, 2**62 - 1), st.lists(st.integers(-70, 70), min_size=1, max_size=1))
def test_round_shift(p: np.ndarray, e: list[int]) -> None:
    from compiler.numerics._intops import round_shift

    exps = np.full(p.shape, e[0], dtype=np.int64)
    np.testing.assert_array_equal(K.round_shift(p, exps), round_shift(torch.from_numpy(p), torch.from_numpy(exps)))
    if 1 <= e[0] <= 62:
        np.testing.assert_array_equal(K.round_shift(p, e[0]), round_shift(torch.from_numpy(p), e[0]))


@EXAMPLES
@given(st.integers(0, 2**32 - 1), log_scales(-12, 4), st.sampled_from([4, 8, 16]))
def test_quantize(seed: int, scale: float, bits: int) -> None:
    x = np.random.default_rng(seed).normal(0, 3, (3, 7)) * 2.0 ** np.random.default_rng(seed).uniform(-6, 6)
    want = N.quantize(torch.from_numpy(x), scale, bits).numpy()
    np.testing.assert_array_equal(K.quantize(x, scale, bits), want)


def test_shift_exp_saturates_like_the_oracle() -> None:
    x = np.array([[-(2**31), -5, 0, 5, 2**20, 2**31 - 1]], dtype=np.int64)
    for scale in (1e-3, 0.07, 1.0):
        np.testing.assert_array_equal(K.shift_exp(x, scale, 23), N.shift_exp(torch.from_numpy(x), scale, 23).numpy())


def test_too_small_scale_is_refused() -> None:
    with pytest.raises(ValueError, match="too small for shift_exp"):
        K.shiftmax(np.zeros((1, 4), dtype=np.int64), 2.0**-30)


@settings(max_examples=200, deadline=None)
@given(st.integers(1, 4), st.integers(1, 700), st.integers(1, 5), st.integers(0, 2**31 - 1),
       st.sampled_from([127, 2**15 - 1, 2**20]))
def test_int_matmul_is_exact_on_every_blas_path(m, k, n, seed, bound):
    """float32 (bound < 2^24), k-chunked float32, float64 and int64 paths all equal the exact int64 product."""
    from compiler.simulate.kernels import int_matmul

    rng = np.random.default_rng(seed)
    a = rng.integers(-bound, bound + 1, size=(2, m, k), dtype=np.int64)
    b = rng.integers(-128, 128, size=(k, n), dtype=np.int64)
    a[0, 0, :] = bound  # reach the extreme so the bound check is exercised
    np.testing.assert_array_equal(int_matmul(a, b), np.matmul(a, b))
