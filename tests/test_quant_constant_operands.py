"""int8 on products whose operands the frontend folded into constants.

Pegasus-X's block-local attention reads a few global tokens: their embeddings are a table read at constant
indices, so the export folds the tokens' queries, keys and values into constants. They then sit where an activation
goes (the left operand of a product) or as a batched [1, H, T, D] right operand. Calibration never runs a constant,
so the quantizer takes its range from its data; a batched constant right operand gets one step per batch item and
column, as an expert stack does. Checked end to end: the int8 compile of such a model runs and tracks its float
compile, on the exporters users have.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from codesign.api import compile
from compiler.quant_weights import fit_weight
from examples._common import Exporter, export_onnx

HEADS, DIM, SEQ, GLOBALS = 2, 8, 12, 3


class GlobalTokens(torch.nn.Module):
    """Tokens attend to constant global tokens, and the global tokens' queries attend to the tokens."""

    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.table = torch.nn.Embedding(GLOBALS, HEADS * DIM)
        self.q = torch.nn.Linear(HEADS * DIM, HEADS * DIM)
        self.k = torch.nn.Linear(HEADS * DIM, HEADS * DIM)
        self.proj = torch.nn.Linear(HEADS * DIM, HEADS * DIM)

    def _heads(self, t: torch.Tensor) -> torch.Tensor:
        return t.view(1, -1, HEADS, DIM).transpose(1, 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        g = self.table(torch.arange(GLOBALS)).unsqueeze(0)  # constant after folding: [1, G, H*D]
        gq, gk = self._heads(self.q(g)), self._heads(self.k(g))  # constant [1, H, G, D]
        xk = self._heads(self.k(x))  # [1, H, S, D]
        to_globals = torch.matmul(xk, gk.transpose(-1, -2))  # a batched constant right operand [1, H, D, G]
        from_globals = torch.matmul(gq, xk.transpose(-1, -2))  # a constant left operand [1, H, G, D]
        mixed = torch.matmul(to_globals, from_globals)  # [1, H, S, S]
        out = torch.matmul(mixed.softmax(-1), xk).transpose(1, 2).reshape(1, -1, HEADS * DIM)
        return self.proj(out)


@pytest.mark.parametrize("exporter", ["legacy", "dynamo"])
def test_int8_runs_on_constant_operands_and_tracks_float(tmp_path: Path, exporter: Exporter) -> None:
    path = tmp_path / "globals.onnx"
    x = torch.randn(1, SEQ, HEADS * DIM, generator=torch.Generator().manual_seed(1))
    export_onnx(GlobalTokens().eval(), [x], path, input_names=["x"], output_names=["y"], exporter=exporter)
    samples = {"x": x.numpy()[None]}  # one sample
    float_run = compile(path, inputs=samples)
    int8_run = compile(path, inputs=samples, quant="int8")
    for run in (float_run, int8_run):
        assert run.report["accuracy"]["outputs"]["y"]["cosine_min"] > (0.9999 if run is float_run else 0.98)


def test_a_batched_weight_gets_a_step_per_batch_item_and_column() -> None:
    rng = np.random.default_rng(0)
    w = rng.standard_normal((1, HEADS, DIM, GLOBALS)) * np.array([1.0, 100.0])[None, :, None, None]
    fit = fit_weight(w, 8)
    assert np.shape(fit.scale) == (1, HEADS, 1, GLOBALS)
    np.testing.assert_allclose(np.abs(fit.codes).max(axis=-2), 127)  # every column of every head uses its range
    np.testing.assert_allclose(fit.codes * fit.scale, w, atol=float(np.max(fit.scale)) / 2 + 1e-12)
