"""Vision-transformer attention spellings of timm and torchvision (compiler/frontend/head_view.py and the attention
matcher): each a small torch module mirroring the structure, exported by both exporters, compiled, its attentions
counted and its simulation compared with onnxruntime: Q / K computed per head after the split, heads written back
as an image, the value product written V^T-side (EfficientViT-M, SHViT), Q / K / V pooled per head with a
Q-dependent relative-position term added in a [B, H, qh, qw, kh, kw] view of the scores (MViT-v2). A spelling that
is not one attention (talking heads mix the heads around the softmax: CaiT with linear maps, EfficientFormer-v2 with
1x1 convolutions) must stay generic ops, exact."""

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


class _ConvTalkingHeads(torch.nn.Module):
    """EfficientFormer-v2's ``Attention2d``: talking heads written as 1x1 convolutions over the [B, H, N, N] scores
    (the heads as channels) before and after the softmax, plus a position bias. Not one attention either."""

    def __init__(self) -> None:
        super().__init__()
        self.q, self.k, self.v = (torch.nn.Conv2d(D, D, 1) for _ in range(3))
        self.head1, self.head2 = torch.nn.Conv2d(H, H, 1), torch.nn.Conv2d(H, H, 1)
        self.bias = torch.nn.Parameter(torch.randn(H, S, S))

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # x: [B, D, 4, 4]
        b, c, h, w = x.shape
        q = self.q(x).reshape(b, H, DH, S).permute(0, 1, 3, 2)
        k, v = self.k(x).reshape(b, H, DH, S), self.v(x).reshape(b, H, DH, S).permute(0, 1, 3, 2)
        probs = self.head2(self.head1((q @ k) * DH ** -0.5 + self.bias).softmax(-1))
        return (probs @ v).transpose(2, 3).reshape(b, c, h, w)


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


