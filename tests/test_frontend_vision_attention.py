"""Vision-transformer attention spellings of timm and torchvision (compiler/frontend/head_view.py and the attention
matcher): each a small torch module mirroring the structure, exported by both exporters, compiled, its attentions
counted and its simulation compared with onnxruntime: Q / K computed per head after the split, heads written back
as an image. A spelling that is not one attention (talking heads mix the heads around the softmax) must stay
generic ops, exact."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import torch
import torch.nn.functional as F

from codesign.api import compile
from compiler.pipeline import CompileResult
from examples._common import Exporter, export_onnx
from examples.zoo import INT8

D, H, S = 32, 4, 16
DH = D // H


class _QKNormFused(torch.nn.Module):
    """timm's ``Attention(qk_norm=True)``: one fused QKV projection split into heads by reshape + permute + unbind,
    a LayerNorm over each head's Dh values of Q and K after the split, then scaled dot-product attention."""

    def __init__(self) -> None:
        super().__init__()
        self.qkv, self.proj = torch.nn.Linear(D, 3 * D), torch.nn.Linear(D, D)
        self.q_norm, self.k_norm = torch.nn.LayerNorm(DH), torch.nn.LayerNorm(DH)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, n, _ = x.shape
        q, k, v = self.qkv(x).reshape(b, n, 3, H, DH).permute(2, 0, 3, 1, 4).unbind(0)
        q, k = self.q_norm(q) * DH ** -0.5, self.k_norm(k)
        ctx = (q @ k.transpose(-2, -1)).softmax(-1) @ v
        return self.proj(ctx.transpose(1, 2).reshape(b, n, D))


class _CosineWindows(torch.nn.Module):
    """Swin-v2's scaled-cosine window attention: the image split into windows by reshapes, Q and K L2-normalised
    per head, scaled by a learnt per-head logit scale (exp of a clamped parameter) plus a learnt position bias."""

    def __init__(self) -> None:
        super().__init__()
        self.qkv, self.proj = torch.nn.Linear(D, 3 * D), torch.nn.Linear(D, D)
        self.logit_scale = torch.nn.Parameter(torch.log(10 * torch.rand(H, 1, 1) + 1))
        self.bias = torch.nn.Parameter(torch.randn(H, S, S))

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # x: [B, 8, 8, D], windows of 4x4 = S tokens
        b = x.shape[0]
        w = x.view(b, 2, 4, 2, 4, D).permute(0, 1, 3, 2, 4, 5).reshape(b * 4, S, D)
        q, k, v = self.qkv(w).reshape(b * 4, S, 3, H, DH).permute(2, 0, 3, 1, 4)
        scale = torch.clamp(self.logit_scale, max=4.6052).exp()
        scores = (F.normalize(q, dim=-1) @ F.normalize(k, dim=-1).transpose(-2, -1)) * scale + self.bias
        ctx = (scores.softmax(-1) @ v).transpose(1, 2).reshape(b * 4, S, D)
        out = self.proj(ctx).view(b, 2, 2, 4, 4, D).permute(0, 1, 3, 2, 4, 5)
        return out.reshape(b, 8, 8, D)


class _TalkingHeads(torch.nn.Module):
    """CaiT's talking-heads attention: the heads mixed by linear maps before and after the softmax. No attention
    op computes that (the probabilities the values are weighted by are not one softmax of one head's scores)."""

    def __init__(self) -> None:
        super().__init__()
        self.qkv, self.proj = torch.nn.Linear(D, 3 * D), torch.nn.Linear(D, D)
        self.mix_l, self.mix_w = torch.nn.Linear(H, H), torch.nn.Linear(H, H)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, n, _ = x.shape
        q, k, v = self.qkv(x).reshape(b, n, 3, H, DH).permute(2, 0, 3, 1, 4).unbind(0)
        scores = self.mix_l((q * DH ** -0.5 @ k.transpose(-2, -1)).permute(0, 2, 3, 1)).permute(0, 3, 1, 2)
        probs = self.mix_w(scores.softmax(-1).permute(0, 2, 3, 1)).permute(0, 3, 1, 2)
        return self.proj((probs @ v).transpose(1, 2).reshape(b, n, D))


