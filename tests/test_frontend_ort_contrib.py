"""Models run through onnxruntime's transformer optimizer (compiler/frontend/ort_contrib.py): its fused
``com.microsoft`` ops (EmbedLayerNormalization, Attention, MultiHeadAttention, Skip[Simplified]LayerNormalization,
SimplifiedLayerNormalization, Gelu, BiasGelu, FastGelu, QuickGelu) expand into their standard definitions, so the
compile finds the un-optimized model's patterns and simulates what onnxruntime computes; a combination the expansion
does not support is refused in one line naming the node.

The models are the repository's real exports optimized here by ``onnxruntime.transformers.optimizer`` itself;
onnxruntime runs them as the reference."""

from __future__ import annotations

import logging
import sys
from pathlib import Path
from typing import Any

import ml_dtypes
import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper, numpy_helper
from onnxruntime.transformers.fusion_options import FusionOptions
from onnxruntime.transformers.optimizer import optimize_model

from codesign.api import compile
from codesign.cli import main
from examples import zoo
from tests.conftest import model_path
from tests.test_frontend_dynamic_quant import _feeds

#: name -> (model, optimizer model_type, num_heads, hidden_size, opt_level, use_multi_head_attention, the fused ops it
#: writes): opt_level 0 is where the optimizer fuses the static bert_tiny's attention into Attention, or into
#: MultiHeadAttention on a ReduceSum mask index with ``use_multi_head_attention`` (later levels' graph rewrites keep it
#: unfused for these tiny exports); ViT at its default level (and 1) gets its MatMul+Add
#: projections rewritten as Reshape-Gemm-Reshape, the Q / K / V Gemms' outputs reshaped from 2-D straight to heads
#: (the head views of compiler/frontend/head_view.py prove them), level 2 keeps MatMuls. The optimizer has no LLaMA
#: type; "gpt2" fuses its RMSNorms and (level 2) SiLU as QuickGelu(alpha=1). ``dynamic:bert`` (batch and sequence
#: symbolic, so the position ids stay the sliced buffer the optimizer recognises) gets its embeddings fused into
#: EmbedLayerNormalization, whose mask_index output (the padding mask's row counts) feeds every layer's Attention, or
#: MultiHeadAttention (separate Q / K / V MatMuls, one packed bias) with ``use_multi_head_attention``, at every level.
CASES: dict[str, tuple[str, str, int, int, int | None, bool, set[str]]] = {
    "bert-attention": ("bert_tiny.onnx", "bert", 2, 128, 0, False,
                       {"Attention", "SkipLayerNormalization", "BiasGelu"}),
    "bert-mha": ("bert_tiny.onnx", "bert", 2, 128, 0, True, {"MultiHeadAttention", "SkipLayerNormalization",
                                                             "BiasGelu"}),
    "bert-default": ("bert_tiny.onnx", "bert", 2, 128, None, False, {"SkipLayerNormalization", "Gelu"}),
    "bert-embed-attention": ("dynamic:bert", "bert", 4, 64, None, False,
                             {"EmbedLayerNormalization", "Attention", "SkipLayerNormalization", "BiasGelu"}),
    "bert-embed-mha": ("dynamic:bert", "bert", 4, 64, None, True,
                       {"EmbedLayerNormalization", "MultiHeadAttention", "SkipLayerNormalization", "BiasGelu"}),
    "gpt2-fastgelu": ("gpt2_tiny.onnx", "gpt2", 4, 128, None, False, {"SkipLayerNormalization", "FastGelu"}),
    "vit-biasgelu": ("vit_tiny.onnx", "vit", 4, 64, 2, False, {"SkipLayerNormalization", "BiasGelu"}),
    "vit-default-gemms": ("vit_tiny.onnx", "vit", 4, 64, None, False, {"SkipLayerNormalization", "Gelu"}),
    "llama-rmsnorm-silu": ("zoo:llama", "gpt2", 4, 64, 2, False, {"SkipSimplifiedLayerNormalization", "QuickGelu",
                                                                   "SimplifiedLayerNormalization"}),
    "bert-attention-mask-sum": ("dynamic:bert", "bert", 4, 64, None, False,
                                {"Attention", "SkipLayerNormalization", "BiasGelu"}),
}
#: FusionOptions a case sets. Embeddings left unfused (as HF Optimum's O2 leaves its BERT exports): each Attention's
#: 1-D mask_index is a ReduceSum of the padding mask, and the position-id Slice before the embeddings' Add leaves
#: onnx's shape inference an unknown batch dim, so the mask's length is read against the batch at run time.
OPTIONS: dict[str, dict[str, bool]] = {"bert-attention-mask-sum": {"enable_embed_layer_norm": False}}


