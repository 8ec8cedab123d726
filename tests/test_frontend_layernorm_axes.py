"""LayerNormalization over several trailing axes (``nn.LayerNorm([H, W])``; ONNX ``axis`` before the last): viewed as
one axis, normalised there, viewed back (compiler/frontend/compound_ops.py). Before, it was refused as "only
last-axis normalisation"; its Mean / InvStdDev training outputs are still refused, in one line."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from codesign.api import compile
from examples._common import Exporter, export_onnx


class _Norm(torch.nn.Module):
    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.norm = torch.nn.LayerNorm([4, 6])
        with torch.no_grad():
            self.norm.weight.normal_()
            self.norm.bias.normal_()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.relu(self.norm(x * 3.0))


@pytest.mark.parametrize("exporter", ["legacy", "dynamo"])
def test_layernorm_over_two_axes(tmp_path: Path, exporter: Exporter) -> None:
    path = tmp_path / "ln.onnx"
    export_onnx(_Norm().eval(), (torch.randn(2, 3, 4, 6),), path, input_names=["x"], output_names=["y"],
                exporter=exporter)
    samples = {"x": np.random.default_rng(0).normal(size=(2, 2, 3, 4, 6)).astype(np.float32)}
    result = compile(path, inputs=samples)
    assert result.imported.patterns["layernorm"] == 1
    assert result.report["accuracy"]["outputs"]["y"]["cosine_min"] >= 0.99999
    int8 = compile(path, inputs=samples, quant="int8", layernorm="ilayernorm")
    assert int8.report["accuracy"]["outputs"]["y"]["cosine_mean"] > 0.99
