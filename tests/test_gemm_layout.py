"""A batch-1 dimension in any position of a GEMM's activation does not change the product the schedule sees.

Sequence-first exports (``torch.nn.MultiheadAttention``'s default (L, N, E) layout, torchvision's ViT) give their
projections (L, 1, D) activations; the same layers batch-first give (1, L, D). Both are one L x D by D x N product
on the hardware: the weight is shared by every leading index, so the schedule must see M = L, not L products of
one row each (which used 1/L of the array).
"""

from __future__ import annotations

import pytest
import torch

import codesign

L, D, F = 48, 64, 256


class _Mlp(torch.nn.Module):
    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.fc1 = torch.nn.Linear(D, F)
        self.fc2 = torch.nn.Linear(F, D)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(torch.relu(self.fc1(x)))


def _gemm_layers(report: dict | None) -> list[dict]:
    return [layer for layer in report["layers"] if layer.get("macs")]


@pytest.mark.parametrize("target", ["fpga-u280", "npu-xdna", "gpu-a100"])
def test_sequence_first_equals_batch_first(target):
    model = _Mlp()
    first = codesign.compile(model, target, example_inputs=(torch.randn(L, 1, D),)).report
    batch = codesign.compile(model, target, example_inputs=(torch.randn(1, L, D),)).report
    assert first["macs"] == batch["macs"] == L * D * F * 2
    assert [g["cycles"] for g in _gemm_layers(first)] == [g["cycles"] for g in _gemm_layers(batch)]
    assert first["latency_cycles"] == batch["latency_cycles"]


def test_batch_of_sequences_streams_the_weight_once():
    """(B, L, D) through a shared weight is one (B*L) x D product: no slower than B separate sequences."""
    model = _Mlp()
    one = codesign.compile(model, "fpga-u280", example_inputs=(torch.randn(1, L, D),)).report
    four = codesign.compile(model, "fpga-u280", example_inputs=(torch.randn(4, L, D),)).report
    assert four["macs"] == 4 * one["macs"]
    assert four["bytes_offchip"] < 4 * one["bytes_offchip"]  # weights read once for the whole batch


class _EncoderLayer(torch.nn.Module):
    def __init__(self, batch_first: bool) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.layer = torch.nn.TransformerEncoderLayer(D, 4, F, dropout=0.0, batch_first=batch_first)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.layer(x, is_causal=False)  # a bool, so that tracing keeps it static


@pytest.mark.filterwarnings("ignore::torch.jit.TracerWarning")  # the layer's shape checks, traced as constants
@pytest.mark.parametrize("quant", [None, "int8"])
def test_sequence_first_encoder_layer_within_5_percent_of_batch_first(quant):
    """An encoder layer (attention included) exported sequence-first against the same layer batch-first (issue #15:
    within 5%). Batch-first ``nn.MultiheadAttention`` transposes (1, L, D) to (L, 1, D) and back; the canonicalize
    pass makes those reshapes, so no reorder is priced for them."""
    torch.backends.mha.set_fastpath_enabled(False)  # the fused kernel has no ONNX export
    try:
        first = codesign.compile(_EncoderLayer(False).eval(), "fpga-u280", example_inputs=(torch.randn(L, 1, D),),
                                 quant=quant).report
        batch = codesign.compile(_EncoderLayer(True).eval(), "fpga-u280", example_inputs=(torch.randn(1, L, D),),
                                 quant=quant).report
    finally:
        torch.backends.mha.set_fastpath_enabled(True)
    assert first["macs"] == batch["macs"]
    assert not [layer["name"] for layer in batch["layers"] if layer["op"] == "move.transpose"]
    assert abs(first["latency_cycles"] / batch["latency_cycles"] - 1) <= 0.05
