"""Pattern recognition on every exporter spelling of the example models, checked against analytic counts."""

from __future__ import annotations

import json

import pytest
from conftest import model_path

from codesign.cli import main

DENSE = [
    "vit_tiny_legacy.onnx", "vit_tiny_dynamo.onnx", "vit_tiny_sdpa_legacy.onnx", "vit_tiny_sdpa_dynamo.onnx",
    "vit_tiny_external.onnx", "bert_tiny_legacy.onnx", "bert_tiny_dynamo.onnx", "bert_tiny_sdpa_legacy.onnx",
    "bert_tiny_sdpa_dynamo.onnx", "gpt2_tiny_legacy.onnx", "gpt2_tiny_dynamo.onnx", "gpt2_tiny_sdpa_legacy.onnx",
    "gpt2_tiny_sdpa_dynamo.onnx", "minilm.onnx",
]


def analytic_macs(family: str, cfg: dict) -> int:
    """MACs of every MatMul/Gemm/Conv of the model, QK^T and A.V included, from its config alone."""
    d, i, layers, t = cfg["hidden"], cfg["intermediate"], cfg["layers"], cfg["tokens"]
    per_layer = 4 * t * d * d + 2 * t * d * i + 2 * t * t * d
    total = layers * per_layer
    if family == "vit":
        total += cfg["num_patches"] * cfg["channels"] * cfg["patch"] ** 2 * d
        if cfg.get("num_classes"):
            total += d * cfg["num_classes"]
    return total


def compile_json(tmp_path, name: str, *extra: str) -> dict:
    out = tmp_path / (name + ".json")
    assert main(["compile", str(model_path(name)), "--json", str(out), "-q", *extra]) == 0
    return json.loads(out.read_text())


@pytest.mark.parametrize("name", DENSE)
def test_every_block_recognized_and_macs_exact(tmp_path, manifest, name):
    entry = manifest["models"][name]
    cfg = entry["config"]
    report = compile_json(tmp_path, name)
    patterns = report["patterns"]
    layers = cfg["layers"]
    assert patterns["attention"] == layers
    assert patterns["gelu"] == layers
    # Two norms per block plus the embedding or final norm.
    assert patterns["layernorm"] == 2 * layers + 1
    assert patterns["softmax"] == layers
    want = analytic_macs(entry["family"], cfg)
    assert abs(report["macs"] - want) <= 0.01 * want, (report["macs"], want)
    assert report["macs"] == sum(layer["macs"] for layer in report["layers"])


@pytest.mark.slow
def test_vit_base_recognized(tmp_path, manifest):
    cfg = manifest["models"]["vit_base.onnx"]["config"]
    report = compile_json(tmp_path, "vit_base.onnx")
    assert report["patterns"]["attention"] == 12 and report["patterns"]["gelu"] == 12
    assert report["patterns"]["layernorm"] == 25
    want = analytic_macs("vit", cfg)
    assert abs(report["macs"] - want) <= 0.01 * want


def test_attention_attributes_from_export(tmp_path):
    """Heads, head_dim and the scale come out of the export, however it spells the scale."""
    from compiler.frontend.onnx_loader import load_graph
    from compiler.frontend.recognize import recognize

    for name, heads, dim in (("bert_tiny_sdpa_legacy.onnx", 2, 64), ("gpt2_tiny_dynamo.onnx", 4, 32),
                             ("vit_tiny_sdpa_dynamo.onnx", 4, 16)):
        matches = [m for m in recognize(load_graph(model_path(name))) if m.kind == "attention"]
        assert matches
        for m in matches:
            assert m.props["num_heads"] == heads and m.props["head_dim"] == dim
            assert m.props["scale"] == pytest.approx(dim ** -0.5, rel=1e-6)
    gpt = [m for m in recognize(load_graph(model_path("gpt2_tiny_legacy.onnx"))) if m.kind == "attention"]
    # GPT-2 combines the causal and the padding mask into one additive mask operand.
    assert all(m.operands["mask"] is not None for m in gpt)


def test_gelu_forms(tmp_path):
    from compiler.frontend.onnx_loader import load_graph
    from compiler.frontend.recognize import recognize

    forms = {m.props["approx"] for m in recognize(load_graph(model_path("gpt2_tiny_legacy.onnx"))) if m.kind == "gelu"}
    assert forms == {"tanh"}
    forms = {m.props["approx"] for m in recognize(load_graph(model_path("bert_tiny_legacy.onnx"))) if m.kind == "gelu"}
    assert forms == {"exact"}
