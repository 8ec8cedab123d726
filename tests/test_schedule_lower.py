"""Lowering of dataflow ops to hardware tasks: attention variants, fusion groups, views."""

from __future__ import annotations

from conftest import model_path

import codesign


def _attention_layers(report: dict | None) -> list[dict]:
    return [layer for layer in report["layers"] if layer["op"] == "attention"]


def test_softmax_free_is_costed_as_soft_not_as_softmax():
    exact = codesign.compile(str(model_path("vit_tiny.onnx"))).report
    soft = codesign.compile(str(model_path("vit_tiny.onnx")), softmax="softmax-free").report
    tokens, heads, dim = 17, 4, 16
    m, iters = 17, 20  # fewer than 49 tokens: every token is a landmark
    want = heads * (tokens * m * dim + m * m * dim + (2 * iters + 1) * m ** 3 + m * tokens * dim + m * m * dim
                    + tokens * m * dim)
    for layer in _attention_layers(soft):
        assert layer["macs"] == want
        assert layer["detail"]["landmarks"] == m and layer["detail"]["score_bytes_offchip"] == 0
    for layer in _attention_layers(exact):  # the standard order keeps a tile's scores in the FPGA's buffers
        assert layer["macs"] == 2 * heads * tokens * tokens * dim
        assert layer["detail"]["score_bytes_offchip"] == 0 < layer["detail"]["score_bytes_standard"]
    # Without a systolic array and its buffers (a GPU), the standard order materialises the scores off chip.
    gpu = codesign.compile(str(model_path("vit_tiny.onnx")), target="gpu-a100").report
    for layer in _attention_layers(gpu):
        assert layer["detail"]["score_bytes_offchip"] == layer["detail"]["score_bytes_standard"] > 0


def test_fused_epilogues_keep_their_input_on_chip():
    unfused = codesign.compile(str(model_path("vit_tiny.onnx")), passes="canonicalize,tile,schedule").report
    fused = codesign.compile(str(model_path("vit_tiny.onnx"))).report
    assert any("+gelu" in layer["op"] for layer in fused["layers"])
    assert fused["bytes_offchip"] < unfused["bytes_offchip"]
    assert fused["macs"] == unfused["macs"]
