"""Models run through onnxruntime's transformer optimizer (compiler/frontend/ort_contrib.py): its fused
``com.microsoft`` ops (Attention, Skip[Simplified]LayerNormalization, SimplifiedLayerNormalization, Gelu, BiasGelu,
FastGelu, QuickGelu) expand into their standard definitions, so the compile finds the un-optimized model's patterns and simulates what onnxruntime computes; a
combination the expansion does not support is refused in one line naming the node.

The models are the repository's real exports optimized here by ``onnxruntime.transformers.optimizer`` itself;
onnxruntime runs them as the reference."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper, numpy_helper
from onnxruntime.transformers.optimizer import optimize_model

from codesign.api import compile
from codesign.cli import main
from examples import zoo
from tests.conftest import model_path
from tests.test_frontend_dynamic_quant import _feeds

#: name -> (model, optimizer model_type, num_heads, hidden_size, opt_level, the fused ops it writes): opt_level 0 is
#: where the optimizer fuses BERT's attention into Attention (later levels' graph rewrites keep it unfused for these
#: tiny exports); ViT at its default level (and 1) gets its MatMul+Add projections rewritten as Reshape-Gemm-Reshape,
#: the Q / K / V Gemms' outputs reshaped from 2-D straight to heads (the head views of compiler/frontend/head_view.py
#: prove them), level 2 keeps MatMuls. The optimizer has no LLaMA type; "gpt2" fuses its RMSNorms and (level 2) SiLU
#: as QuickGelu(alpha=1).
CASES: dict[str, tuple[str, str, int, int, int | None, set[str]]] = {
    "bert-attention": ("bert_tiny.onnx", "bert", 2, 128, 0, {"Attention", "SkipLayerNormalization", "BiasGelu"}),
    "bert-default": ("bert_tiny.onnx", "bert", 2, 128, None, {"SkipLayerNormalization", "Gelu"}),
    "gpt2-fastgelu": ("gpt2_tiny.onnx", "gpt2", 4, 128, None, {"SkipLayerNormalization", "FastGelu"}),
    "vit-biasgelu": ("vit_tiny.onnx", "vit", 4, 64, 2, {"SkipLayerNormalization", "BiasGelu"}),
    "vit-default-gemms": ("vit_tiny.onnx", "vit", 4, 64, None, {"SkipLayerNormalization", "Gelu"}),
    "llama-rmsnorm-silu": ("zoo:llama", "gpt2", 4, 64, 2, {"SkipSimplifiedLayerNormalization", "QuickGelu",
                                                            "SimplifiedLayerNormalization"}),
}


def _source(name: str, tmp_path: Path) -> Path:
    """The un-optimized model: an example model, or ``zoo:<arch>`` exported here from its tiny config."""
    if not name.startswith("zoo:"):
        return model_path(name)
    path = tmp_path / f"{name[4:]}.onnx"
    zoo.export(name[4:], "legacy", path)
    return path


def _optimize(src: Path, model_type: str, heads: int, hidden: int, level: int | None, dst: Path) -> Path:
    logging.disable(logging.WARNING)  # the optimizer logs each fusion it tries
    try:
        if level is None:
            opt = optimize_model(str(src), model_type=model_type, num_heads=heads, hidden_size=hidden)
        else:
            opt = optimize_model(str(src), model_type=model_type, num_heads=heads, hidden_size=hidden,
                                 opt_level=level)
    finally:
        logging.disable(logging.NOTSET)
    opt.save_model_to_file(str(dst))
    return dst


def _contrib_ops(path: Path) -> set[str]:
    return {n.op_type for n in onnx.load(str(path)).graph.node if n.domain == "com.microsoft"}


@pytest.mark.parametrize("case", list(CASES))
def test_optimized_models_compile_like_the_original(case: str, tmp_path: Path) -> None:
    name, model_type, heads, hidden, level, ops = CASES[case]
    src = _source(name, tmp_path)
    dst = _optimize(src, model_type, heads, hidden, level, tmp_path / f"{case}.onnx")
    fused = _contrib_ops(dst) | {n.op_type for n in onnx.load(str(dst)).graph.node
                                 if n.op_type == "SimplifiedLayerNormalization"}  # onnxruntime's, default domain
    assert fused == ops
    x = _feeds(src)
    want = ort.InferenceSession(str(dst), providers=["CPUExecutionProvider"]).run(None, x)
    out = tmp_path / "out.npz"
    result = compile(str(dst), inputs={k: v[None] for k, v in x.items()}, outputs=str(out))
    assert result.report is not None
    patterns = dict(result.report["patterns"])
    original = dict(compile(str(src)).report["patterns"])  # type: ignore[union-attr]
    if model_type == "gpt2":  # the optimizer splits GPT-2's packed c_attn Gemm into three MatMuls (Q, K, V)
        layers = sum(n.op_type == "FastGelu" for n in onnx.load(str(dst)).graph.node)
        assert patterns.pop("gemm") == original.pop("gemm") + 2 * layers
    assert patterns == original
    got = np.load(out)
    names = [o.name for o in onnx.load(str(dst), load_external_data=False).graph.output]
    for n, w in zip(names, want, strict=True):
        w = np.asarray(w)
        np.testing.assert_allclose(got[n][0], w, rtol=1e-4, atol=1e-4 * float(np.max(np.abs(w))))
    int8 = compile(str(dst), inputs={k: v[None] for k, v in x.items()}, quant="int8").report
    assert int8 is not None and int8["patterns"] == result.report["patterns"]


def _attention_model(mask_shape: list[int] | None, **attrs: Any) -> onnx.ModelProto:
    """One contrib Attention (batch 2, 5 tokens, hidden 8, 2 heads) on a random packed QKV weight."""
    rng = np.random.default_rng(1)
    inits = [numpy_helper.from_array(rng.standard_normal((8, 24)).astype(np.float32), "w"),
             numpy_helper.from_array(rng.standard_normal(24).astype(np.float32), "b")]
    inputs = [helper.make_tensor_value_info("x", TensorProto.FLOAT, [2, 5, 8])]
    node_inputs = ["x", "w", "b"]
    if mask_shape is not None:
        inputs.append(helper.make_tensor_value_info("mask", TensorProto.INT32, mask_shape))
        node_inputs.append("mask")
    node = helper.make_node("Attention", node_inputs, ["y"], name="attn", domain="com.microsoft",
                            **{"num_heads": 2, **attrs})
    graph = helper.make_graph([node], "g", inputs, [helper.make_tensor_value_info("y", TensorProto.FLOAT,
                                                                                  [2, 5, 8])], inits)
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17), helper.make_opsetid(
        "com.microsoft", 1)], ir_version=8)


MASKS: dict[str, tuple[list[int] | None, np.ndarray | None, dict[str, Any]]] = {
    "end-positions": ([2], np.array([5, 3], np.int32), {}),
    "2d-causal": ([2, 5], np.array([[1, 1, 1, 1, 1], [1, 1, 0, 1, 0]], np.int32), {"unidirectional": 1}),
    "3d-scaled": ([2, 5, 5], (np.arange(50).reshape(2, 5, 5) % 3 != 1).astype(np.int32),
                  {"scale": 0.3, "mask_filter_value": -500.0}),
    "no-mask-causal": (None, None, {"unidirectional": 1}),
}


@pytest.mark.parametrize("case", list(MASKS))
def test_attention_masks_match_onnxruntime(case: str, tmp_path: Path) -> None:
    """Each mask_index format, unidirectional, scale and mask_filter_value as onnxruntime computes them."""
    shape, mask, attrs = MASKS[case]
    path = tmp_path / "attn.onnx"
    onnx.save(_attention_model(shape, **attrs), str(path))
    feeds = {"x": np.random.default_rng(2).standard_normal((2, 5, 8)).astype(np.float32)}
    if mask is not None:
        feeds["mask"] = mask
    want = np.asarray(ort.InferenceSession(str(path), providers=["CPUExecutionProvider"]).run(None, feeds)[0])
    out = tmp_path / "out.npz"
    compile(str(path), inputs={k: v[None] for k, v in feeds.items()}, outputs=str(out))
    np.testing.assert_allclose(np.load(out)["y"][0], want, rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize(("shape", "attrs", "message"), [
    ([2, 1, 5, 5], {}, "a mask_index of rank 4"),
    ([4], {}, "a 1-D mask_index whose length is not the batch size"),
    ([2], {"do_rotary": 1}, "do_rotary=1"),
    ([2], {"qkv_hidden_sizes": [8, 4, 12]}, "qkv_hidden_sizes=[8, 4, 12]"),
    ([2], {"num_heads": "two"}, "attribute num_heads is not an integer"),
    ([2], {"num_heads": 3}, "qkv_hidden_sizes=[8, 8, 8] with num_heads=3"),
])
def test_unsupported_attention_is_refused_in_one_line(shape: list[int], attrs: dict[str, Any], message: str,
                                                      tmp_path: Path, capsys) -> None:
    path = tmp_path / "attn.onnx"
    onnx.save(_attention_model(shape, **attrs), str(path))
    assert main(["compile", str(path), "-q"]) == 2
    err = capsys.readouterr().err.strip()
    assert "\n" not in err and "com.microsoft.Attention (node 'attn')" in err and message in err


def test_attention_with_a_kv_cache_is_refused(tmp_path: Path, capsys) -> None:
    model = _attention_model([2])
    model.graph.input.append(helper.make_tensor_value_info("past", TensorProto.FLOAT, [2, 2, 2, 0, 4]))
    model.graph.node[0].input.append("past")
    path = tmp_path / "attn.onnx"
    onnx.save(model, str(path))
    assert main(["compile", str(path), "-q"]) == 2
    err = capsys.readouterr().err.strip()
    assert "\n" not in err and "node 'attn'" in err and "a past key/value input" in err


def test_a_contrib_op_not_expanded_is_still_refused_by_name(tmp_path: Path, capsys) -> None:
    node = helper.make_node("EmbedLayerNormalization", ["ids", "w", "p", "g", "b"], ["y"], name="emb",
                            domain="com.microsoft")
    rng = np.random.default_rng(0)
    inits = [numpy_helper.from_array(rng.standard_normal(s).astype(np.float32), n)
             for n, s in [("w", (10, 4)), ("p", (8, 4)), ("g", (4,)), ("b", (4,))]]
    graph = helper.make_graph([node], "g", [helper.make_tensor_value_info("ids", TensorProto.INT32, [1, 3])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 3, 4])], inits)
    path = tmp_path / "emb.onnx"
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17),
                                                      helper.make_opsetid("com.microsoft", 1)]), str(path))
    assert main(["compile", str(path), "-q"]) == 2
    err = capsys.readouterr().err.strip()
    assert "\n" not in err and "unsupported op com.microsoft.EmbedLayerNormalization (node 'emb')" in err
