"""Grouped-query attention from one fused QKV projection with the K/V heads repeated before the rotary embedding
(Falcon's new decoder architecture): the projection viewed [B, S, KV, H/KV + 2, Dh], each group's query heads
sliced, its one K and one V head gathered and handed to the queries by an Expand inside that view, then RoPE on the
[B, H, S, Dh] heads. The fused projection is split per role (compiler/frontend/fused_proj.py), the rotation is fitted
across the Expand (compiler/frontend/rope.py), and the compile equals onnxruntime."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from codesign.api import compile

pytestmark = pytest.mark.slow  # a torch export and a compile checked against onnxruntime

S, D, H, KV = 8, 32, 4, 2
DH = D // H


def _rotate(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    half = torch.cat((-x[..., DH // 2:], x[..., :DH // 2]), dim=-1)
    return x * cos + half * sin


class _FalconNewAttention(torch.nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.qkv = torch.nn.Linear(D, (H + 2 * KV) * DH, bias=False)
        self.out = torch.nn.Linear(D, D, bias=False)
        freqs = torch.arange(S)[:, None] / 10000 ** (torch.arange(0, DH, 2) / DH)[None]
        angles = torch.cat((freqs, freqs), dim=-1)
        self.register_buffer("cos", angles.cos())
        self.register_buffer("sin", angles.sin())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        fused = self.qkv(x).view(1, S, KV, H // KV + 2, DH)
        q = fused[:, :, :, :-2]
        k = fused[:, :, :, [-2]].expand(1, S, KV, H // KV, DH)
        v = fused[:, :, :, [-1]].expand(1, S, KV, H // KV, DH)
        q, k, v = (t.reshape(1, S, H, DH).transpose(1, 2) for t in (q, k, v))
        cos, sin = self.get_buffer("cos"), self.get_buffer("sin")
        q, k = _rotate(q, cos, sin), _rotate(k, cos, sin)
        p = torch.softmax(q @ k.transpose(-1, -2) * DH ** -0.5, dim=-1)
        return self.out((p @ v).transpose(1, 2).reshape(1, S, D))


def test_kv_heads_repeated_inside_the_fused_view_before_rope(tmp_path: Path) -> None:
    from examples._common import export_onnx

    torch.manual_seed(0)
    module = _FalconNewAttention().eval()
    x = torch.randn(1, S, D)
    path = tmp_path / "falcon_new_attention.onnx"
    export_onnx(module, [x], path, input_names=["x"], output_names=["y"], exporter="legacy")
    result = compile(path, inputs={"x": x.numpy()[None]})
    assert result.imported.patterns["attention"] == 1 and result.imported.patterns["softmax"] == 1
    assert result.report["macs"] == S * D * (H + 2 * KV) * DH + S * D * D + 2 * S * S * D
    assert result.report["accuracy"]["outputs"]["y"]["cosine_min"] >= 0.9999