class _ConvHeadsImage(torch.nn.Module):
    """Visformer's attention on an image: Q, K, V from one 1x1 convolution of [B, C, h, w] split into heads by
    reshape + permute + unbind, and the heads written back as a channels-first image."""

    def __init__(self) -> None:
        super().__init__()
        self.qkv, self.proj = torch.nn.Conv2d(D, 3 * D, 1), torch.nn.Conv2d(D, D, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # x: [B, D, 4, 4]
        b, c, h, w = x.shape
        q, k, v = self.qkv(x).reshape(b, 3, H, DH, h * w).permute(1, 0, 2, 4, 3).unbind(0)
        ctx = ((q @ k.transpose(-2, -1)) * DH ** -0.5).softmax(-1) @ v
        return self.proj(ctx.permute(0, 1, 3, 2).reshape(b, c, h, w))


class _CrossCovariance(torch.nn.Module):
    """XCiT's cross-covariance attention: L2-normalised Q and K transposed, so the softmax runs over channels (a
    per-head temperature scaling the scores) and the values are weighted along Dh; the result is read back
    token-major. It is attention over the channels, exactly: one attention op, its output moved to tokens."""

    def __init__(self) -> None:
        super().__init__()
        self.qkv, self.proj = torch.nn.Linear(D, 3 * D), torch.nn.Linear(D, D)
        self.temperature = torch.nn.Parameter(torch.rand(H, 1, 1) + 0.5)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, n, _ = x.shape
        q, k, v = self.qkv(x).reshape(b, n, 3, H, DH).permute(2, 0, 3, 4, 1).unbind(0)  # [B, H, Dh, N]
        attn = (F.normalize(q, dim=-1) @ F.normalize(k, dim=-1).transpose(-2, -1)) * self.temperature
        return self.proj((attn.softmax(-1) @ v).permute(0, 3, 1, 2).reshape(b, n, D))


def _compile(tmp_path: Path, module: torch.nn.Module, shape: tuple[int, ...], exporter: Exporter,
             choices: dict[str, Any] | None = None) -> CompileResult:
    torch.manual_seed(0)
    x = torch.randn(*shape)
    path = tmp_path / f"m_{exporter}.onnx"
    export_onnx(module.eval(), [x], path, input_names=["x"], output_names=["y"], exporter=exporter)
    return compile(path, inputs={"x": x.numpy()[None]}, **(choices or {}))


@pytest.mark.parametrize("exporter", ["legacy", "dynamo"])
@pytest.mark.parametrize("cls, shape, attentions", [
    (_QKNormFused, (1, S, D), 1),
    (_CosineWindows, (1, 8, 8, D), 1),
    (_ConvHeadsImage, (1, D, 4, 4), 1),
    (_TalkingHeads, (1, S, D), 0),
    (_CrossCovariance, (1, S, D), 1),
])
def test_per_head_operands(tmp_path: Path, exporter: Exporter, cls: type[torch.nn.Module], shape: tuple[int, ...],
                           attentions: int) -> None:
    torch.manual_seed(1)
    result = _compile(tmp_path, cls(), shape, exporter)
    assert result.imported.patterns["attention"] == attentions
    assert result.report["accuracy"]["outputs"]["y"]["cosine_min"] >= 0.9999


def test_per_head_operands_int8(tmp_path: Path) -> None:
    """The I-ViT integer compile keeps the attention a per-head Q/K norm feeds."""
    torch.manual_seed(1)
    result = _compile(tmp_path, _QKNormFused(), (1, S, D), "legacy", INT8)
    assert result.imported.patterns["attention"] == 1
    assert result.report["accuracy"]["outputs"]["y"]["cosine_mean"] >= 0.9
