"""Transposed convolutions (compiler/frontend/conv_transpose.py): a GEMM over the input positions and a Col2Im.

``nn.ConvTranspose1d/2d/3d`` as upsampling heads use them (SAM's mask decoder and ViTDet's feature pyramid: kernel 2,
stride 2; DPT's reassemble stage: kernel 4, stride 4; vocoders: 1-D with overlapping windows), exported by both
exporters: each compiles with its GEMM recognised, its MACs equal torch's FlopCounterMode count for the layer, its
float simulation equals onnxruntime and its int8 compile keeps the output. Before, every ConvTranspose was refused
as an unsupported op.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import pytest
import torch
from torch.utils.flop_counter import FlopCounterMode

from codesign.api import compile
from examples._common import Exporter, export_onnx

CASES = {
    "k2_s2": (lambda: torch.nn.ConvTranspose2d(8, 4, 2, stride=2), (1, 8, 6, 5)),
    "k4_s4_dpt": (lambda: torch.nn.ConvTranspose2d(8, 8, 4, stride=4), (1, 8, 3, 3)),
    "k3_s2_pad_outpad": (lambda: torch.nn.ConvTranspose2d(8, 4, 3, stride=2, padding=1, output_padding=1),
                         (1, 8, 5, 6)),
    "1d_vocoder": (lambda: torch.nn.ConvTranspose1d(8, 4, 8, stride=4, padding=2), (1, 8, 12)),
    "grouped_dilated": (lambda: torch.nn.ConvTranspose2d(8, 6, 3, stride=2, groups=2, dilation=2, bias=False),
                        (1, 8, 4, 4)),
    "3d": (lambda: torch.nn.ConvTranspose3d(4, 2, 2, stride=2), (1, 4, 2, 3, 3)),
}


class _Head(torch.nn.Module):
    def __init__(self, up: torch.nn.Module) -> None:
        super().__init__()
        self.up = up

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.relu(self.up(x))


def _torch_macs(module: torch.nn.Module, x: torch.Tensor) -> int:
    with FlopCounterMode(display=False) as counter:
        module(x)
    return counter.get_total_flops() // 2


@pytest.mark.parametrize("exporter", ["legacy", "dynamo"])
@pytest.mark.parametrize("case", list(CASES))
def test_conv_transpose_is_a_gemm_and_a_fold(tmp_path: Path, case: str, exporter: Exporter) -> None:
    make, shape = CASES[case]
    torch.manual_seed(0)
    module = _Head(make()).eval()
    x = torch.randn(*shape)
    path = tmp_path / f"{case}.onnx"
    export_onnx(module, (x,), path, input_names=["x"], output_names=["y"], exporter=exporter)
    samples = {"x": np.random.default_rng(1).normal(size=(2, *shape)).astype(np.float32)}
    result = compile(path, inputs=samples)
    assert result.imported.patterns["gemm"] == 1
    assert result.report["macs"] == _torch_macs(module, x)
    assert result.report["accuracy"]["outputs"]["y"]["cosine_min"] >= 0.99999
    int8 = compile(path, inputs=samples, quant="int8")
    assert int8.report["accuracy"]["outputs"]["y"]["cosine_mean"] > 0.99


def test_dpt_depth_estimation_head_compiles(tmp_path: Path) -> None:
    """DPT's depth head (transformers' DPTForDepthEstimation from its config, no download): its reassemble stage
    upsamples the first two feature maps with ConvTranspose2d (kernel = stride = 4 and 2); before, the model was
    refused."""
    from tests.hf_config_models import ConfigModel

    model = ConfigModel("DPTForDepthEstimation", "DPTConfig", "pixel_values", "predicted_depth", hidden_size=64,
                        num_hidden_layers=4, num_attention_heads=4, intermediate_size=128, image_size=32,
                        patch_size=8, backbone_out_indices=[0, 1, 2, 3], neck_hidden_sizes=[16, 32, 64, 64],
                        fusion_hidden_size=32)
    x = torch.randn(1, 3, 32, 32)
    path = tmp_path / "dpt.onnx"
    export_onnx(model, (x,), path, input_names=["pixel_values"], output_names=["depth"], exporter="legacy")
    samples = {"pixel_values": np.random.default_rng(2).normal(size=(2, 1, 3, 32, 32)).astype(np.float32)}
    result = compile(path, inputs=samples)
    assert sum(node.op_type == "ConvTranspose" for node in onnx.load(path).graph.node) == 2
    assert result.imported.patterns["attention"] == 4
    assert result.report["accuracy"]["outputs"]["depth"]["cosine_min"] >= 0.9999