@pytest.fixture(scope="module")
def dynamic_bert(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, np.ndarray]]:
    """A BERT exported with symbolic batch and sequence, and its sample inputs (the last quarter padded)."""
    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "examples"))
    from export_bert import export_bert  # examples/ modules import each other by bare name

    exported = export_bert(tmp_path_factory.mktemp("bert") / "bert_dynamic.onnx", layers=2, hidden=64, heads=4,
                           intermediate=128, seq_len=16, vocab=128, max_positions=32, dynamic=True)
    return exported.path, exported.feeds


def _source(name: str, tmp_path: Path, dynamic: tuple[Path, dict[str, np.ndarray]]) -> tuple[Path,
                                                                                             dict[str, np.ndarray]]:
    """The un-optimized model and its sample: an example model, ``zoo:<arch>`` exported here from its tiny config,
    or ``dynamic:bert``."""
    if name == "dynamic:bert":
        return dynamic
    if not name.startswith("zoo:"):
        return model_path(name), _feeds(model_path(name))
    path = tmp_path / f"{name[4:]}.onnx"
    zoo.export(name[4:], "legacy", path)
    return path, _feeds(path)


def _optimize(src: Path, model_type: str, heads: int, hidden: int, level: int | None, mha: bool, dst: Path,
              float16: bool = False) -> Path:
    options = FusionOptions(model_type)
    options.use_multi_head_attention = mha
    for key, value in OPTIONS.get(dst.stem, {}).items():
        setattr(options, key, value)
    logging.disable(logging.WARNING)  # the optimizer logs each fusion it tries
    try:
        opt = optimize_model(str(src), model_type=model_type, num_heads=heads, hidden_size=hidden,
                             optimization_options=options, opt_level=level)
        if float16:
            opt.convert_float_to_float16(keep_io_types=True)
    finally:
        logging.disable(logging.NOTSET)
    opt.save_model_to_file(str(dst))
    return dst


def _contrib_ops(path: Path) -> set[str]:
    return {n.op_type for n in onnx.load(str(path)).graph.node if n.domain == "com.microsoft"}


@pytest.mark.parametrize("case", list(CASES))
def test_optimized_models_compile_like_the_original(case: str, tmp_path: Path,
                                                    dynamic_bert: tuple[Path, dict[str, np.ndarray]]) -> None:
    name, model_type, heads, hidden, level, mha, ops = CASES[case]
    src, x = _source(name, tmp_path, dynamic_bert)
    dst = _optimize(src, model_type, heads, hidden, level, mha, tmp_path / f"{case}.onnx")
    fused = _contrib_ops(dst) | {n.op_type for n in onnx.load(str(dst)).graph.node
                                 if n.op_type == "SimplifiedLayerNormalization"}  # onnxruntime's, default domain
    assert fused == ops
    shapes = {k: v.shape for k, v in x.items()}
    want = ort.InferenceSession(str(dst), providers=["CPUExecutionProvider"]).run(None, x)
    out = tmp_path / "out.npz"
    result = compile(str(dst), inputs={k: v[None] for k, v in x.items()}, outputs=str(out), shapes=shapes)
    assert result.report is not None
    patterns = dict(result.report["patterns"])
    original = dict(compile(str(src), shapes=shapes).report["patterns"])  # type: ignore[union-attr]
    if model_type == "gpt2":  # the optimizer splits GPT-2's packed c_attn Gemm into three MatMuls (Q, K, V)
        layers = sum(n.op_type == "FastGelu" for n in onnx.load(str(dst)).graph.node)
        assert patterns.pop("gemm") == original.pop("gemm") + 2 * layers
    assert patterns == original
    got = np.load(out)
    names = [o.name for o in onnx.load(str(dst), load_external_data=False).graph.output]
    for n, w in zip(names, want, strict=True):
        w = np.asarray(w)
        np.testing.assert_allclose(got[n][0], w, rtol=1e-4, atol=1e-4 * float(np.max(np.abs(w))))
    int8 = compile(str(dst), inputs={k: v[None] for k, v in x.items()}, quant="int8", shapes=shapes).report
    assert int8 is not None and int8["patterns"] == result.report["patterns"]


