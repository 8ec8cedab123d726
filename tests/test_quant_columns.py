"""int8 products of two activations whose right operand has columns of very different ranges.

EfficientViT's ReLU linear attention (timm's ``LiteMLA``) pads V with a column of ones, takes ``vk = k^T [v, 1]``
(its last column sums k over every token, tens of times larger than the others), then ``q @ vk`` and divides the
numerator columns by the last one. With one int8 step for ``vk`` the numerator columns kept 2-3 bits (timm's
EfficientViT-B: whole-output cosine 0.93). The quantizer now gives such a right operand one step per column
(compiler/quant_activation.py, ``q_columns``), which becomes a step per output column of the product, as a static
weight's per-channel steps do. Checked on a torch twin of that attention, on the exporters users have.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from codesign.api import compile
from compiler.dialect import dataflow as df
from compiler.quant_activation import COLUMN_SPREAD
from examples._common import Exporter, export_onnx

HEADS, DIM, TOKENS, SAMPLES = 2, 8, 49, 4
#: Worst token row's output cosine of the int8 twin: one step per column measured 0.998 (both exporters); one step
#: for the tensor (before) 0.862, its mean 0.987.
COSINE_MIN = 0.99


class LinearAttention(torch.nn.Module):
    """timm's ``LiteMLA`` core: ReLU kernel, V padded with ones, ``q @ (k^T @ [v, 1])``, numerator over the sum."""

    def __init__(self, pad: bool = True) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.pad = pad
        self.qkv = torch.nn.Linear(HEADS * DIM, 3 * HEADS * DIM)
        self.proj = torch.nn.Linear(HEADS * DIM, HEADS * DIM, bias=False)  # a bias would mask the error in cosine
        with torch.no_grad():  # values an order below the padding ones, as in a trained EfficientViT
            rows = self.qkv.weight.view(HEADS, 3 * DIM, -1)[:, 2 * DIM:]
            rows.mul_(0.1)
            self.qkv.bias.view(HEADS, 3 * DIM)[:, 2 * DIM:].mul_(0.1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        qkv = self.qkv(x).view(1, TOKENS, HEADS, 3 * DIM).transpose(1, 2)  # [1, H, N, 3D]
        q, k, v = torch.relu(qkv[..., :DIM]), torch.relu(qkv[..., DIM:2 * DIM]), qkv[..., 2 * DIM:]
        if self.pad:
            v = torch.nn.functional.pad(v, (0, 1), mode="constant", value=1.0)
        vk = torch.matmul(k.transpose(-1, -2), v)  # [1, H, D, D + 1]
        out = torch.matmul(q, vk)
        if self.pad:
            out = out[..., :-1] / (out[..., -1:] + 1e-15)
        return self.proj(out.transpose(1, 2).reshape(1, TOKENS, HEADS * DIM))


def _samples() -> dict[str, np.ndarray]:
    x = torch.randn(SAMPLES, 1, TOKENS, HEADS * DIM, generator=torch.Generator().manual_seed(1))
    return {"x": x.numpy()}


def _compile(tmp_path: Path, exporter: Exporter, pad: bool = True, balance: str = "repq"):
    path = tmp_path / f"linear_attention_{exporter}.onnx"
    export_onnx(LinearAttention(pad).eval(), [torch.from_numpy(_samples()["x"][0])], path, input_names=["x"],
                output_names=["y"], exporter=exporter)
    return compile(path, inputs=_samples(), quant="int8", balance=balance)


def _column_requants(result) -> list[df.RequantOp]:
    """The requants that give a product of two activations its right operand per column."""
    found = []
    for op in result.module.walk():
        if isinstance(op, df.GemmOp) and not isinstance(op.rhs.owner, df.WeightOp) \
                and isinstance(op.rhs.owner, df.RequantOp) and op.rhs.owner.layer_name() + ".scale" in result.env.weights:
            found.append(op.rhs.owner)
    return found


@pytest.mark.parametrize("exporter", ["legacy", "dynamo"])
def test_a_ones_padded_right_operand_gets_a_step_per_column(tmp_path: Path, exporter: Exporter) -> None:
    result = _compile(tmp_path, exporter)
    assert result.report is not None
    assert result.report["accuracy"]["outputs"]["y"]["cosine_min"] > COSINE_MIN
    requants = _column_requants(result)
    assert len(requants) == 2  # [v, 1] and k^T [v, 1]: both carry the ones column
    for rq in requants:
        steps = np.asarray(result.env.weights[rq.layer_name() + ".scale"])
        assert steps.shape == (DIM + 1,)
        assert steps[-1] > COLUMN_SPREAD * np.median(steps)  # the ones / sum column keeps its own step
    recipes = result.report["numerics"]["recipe_per_layer"]
    assert sum(r.get("rhs_steps") == "per-column" for r in recipes.values()) == 2  # the report says so


def test_balance_none_keeps_one_step(tmp_path: Path) -> None:
    """``--balance none`` asks for one step per tensor everywhere: the twin then loses its numerator columns."""
    result = _compile(tmp_path, "legacy", balance="none")
    assert result.report is not None
    assert _column_requants(result) == []
    assert result.report["accuracy"]["outputs"]["y"]["cosine_min"] < COSINE_MIN


def test_even_columns_keep_one_step(tmp_path: Path) -> None:
    """Without the ones column the columns of ``v`` and ``k^T v`` spread less than COLUMN_SPREAD: one step each,
    no requant added."""
    result = _compile(tmp_path, "legacy", pad=False)
    assert result.report is not None
    assert _column_requants(result) == []
    assert result.report["accuracy"]["outputs"]["y"]["cosine_min"] > COSINE_MIN
