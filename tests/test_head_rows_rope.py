"""A per-head norm after rotary embeddings (compiler/frontend/head_rows.py, positional regions): HunYuan and nanochat
rotate Q and K on [B, H, S, Dh] and then RMS-normalise each head. The rotation and the norm move before the head
transpose together (the cos / sin tables transposed with them), the attention is recognised on the normalised Q
and K, and the compile equals onnxruntime, on both exporters, with and without the norm's weight; without a norm
(LLaMA) the rotation is still recognised as the attention's own ``rope``.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from codesign.api import compile
from examples._common import Exporter, export_onnx

pytestmark = pytest.mark.slow  # torch exports and compiles checked against onnxruntime

S, D, H = 8, 32, 4
DH = D // H


def _rotate_half(x: torch.Tensor) -> torch.Tensor:
    return torch.cat((-x[..., DH // 2:], x[..., : DH // 2]), dim=-1)


class RopeThenNorm(torch.nn.Module):
    def __init__(self, norm: str) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.q, self.k, self.v, self.o = (torch.nn.Linear(D, D, bias=False) for _ in range(4))
        self.norm = norm
        self.weight = torch.nn.Parameter(1 + 0.1 * torch.randn(DH))
        freq = 1.0 / (10000 ** (torch.arange(0, DH, 2).float() / DH))
        angles = torch.outer(torch.arange(S).float(), freq)
        angles = torch.cat((angles, angles), dim=-1)
        self.register_buffer("cos", angles.cos()[None, None])
        self.register_buffer("sin", angles.sin()[None, None])

    def _head_norm(self, x: torch.Tensor) -> torch.Tensor:
        if self.norm == "none":
            return x
        y = x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + 1e-6)
        return y * self.weight if self.norm == "weighted" else y

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        def heads(t: torch.Tensor) -> torch.Tensor:
            return t.view(1, S, H, DH).transpose(1, 2)

        q, k, v = heads(self.q(x)), heads(self.k(x)), heads(self.v(x))
        cos, sin = self.get_buffer("cos"), self.get_buffer("sin")
        q, k = q * cos + _rotate_half(q) * sin, k * cos + _rotate_half(k) * sin
        q, k = self._head_norm(q), self._head_norm(k)
        out = torch.nn.functional.scaled_dot_product_attention(q, k, v, is_causal=True)
        return self.o(out.transpose(1, 2).reshape(1, S, D))


@pytest.mark.parametrize("norm", ["weighted", "plain", "none"])
@pytest.mark.parametrize("exporter", ["legacy", "dynamo"])
def test_norm_after_rope_is_recognised_and_exact(tmp_path: Path, exporter: Exporter, norm: str) -> None:
    path = tmp_path / "rope_norm.onnx"
    x = torch.randn(1, S, D, generator=torch.Generator().manual_seed(1))
    export_onnx(RopeThenNorm(norm).eval(), [x], path, input_names=["x"], output_names=["y"], exporter=exporter)
    run = compile(path, inputs={"x": x.numpy()[None]})
    assert run.imported.patterns["attention"] == 1
    assert run.imported.patterns["layernorm"] == (0 if norm == "none" else 2)
    assert run.report["accuracy"]["outputs"]["y"]["cosine_min"] > 0.9999
    assert run.report["macs"] == 4 * S * D * D + 2 * S * S * D
    ops = {op.name for op in run.module.walk()}
    assert ("dataflow.rope" in ops) == (norm == "none")  # moved with a norm, the rotation is element-wise work
    int8 = compile(path, inputs={"x": x.numpy()[None]}, quant="int8", softmax="shiftmax")
    assert int8.imported.patterns["attention"] == 1
    assert int8.report["accuracy"]["outputs"]["y"]["cosine_min"] > 0.98