FP16_EPS = float(np.finfo(np.float16).eps)


@pytest.mark.parametrize("case", list(CASES))
def test_float16_optimized_models_compile_like_the_original(case: str, tmp_path: Path,
                                                            dynamic_bert: tuple[Path, dict[str, np.ndarray]]) -> None:
    """The optimized model converted by its ``convert_float_to_float16`` (float32 inputs and outputs kept): the
    expansions compute in float16 (RMS statistics in float32, as torch spells them), the un-optimized float32
    model's patterns are found, and the compile's own onnxruntime check agrees to float16 rounding (the bounds of
    tests/test_frontend_half.py)."""
    name, model_type, heads, hidden, level, mha, ops = CASES[case]
    src, x = _source(name, tmp_path, dynamic_bert)
    dst = _optimize(src, model_type, heads, hidden, level, mha, tmp_path / f"{case}.onnx", float16=True)
    assert {t.data_type for t in onnx.load(str(dst)).graph.initializer} & {TensorProto.FLOAT, TensorProto.FLOAT16} \
        == {TensorProto.FLOAT16}
    shapes = {k: v.shape for k, v in x.items()}
    result = compile(str(dst), inputs={k: v[None] for k, v in x.items()}, shapes=shapes)
    assert result.report is not None and result.report["precision"] == "float16"
    patterns = dict(result.report["patterns"])
    original = dict(compile(str(src), shapes=shapes).report["patterns"])  # type: ignore[union-attr]
    if model_type == "gpt2":
        layers = sum(n.op_type == "FastGelu" for n in onnx.load(str(dst)).graph.node)
        assert patterns.pop("gemm") == original.pop("gemm") + 2 * layers
    assert patterns == original
    accuracy = result.report["accuracy"]
    assert accuracy["reference"] == "onnxruntime FP16"
    for out in accuracy["outputs"].values():
        assert out["cosine_min"] >= 0.9999
        assert out["max_abs_error"] <= 16 * FP16_EPS * out["max_abs_value"]


def _attention_model(mask_shape: list[int] | None, bias_shape: list[int] | None = None,
                     **attrs: Any) -> onnx.ModelProto:
    """One contrib Attention (batch 2, 5 tokens, hidden 8, 2 heads) on a random packed QKV weight, with an optional
    mask_index and attention_bias."""
    rng = np.random.default_rng(1)
    inits = [numpy_helper.from_array(rng.standard_normal((8, 24)).astype(np.float32), "w"),
             numpy_helper.from_array(rng.standard_normal(24).astype(np.float32), "b")]
    inputs = [helper.make_tensor_value_info("x", TensorProto.FLOAT, [2, 5, 8])]
    node_inputs = ["x", "w", "b"]
    if mask_shape is not None:
        inputs.append(helper.make_tensor_value_info("mask", TensorProto.INT32, mask_shape))
        node_inputs.append("mask")
    if bias_shape is not None:
        inputs.append(helper.make_tensor_value_info("bias", TensorProto.FLOAT, bias_shape))
        node_inputs += [""] * (5 - len(node_inputs)) + ["bias"]
    node = helper.make_node("Attention", node_inputs, ["y"], name="attn", domain="com.microsoft",
                            **{"num_heads": 2, **attrs})
    graph = helper.make_graph([node], "g", inputs, [helper.make_tensor_value_info("y", TensorProto.FLOAT,
                                                                                  [2, 5, 8])], inits)
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17), helper.make_opsetid(
        "com.microsoft", 1)], ir_version=8)