class _CascadedGroups(torch.nn.Module):
    """EfficientViT-M's cascaded group attention on a channels-first image: per head a 1x1 convolution of the running
    feature gives Q, K, V as [B, D, N] (Q through a depthwise convolution), scores ``q^T @ k`` plus a per-head bias
    gathered from a table of offsets, and the value applied from the left, ``v @ attn^T``: [B, Dv, N], written back
    as an image. Each head is one attention op with its output transposed (channels-first)."""

    offsets: torch.Tensor

    def __init__(self, heads: int = 2, kd: int = 8, vd: int = 16, side: int = 4) -> None:
        super().__init__()
        self.heads, self.kd, self.vd = heads, kd, vd
        self.qkvs = torch.nn.ModuleList(torch.nn.Conv2d(D // heads, 2 * kd + vd, 1) for _ in range(heads))
        self.dws = torch.nn.ModuleList(torch.nn.Conv2d(kd, kd, 3, 1, 1, groups=kd) for _ in range(heads))
        self.proj = torch.nn.Conv2d(vd * heads, D, 1)
        self.biases = torch.nn.Parameter(torch.randn(heads, side * side))
        points = [(i, j) for i in range(side) for j in range(side)]
        offsets = [abs(a[0] - b[0]) * side + abs(a[1] - b[1]) for a in points for b in points]
        self.register_buffer("offsets", torch.tensor(offsets).view(side * side, side * side), persistent=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # x: [B, D, 4, 4]
        b, _, h, w = x.shape
        feats, outs = x.chunk(self.heads, 1), []
        bias, feat = self.biases[:, self.offsets], feats[0]
        for i in range(self.heads):
            feat = self.qkvs[i](feat if i == 0 else feat + feats[i])
            q, k, v = feat.view(b, -1, h, w).split([self.kd, self.kd, self.vd], 1)
            q, k, v = self.dws[i](q).flatten(2) * self.kd ** -0.5, k.flatten(2), v.flatten(2)
            attn = (q.transpose(-2, -1) @ k + bias[i]).softmax(-1)
            feat = (v @ attn.transpose(-2, -1)).view(b, self.vd, h, w)
            outs.append(feat)
        return self.proj(torch.cat(outs, 1))


class _ValueLeftHeads(torch.nn.Module):
    """The V^T-side value product on [B, H, S, Dh] heads: ``v^T @ attn^T`` is [B, H, Dh, S], merged from there."""

    def __init__(self) -> None:
        super().__init__()
        self.qkv, self.proj = torch.nn.Linear(D, 3 * D), torch.nn.Linear(D, D)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, n, _ = x.shape
        q, k, v = self.qkv(x).reshape(b, n, 3, H, DH).permute(2, 0, 3, 1, 4).unbind(0)
        attn = ((q @ k.transpose(-2, -1)) * DH ** -0.5).softmax(-1)
        return self.proj((v.transpose(-2, -1) @ attn.transpose(-2, -1)).permute(0, 3, 1, 2).reshape(b, n, D))


class _PooledRelPos(torch.nn.Module):
    """MViT-v2's pooling attention: Q, K, V pooled per head by depthwise convolutions (K / V strided), normalised per
    head, and the decomposed relative-position term -- Q times a table per image axis (einsums), broadcast along
    the other axis -- added in a [B, H, qh, qw, kh, kw] view of the scores, written back by slice assignment (a
    ScatterND in the legacy export); Q added back after the value product (residual pooling)."""

    heads = 2

    def __init__(self) -> None:
        super().__init__()
        dh = D // self.heads
        self.qkv, self.proj = torch.nn.Linear(D, 3 * D), torch.nn.Linear(D, D)
        self.pool_q = torch.nn.Conv2d(dh, dh, 3, 1, 1, groups=dh, bias=False)
        self.pool_kv = torch.nn.Conv2d(dh, dh, 3, 2, 1, groups=dh, bias=False)
        self.norm_q, self.norm_kv = torch.nn.LayerNorm(dh), torch.nn.LayerNorm(dh)
        self.rel_h, self.rel_w = torch.nn.Parameter(torch.randn(7, dh)), torch.nn.Parameter(torch.randn(7, dh))

    def _pool(self, t: torch.Tensor, conv: torch.nn.Module, norm: torch.nn.Module) -> tuple[torch.Tensor, int]:
        b, _, n, dh = t.shape
        side = int(n ** 0.5)
        t = conv(t.reshape(b * self.heads, side, side, dh).permute(0, 3, 1, 2))
        return norm(t.reshape(b, self.heads, dh, -1).transpose(2, 3)), t.shape[-1]

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # x: [B, 16, D], a 4x4 grid of tokens
        b, n, _ = x.shape
        dh = D // self.heads
        q, k, v = self.qkv(x).reshape(b, n, 3, self.heads, dh).permute(2, 0, 3, 1, 4).unbind(0)
        (q, qs), (k, ks), (v, _) = self._pool(q, self.pool_q, self.norm_q), self._pool(k, self.pool_kv, self.norm_kv), \
            self._pool(v, self.pool_kv, self.norm_kv)
        attn = (q * dh ** -0.5) @ k.transpose(-2, -1)
        ratio = qs // ks
        dist = torch.arange(qs).unsqueeze(-1) - torch.arange(ks).unsqueeze(0) * ratio + (ks - 1) * ratio
        r_q = q.reshape(b, self.heads, qs, qs, dh)
        rel_h = torch.einsum("byhwc,hkc->byhwk", r_q, self.rel_h[dist])
        rel_w = torch.einsum("byhwc,wkc->byhwk", r_q, self.rel_w[dist])
        attn[:, :, 0:, 0:] = (attn[:, :, 0:, 0:].view(b, -1, qs, qs, ks, ks) + rel_h.unsqueeze(-1)
                              + rel_w.unsqueeze(-2)).view(b, -1, qs * qs, ks * ks)
        return self.proj((attn.softmax(-1) @ v + q).transpose(1, 2).reshape(b, -1, D))


class _GridBias(torch.nn.Module):
    """A learnt bias per image axis (no Q in it) added in a [B, H, qh, qw, kh, kw] view of the scores: constant
    terms of the grid view, one [H, Sq, Sk] bias for the attention op."""

    def __init__(self) -> None:
        super().__init__()
        self.qkv, self.proj = torch.nn.Linear(D, 3 * D), torch.nn.Linear(D, D)
        self.rows, self.cols = torch.nn.Parameter(torch.randn(H, 4, 1, 4, 1)), torch.nn.Parameter(torch.randn(H, 4, 4))

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # x: [B, 16, D], a 4x4 grid of tokens
        b, n, _ = x.shape
        q, k, v = self.qkv(x).reshape(b, n, 3, H, DH).permute(2, 0, 3, 1, 4).unbind(0)
        scores = ((q @ k.transpose(-2, -1)) * DH ** -0.5).view(b, H, 4, 4, 4, 4)
        scores = (scores + self.rows + self.cols[:, None, :, None, :]).view(b, H, n, n)
        return self.proj((scores.softmax(-1) @ v).transpose(1, 2).reshape(b, n, D))


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
    (_ConvTalkingHeads, (1, D, 4, 4), 0),
    (_CrossCovariance, (1, S, D), 1),
    (_CascadedGroups, (1, D, 4, 4), 2),
    (_ValueLeftHeads, (1, S, D), 1),
    (_PooledRelPos, (1, S, D), 1),
    (_GridBias, (1, S, D), 1),
])
def test_per_head_operands(tmp_path: Path, exporter: Exporter, cls: type[torch.nn.Module], shape: tuple[int, ...],
                           attentions: int) -> None:
    torch.manual_seed(1)
    result = _compile(tmp_path, cls(), shape, exporter)
    assert result.imported.patterns["attention"] == attentions
    assert result.report["accuracy"]["outputs"]["y"]["cosine_min"] >= 0.9999


@pytest.mark.parametrize("cls, shape, attentions", [
    (_QKNormFused, (1, S, D), 1),
    (_CascadedGroups, (1, D, 4, 4), 2),
    (_PooledRelPos, (1, S, D), 1),
])
def test_per_head_operands_int8(tmp_path: Path, cls: type[torch.nn.Module], shape: tuple[int, ...],
                                attentions: int) -> None:
    """The I-ViT integer compile keeps the attention: a per-head Q/K norm feeds it, its value product is written
    V^T-side, its scores take a Q-dependent term in a grid view."""
    torch.manual_seed(1)
    result = _compile(tmp_path, cls(), shape, "legacy", INT8)
    assert result.imported.patterns["attention"] == attentions
    assert result.report["accuracy"]["outputs"]["y"]["cosine_mean"] >= 0.9
