"""Integer LayerNorms with the weights trained norms have: negative, and small under a large bias.

I-LayerNorm (and the exact integer LayerNorm) put channel c on the grid sqrt(C) / 2^30 * gamma_c. A negative gamma
made that step negative, which no requantizer takes (the compile stopped in a ValueError from the dyadic
multiplier, whatever the numerics); a small gamma under a large bias made the bias term beta / step exceed 32 bits
(a requantizer's accumulator). Now a negative channel runs on |gamma|'s grid with its codes negated, and a channel
whose |beta / gamma| exceeds sqrt(C) is shifted onto a coarser grid (compiler/simulate/approx.py,
``layernorm_int``, ``layernorm_shifts``).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from codesign.api import compile
from compiler.simulate.approx import layernorm_int, layernorm_shifts
from examples._common import export_onnx


class _Block(torch.nn.Module):
    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.fc, self.norm, self.out = torch.nn.Linear(16, 32), torch.nn.LayerNorm(32), torch.nn.Linear(32, 16)
        with torch.no_grad():
            self.norm.weight.normal_()  # about half negative
            self.norm.weight[3] = 0.002  # small under a bias of 1: |beta / gamma| = 500 > sqrt(32)
            self.norm.bias.normal_()
            self.norm.bias[3] = 1.0

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.out(torch.relu(self.norm(self.fc(x))))


@pytest.mark.parametrize("layernorm", ["ilayernorm", "exact"])
def test_int8_layernorm_with_negative_and_small_weights(tmp_path: Path, layernorm: str) -> None:
    path = tmp_path / "block.onnx"
    export_onnx(_Block().eval(), (torch.randn(1, 8, 16),), path, input_names=["x"], output_names=["y"],
                exporter="legacy")
    samples = {"x": np.random.default_rng(0).normal(size=(4, 1, 8, 16)).astype(np.float32)}
    result = compile(path, inputs=samples, quant="int8", layernorm=layernorm)
    assert result.imported.patterns["layernorm"] == 1
    assert result.report["accuracy"]["outputs"]["y"]["cosine_mean"] > 0.999


def test_negative_and_shifted_channels_keep_their_real_values() -> None:
    rng = np.random.default_rng(1)
    x = rng.integers(-100, 100, size=(4, 32))
    gamma, beta = rng.normal(size=32), rng.normal(size=32)
    gamma[5], beta[5] = 1e-3, 2.0
    shifts = layernorm_shifts(gamma, beta)
    assert shifts[5] > 0 and not shifts[np.abs(beta / gamma) < np.sqrt(32) / 2].any()  # past about sqrt(C) only
    want = torch.nn.functional.layer_norm(torch.from_numpy(x * 0.05), (32,), torch.from_numpy(gamma),
                                          torch.from_numpy(beta), 1e-5).numpy()
    plain = (shifts == 0) & (gamma > 0)
    for name in ("ilayernorm", "exact"):
        y, ys = layernorm_int(name, x, 0.05, gamma, beta, 1e-5, in_bits=8)
        assert np.all(np.asarray(ys) > 0) and np.abs(y).max() < 2**31
        # error of the normalized term (its approximation's, I-LayerNorm's integer square root): on the negative and
        # shifted channels no larger than on the plain ones, plus one step of the coarser grid
        err = np.abs(y * ys - want).max(axis=0) / np.abs(gamma)
        bound = 1.5 * err[plain].max() + np.exp2(shifts) * np.sqrt(32) / 2**30
        assert np.all(err[~plain] <= bound[~plain]), (name, err, bound)