#: name -> (mask_index shape, its value, attention_bias shape, attributes).
MASKS: dict[str, tuple[list[int] | None, np.ndarray | None, list[int] | None, dict[str, Any]]] = {
    "end-positions": ([2], np.array([5, 3], np.int32), None, {}),
    "2d-causal": ([2, 5], np.array([[1, 1, 1, 1, 1], [1, 1, 0, 1, 0]], np.int32), None, {"unidirectional": 1}),
    "3d-scaled": ([2, 5, 5], (np.arange(50).reshape(2, 5, 5) % 3 != 1).astype(np.int32), None,
                  {"scale": 0.3, "mask_filter_value": -500.0}),
    "no-mask-causal": (None, None, None, {"unidirectional": 1}),
    "end-positions-attention-bias": ([2], np.array([4, 5], np.int32), [2, 1, 5, 5], {}),
    "end-and-start-positions": ([4], np.array([5, 4, 1, 0], np.int32), None, {}),
    "end-and-start-positions-scaled": ([4], np.array([3, 5, 1, 2], np.int32), None, {"scale": 0.5}),
}


@pytest.mark.parametrize("case", list(MASKS))
def test_attention_masks_match_onnxruntime(case: str, tmp_path: Path) -> None:
    """Each mask_index format, attention_bias, unidirectional, scale and mask_filter_value as onnxruntime computes
    them."""
    shape, mask, bias_shape, attrs = MASKS[case]
    path = tmp_path / "attn.onnx"
    onnx.save(_attention_model(shape, bias_shape, **attrs), str(path))
    rng = np.random.default_rng(2)
    feeds = {"x": rng.standard_normal((2, 5, 8)).astype(np.float32)}
    _matches_onnxruntime(path, feeds, mask, bias_shape, rng, tmp_path)


def _matches_onnxruntime(path: Path, feeds: dict[str, np.ndarray], mask: np.ndarray | None,
                         bias_shape: list[int] | None, rng: np.random.Generator, tmp_path: Path) -> None:
    """Add the optional mask and a random attention_bias to ``feeds``, then check the compiled model's output ``y``
    against onnxruntime running the contrib-op model."""
    if mask is not None:
        feeds["mask"] = mask
    if bias_shape is not None:
        feeds["bias"] = rng.standard_normal(bias_shape).astype(np.float32)
    want = np.asarray(ort.InferenceSession(str(path), providers=["CPUExecutionProvider"]).run(None, feeds)[0])
    out = tmp_path / "out.npz"
    compile(str(path), inputs={k: v[None] for k, v in feeds.items()}, outputs=str(out))
    np.testing.assert_allclose(np.load(out)["y"][0], want, rtol=1e-4, atol=1e-5)


def _mha_model(kv_len: int, mask_shape: list[int] | None, bias_shape: list[int] | None,
               **attrs: Any) -> onnx.ModelProto:
    """One contrib MultiHeadAttention (batch 2, 5 queries, ``kv_len`` keys, Q / K hidden 8, V hidden 12, 2 heads)
    with a packed projection bias, an optional key_padding_mask and attention_bias."""
    rng = np.random.default_rng(3)
    inits = [numpy_helper.from_array(rng.standard_normal(28).astype(np.float32), "b")]
    inputs = [helper.make_tensor_value_info(n, TensorProto.FLOAT, s)
              for n, s in [("q", [2, 5, 8]), ("k", [2, kv_len, 8]), ("v", [2, kv_len, 12])]]
    node_inputs = ["q", "k", "v", "b", "", ""]
    if mask_shape is not None:
        inputs.append(helper.make_tensor_value_info("mask", TensorProto.INT32, mask_shape))
        node_inputs[4] = "mask"
    if bias_shape is not None:
        inputs.append(helper.make_tensor_value_info("bias", TensorProto.FLOAT, bias_shape))
        node_inputs[5] = "bias"
    node = helper.make_node("MultiHeadAttention", node_inputs, ["y"], name="mha", domain="com.microsoft",
                            **{"num_heads": 2, **attrs})
    graph = helper.make_graph([node], "g", inputs, [helper.make_tensor_value_info("y", TensorProto.FLOAT,
                                                                                  [2, 5, 12])], inits)
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17), helper.make_opsetid(
        "com.microsoft", 1)], ir_version=8)


