"""LayerNorm channels whose weight is 0 (a QDQ model's int8 LayerNorm weight rounds small weights to 0; pruned
channels): such a channel outputs its bias whatever the input is. The integer kernels (exact and I-LayerNorm) give
it on a unit weight's grid (compiler/simulate/approx.py ``layernorm_int``), so ``--quant int8`` compiles such a
model and tracks float; the system backend, whose ilayernorm unit always adds the normalised term, refuses it in
one line naming the layer and the channel."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from codesign.api import compile
from codesign.cli import main as codesign_main
from compiler.simulate.approx import layernorm_int
from examples._common import export_onnx

C = 32


@pytest.mark.parametrize("name", ["exact", "ilayernorm"])
def test_a_zero_weight_channel_is_its_bias(name: str) -> None:
    rng = np.random.default_rng(0)
    x = rng.integers(-120, 120, size=(6, C))
    gamma, beta = rng.uniform(0.5, 1.5, C), rng.normal(size=C)
    gamma[[3, 17]] = 0.0
    y, step = layernorm_int(name, x, 0.05, gamma, beta, 1e-5, in_bits=8)
    real = y * step
    xf = x * 0.05
    want = (xf - xf.mean(-1, keepdims=True)) / np.sqrt(xf.var(-1, keepdims=True) + 1e-5) * gamma + beta
    np.testing.assert_allclose(real[:, [3, 17]], np.broadcast_to(beta[[3, 17]], (6, 2)), atol=1e-6)
    np.testing.assert_allclose(real, want, atol=1e-3 if name == "exact" else 2e-2)  # I-ViT's integer sqrt
    assert np.all(np.asarray(step) > 0)


class _Net(torch.nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.fc1, self.norm, self.fc2 = torch.nn.Linear(C, C), torch.nn.LayerNorm(C), torch.nn.Linear(C, C)
        with torch.no_grad():
            self.norm.weight[::5] = 0.0
            self.norm.bias.normal_()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(self.norm(self.fc1(x)))


@pytest.fixture(scope="module")
def model(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, np.ndarray]:
    torch.manual_seed(0)
    x = torch.randn(1, 8, C)
    path = tmp_path_factory.mktemp("lnzero") / "net.onnx"
    export_onnx(_Net().eval(), [x], path, input_names=["x"], output_names=["y"], exporter="legacy")
    return path, torch.randn(4, 1, 8, C).numpy()


@pytest.mark.parametrize("layernorm", ["exact", "ilayernorm"])
def test_int8_compiles_and_tracks_float(model, layernorm: str) -> None:
    path, samples = model
    result = compile(str(path), "fpga-u280", inputs={"x": samples}, quant="int8", layernorm=layernorm)
    assert result.imported.patterns["layernorm"] == 1
    assert result.report is not None
    assert result.report["accuracy"]["outputs"]["y"]["cosine_mean"] > 0.99


def test_the_system_backend_refuses_it_in_one_line(model, tmp_path: Path, capsys) -> None:
    path, _ = model
    code = codesign_main(["rtl", str(path), "--quant", "int8", "--layernorm", "ilayernorm", "--out",
                          str(tmp_path / "sys"), "--system"])
    err = capsys.readouterr().err.strip()
    assert code == 2 and len(err.splitlines()) == 1, err
    assert "dataflow.layernorm" in err and "weight is 0 in channel 0" in err
