"""ShiftGELU on a fine input grid: a GELU whose input spans much less than +-1 keeps its accuracy.

I-ViT's ShiftGELU computes e^0 as |x0| 2^23 with x0 = floor(-1 / (1.702 S)); an 8-bit input spanning +-0.07 (S =
5.7e-4, x0 = -1031) makes the 31-bit sum of its two exponentials clamp, and the "sigmoid" grows to |x0| / 2. That is
the second stem convolution's GELU of a randomly initialised Qwen2-Audio encoder (transformers' ``Qwen2AudioEncoder``
built from its config, no download): with the I-ViT set its int8 output cosine against FP32 was 0.46 (0.43 with float
GEMMs and ShiftGELU alone). The exponentials are now shifted right by k = ceil(log2 |x0|) - 4
(compiler.numerics.shiftgelu.e_shift): 0.998, through both exporters.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from codesign.api import compile
from examples._common import Exporter, export_onnx
from tests.hf_config_models import ConfigModel


def _encoder() -> torch.nn.Module:
    """Qwen2-Audio's audio encoder (conv stem, GELU, two pre-norm layers, average pool), last hidden state out."""
    return ConfigModel("Qwen2AudioEncoder", "Qwen2AudioEncoderConfig", "input_features", "last_hidden_state",
                       d_model=64, encoder_layers=2, encoder_attention_heads=4, encoder_ffn_dim=128, num_mel_bins=16,
                       max_source_positions=16)


@pytest.mark.parametrize("exporter", ["legacy", "dynamo"])
def test_int8_shiftgelu_on_a_quiet_convolution_keeps_the_output(tmp_path: Path, exporter: Exporter) -> None:
    path = tmp_path / f"qwen2_audio_encoder_{exporter}.onnx"
    features = torch.from_numpy(np.random.default_rng(0).standard_normal((1, 16, 32)).astype(np.float32))
    export_onnx(_encoder(), [features], path, input_names=["features"], output_names=["hidden"], exporter=exporter)
    samples = {"features": features.numpy()[None]}
    result = compile(path, inputs=samples, quant="int8", softmax="shiftmax", gelu="shiftgelu", layernorm="ilayernorm")
    assert result.imported.patterns["gelu"] == 4 and result.imported.patterns["attention"] == 2
    accuracy = result.report["accuracy"]
    assert accuracy["outputs"]["hidden"]["cosine_min"] > 0.99, accuracy["outputs"]
    stem = accuracy["layers"][:2]  # in model order: the two convolutions' GELUs
    assert all(layer["sqnr_db"] > 15 for layer in stem), stem  # the second was at -17 dB: the clamped sum


class _QuietGate(torch.nn.Module):
    """A block whose GELU reads a projection with near-zero weights (a gate that has learnt to stay shut): every
    calibrated input of the GELU is below 1e-9, so its int8 step would put ShiftGELU's x0 past -2^29."""

    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.fc, self.out = torch.nn.Linear(32, 64), torch.nn.Linear(64, 32)
        with torch.no_grad():
            self.fc.weight.mul_(1e-12)
            self.fc.bias.mul_(1e-12)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.out(torch.nn.functional.gelu(self.fc(x)))


def test_int8_shiftgelu_of_near_zero_inputs_compiles(tmp_path: Path) -> None:
    """The GELU's input step is floored at SHIFTGELU_MIN_STEP (its codes round to 0, GELU(0) = 0); before, the
    compile stopped in a ValueError from the kernel (Gemma-3n's per-layer gates at random init hit it)."""
    from compiler.simulate.approx import SHIFTGELU_MIN_STEP, gelu_input_format

    assert gelu_input_format("shiftgelu", 1e-9)[1] == SHIFTGELU_MIN_STEP
    path = tmp_path / "gate.onnx"
    export_onnx(_QuietGate().eval(), (torch.randn(1, 8, 32),), path, input_names=["x"], output_names=["y"],
                exporter="legacy")
    x = np.random.default_rng(0).normal(size=(2, 1, 8, 32)).astype(np.float32)
    result = compile(path, inputs={"x": x}, quant="int8", softmax="shiftmax", gelu="shiftgelu", layernorm="ilayernorm")
    assert result.imported.patterns["gelu"] == 1
    assert result.report["accuracy"]["outputs"]["y"]["cosine_min"] > 0.99  # x + ~0: the int8 residual alone