#: name -> (kv length, key_padding_mask, attention_bias shape, attributes).
MHA: dict[str, tuple[int, np.ndarray | None, list[int] | None, dict[str, Any]]] = {
    "self-end-positions": (5, np.array([5, 2], np.int32), None, {}),
    "cross-2d-bias": (7, np.array([[1] * 7, [1, 1, 0, 1, 1, 0, 0]], np.int32), [1, 2, 5, 7], {"scale": 0.5}),
    "cross-3d-filter": (7, (np.arange(70).reshape(2, 5, 7) % 4 != 2).astype(np.int32), [2, 1, 5, 7],
                        {"mask_filter_value": -300.0}),
    "self-causal-bias": (5, None, [2, 2, 5, 5], {"unidirectional": 1}),
}


@pytest.mark.parametrize("case", list(MHA))
def test_multi_head_attention_matches_onnxruntime(case: str, tmp_path: Path) -> None:
    """Self and cross attention, each key_padding_mask format, attention_bias, unidirectional, scale and
    mask_filter_value as onnxruntime computes them."""
    kv_len, mask, bias_shape, attrs = MHA[case]
    path = tmp_path / "mha.onnx"
    onnx.save(_mha_model(kv_len, None if mask is None else list(mask.shape), bias_shape, **attrs), str(path))
    rng = np.random.default_rng(4)
    feeds = {n: rng.standard_normal(s).astype(np.float32) for n, s in [("q", (2, 5, 8)), ("k", (2, kv_len, 8)),
                                                                        ("v", (2, kv_len, 12))]}
    _matches_onnxruntime(path, feeds, mask, bias_shape, rng, tmp_path)


@pytest.mark.parametrize(("edit", "message"), [
    ({"inputs": {6: "k4"}}, "a past_key input (only attention without a KV cache is supported)"),
    ({"outputs": ["y", "present_k"]}, "a present_key output"),
    ({"inputs": {1: "", 2: ""}}, "packed QKV or packed KV"),
    ({"inputs": {1: "k4"}}, "query / key / value of ranks [3, 4, 3]"),
    ({"inputs": {4: "mask4"}}, "a key_padding_mask of rank 4"),
    ({"attrs": {"num_heads": 3}}, "hidden sizes (Q, K, V) = [8, 8, 12] with num_heads=3"),
    ({"attrs": {"is_causal": 1}}, "attribute is_causal is not supported"),
    ({"inputs": {1: "k7", 2: "v7"}, "attrs": {"unidirectional": 1}}, "unidirectional with a key length that shape "
     "inference cannot prove equal to the query length"),
])
def test_unsupported_multi_head_attention_is_refused_in_one_line(edit: dict[str, Any], message: str,
                                                                 tmp_path: Path, capsys) -> None:
    model = _mha_model(5, None, None)
    model.graph.input.extend([helper.make_tensor_value_info("k4", TensorProto.FLOAT, [2, 2, 5, 4]),
                              helper.make_tensor_value_info("mask4", TensorProto.INT32, [2, 1, 5, 5]),
                              helper.make_tensor_value_info("k7", TensorProto.FLOAT, [2, 7, 8]),
                              helper.make_tensor_value_info("v7", TensorProto.FLOAT, [2, 7, 12])])
    node = model.graph.node[0]
    for i, name in edit.get("inputs", {}).items():
        while len(node.input) <= i:
            node.input.append("")
        node.input[i] = name
    if "outputs" in edit:
        del node.output[:]
        node.output.extend(edit["outputs"])
    for name, value in edit.get("attrs", {}).items():
        kept = [a for a in node.attribute if a.name != name]
        del node.attribute[:]
        node.attribute.extend([*kept, helper.make_attribute(name, value)])
    path = tmp_path / "mha.onnx"
    onnx.save(model, str(path))
    assert main(["compile", str(path), "-q"]) == 2
    err = capsys.readouterr().err.strip()
    assert "\n" not in err and "com.microsoft.MultiHeadAttention (node 'mha')" in err and message in err


