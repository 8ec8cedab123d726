"""log2q_quantize against a float64 transliteration of RepQ-ViT's LogSqrt2Quantizer.quantize."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from compiler.numerics import log2q_dequantize, log2q_quantize, log2q_softmax


def repq_quantize(x: np.ndarray, delta: float, n_bits: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """RepQ-ViT (zkkli/RepQ-ViT) in numpy float64; also returns the unclamped codes."""
    n_levels = 2**n_bits
    with np.errstate(divide="ignore"):
        x_int = np.round(-1 * np.log2(x / delta) * 2)
    mask = x_int >= n_levels
    x_quant = np.clip(x_int, 0, n_levels - 1)
    odd_mask = (x_quant % 2) * (np.sqrt(2) - 1) + 1
    x_float_q = 2 ** (-1 * np.ceil(x_quant / 2)) * odd_mask * delta
    x_float_q[mask] = 0
    return x_quant, x_float_q, x_int


@settings(max_examples=500, deadline=None)
@given(st.integers(0, 2**32 - 1), st.sampled_from([2, 3, 4, 6, 8]), st.booleans())
def test_log2q_matches_repq_vit(seed: int, bits: int, given_delta: bool) -> None:
    rng = np.random.default_rng(seed)
    x = rng.dirichlet(np.full(24, rng.uniform(0.05, 2.0)), size=3)  # softmax-like rows
    x[0, :3] = [0.0, 1.0, 2.0**-20]
    delta = float(rng.uniform(0.2, 1.5)) if given_delta else float(x.max())
    codes, x_hat = log2q_quantize(torch.from_numpy(x), bits, delta if given_delta else None)
    ref_codes, ref_hat, _ = repq_quantize(x, delta, bits)
    with np.errstate(divide="ignore", invalid="ignore"):  # x = 0: inf % 1 is nan, not a tie
        near_tie = np.abs(np.abs(-2 * np.log2(x / delta)) % 1 - 0.5) < 1e-9  # libm ulp may differ
    same = codes.numpy() == ref_codes.astype(np.int64)
    assert bool((same | near_tie).all())
    assert bool(((x_hat.numpy() == ref_hat) | near_tie).all())
    assert codes.dtype == torch.int64 and int(codes.min()) >= 0 and int(codes.max()) <= 2**bits - 1


def test_log2q_levels_are_powers_of_sqrt2() -> None:
    codes = torch.arange(0, 8)
    vals = log2q_dequantize(codes, 1.0, bits=4)
    assert torch.allclose(vals, 2.0 ** (-codes.double() / 2), rtol=1e-15)
    assert float(log2q_dequantize(torch.tensor([15]), 1.0, bits=4)) == 0.0  # top code decodes to 0


def test_log2q_relative_error_is_within_a_quarter_octave() -> None:
    """Inside the representable range, rounding -2 log2(x) to an integer moves x by at most 2^(1/4)."""
    x = torch.logspace(-7, 0, 5001, base=2.0, dtype=torch.float64)
    _, x_hat = log2q_quantize(x, 4, delta=1.0)
    ratio = x_hat / x
    assert float(ratio.max()) <= 2**0.25 * (1 + 1e-12) and float(ratio.min()) >= 2**-0.25 * (1 - 1e-12)


def test_log2q_top_code_ambiguity_is_as_documented() -> None:
    bits, top = 4, 15
    x = torch.tensor([2.0 ** (-top / 2), 2.0**-20, 0.0])  # exactly code 15, far below, zero
    codes, x_hat = log2q_quantize(x, bits, delta=1.0)
    assert codes.tolist() == [top, top, top]
    assert x_hat.tolist() == [2.0 ** -(top // 2 + 1) * 2**0.5, 0.0, 0.0]
    assert log2q_dequantize(codes, 1.0, bits).tolist() == [0.0, 0.0, 0.0]


def test_log2q_softmax_codes_decode_near_softmax() -> None:
    gen = torch.Generator().manual_seed(2)
    x = torch.randint(-300, 300, (8, 64), generator=gen)
    codes, delta = log2q_softmax(x, 0.02, out_bits=4)
    p = torch.softmax(x.double() * 0.02, dim=-1)
    approx = log2q_dequantize(codes, delta, bits=4)
    big = p > 2.0**-7  # representable with 4 bits and delta = 1
    assert bool(((approx[big] / p[big]).log2().abs() <= 0.25 + 1e-12).all())
    assert float((approx - p).abs().max()) < 0.2


def test_log2q_rejects_negative_input() -> None:
    with pytest.raises(ValueError, match="needs finite, non-negative inputs"):
        log2q_quantize(torch.tensor([0.5, -0.1]), 4)
