"""Per-head Q/K norms (compiler/frontend/head_norm.py): an RMSNorm over each head's Dh values, applied before the
head transpose ([B, S, H, Dh]: Qwen3, OLMo2) or after it ([B, H, S, Dh]: Gemma3), leaves the attention recognised
with the norms their own ops, and the compile equal to onnxruntime. So does one LayerNorm per head with its own weights
(StableLM's qk_layernorm: torch.split into heads after the transpose, a norm each, torch.cat back)."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from codesign.api import compile

pytestmark = pytest.mark.slow  # a torch export and a compile checked against onnxruntime, twice

S, D, H = 8, 32, 4


class _HeadNormAttention(torch.nn.Module):
    def __init__(self, after_transpose: bool) -> None:
        super().__init__()
        self.q, self.k, self.v = (torch.nn.Linear(D, D, bias=False) for _ in range(3))
        self.gq, self.gk = torch.nn.Parameter(torch.rand(D // H) + 0.5), torch.nn.Parameter(torch.rand(D // H) + 0.5)
        self.after = after_transpose

    def _norm(self, x: torch.Tensor, gamma: torch.Tensor) -> torch.Tensor:
        return x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + 1e-6) * gamma

    def _heads(self, x: torch.Tensor, gamma: torch.Tensor) -> torch.Tensor:
        x = x.view(1, S, H, D // H)
        return self._norm(x.transpose(1, 2), gamma) if self.after else self._norm(x, gamma).transpose(1, 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        q, k = self._heads(self.q(x), self.gq), self._heads(self.k(x), self.gk)
        v = self.v(x).view(1, S, H, D // H).transpose(1, 2)
        p = torch.softmax(q @ k.transpose(-1, -2) * (D // H) ** -0.5, dim=-1)
        return (p @ v).transpose(1, 2).reshape(1, S, D)


@pytest.mark.parametrize("after_transpose", [False, True])
def test_head_norm_either_side_of_the_head_transpose(tmp_path: Path, after_transpose: bool) -> None:
    from examples._common import export_onnx

    torch.manual_seed(0)
    module = _HeadNormAttention(after_transpose).eval()
    x = torch.randn(1, S, D)
    path = tmp_path / "head_norm.onnx"
    export_onnx(module, [x], path, input_names=["x"], output_names=["y"], exporter="legacy")
    result = compile(path, inputs={"x": x.numpy()[None]})
    assert result.imported.patterns["attention"] == 1 and result.imported.patterns["layernorm"] == 2
    assert result.report["macs"] == 3 * S * D * D + 2 * S * S * D
    assert result.report["accuracy"]["outputs"]["y"]["cosine_min"] >= 0.9999
    assert result.imported.patterns["softmax"] == 1


class _HandNorm(torch.nn.LayerNorm):
    """A LayerNorm written out (mean, variance, rsqrt): exported as its element-wise ops and reductions, recognised
    as a norm region rather than read from one LayerNormalization node."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        d = x - x.mean(-1, keepdim=True)
        return d * torch.rsqrt(d.pow(2).mean(-1, keepdim=True) + self.eps) * self.weight + self.bias


class _SplitHeadNormAttention(torch.nn.Module):
    """Q and K heads normalised each by its own LayerNorm (StableLM's ``StableLmLayerNormPerHead``)."""

    def __init__(self, written_out: bool) -> None:
        super().__init__()
        norm = _HandNorm if written_out else torch.nn.LayerNorm
        self.q, self.k, self.v = (torch.nn.Linear(D, D, bias=False) for _ in range(3))
        self.nq, self.nk = (torch.nn.ModuleList(norm(D // H) for _ in range(H)) for _ in range(2))
        with torch.no_grad():  # distinct per-head weights: a norm shared by all heads would not pass for them
            for layer in (*self.nq, *self.nk):
                assert isinstance(layer, torch.nn.LayerNorm)
                layer.weight.uniform_(0.5, 1.5)
                layer.bias.uniform_(-0.5, 0.5)

    @staticmethod
    def _heads(x: torch.Tensor, norms: torch.nn.ModuleList) -> torch.Tensor:
        heads = torch.split(x.view(1, S, H, D // H).transpose(1, 2), 1, dim=1)
        return torch.cat([norm(h) for norm, h in zip(norms, heads)], dim=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        q, k = self._heads(self.q(x), self.nq), self._heads(self.k(x), self.nk)
        v = self.v(x).view(1, S, H, D // H).transpose(1, 2)
        p = torch.softmax(q @ k.transpose(-1, -2) * (D // H) ** -0.5, dim=-1)
        return (p @ v).transpose(1, 2).reshape(1, S, D)


@pytest.mark.parametrize("written_out", [False, True])
def test_one_norm_per_head_split_and_concatenated(tmp_path: Path, written_out: bool) -> None:
    from examples._common import export_onnx

    torch.manual_seed(0)
    module = _SplitHeadNormAttention(written_out).eval()
    x = torch.randn(1, S, D)
    path = tmp_path / "split_head_norm.onnx"
    export_onnx(module, [x], path, input_names=["x"], output_names=["y"], exporter="legacy")
    result = compile(path, inputs={"x": x.numpy()[None]})
    assert result.imported.patterns["attention"] == 1 and result.imported.patterns["layernorm"] == 2 * H
    assert result.report["macs"] == 3 * S * D * D + 2 * S * S * D
    assert result.report["accuracy"]["outputs"]["y"]["cosine_min"] >= 0.9999