def _embed_model(segments: bool, mask: bool, positions: bool, outputs: list[str]) -> onnx.ModelProto:
    """One contrib EmbedLayerNormalization (batch 2, 6 tokens, hidden 8) on random tables; the outputs named in
    ``outputs`` (of output, mask_index, embedding_sum) are graph outputs, the mask index as float for the compile."""
    rng = np.random.default_rng(5)
    inits = [numpy_helper.from_array(rng.standard_normal(s).astype(np.float32), n)
             for n, s in [("word", (20, 8)), ("pos", (10, 8)), ("seg", (3, 8)), ("g", (8,)), ("beta", (8,))]]
    given = {"ids": True, "types": segments, "mask": mask, "positions": positions}
    inputs = [helper.make_tensor_value_info(n, TensorProto.INT32, [2, 6]) for n, on in given.items() if on]
    node = helper.make_node("EmbedLayerNormalization", [
        "ids", "types" if segments else "", "word", "pos", "seg" if segments else "", "g", "beta",
        "mask" if mask else "", "positions" if positions else ""],
        [o if o in outputs else "" for o in ("y", "mask_index", "sum")], name="emb", domain="com.microsoft",
        epsilon=1e-5)
    nodes = [node]
    graph_outputs = [helper.make_tensor_value_info(o, TensorProto.FLOAT, None) for o in outputs if o != "mask_index"]
    if "mask_index" in outputs:
        nodes.append(helper.make_node("Cast", ["mask_index"], ["mask_count"], to=TensorProto.FLOAT))
        graph_outputs.append(helper.make_tensor_value_info("mask_count", TensorProto.FLOAT, None))
    graph = helper.make_graph(nodes, "g", inputs, graph_outputs, inits)
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17), helper.make_opsetid(
        "com.microsoft", 1)], ir_version=8)


