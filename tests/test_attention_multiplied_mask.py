"""Causal masks applied by multiplication: ``w * b - 1e4 * (1 - b)`` (GPT-1's attention, older causal LMs).

The scores are multiplied by a constant 0 / 1 table and -1e4 is added where it is 0. The matcher reads the product
as part of the mask when the constant terms added after it cover every zero of the table with -1e4 or less and every
row keeps a key (compiler/frontend/masks.py, ``multiplied_mask``): the softmax then gives the dropped keys
no weight either way. Before, GPT-1 compiled with none of its attentions recognised (0 of 2). A product whose zeros
nothing masks, or a table with a row of zeros, changes the scores and stays generic ops.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from codesign.api import compile
from compiler.dialect import dataflow as df
from compiler.dialect.choices import MaskKind
from examples._common import Exporter, export_onnx


class _Causal(torch.nn.Module):
    """One attention whose scores are ``w * b + fill * (1 - b)`` with ``b`` the given 0 / 1 table."""

    def __init__(self, table: torch.Tensor, fill: float) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.qkv, self.out = torch.nn.Linear(32, 96), torch.nn.Linear(32, 32)
        self.b: torch.Tensor
        self.register_buffer("b", table.view(1, 1, *table.shape))
        self.fill = fill

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        bsz, s, _ = x.shape
        q, k, v = (t.view(bsz, s, 4, 8).transpose(1, 2) for t in self.qkv(x).split(32, dim=-1))
        w = q @ k.transpose(-1, -2) / 8 ** 0.5
        w = w * self.b + self.fill * (1 - self.b)
        return self.out((torch.softmax(w, -1) @ v).transpose(1, 2).reshape(bsz, s, 32))


def _compile(tmp_path: Path, table: torch.Tensor, fill: float, exporter: Exporter = "legacy"):
    path = tmp_path / "m.onnx"
    export_onnx(_Causal(table, fill).eval(), (torch.randn(1, 8, 32),), path, input_names=["x"], output_names=["y"],
                exporter=exporter)
    x = np.random.default_rng(0).normal(size=(2, 1, 8, 32)).astype(np.float32)
    return compile(path, inputs={"x": x})


@pytest.mark.parametrize("exporter", ["legacy", "dynamo"])
def test_gpt1_style_causal_mask_is_a_causal_attention(tmp_path: Path, exporter: Exporter) -> None:
    result = _compile(tmp_path, torch.tril(torch.ones(8, 8)), -1e4, exporter)
    assert result.imported.patterns["attention"] == 1
    (attn,) = [op for op in result.module.walk() if isinstance(op, df.AttentionOp)]
    assert attn.mask_kind_choice() == MaskKind.CAUSAL  # schedules skip its fully masked tiles
    assert result.report["accuracy"]["outputs"]["y"]["cosine_min"] >= 0.99999


@pytest.mark.parametrize("table, fill", [
    (torch.tril(torch.ones(8, 8)), 0.0),  # zeros that nothing masks: the product changes the scores
    (torch.tril(torch.ones(8, 8)) * (torch.arange(8) != 3).float()[:, None], -1e4),  # row 3 keeps no key
])
def test_product_that_is_not_a_mask_stays_generic(tmp_path: Path, table: torch.Tensor, fill: float) -> None:
    result = _compile(tmp_path, table, fill)
    assert result.imported.patterns["attention"] == 0
    assert result.report["accuracy"]["outputs"]["y"]["cosine_min"] >= 0.99999
