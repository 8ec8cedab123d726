"""A residual branch scaled by a positive constant (LayerScale: DINOv2, BEiT, CaiT; Granite's residual multiplier)
folds into the residual add's multiplier (compiler/quant_rewrite.py, ``scaled_branch``).

The branch ``x * c`` (``x`` an integer GEMM output, ``c`` per tensor or per channel) met a residual stream the host
computed in float (the embeddings): neither operand was an integer, so the add stayed float and the system backend
refused the model ("a float op between integer ops"). The add now takes ``x`` with its step times ``c``, and every
device value equals the functional simulator's (tests/test_backend.py's check). A factor with a negative or zero
entry has no dyadic multiplier and leaves the branch as it was.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from codesign.api import compile
from compiler.dialect import dataflow as df
from examples import zoo
from tests.test_backend import _check_model

S, D = 8, 32


class _Scaled(torch.nn.Module):
    """``e + gamma * fc(norm(e))`` with ``e = x + pos``: a float residual stream and a scaled integer branch."""

    def __init__(self, gamma: torch.Tensor) -> None:
        super().__init__()
        self.pos = torch.nn.Parameter(torch.randn(1, S, D))
        self.norm, self.fc, self.out = torch.nn.LayerNorm(D), torch.nn.Linear(D, D), torch.nn.Linear(D, D)
        self.gamma = torch.nn.Parameter(gamma)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        e = x + self.pos
        h = e + self.gamma * self.fc(self.norm(e))
        return self.out(h)


def _compile(tmp_path: Path, gamma: torch.Tensor):
    torch.manual_seed(0)
    path = tmp_path / "scaled.onnx"
    torch.onnx.export(_Scaled(gamma).eval(), (torch.randn(1, S, D),), str(path), dynamo=False, input_names=["x"])
    return str(path), compile(str(path), quant="int8", softmax="shiftmax", gelu="shiftgelu", layernorm="ilayernorm")


def _float_muls(module) -> list[df.ElementwiseOp]:
    return [op for op in module.walk() if isinstance(op, df.ElementwiseOp) and op.kind_value() == "mul"]


@pytest.mark.parametrize("gamma", ["per_tensor", "per_channel"])
def test_a_positively_scaled_branch_folds_into_the_residual_add(tmp_path: Path, gamma: str) -> None:
    factor = torch.tensor([0.1]) if gamma == "per_tensor" else torch.linspace(0.05, 0.5, D)
    path, result = _compile(tmp_path, factor)
    assert not _float_muls(result.module)  # the multiply is in the add's multipliers
    adds = [op for op in result.module.walk() if isinstance(op, df.ElementwiseOp) and op.kind_value() == "add"
            and df.int_bits(op.results[0]) == 16]
    assert len(adds) == 1
    _check_model(path, 8, 8, orders=("loads_first",))


def test_a_factor_with_a_negative_entry_stays_a_float_multiply(tmp_path: Path) -> None:
    _, result = _compile(tmp_path, torch.linspace(-0.2, 0.5, D))
    assert [df.int_bits(op.results[0]) for op in _float_muls(result.module)] == [None]


@pytest.mark.parametrize("name", ["dinov2", "granite"])
def test_layerscale_and_residual_multiplier_zoo_models_run_bit_exact(tmp_path: Path, name: str) -> None:
    path = tmp_path / f"{name}.onnx"
    zoo.export(name, zoo.variants(name)[0], path)
    _check_model(str(path), 8, 8, orders=("loads_first",))
