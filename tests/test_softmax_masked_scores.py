"""A Softmax outside a recognised attention reads its mask as "minus infinity" scores (HF's finfo(float32).min).

The float path of an integer softmax (Shiftmax, I-BERT, base-2, ...) puts the scores on a 16-bit grid; sized by
the mask's -3.4e38, its step is about 1e34 and every real score becomes the same code: a uniform softmax (cosine
0.51 on the model below, 0.62 on nanochat and gpt-oss, whose attention is not recognised). The grid is sized by
the scores that are not masked, as calibration sizes ranges.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from codesign.api import compile
from compiler.simulate.approx import softmax_float
from examples._common import export_onnx

MIN = float(np.finfo(np.float32).min)


@pytest.mark.parametrize("name", ["shiftmax", "ibert", "base2"])
def test_masked_entries_do_not_size_the_grid(name: str) -> None:
    rng = np.random.default_rng(0)
    scores = rng.standard_normal((4, 16)).astype(np.float32) * 3
    masked = np.where(np.triu(np.ones((4, 16), bool), 5), np.float32(MIN), scores)
    exact = softmax_float("exact", masked, None, 16)
    got = softmax_float(name, masked, None, 16)
    assert np.all(got[np.triu(np.ones((4, 16), bool), 5)] < 1e-3)
    np.testing.assert_allclose(got, exact, atol=0.06)  # each method's own error (Shiftmax's sums to about 0.94)
    assert np.array_equal(got.argmax(-1), exact.argmax(-1))


class MaskedScores(torch.nn.Module):
    """Scores plus a causal mask of finfo.min, a softmax and A.V, spelt so that no attention is recognised
    (the scores are H H^T of one projection)."""

    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.proj = torch.nn.Linear(32, 32)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.proj(x)
        scores = h @ h.transpose(-1, -2) * 0.2 + torch.triu(torch.full((16, 16), MIN), 1)
        return scores.softmax(-1) @ h


def test_int8_shiftmax_on_masked_scores_tracks_float(tmp_path: Path) -> None:
    path = tmp_path / "masked.onnx"
    x = torch.randn(1, 16, 32, generator=torch.Generator().manual_seed(1))
    export_onnx(MaskedScores().eval(), [x], path, input_names=["x"], output_names=["y"], exporter="legacy")
    run = compile(path, inputs={"x": x.numpy()[None]}, quant="int8", softmax="shiftmax")
    assert run.imported.patterns["attention"] == 0 and run.imported.patterns["softmax"] == 1
    assert run.report["accuracy"]["outputs"]["y"]["cosine_min"] > 0.99