@pytest.mark.parametrize(("segments", "mask", "positions", "outputs"), [
    (True, True, False, ["y", "mask_index", "sum"]),
    (False, True, True, ["y", "mask_index"]),
    (True, False, False, ["y", "mask_index"]),
    (False, False, True, ["sum", "y"]),
])
def test_embed_layer_norm_matches_onnxruntime(segments: bool, mask: bool, positions: bool, outputs: list[str],
                                              tmp_path: Path) -> None:
    """Word + position (given ids, or 0 .. seq - 1) + segment embeddings, the LayerNorm, the sum output and the
    mask index (a row's count of mask == 1; zeros without a mask) as onnxruntime computes them."""
    path = tmp_path / "emb.onnx"
    onnx.save(_embed_model(segments, mask, positions, outputs), str(path))
    rng = np.random.default_rng(6)
    feeds = {"ids": rng.integers(0, 20, (2, 6)).astype(np.int32)}
    if segments:
        feeds["types"] = rng.integers(0, 3, (2, 6)).astype(np.int32)
    if mask:
        feeds["mask"] = np.array([[1, 1, 1, 1, 0, 0], [1, 2, 1, 0, 1, 0]], np.int32)  # a 2 is not counted
    if positions:
        feeds["positions"] = rng.integers(0, 10, (2, 6)).astype(np.int32)
    want = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"]).run(None, feeds)
    out = tmp_path / "out.npz"
    compile(str(path), inputs={k: v[None] for k, v in feeds.items()}, outputs=str(out))
    got = np.load(out)
    for name, w in zip([o.name for o in onnx.load(str(path)).graph.output], want, strict=True):
        np.testing.assert_allclose(got[name][0], np.asarray(w), rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize(("shape", "attrs", "message"), [
    ([2, 1, 5, 5], {}, "a mask_index of rank 4"),
    ([3], {}, "a 1-D mask_index of length 3 with a batch of 2 (onnxruntime reads the batch's end positions, or end "
              "then start positions)"),
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


def test_a_bfloat16_graph_is_refused_by_node(tmp_path: Path, capsys) -> None:
    model = _attention_model([2])
    for i, t in enumerate(model.graph.initializer):
        model.graph.initializer[i].CopyFrom(numpy_helper.from_array(
            numpy_helper.to_array(t).astype(ml_dtypes.bfloat16), t.name))
    path = tmp_path / "attn.onnx"
    onnx.save(model, str(path))
    assert main(["compile", str(path), "-q"]) == 2
    err = capsys.readouterr().err.strip()
    assert "\n" not in err and "com.microsoft.Attention (node 'attn'): in bfloat16 weights" in err


def test_attention_with_a_kv_cache_is_refused(tmp_path: Path, capsys) -> None:
    model = _attention_model([2])
    model.graph.input.append(helper.make_tensor_value_info("past", TensorProto.FLOAT, [2, 2, 2, 0, 4]))
    model.graph.node[0].input.append("past")
    path = tmp_path / "attn.onnx"
    onnx.save(model, str(path))
    assert main(["compile", str(path), "-q"]) == 2
    err = capsys.readouterr().err.strip()
    assert "\n" not in err and "node 'attn'" in err and "a past key/value input" in err


def test_an_embed_layer_norm_missing_an_input_is_refused(tmp_path: Path, capsys) -> None:
    model = _embed_model(True, True, False, ["y"])
    del model.graph.node[0].input[6:]  # no beta (nor mask)
    path = tmp_path / "emb.onnx"
    onnx.save(model, str(path))
    assert main(["compile", str(path), "-q"]) == 2
    err = capsys.readouterr().err.strip()
    assert "\n" not in err and "com.microsoft.EmbedLayerNormalization (node 'emb'): its required input beta" in err


def test_a_contrib_op_not_expanded_is_still_refused_by_name(tmp_path: Path, capsys) -> None:
    """DecoderMaskedMultiHeadAttention (onnxruntime's beam-search decoding kernel): not expanded, refused by name."""
    node = helper.make_node("DecoderMaskedMultiHeadAttention", ["q", "k", "v"], ["y"], name="dmmha",
                            domain="com.microsoft", num_heads=2)
    graph = helper.make_graph([node], "g", [
        helper.make_tensor_value_info("q", TensorProto.FLOAT, [1, 1, 8]),
        helper.make_tensor_value_info("k", TensorProto.FLOAT, [1, 1, 8]),
        helper.make_tensor_value_info("v", TensorProto.FLOAT, [1, 1, 8])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 1, 8])])
    path = tmp_path / "dmmha.onnx"
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17),
                                                      helper.make_opsetid("com.microsoft", 1)]), str(path))
    assert main(["compile", str(path), "-q"]) == 2
    err = capsys.readouterr().err.strip()
    assert "\n" not in err and "unsupported op com.microsoft.DecoderMaskedMultiHeadAttention (node 'dmmha')" in err


def test_the_nchwc_layout_of_opt_level_99_is_refused_with_the_level_to_use(tmp_path: Path, capsys) -> None:
    """opt_level 99 lets onnxruntime rewrite a ViT's patch Conv into its CPU-specific NCHWc layout (on CPUs with the
    blocked kernels: x86 with AVX2 or AVX-512)."""
    dst = _optimize(model_path("vit_tiny.onnx"), "vit", 4, 64, 99, False, tmp_path / "vit99.onnx")
    if not any(n.domain == "com.microsoft.nchwc" for n in onnx.load(str(dst)).graph.node):
        pytest.skip("this CPU has no NCHWc kernels: onnxruntime keeps the standard layout")
    assert main(["compile", str(dst), "-q"]) == 2
    err = capsys.readouterr().err.strip()
    assert "\n" not in err and "unsupported op com.microsoft.nchwc.Conv (node '" in err
    assert err.endswith("(onnxruntime's CPU-specific NCHWc layout, written from opt_level 99: optimize with "
                        "opt_level 2 or lower)")
