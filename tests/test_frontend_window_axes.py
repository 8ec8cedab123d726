"""Attention whose windows stay an axis of Q, K, V and the scores (compiler/frontend/window_axes.py): small torch
modules with the arrangements of torchvision's MaxViT and Twins' locally-grouped attention ([B, nW, H, S, S] scores)
and of NesT and Hiera ([B, H, nW, S, S]), with and without a relative-position bias, and windows kept as two axes, exported by both exporters,
compiled, their attentions counted and their simulation compared with onnxruntime. Scores mixed across windows
before the softmax are no attention per window: they must stay generic ops, exact."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import torch
import torch.nn.functional as F

from codesign.api import compile
from compiler.dialect import dataflow as df
from compiler.pipeline import CompileResult
from examples._common import Exporter, export_onnx
from examples.zoo import INT8

D, H, W = 32, 4, 4  # width, heads, window side: windows of W*W = 16 tokens on an 8x8 image (4 windows)
DH, S, NW = D // H, W * W, 4


def _windows(x: torch.Tensor) -> torch.Tensor:
    """[B, 8, 8, D] image -> [B, nW, S, D] windows (the window partition of MaxViT / Twins / NesT)."""
    b = x.shape[0]
    return x.view(b, 2, W, 2, W, D).permute(0, 1, 3, 2, 4, 5).reshape(b, NW, S, D)


def _image(x: torch.Tensor) -> torch.Tensor:
    """[B, nW, S, D] windows -> [B, 8, 8, D] image."""
    b = x.shape[0]
    return x.view(b, 2, 2, W, W, D).permute(0, 1, 3, 2, 4, 5).reshape(b, 8, 8, D)


class _WindowsFirst(torch.nn.Module):
    """MaxViT / Twins: Q, K, V split from one projection of the windows to [B, nW, H, S, Dh]; scores [B, nW, H, S, S]
    plus, with ``bias``, a learnt relative-position bias per head [H, S, S]."""

    def __init__(self, bias: bool) -> None:
        super().__init__()
        self.qkv, self.proj = torch.nn.Linear(D, 3 * D), torch.nn.Linear(D, D)
        self.bias = torch.nn.Parameter(torch.randn(H, S, S)) if bias else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        w = _windows(x)
        b = w.shape[0]
        q, k, v = self.qkv(w).reshape(b, NW, S, 3, H, DH).permute(3, 0, 1, 4, 2, 5).unbind(0)
        scores = (q * DH ** -0.5) @ k.transpose(-2, -1)
        if self.bias is not None:
            scores = scores + self.bias
        ctx = (scores.softmax(-1) @ v).transpose(2, 3).reshape(b, NW, S, D)
        return _image(self.proj(ctx))


class _HeadsFirst(torch.nn.Module):
    """NesT / Hiera: the heads before the windows, [B, H, nW, S, Dh]; scores [B, H, nW, S, S] plus, with ``bias``,
    a bias per head shared by the windows [H, 1, S, S]. With ``sdpa`` the product is torch's scaled dot-product
    attention (which the legacy exporter writes with the scale split between Q and K)."""

    def __init__(self, bias: bool, sdpa: bool = False) -> None:
        super().__init__()
        self.qkv, self.proj = torch.nn.Linear(D, 3 * D), torch.nn.Linear(D, D)
        self.bias = torch.nn.Parameter(torch.randn(H, 1, S, S)) if bias else None
        self.sdpa = sdpa

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        w = _windows(x)
        b = w.shape[0]
        q, k, v = self.qkv(w).reshape(b, NW, S, 3, H, DH).permute(3, 0, 4, 1, 2, 5).unbind(0)
        if self.sdpa:
            ctx = F.scaled_dot_product_attention(q, k, v, attn_mask=self.bias)
        else:
            scores = (q @ k.transpose(-2, -1)) * DH ** -0.5
            if self.bias is not None:
                scores = scores + self.bias
            ctx = scores.softmax(-1) @ v
        return _image(self.proj(ctx.permute(0, 2, 3, 1, 4).reshape(b, NW, S, D)))


class _WindowGrid(torch.nn.Module):
    """The windows kept as two axes (rows, columns of windows): scores [B, 2, 2, H, S, S] (rank 6) plus a constant
    additive term per window column [2, 1, S, S], which varies along one of the two axes merged into the batch."""

    def __init__(self) -> None:
        super().__init__()
        self.qkv, self.proj = torch.nn.Linear(D, 3 * D), torch.nn.Linear(D, D)
        self.register_buffer("column_bias", torch.randn(2, 1, S, S))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b = x.shape[0]
        w = x.view(b, 2, W, 2, W, D).permute(0, 1, 3, 2, 4, 5).reshape(b, 2, 2, S, D)
        q, k, v = self.qkv(w).reshape(b, 2, 2, S, 3, H, DH).permute(4, 0, 1, 2, 5, 3, 6).unbind(0)
        scores = q @ k.transpose(-2, -1) * DH ** -0.5 + self.column_bias
        ctx = (scores.softmax(-1) @ v).permute(0, 1, 2, 4, 3, 5).reshape(b, NW, S, D)
        return _image(self.proj(ctx))


class _WindowsMixed(torch.nn.Module):
    """Scores [B, nW, H, S, S] mixed across the windows by a linear map before the softmax: the probabilities of a
    window are not one softmax of its own scores, so no attention op computes this."""

    def __init__(self) -> None:
        super().__init__()
        self.qkv, self.proj = torch.nn.Linear(D, 3 * D), torch.nn.Linear(D, D)
        self.mix = torch.nn.Linear(NW, NW)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        w = _windows(x)
        b = w.shape[0]
        q, k, v = self.qkv(w).reshape(b, NW, S, 3, H, DH).permute(3, 0, 1, 4, 2, 5).unbind(0)
        scores = self.mix((q @ k.transpose(-2, -1) * DH ** -0.5).permute(0, 2, 3, 4, 1)).permute(0, 4, 1, 2, 3)
        ctx = (scores.softmax(-1) @ v).transpose(2, 3).reshape(b, NW, S, D)
        return _image(self.proj(ctx))


def _compile(tmp_path: Path, module: torch.nn.Module, exporter: Exporter,
             choices: dict[str, Any] | None = None) -> CompileResult:
    torch.manual_seed(0)
    x = torch.randn(1, 8, 8, D)
    path = tmp_path / f"m_{exporter}.onnx"
    export_onnx(module.eval(), [x], path, input_names=["x"], output_names=["y"], exporter=exporter)
    return compile(path, inputs={"x": x.numpy()[None]}, **(choices or {}))


_CASES = [("windows-first", lambda: _WindowsFirst(bias=False), 1),
          ("windows-first-bias", lambda: _WindowsFirst(bias=True), 1),
          ("heads-first", lambda: _HeadsFirst(bias=False), 1),
          ("heads-first-bias", lambda: _HeadsFirst(bias=True), 1),
          ("window-grid", _WindowGrid, 1),
          ("mixed", _WindowsMixed, 0)]


# torch's dynamo exporter refuses scaled_dot_product_attention on rank-5 operands ("only 4D query, key, and value
# are supported"): the SDPA spelling is exported by the legacy exporter only.
@pytest.mark.parametrize("exporter, make, attentions", [
    *[pytest.param(e, make, n, id=f"{name}-{e}") for name, make, n in _CASES for e in ("legacy", "dynamo")],
    pytest.param("legacy", lambda: _HeadsFirst(bias=True, sdpa=True), 1, id="heads-first-sdpa-legacy")])
def test_window_axes(tmp_path: Path, exporter: Exporter, make, attentions: int) -> None:
    """The windows fold into the batch of one attention op of H heads (the heads axis read off the projection Q is
    split from, wherever it sits among the leading axes), exact against onnxruntime."""
    torch.manual_seed(1)
    result = _compile(tmp_path, make(), exporter)
    assert result.imported.patterns["attention"] == attentions
    ops = [op for op in result.module.walk() if isinstance(op, df.AttentionOp)]
    assert [(op.num_heads_value(), op.head_dim_value()) for op in ops] == [(H, DH)] * attentions
    assert result.report["accuracy"]["outputs"]["y"]["cosine_min"] >= 0.9999


def test_window_axes_int8(tmp_path: Path) -> None:
    """The I-ViT integer compile keeps the attention over windows kept as an axis."""
    torch.manual_seed(1)
    result = _compile(tmp_path, _HeadsFirst(bias=True), "legacy", INT8)
    assert result.imported.patterns["attention"] == 1
    assert result.report["accuracy"]["outputs"]["y"]["cosine_mean"] >= 0.9
