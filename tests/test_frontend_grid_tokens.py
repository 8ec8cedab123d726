"""Attention over a grid of tokens (compiler/frontend/grid_tokens.py, fused_qkv.py's merged-heads split).

ViTDet and SAM's image encoder keep tokens as [B, H, W, C], project with one fused QKV, and merge batch and heads
after the permute ([3, B*H, T, Dh]); windowed layers first partition the grid into a batch of windows. Each is
checked on both exporters (the legacy one splits with Split, dynamo with three unit Slices): the attention is
recognised, the compile's simulation equals onnxruntime, and the MACs are the module's.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from codesign.api import compile
from compiler.frontend.fused_qkv import split_fused_qkv
from compiler.frontend.graph import Graph, Node
from examples._common import Exporter, export_onnx

DIM, HEADS = 32, 4


class GridAttention(torch.nn.Module):
    """ViTDet's attention block on a [B, H, W, C] grid, optionally inside ``window`` x ``window`` windows."""

    def __init__(self, window: int = 0) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.qkv, self.proj, self.window = torch.nn.Linear(DIM, 3 * DIM), torch.nn.Linear(DIM, DIM), window
        self.scale = (DIM // HEADS) ** -0.5

    def attend(self, x: torch.Tensor) -> torch.Tensor:
        b, h, w, _ = x.shape
        qkv = self.qkv(x).reshape(b, h * w, 3, HEADS, -1).permute(2, 0, 3, 1, 4)
        q, k, v = qkv.reshape(3, b * HEADS, h * w, -1).unbind(0)
        a = ((q * self.scale) @ k.transpose(-2, -1)).softmax(-1)
        o = (a @ v).view(b, HEADS, h, w, -1).permute(0, 2, 3, 1, 4).reshape(b, h, w, -1)
        return self.proj(o)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.window:
            return self.attend(x)
        b, h, w, c, s = *x.shape, self.window
        windows = x.view(b, h // s, s, w // s, s, c).permute(0, 1, 3, 2, 4, 5).reshape(-1, s, s, c)
        out = self.attend(windows)
        return out.view(b, h // s, w // s, s, s, c).permute(0, 1, 3, 2, 4, 5).reshape(b, h, w, c)


@pytest.mark.parametrize("window", [0, 2])
@pytest.mark.parametrize("exporter", ["legacy", "dynamo"])
def test_grid_attention_is_recognised_and_exact(tmp_path: Path, exporter: Exporter, window: int) -> None:
    path = tmp_path / "grid.onnx"
    x = torch.randn(1, 4, 4, DIM, generator=torch.Generator().manual_seed(1))
    module = GridAttention(window).eval()
    export_onnx(module, [x], path, input_names=["x"], output_names=["y"], exporter=exporter)
    run = compile(path, inputs={"x": x.numpy()[None]})
    assert run.imported.patterns["attention"] == 1
    assert run.report["accuracy"]["outputs"]["y"]["cosine_min"] > 0.9999
    tokens = 16
    want = tokens * DIM * 3 * DIM + 2 * tokens * (window * window or tokens) * DIM + tokens * DIM * DIM
    assert run.report["macs"] == want


def test_three_unit_slices_become_the_split_the_legacy_exporter_writes() -> None:
    """Slices [0:1], [1:2], [2:3] of axis 0 are one Split; a Slice of two elements is left alone."""
    import numpy as np

    def graph(ends: tuple[int, int, int]) -> Graph:
        consts = {f"s{i}": np.array([i]) for i in range(3)} | {f"e{i}": np.array([e]) for i, e in enumerate(ends)}
        consts["ax"] = np.array([0])
        nodes = [Node("Slice", f"sl{i}", ["t", f"s{i}", f"e{i}", "ax"], [f"o{i}"]) for i in range(3)]
        shapes = {"t": (3, 2, 4), **{f"o{i}": (ends[i] - i, 2, 4) for i in range(3)}}
        return Graph(nodes, ["t"], ["o0", "o1", "o2"], consts, shapes, {})

    ok, other = graph((1, 2, 3)), graph((2, 2, 3))
    split_fused_qkv(ok)
    split_fused_qkv(other)
    assert [n.op_type for n in ok.nodes] == ["Split"] and ok.nodes[0].outputs == ["o0", "o1", "o2"]
    assert [n.op_type for n in other.nodes] == ["Slice"] * 3
