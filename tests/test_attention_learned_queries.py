"""Attention whose queries are learned constants: an attention-pooling head's probe, DETR's first decoder layer.

The query side of such an attention is the same for every sample, so the exporter folds it (the probe through its
Q projection, head split and scale) into one constant left operand of the QK^T MatMul. The matcher reads that
constant as the op's Q, merged back to [B, Sq, H*Dh] (compiler/frontend/attention_operands.py, constant_queries);
before, a constant on either side of QK^T stopped the match and the head ran as generic MatMul / Softmax ops (SigLIP's
and AIMv2's pooling heads: 2 of 3 attentions, DETR 4 of its 5 computed ones, the probe head 0 of 1).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from codesign.api import compile
from examples._common import Exporter, export_onnx
from tests.hf_config_models import ConfigModel

BOTH = ["legacy", "dynamo"]


class ProbeHead(torch.nn.Module):
    """A projection, then one learned query attending over the tokens (nn.MultiheadAttention), then a LayerNorm."""

    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.proj = torch.nn.Linear(32, 64)
        self.probe = torch.nn.Parameter(torch.randn(1, 1, 64))
        self.attn = torch.nn.MultiheadAttention(64, 4, batch_first=True)
        self.norm = torch.nn.LayerNorm(64)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.proj(x)
        return self.norm(self.attn(self.probe.expand(x.shape[0], -1, -1), h, h, need_weights=False)[0])


def _siglip_pooled() -> torch.nn.Module:
    """A SigLIP vision model's ``pooler_output`` (its attention-pooling head)."""
    return ConfigModel("SiglipVisionModel", "SiglipVisionConfig", "pixel_values", "pooler_output", hidden_size=64,
                       num_hidden_layers=2, num_attention_heads=4, intermediate_size=128, image_size=32, patch_size=8)


def _detr() -> torch.nn.Module:
    """DETR (ResNet backbone from its config, no timm, no download): two encoder and two decoder layers."""
    import transformers

    backbone = transformers.ResNetConfig(**{"embedding_size": 16, "hidden_sizes": [16, 32, 64, 128],
                                            "depths": [1, 1, 1, 1], "out_features": ["stage4"]})
    return ConfigModel("DetrModel", "DetrConfig", "pixel_values", "last_hidden_state", use_timm_backbone=False,
                       backbone_config=backbone, use_pretrained_backbone=False, d_model=64, encoder_layers=2,
                       decoder_layers=2, encoder_attention_heads=4, decoder_attention_heads=4, encoder_ffn_dim=128,
                       decoder_ffn_dim=128, num_queries=8)


def _compiled(module: torch.nn.Module, x: torch.Tensor, path: Path, exporter: Exporter, attentions: int) -> None:
    export_onnx(module, [x], path, input_names=["x"], output_names=["y"], exporter=exporter)
    samples = {"x": x.numpy()[None]}
    result = compile(path, inputs=samples)
    patterns = result.imported.patterns
    assert (patterns["attention"], patterns["softmax"]) == (attentions, attentions), patterns
    assert result.report["accuracy"]["outputs"]["y"]["cosine_min"] > 0.9999
    int8 = compile(path, inputs=samples, quant="int8", softmax="shiftmax", gelu="shiftgelu", layernorm="ilayernorm")
    assert int8.imported.patterns["attention"] == attentions
    assert int8.report["accuracy"]["outputs"]["y"]["cosine_mean"] > 0.99


@pytest.mark.parametrize("exporter", BOTH)
def test_probe_attention_is_attention(tmp_path: Path, exporter: Exporter) -> None:
    x = torch.from_numpy(np.random.default_rng(0).standard_normal((2, 10, 32)).astype(np.float32))  # batch 2
    _compiled(ProbeHead().eval(), x, tmp_path / f"probe_{exporter}.onnx", exporter, attentions=1)


@pytest.mark.parametrize("exporter", BOTH)
def test_siglip_pooling_head_is_the_third_attention(tmp_path: Path, exporter: Exporter) -> None:
    x = torch.from_numpy(np.random.default_rng(1).standard_normal((1, 3, 32, 32)).astype(np.float32))
    _compiled(_siglip_pooled(), x, tmp_path / f"siglip_pooled_{exporter}.onnx", exporter, attentions=3)


@pytest.mark.slow
def test_detr_first_decoder_cross_attention(tmp_path: Path) -> None:
    """Six attention modules; the first decoder layer's self-attention reads the query embeddings alone and folds
    to a constant, so five are computed, all recognised (its cross-attention has constant queries)."""
    x = torch.from_numpy(np.random.default_rng(2).standard_normal((1, 3, 64, 64)).astype(np.float32))
    _compiled(_detr(), x, tmp_path / "detr.onnx", "dynamo", attentions=5)
