"""SOFT softmax-free attention: Newton-Schulz inverse and the Nystrom form, float64."""

from __future__ import annotations

import math

import pytest
import torch

from compiler.numerics import gaussian_kernel, newton_schulz_pinv, softmax_free_attention


def _separated_points(n: int, d: int, seed: int) -> torch.Tensor:
    return torch.randn(n, d, generator=torch.Generator().manual_seed(seed), dtype=torch.float64) * 1.5


def test_gaussian_kernel_matches_pairwise_distances() -> None:
    a, b = _separated_points(5, 8, 0), _separated_points(7, 8, 1)
    ref = torch.exp(-torch.cdist(a, b) ** 2 / 2)
    assert torch.allclose(gaussian_kernel(a, b), ref, rtol=1e-12, atol=1e-14)


def test_newton_schulz_converges_to_the_regularised_inverse() -> None:
    k = gaussian_kernel(*(2 * [_separated_points(12, 16, 2)]))
    ref = torch.linalg.inv(k + 0.01 * torch.eye(12, dtype=torch.float64))
    assert torch.allclose(newton_schulz_pinv(k), ref, rtol=1e-9, atol=1e-9)
    # five iterations are not enough: the count matters and is SOFT's 20
    assert not torch.allclose(newton_schulz_pinv(k, iters=5), ref, rtol=1e-3, atol=1e-3)


def test_newton_schulz_batches() -> None:
    pts = torch.stack([_separated_points(6, 4, s) for s in range(3)])
    k = gaussian_kernel(pts, pts)
    v = newton_schulz_pinv(k)
    eye = torch.eye(6, dtype=torch.float64).expand(3, 6, 6)
    assert torch.allclose(v @ (k + 0.01 * torch.eye(6, dtype=torch.float64)), eye, atol=1e-9)


def test_attention_with_every_token_a_landmark_is_the_regularised_nystrom_form() -> None:
    q = _separated_points(16, 16, 3)
    v = torch.randn(16, 4, generator=torch.Generator().manual_seed(4), dtype=torch.float64)
    out = softmax_free_attention(q, v, landmarks=q)
    kq = gaussian_kernel(q / math.sqrt(4.0), q / math.sqrt(4.0))  # d^(1/4) = 2
    reg = kq + 0.01 * torch.eye(16, dtype=torch.float64)
    assert torch.allclose(out, kq @ torch.linalg.solve(reg, kq @ v), rtol=1e-8, atol=1e-8)


def test_attention_mean_pools_consecutive_tokens_into_landmarks() -> None:
    q = _separated_points(12, 8, 5).unsqueeze(0)
    v = torch.ones(1, 12, 2, dtype=torch.float64)
    pooled = q.reshape(1, 4, 3, 8).mean(-2)
    assert torch.allclose(softmax_free_attention(q, v, num_landmarks=4), softmax_free_attention(q, v, landmarks=pooled))
    with pytest.raises(ValueError, match=r"num_landmarks must be in 1..12 \(the sequence length\), got 13"):
        softmax_free_attention(q, v, num_landmarks=13)
    # A count that does not divide the length pools adaptive bins (here 12 tokens into 5 overlapping bins).
    bins = [(0, 3), (2, 5), (4, 8), (7, 10), (9, 12)]
    ragged = torch.stack([q[:, a:b].mean(-2) for a, b in bins], dim=-2)
    assert torch.allclose(softmax_free_attention(q, v, num_landmarks=5), softmax_free_attention(q, v, landmarks=ragged))
