"""Grouped-query and multi-query attention on the system backend.

A query head ``h`` of ``H`` reads key/value head ``h // (H / KV)`` (the simulator's ``kernels._kv_heads``,
``repeat_interleave`` in torch): the backend's ``Q K^T`` and ``P V`` folds take that head's column window of the
narrower K and V projections, so nothing is repeated in memory. Every device value equals the functional
simulator's, bit for bit (tests/test_backend.py's check), on two array shapes.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

from codesign.api import compile
from compiler.dialect import dataflow as df
from tests.test_backend import _check_model

S, D, H = 8, 32, 4
DH = D // H


class _GroupedAttention(torch.nn.Module):
    """A pre-norm causal attention block with ``kv`` key/value heads shared by ``H`` query heads."""

    def __init__(self, kv: int) -> None:
        super().__init__()
        self.kv = kv
        self.norm = torch.nn.LayerNorm(D)
        self.q, self.o = torch.nn.Linear(D, D), torch.nn.Linear(D, D)
        self.k, self.v = torch.nn.Linear(D, kv * DH), torch.nn.Linear(D, kv * DH)

    def _heads(self, x: torch.Tensor) -> torch.Tensor:
        return x.view(1, S, self.kv, DH).transpose(1, 2).repeat_interleave(H // self.kv, dim=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.norm(x)
        q = self.q(h).view(1, S, H, DH).transpose(1, 2)
        a = F.scaled_dot_product_attention(q, self._heads(self.k(h)), self._heads(self.v(h)), is_causal=True)
        return x + self.o(a.transpose(1, 2).reshape(1, S, D))


def _export(path: Path, kv: int) -> str:
    torch.manual_seed(kv)
    torch.onnx.export(_GroupedAttention(kv).eval(), (torch.randn(1, S, D),), str(path), dynamo=False,
                      input_names=["x"])
    return str(path)


@pytest.mark.parametrize("kv", [1, 2])
def test_shared_key_value_heads_run_bit_exact(tmp_path: Path, kv: int) -> None:
    model = _export(tmp_path / f"gqa{kv}.onnx", kv)
    ops = [op for op in compile(model).module.walk() if isinstance(op, df.AttentionOp)]
    assert [op.kv_heads_value() for op in ops] == [kv]  # the frontend saw the shared heads, not repeated ones
    _check_model(model, 8, 8, orders=("loads_first",))
    _check_model(model, 4, 16, orders=("loads_first",))
