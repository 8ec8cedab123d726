"""ilayernorm against an independent float64 transliteration of I-ViT's IntLayerNorm, plus accuracy."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from compiler.numerics import ilayernorm, isqrt_newton
from compiler.numerics.ilayernorm import eps_units

# ---- oracles -----------------------------------------------------------------------------------------


def ivit_int_layernorm(x_int: np.ndarray, gamma: np.ndarray, beta: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """I-ViT IntLayerNorm.forward evaluated in float64 (exact while sum(y^2) < 2^53)."""
    x = x_int.astype(np.float64)
    dim_sqrt = np.sqrt(np.float64(x.shape[-1]))
    mean_int = np.round(x.mean(axis=-1, keepdims=True))
    y = x - mean_int
    var = np.sum(y**2, axis=-1, keepdims=True)
    k = 2.0**16
    for _ in range(10):
        k = np.floor((k + np.floor(var / k)) / 2)
    factor = np.floor((2**31 - 1) / k)
    y = np.floor(y * factor / 2)
    scaling = dim_sqrt / 2**30
    bias_int = np.floor((beta / gamma) / scaling)
    return y + bias_int, scaling * gamma


def exact_int_layernorm_row(row: list[int], bias_int: list[int]) -> list[int]:
    """The same algorithm on Python ints (no size limit), for rows whose variance passes 2^53."""
    c = len(row)
    total = sum(row)
    q, r = divmod(total, c)
    mean = q + (1 if 2 * r > c or (2 * r == c and q % 2) else 0)
    y = [v - mean for v in row]
    var = sum(v * v for v in y)
    k = 2**16
    for _ in range(10):
        k = (k + var // k) // 2
    factor = (2**31 - 1) // k
    return [(v * factor) // 2 + b for v, b in zip(y, bias_int, strict=True)]


# ---- strategies ----------------------------------------------------------------------------------------

RANGES = {"int8": (-128, 127), "int16": (-(2**15), 2**15 - 1), "wide": (-(2**22), 2**22), "offset": (2**20, 2**20 + 50)}


@st.composite
def ln_case(draw: st.DrawFn) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    rows = draw(st.integers(1, 4))
    width = draw(st.one_of(st.integers(1, 64), st.sampled_from([192, 768])))
    kind = draw(st.sampled_from([*RANGES, "constant", "int16-extremes"]))
    rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
    if kind == "constant":
        x = np.full((rows, width), draw(st.integers(-(2**22), 2**22)), dtype=np.int64)
    elif kind == "int16-extremes":
        x = rng.choice(np.array([-(2**15), -(2**15) + 1, 0, 2**15 - 2, 2**15 - 1]), size=(rows, width))
    else:
        lo, hi = RANGES[kind]
        x = rng.integers(lo, hi, size=(rows, width), endpoint=True)
    sign = rng.choice([-1.0, 1.0], size=width)
    gamma = (sign * rng.uniform(0.05, 3.0, size=width)).astype(np.float32).astype(np.float64)
    beta = rng.uniform(-3.0, 3.0, size=width).astype(np.float32).astype(np.float64)
    return x, gamma, beta


# ---- bit-exactness ---------------------------------------------------------------------------------------


@settings(max_examples=1000, deadline=None)
@given(ln_case())
def test_ilayernorm_equals_ivit_float64(case: tuple[np.ndarray, np.ndarray, np.ndarray]) -> None:
    x, gamma, beta = case
    y, out_scale = ilayernorm(torch.from_numpy(x), 0.01, torch.from_numpy(gamma), torch.from_numpy(beta))
    ref, ref_scale = ivit_int_layernorm(x, gamma, beta)
    assert y.dtype == torch.int64 and y.shape == x.shape
    assert y.tolist() == ref.astype(np.int64).tolist()
    assert out_scale.dtype == torch.float64 and out_scale.tolist() == ref_scale.tolist()


@pytest.mark.parametrize("width", [1, 2, 3, 7, 64, 192, 768])
def test_ilayernorm_equals_ivit_float64_in_bulk(width: int) -> None:
    gen = np.random.default_rng(width)
    x = gen.integers(-(2**15), 2**15, size=(512, width)) >> gen.integers(0, 15, size=(512, 1))
    gamma = gen.uniform(0.05, 3.0, size=width) * gen.choice([-1.0, 1.0], size=width)
    beta = gen.uniform(-3.0, 3.0, size=width)
    y, _ = ilayernorm(torch.from_numpy(x), 1.0, torch.from_numpy(gamma), torch.from_numpy(beta))
    assert np.array_equal(y.numpy(), ivit_int_layernorm(x, gamma, beta)[0])


@settings(max_examples=300, deadline=None)
@given(st.integers(1, 16), st.integers(0, 2**32 - 1))
def test_ilayernorm_is_exact_past_float64_range(width: int, seed: int) -> None:
    """|x| up to 2^27: sum(y^2) passes 2^53, where float64 I-ViT would round; we stay exact."""
    rng = np.random.default_rng(seed)
    x = rng.integers(-(2**27), 2**27, size=(2, width))
    gamma, beta = np.ones(width), rng.uniform(-1, 1, size=width)
    y, _ = ilayernorm(torch.from_numpy(x), 1.0, torch.from_numpy(gamma), torch.from_numpy(beta))
    bias_int = np.floor(beta / (math.sqrt(width) / 2**30)).astype(np.int64).tolist()
    assert y.tolist() == [exact_int_layernorm_row(r, bias_int) for r in x.tolist()]


def test_ilayernorm_mean_rounds_half_to_even() -> None:
    ones, zeros = torch.ones(2, dtype=torch.float64), torch.zeros(2, dtype=torch.float64)
    # means 0.5 -> 0 and 1.5 -> 2: y = x - mean is [0, 1] and [-1, 0]
    y, _ = ilayernorm(torch.tensor([[0, 1], [1, 2]]), 1.0, ones, zeros)
    assert (y[0, 0], y[1, 1]) == (0, 0) and y[0, 1] > 0 and y[1, 0] < 0


def test_ilayernorm_rejects_bad_parameters() -> None:
    x = torch.zeros(2, 3, dtype=torch.int64)
    ok = torch.ones(3)
    with pytest.raises(ValueError, match=r"weight and bias must have shape \(3,\), got \(4,\) and \(3,\)"):
        ilayernorm(x, 1.0, torch.ones(4), ok)
    with pytest.raises(ValueError, match="nonzero weight in every channel"):
        ilayernorm(x, 1.0, torch.tensor([1.0, 0.0, 1.0]), ok)
    with pytest.raises(ValueError, match="ilayernorm input too wide"):
        ilayernorm(torch.tensor([[-(2**31), 2**31 - 1]]), 1.0, torch.ones(2), torch.zeros(2))


# ---- the integer square root's reach ---------------------------------------------------------------------


def test_isqrt_newton_converges_between_34596_and_2_pow_45() -> None:
    """Within this range k is floor(sqrt(var)) or one more; outside it, ten steps from 2^16 are not
    enough. The boundaries are the ones the docstring states."""
    dense = torch.arange(34596, 1 << 19)
    gen = torch.Generator().manual_seed(1)
    sparse = torch.randint(1 << 19, 1 << 45, (50_000,), generator=gen)
    for var in (dense, sparse):
        k = isqrt_newton(var)
        root = torch.tensor([math.isqrt(v) for v in var.tolist()])
        diff = k - root
        assert int(diff.min()) == 0 and int(diff.max()) == 1
    below = isqrt_newton(torch.tensor([0, 4, 34595]))
    assert below.tolist()[0] == 64 and below[1] > 2 + 1 and below[2] > math.isqrt(34595) + 1
    big = (1 << 46) + 987_654_321
    assert int(isqrt_newton(torch.tensor([big]))) > math.isqrt(big) + 1


# ---- accuracy -------------------------------------------------------------------------------------------


@pytest.mark.parametrize(("mu", "sigma"), [(0.0, 1.0), (3.0, 0.5), (-20.0, 8.0)])
def test_ilayernorm_is_close_to_float_layernorm(mu: float, sigma: float) -> None:
    """ViT residual streams (C = 768) on a 16-bit grid. Error sources: the floors of k and of
    (2^31 - 1) / k (relative 2^-14 at worst here), the mean rounding and the bias floor. Measured:
    max |error| 5.5e-4, mean 1.1e-4 (deterministic seeds)."""
    gen = torch.Generator().manual_seed(11)
    x = torch.randn(16, 768, generator=gen, dtype=torch.float64) * sigma + mu
    x[:, :4] *= 6  # outlier channels, as ViTs have
    scale = float(x.abs().max()) / 32767
    x_int = torch.round(x / scale).to(torch.int64)
    gamma = torch.rand(768, generator=gen, dtype=torch.float64) * 2 - 0.5
    gamma[gamma.abs() < 1e-3] = 1e-3
    beta = torch.randn(768, generator=gen, dtype=torch.float64) * 0.3
    y, out_scale = ilayernorm(x_int, scale, gamma, beta)
    ref = torch.nn.functional.layer_norm(x_int.double() * scale, (768,), gamma, beta, eps=0.0)
    err = (y.double() * out_scale - ref).abs()
    assert float(err.max()) < 2e-3
    assert float(err.mean()) < 2e-4


def test_ilayernorm_flat_rows_normalize_too_small() -> None:
    """Documented limit: var < 34596 (here std ~2 integer steps, C = 768) leaves k unconverged, so the
    output shrinks; a test of the stated semantics, not a wish."""
    x = torch.tensor([[0, 2] * 384])
    y, out_scale = ilayernorm(x, 1.0, torch.ones(768), torch.zeros(768))
    var = 768  # y = +-1 after the mean, so var = 768
    assert int(isqrt_newton(torch.tensor([var]))) > math.isqrt(var) + 1
    assert float((y.double() * out_scale).abs().max()) < 0.5  # float LayerNorm gives 1.0


# ---- the model's epsilon -----------------------------------------------------------------------------------


def test_eps_units_is_epsilon_over_the_squared_step_times_c() -> None:
    assert eps_units(768, 1e-5, 1e-4, 16) == round(768 * 1e-5 / 1e-8)
    assert eps_units(768, 0.0, 1e-4, 16) == eps_units(768, -1.0, 1e-4, 16) == 0
    # capped at the widest variance the input width gives (the RTL's sum is one bit wider than the variance)
    assert eps_units(4, 1.0, 1e-9, 8) == 4 * 255**2
    assert eps_units(4, 1.0, 0.0, 8) == 4 * 255**2
    assert eps_units(4096, 1.0, 1e-30, 32) == (1 << 62) - 1


@pytest.mark.parametrize("sigma", [1e-3, 3e-3, 0.1])
def test_ilayernorm_with_epsilon_is_layernorm_with_epsilon(sigma: float) -> None:
    """A row whose variance is near epsilon (sigma^2 against 1e-5: a norm after a small-weight conv): with
    eps_int the integer norm follows torch's LayerNorm with that epsilon; I-ViT's eps = 0 is too large by
    sqrt(1 + eps / var) (3.3x at sigma = 1e-3). Measured max |error| with eps_int: 3.1e-4, 3.3e-4, 2.2e-4 (the
    floors of the no-epsilon test above)."""
    gen = torch.Generator().manual_seed(5)
    x = torch.randn(8, 512, generator=gen, dtype=torch.float64) * sigma
    scale = float(x.abs().max()) / 32767
    x_int = torch.round(x / scale).to(torch.int64)
    gamma, beta = torch.ones(512, dtype=torch.float64), torch.zeros(512, dtype=torch.float64)
    ref = torch.nn.functional.layer_norm(x_int.double() * scale, (512,), gamma, beta, eps=1e-5)
    y, out_scale = ilayernorm(x_int, scale, gamma, beta, eps_units(512, 1e-5, scale, 16))
    assert float((y.double() * out_scale - ref).abs().max()) < 1e-3
    plain, _ = ilayernorm(x_int, scale, gamma, beta)
    off = float((plain.double() * out_scale).norm() / ref.norm())
    assert off == pytest.approx(math.sqrt(1 + 1e-5 / sigma**2), rel=0.01)


def test_ilayernorm_epsilon_zero_is_ivit_and_bad_epsilon_is_refused() -> None:
    x = torch.tensor([[3, -7, 12, 0]])
    ones, zeros = torch.ones(4, dtype=torch.float64), torch.zeros(4, dtype=torch.float64)
    assert torch.equal(ilayernorm(x, 1.0, ones, zeros, 0)[0], ilayernorm(x, 1.0, ones, zeros)[0])
    assert not torch.equal(ilayernorm(x, 1.0, ones, zeros, 10_000)[0], ilayernorm(x, 1.0, ones, zeros)[0])
    with pytest.raises(ValueError, match="eps_int"):
        ilayernorm(x, 1.0, ones, zeros, -1)


@pytest.mark.parametrize("mu", [0.0, 0.5, -2.0])
def test_ilayernorm_rms_is_rmsnorm(mu: float) -> None:
    """``rms=True`` (T5's and LLaMA's RMSNorm on the integer path): the mean is taken as 0, so the output follows
    ``x / sqrt(mean(x^2) + eps) * gamma``, not LayerNorm, on rows whose mean is far from 0 too; the NumPy kernel the
    simulator and the machine model run gives the same integers. Measured max |error| below 1e-3."""
    from compiler.simulate import intkernels as K

    gen = torch.Generator().manual_seed(9)
    x = torch.randn(6, 256, generator=gen, dtype=torch.float64) + mu
    scale = float(x.abs().max()) / 32767
    x_int = torch.round(x / scale).to(torch.int64)
    gamma = torch.rand(256, generator=gen, dtype=torch.float64) + 0.5
    zeros = torch.zeros(256, dtype=torch.float64)
    xr = x_int.double() * scale
    ref = xr / torch.sqrt((xr * xr).mean(-1, keepdim=True) + 1e-6) * gamma
    y, out_scale = ilayernorm(x_int, scale, gamma, zeros, eps_units(256, 1e-6, scale, 16), rms=True)
    assert float((y.double() * out_scale - ref).abs().max()) < 1e-3
    k, _ = K.ilayernorm(x_int.numpy(), scale, gamma.numpy(), zeros.numpy(), eps_units(256, 1e-6, scale, 16), rms=True)
    assert np.array_equal(k, y.numpy())
