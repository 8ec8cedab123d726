"""The float64 'exact' nonlinearities on their integer output grids."""

from __future__ import annotations

import math

import torch

from compiler.numerics import gelu_exact, ilayernorm, layernorm_exact, shiftgelu, shiftmax, softmax_exact


def test_softmax_exact_uses_shiftmax_grid_and_clamps_certainty() -> None:
    x = torch.tensor([[0, 0], [10_000, 0]])
    y, scale = softmax_exact(x, 0.01, 8)
    assert scale == shiftmax(x, 0.01, 8)[1] == 2**-7
    assert y.tolist() == [[64, 64], [127, 0]]


def test_gelu_exact_rounds_to_shiftgelu_grid() -> None:
    x = torch.arange(-127, 128).reshape(1, -1)
    y, scale = gelu_exact(x, 0.05, 8)
    assert scale == shiftgelu(x, 0.05, 8)[1]
    assert float((y.double() * scale - torch.nn.functional.gelu(x.double() * 0.05)).abs().max()) <= scale / 2


def test_layernorm_exact_uses_ilayernorm_grid() -> None:
    gen = torch.Generator().manual_seed(0)
    x = torch.randint(-5000, 5000, (3, 64), generator=gen)
    w, b = torch.rand(64, generator=gen) + 0.1, torch.randn(64, generator=gen)
    y, scale = layernorm_exact(x, 0.01, w, b)
    assert torch.equal(scale, ilayernorm(x, 0.01, w, b)[1])
    assert torch.allclose(scale, math.sqrt(64) / 2**30 * w.double())
    ref = torch.nn.functional.layer_norm(x.double() * 0.01, (64,), w.double(), b.double(), eps=1e-6)
    assert bool(((y.double() * scale - ref).abs() <= scale / 2 + 1e-12).all())
