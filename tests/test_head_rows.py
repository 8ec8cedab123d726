"""Per-row work on Q and K heads after the head transpose (compiler/frontend/head_rows.py): Swin-v2's cosine attention
(Q and K divided by their L2 norms over Dh, scores scaled by a learnt per-head logit scale, a per-window mask added
in a [B, nW, H, S, S] view of the scores) is recognised as attention on normalised Q and K, and the compile equals
onnxruntime."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch

from codesign.api import compile

pytestmark = pytest.mark.slow  # a torch export and a compile checked against onnxruntime

W, S, D, H = 2, 8, 32, 4  # windows (the batch of the attention), tokens per window, width, heads


class _CosineAttention(torch.nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.q, self.k, self.v = (torch.nn.Linear(D, D) for _ in range(3))
        self.logit_scale = torch.nn.Parameter(torch.log(10 * torch.rand(H, 1, 1) + 1))  # one per head
        self.bias = torch.nn.Parameter(torch.randn(H, S, S))
        mask = torch.zeros(W, S, S)
        mask[1, :, S // 2:] = -100.0  # the second window's tokens do not see its second half
        self.register_buffer("mask", mask)

    def _heads(self, x: torch.Tensor) -> torch.Tensor:
        return x.view(W, S, H, D // H).transpose(1, 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        q = torch.nn.functional.normalize(self._heads(self.q(x)), dim=-1)
        k = torch.nn.functional.normalize(self._heads(self.k(x)), dim=-1)
        scale = torch.clamp(self.logit_scale, max=math.log(100.0)).exp()
        scores = q @ k.transpose(-1, -2) * scale + self.bias
        scores = (scores.view(1, W, H, S, S) + self.get_buffer("mask")[None, :, None]).view(W, H, S, S)
        p = torch.softmax(scores, dim=-1)
        return (p @ self._heads(self.v(x))).transpose(1, 2).reshape(W, S, D)


def test_cosine_attention_with_window_masks(tmp_path: Path) -> None:
    from examples._common import export_onnx

    torch.manual_seed(0)
    module = _CosineAttention().eval()
    x = torch.randn(W, S, D)
    path = tmp_path / "cosine_attention.onnx"
    export_onnx(module, [x], path, input_names=["x"], output_names=["y"], exporter="legacy")
    result = compile(path, inputs={"x": x.numpy()[None]})
    assert result.imported.patterns["attention"] == 1 and result.imported.patterns["softmax"] == 1
    assert result.report["macs"] == W * (3 * S * D * D + 2 * S * S * D)
    assert result.report["accuracy"]["outputs"]["y"]["cosine_min"] >= 0.9999
