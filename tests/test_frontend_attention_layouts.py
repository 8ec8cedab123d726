"""Attention layouts beyond batch-first [B, S, D] (compiler/frontend/recognize.py): channels-first [B, D, S]
projections and output (SqueezeBERT's kernel-1 Conv1d), heads concatenated with other heads before their merge
(ConvBERT), a constant added to Q after the head split (Funnel's r_w_bias), K/V through a Concat of one tensor
(XLM) and bmm-style scores with heads folded into the batch and no [B, H, S, S] view (FSMT without a mask) — each a small torch module exported
by torch.onnx, compiled with its attention recognised, its MACs exact and its simulation equal to onnxruntime."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from codesign.api import compile
from compiler.frontend.batchnorm import lower_batchnorms
from compiler.frontend.graph import Graph, Node
from examples._common import export_onnx
from hw.errors import InputError

D, H, S = 32, 4, 16


class _ChannelsFirst(torch.nn.Module):
    """SqueezeBERT's attention: Q, K, V from Conv1d(kernel 1) on [B, D, S], the context back in [B, D, S]."""

    def __init__(self) -> None:
        super().__init__()
        self.q, self.k, self.v, self.o = (torch.nn.Conv1d(D, D, 1, groups=g) for g in (4, 4, 4, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # x: [B, D, S]
        b = x.shape[0]
        q = self.q(x).view(b, H, D // H, S).permute(0, 1, 3, 2)
        k = self.k(x).view(b, H, D // H, S)
        v = self.v(x).view(b, H, D // H, S).permute(0, 1, 3, 2)
        ctx = ((q @ k) / (D // H) ** 0.5).softmax(-1) @ v  # [B, H, S, Dh]
        return self.o(ctx.permute(0, 1, 3, 2).reshape(b, D, S))


class _ConcatHeads(torch.nn.Module):
    """ConvBERT's mix: half the heads attend, the other half come from a projection; both joined on the head axis
    of [B, S, H, Dh] before the merge."""

    def __init__(self) -> None:
        super().__init__()
        self.q, self.k, self.v, self.other = (torch.nn.Linear(D, D // 2) for _ in range(4))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b = x.shape[0]
        q, k, v = (f(x).view(b, S, H // 2, D // H).transpose(1, 2) for f in (self.q, self.k, self.v))
        ctx = ((q @ k.transpose(-1, -2)) / 3.0).softmax(-1) @ v
        joined = torch.cat([ctx.transpose(1, 2), self.other(x).view(b, S, H // 2, D // H)], dim=2)
        return joined.reshape(b, S, D)


class _BiasedQuery(torch.nn.Module):
    """Funnel's content scores: a per-head bias added to Q after the head split."""

    def __init__(self) -> None:
        super().__init__()
        self.q, self.k, self.v = (torch.nn.Linear(D, D) for _ in range(3))
        self.bias = torch.nn.Parameter(torch.randn(H, D // H))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b = x.shape[0]
        q, k, v = (f(x).view(b, S, H, D // H) for f in (self.q, self.k, self.v))
        scores = torch.einsum("bind,bjnd->bnij", q * 0.25 + self.bias, k)
        return torch.einsum("bnij,bjnd->bind", scores.softmax(-1), v).reshape(b, S, D)


class _CatOfOne(torch.nn.Module):
    """XLM's self-attention: K and V pass through a concat with an empty cache list (a Concat of one input)."""

    def __init__(self) -> None:
        super().__init__()
        self.q, self.k, self.v = (torch.nn.Linear(D, D) for _ in range(3))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b = x.shape[0]
        q, k, v = (f(x).view(b, S, H, D // H).transpose(1, 2) for f in (self.q, self.k, self.v))
        k, v = torch.cat([k], dim=2), torch.cat([v], dim=2)
        ctx = ((q / 3.0) @ k.transpose(-1, -2)).softmax(-1) @ v
        return ctx.transpose(1, 2).reshape(b, S, D)


class _FoldedHeadsNoView(torch.nn.Module):
    """FSMT's attention without a mask: sequence-first [S, B, D], heads folded into the batch ([B*H, S, S] bmm
    scores) and never viewed as [B, H, S, S] (no mask is added there), with two batch rows: B and H are only known
    from the head split the match proves."""

    def __init__(self) -> None:
        super().__init__()
        self.q, self.k, self.v = (torch.nn.Linear(D, D) for _ in range(3))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        s, b, _ = x.shape
        q, k, v = (f(x).view(s, b * H, D // H).transpose(0, 1) for f in (self.q, self.k, self.v))
        probs = torch.bmm(q * 0.25, k.transpose(1, 2)).softmax(-1)
        return torch.bmm(probs, v).transpose(0, 1).reshape(s, b, D)


@pytest.mark.parametrize("cls, shape, macs", [
    (_ChannelsFirst, (1, D, S), 3 * S * D * D // 4 + S * D * D + 2 * H * S * S * (D // H)),
    (_ConcatHeads, (1, S, D), 4 * S * D * D // 2 + 2 * (H // 2) * S * S * (D // H)),
    (_BiasedQuery, (1, S, D), 3 * S * D * D + 2 * H * S * S * (D // H)),
    (_CatOfOne, (1, S, D), 3 * S * D * D + 2 * H * S * S * (D // H)),
    (_FoldedHeadsNoView, (S, 2, D), 2 * (3 * S * D * D + 2 * H * S * S * (D // H))),
])
def test_attention_layout_recognised(tmp_path: Path, cls: type[torch.nn.Module], shape: tuple[int, ...],
                                     macs: int) -> None:
    torch.manual_seed(0)
    module = cls().eval()
    x = torch.randn(*shape)
    path = tmp_path / "m.onnx"
    export_onnx(module, [x], path, input_names=["x"], output_names=["y"], exporter="legacy")
    result = compile(path, inputs={"x": x.numpy()[None]})
    assert result.imported.patterns["attention"] == 1
    assert result.report["macs"] == macs
    assert result.report["accuracy"]["outputs"]["y"]["cosine_min"] >= 0.9999


def test_training_batchnorm_is_one_line() -> None:
    params = {f"p{i}": np.ones(4, dtype=np.float32) for i in range(4)}
    graph = Graph([Node("BatchNormalization", "block/bn", ["x", *params], ["y"], {"training_mode": 1})], ["x"],
                  ["y"], params, {"x": (1, 4, 3), "y": (1, 4, 3)}, {}, source="m.onnx")
    with pytest.raises(InputError, match=r"^m.onnx: unsupported op BatchNormalization \(node 'block/bn'\): only "
                                         r"inference form"):
        lower_batchnorms(graph)
