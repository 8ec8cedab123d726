"""Pattern spellings built by hand with onnx.helper: decomposed LayerNorm, RMSNorm, Gelu op, GELU forms, causal masks,
Gemm with transposed weights, Conv patch embedding, and the generic fallbacks."""

from __future__ import annotations

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from compiler.frontend.onnx_loader import load_graph
from compiler.frontend.recognize import recognize
from compiler.frontend.to_dialect import build_module

S, D, H = 8, 16, 2


def _model(nodes, inputs, outputs, inits=(), opset=17) -> onnx.ModelProto:
    graph = helper.make_graph(nodes, "g", inputs, outputs, initializer=list(inits))
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])


def _c(name: str, value) -> onnx.TensorProto:
    return numpy_helper.from_array(np.asarray(value, dtype=np.float32), name)


def _x(name="x", shape=(1, S, D)):
    return helper.make_tensor_value_info(name, TensorProto.FLOAT, list(shape))


def test_decomposed_layernorm_is_recognised_with_its_parameters():
    gamma = np.linspace(0.5, 1.5, D).astype(np.float32)
    beta = np.linspace(-0.2, 0.2, D).astype(np.float32)
    nodes = [
        helper.make_node("ReduceMean", ["x"], ["mu"], axes=[-1]),
        helper.make_node("Sub", ["x", "mu"], ["d"]),
        helper.make_node("Pow", ["d", "two"], ["d2"]),
        helper.make_node("ReduceMean", ["d2"], ["var"], axes=[-1]),
        helper.make_node("Add", ["var", "eps"], ["ve"]),
        helper.make_node("Sqrt", ["ve"], ["sd"]),
        helper.make_node("Div", ["d", "sd"], ["n"]),
        helper.make_node("Mul", ["n", "gamma"], ["g"]),
        helper.make_node("Add", ["g", "beta"], ["y"]),
    ]
    model = _model(nodes, [_x()], [_x("y")], [_c("two", 2.0), _c("eps", 1e-5), _c("gamma", gamma), _c("beta", beta)])
    matches = recognize(load_graph(model))
    assert [m.kind for m in matches] == ["layernorm"]
    m = matches[0]
    assert m.props["kind"] == "layernorm" and m.props["epsilon"] == pytest.approx(1e-5)
    assert m.operands["weight"] == "gamma" and m.operands["bias"] == "beta"
    result = build_module(load_graph(model))
    assert result.patterns["layernorm"] == 1


def test_rmsnorm_with_reciprocal_spelling():
    nodes = [
        helper.make_node("Mul", ["x", "x"], ["sq"]),
        helper.make_node("ReduceMean", ["sq"], ["ms"], axes=[-1]),
        helper.make_node("Add", ["ms", "eps"], ["mse"]),
        helper.make_node("Sqrt", ["mse"], ["rms"]),
        helper.make_node("Reciprocal", ["rms"], ["inv"]),
        helper.make_node("Mul", ["x", "inv"], ["n"]),
        helper.make_node("Mul", ["n", "w"], ["y"]),
    ]
    w = np.linspace(0.5, 2.0, D).astype(np.float32)
    model = _model(nodes, [_x()], [_x("y")], [_c("eps", 1e-6), _c("w", w)])
    (m,) = recognize(load_graph(model))
    assert m.kind == "layernorm" and m.props["kind"] == "rmsnorm"
    assert m.props["beta"] is None


def test_tanh_gelu_with_x_cubed_as_products():
    nodes = [
        helper.make_node("Mul", ["x", "x"], ["x2"]),
        helper.make_node("Mul", ["x2", "x"], ["x3"]),
        helper.make_node("Mul", ["x3", "c"], ["cx3"]),
        helper.make_node("Add", ["x", "cx3"], ["inner"]),
        helper.make_node("Mul", ["inner", "k"], ["arg"]),
        helper.make_node("Tanh", ["arg"], ["t"]),
        helper.make_node("Add", ["t", "one"], ["t1"]),
        helper.make_node("Mul", ["half", "x"], ["hx"]),
        helper.make_node("Mul", ["hx", "t1"], ["y"]),
    ]
    inits = [_c("c", 0.044715), _c("k", np.sqrt(2 / np.pi)), _c("one", 1.0), _c("half", 0.5)]
    (m,) = recognize(load_graph(_model(nodes, [_x()], [_x("y")], inits)))
    assert m.kind == "gelu" and m.props["approx"] == "tanh" and len(m.nodes) == 9


def test_a_wrong_constant_is_not_gelu():
    nodes = [
        helper.make_node("Div", ["x", "c"], ["a"]),
        helper.make_node("Erf", ["a"], ["e"]),
        helper.make_node("Add", ["e", "one"], ["e1"]),
        helper.make_node("Mul", ["x", "e1"], ["m"]),
        helper.make_node("Mul", ["m", "half"], ["y"]),
    ]
    good = [_c("c", np.sqrt(2.0)), _c("one", 1.0), _c("half", 0.5)]
    bad = [_c("c", 2.0), _c("one", 1.0), _c("half", 0.5)]
    assert [m.kind for m in recognize(load_graph(_model(nodes, [_x()], [_x("y")], good)))] == ["gelu"]
    assert recognize(load_graph(_model(nodes, [_x()], [_x("y")], bad))) == []


def test_gelu_op_and_layernormalization_op():
    nodes = [
        helper.make_node("LayerNormalization", ["x", "g", "b"], ["n"], epsilon=1e-6),
        helper.make_node("Gelu", ["n"], ["y"], approximate="tanh"),
    ]
    model = _model(nodes, [_x()], [_x("y")], [_c("g", np.ones(D)), _c("b", np.zeros(D))], opset=20)
    result = build_module(load_graph(model))
    assert result.patterns["gelu"] == 1 and result.patterns["layernorm"] == 1
    assert 'approx = "tanh"' in str(result.module)


def _attention_nodes(scores_to_softmax: list, extra_inits: list):
    dh = D // H
    nodes = [
        helper.make_node("Reshape", ["q", "hs"], ["q4"]),
        helper.make_node("Transpose", ["q4"], ["qh"], perm=[0, 2, 1, 3]),
        helper.make_node("Reshape", ["k", "hs"], ["k4"]),
        helper.make_node("Transpose", ["k4"], ["kt"], perm=[0, 2, 3, 1]),
        helper.make_node("Reshape", ["v", "hs"], ["v4"]),
        helper.make_node("Transpose", ["v4"], ["vh"], perm=[0, 2, 1, 3]),
        helper.make_node("MatMul", ["qh", "kt"], ["s"]),
        *scores_to_softmax,
        helper.make_node("Softmax", ["sm_in"], ["p"], axis=-1),
        helper.make_node("MatMul", ["p", "vh"], ["o"]),
        helper.make_node("Transpose", ["o"], ["ot"], perm=[0, 2, 1, 3]),
        helper.make_node("Reshape", ["ot", "ms"], ["y"]),
    ]
    inits = [numpy_helper.from_array(np.array([1, S, H, dh], dtype=np.int64), "hs"),
             numpy_helper.from_array(np.array([1, S, D], dtype=np.int64), "ms")] + extra_inits
    return nodes, inits


def test_attention_with_constant_causal_where_mask():
    causal = np.tril(np.ones((S, S), dtype=bool))
    nodes, inits = _attention_nodes(
        [helper.make_node("Div", ["s", "sqrt_d"], ["sc"]),
         helper.make_node("Where", ["causal", "sc", "neg"], ["sm_in"])],
        [_c("sqrt_d", np.sqrt(D // H)), numpy_helper.from_array(causal, "causal"), _c("neg", -np.inf)])
    model = _model(nodes, [_x("q"), _x("k"), _x("v")], [_x("y")], inits)
    (m,) = recognize(load_graph(model))
    assert m.kind == "attention" and m.props["causal"] is True and m.operands["mask"] is None
    assert m.props["scale"] == pytest.approx((D // H) ** -0.5)
    assert m.props["num_heads"] == H


def test_attention_with_trilu_built_additive_mask():
    nodes, inits = _attention_nodes(
        [helper.make_node("Trilu", ["ninf"], ["upper"], upper=1),  # -inf strictly above the diagonal
         helper.make_node("Mul", ["s", "scale"], ["sc"]),
         helper.make_node("Add", ["sc", "upper"], ["sm_in"])],
        [_c("scale", 0.25), numpy_helper.from_array(np.triu(np.full((S, S), -1e9, np.float32), 1), "ninf")])
    # Trilu(upper=1) of a strictly-upper matrix is itself: folding turns it into a constant causal mask.
    model = _model(nodes, [_x("q"), _x("k"), _x("v")], [_x("y")], inits)
    (m,) = recognize(load_graph(model))
    assert m.props["causal"] is True and m.props["scale"] == pytest.approx(0.25)


def test_gemm_with_transposed_weight_and_conv_patch_embedding():
    w = np.arange(D * 4, dtype=np.float32).reshape(4, D)
    nodes = [helper.make_node("Gemm", ["x", "w", "b"], ["y"], transB=1)]
    model = _model(nodes, [_x("x", (S, D))], [_x("y", (S, 4))], [_c("w", w), _c("b", np.ones(4))])
    result = build_module(load_graph(model))
    assert result.weights["w.T"].shape == (D, 4) and result.patterns["gemm"] == 1
    conv = helper.make_node("Conv", ["img", "cw", "cb"], ["y"], kernel_shape=[4, 4], strides=[4, 4])
    model = _model([conv], [_x("img", (1, 3, 8, 8))], [_x("y", (1, 5, 2, 2))],
                   [_c("cw", np.ones((5, 3, 4, 4))), _c("cb", np.zeros(5))])
    result = build_module(load_graph(model))
    text = str(result.module)
    assert 'kind = "patchify"' in text and result.patterns["gemm"] == 1


def _folded_gqa_model(mask_input: bool) -> onnx.ModelProto:
    """Grouped-query attention spelled as transformers' SDPA decode step spells it, on S queries: 2 query heads
    folded into the query axis of their 1 KV head (Q [1, 2, S, 8] viewed as [1, 1, 2S, 8]), K/V not repeated; a
    causal mask in the folded layout (the [S, S] triangle once per query head), and with ``mask_input`` a term
    from an input in that layout too."""
    dh = D // H
    nodes = [
        helper.make_node("Reshape", ["q", "qs"], ["q4"]),
        helper.make_node("Transpose", ["q4"], ["qh"], perm=[0, 2, 1, 3]),
        helper.make_node("Reshape", ["qh", "fold"], ["qf"]),
        helper.make_node("Reshape", ["k", "kvs"], ["k4"]),
        helper.make_node("Transpose", ["k4"], ["kt"], perm=[0, 2, 3, 1]),
        helper.make_node("Reshape", ["v", "kvs"], ["v4"]),
        helper.make_node("Transpose", ["v4"], ["vh"], perm=[0, 2, 1, 3]),
        helper.make_node("MatMul", ["qf", "kt"], ["s"]),
        helper.make_node("Mul", ["s", "scale"], ["sc"]),
        helper.make_node("Add", ["sc", "causal"], ["masked"]),
        helper.make_node("Add", ["masked", "m"] if mask_input else ["masked", "zero"], ["sm_in"]),
        helper.make_node("Softmax", ["sm_in"], ["p"], axis=-1),
        helper.make_node("MatMul", ["p", "vh"], ["o"]),
        helper.make_node("Reshape", ["o", "unfold"], ["ou"]),
        helper.make_node("Transpose", ["ou"], ["ot"], perm=[0, 2, 1, 3]),
        helper.make_node("Reshape", ["ot", "ms"], ["y"]),
    ]
    causal = np.tile(np.triu(np.full((S, S), -1e9, np.float32), 1), (H, 1))[None, None]
    ints = {"qs": [1, S, H, dh], "fold": [1, 1, H * S, dh], "kvs": [1, S, 1, dh], "unfold": [1, H, S, dh],
            "ms": [1, S, D]}
    inits = [numpy_helper.from_array(np.array(v, dtype=np.int64), k) for k, v in ints.items()]
    inits += [_c("scale", dh ** -0.5), _c("causal", causal), _c("zero", 0.0)]
    inputs = [_x("q"), _x("k", (1, S, dh)), _x("v", (1, S, dh))]
    if mask_input:
        inputs.append(_x("m", (1, 1, H * S, S)))
    model = _model(nodes, inputs, [_x("y")], inits)
    model.ir_version = 8  # one onnxruntime loads (the accuracy check runs it)
    return model


@pytest.mark.parametrize("mask_input", [False, True])
def test_grouped_query_folded_into_the_query_axis(tmp_path, mask_input: bool):
    """Folding query groups is the same grouped attention as repeating K/V: 2 heads sharing 1 KV head, causal,
    MACs of 2 query heads, and (compiled) the same numbers as onnxruntime, the input term seen per head."""
    from codesign.api import compile

    model = _folded_gqa_model(mask_input)
    (m,) = recognize(load_graph(model))
    assert m.kind == "attention" and m.props["num_heads"] == H and m.props["kv_heads"] == 1
    assert m.props["causal"] is True and m.props["scale"] == pytest.approx((D // H) ** -0.5)
    assert m.props["mask_kind"] == ("input" if mask_input else "causal")
    path = tmp_path / "folded.onnx"
    onnx.save(model, path)
    rng = np.random.default_rng(0)
    feeds = {"q": rng.normal(size=(1, 1, S, D)), "k": rng.normal(size=(1, 1, S, D // H)),
             "v": rng.normal(size=(1, 1, S, D // H))}
    if mask_input:
        feeds["m"] = np.where(rng.random((1, 1, 1, H * S, S)) < 0.2, -1e9, 0.0)
        feeds["m"][..., 0] = 0.0  # every row keeps a key (a fully masked row is -inf against -1e9 otherwise)
    result = compile(path, inputs={k: v.astype(np.float32) for k, v in feeds.items()})
    assert result.imported.patterns["attention"] == 1
    assert result.report["macs"] == 2 * H * S * S * (D // H)  # QK^T and A.V of every query head
    assert result.report["accuracy"]["outputs"]["y"]["cosine_min"] >= 0.9999


def _sigmoid_gelu_nodes(k: str) -> list:
    return [helper.make_node("Mul", ["x", k], ["kx"]), helper.make_node("Sigmoid", ["kx"], ["s"]),
            helper.make_node("Mul", ["x", "s"], ["y"])]


def test_quick_gelu_is_a_gelu_of_the_sigmoid_form_and_silu_is_not():
    """OpenAI CLIP's quick_gelu x * sigmoid(1.702 x) is the GELU form I-ViT's ShiftGELU approximates; SiLU
    (x * sigmoid(x)) is another function."""
    model = _model(_sigmoid_gelu_nodes("k"), [_x()], [_x("y")], [_c("k", 1.702)])
    (m,) = recognize(load_graph(model))
    assert m.kind == "gelu" and m.props["approx"] == "sigmoid" and len(m.nodes) == 3
    result = build_module(load_graph(model))
    assert result.patterns["gelu"] == 1 and 'approx = "sigmoid"' in str(result.module)
    assert recognize(load_graph(_model(_sigmoid_gelu_nodes("k"), [_x()], [_x("y")], [_c("k", 1.0)]))) == []


@pytest.mark.parametrize("gelu", ["exact", "shiftgelu"])
def test_quick_gelu_simulates_as_found_and_takes_shiftgelu(tmp_path, gelu: str):
    from codesign.api import compile
    from compiler.dialect import dataflow as df

    w = np.random.default_rng(0).normal(0, 0.5, (D, D)).astype(np.float32)
    nodes = [helper.make_node("MatMul", ["x0", "w"], ["x"]), *_sigmoid_gelu_nodes("k")]
    path = tmp_path / "quick_gelu.onnx"
    model = _model(nodes, [_x("x0")], [_x("y")], [_c("k", 1.702), _c("w", w)])
    model.ir_version = 8  # what onnxruntime (the accuracy reference) reads
    onnx.save(model, path)
    x = np.random.default_rng(1).normal(0, 2, (2, 1, S, D)).astype(np.float32)
    result = (compile(path, inputs={"x0": x}, quant="int8", gelu="shiftgelu") if gelu == "shiftgelu"
              else compile(path, inputs={"x0": x}))
    (op,) = [op for op in result.module.walk() if isinstance(op, df.GeluOp)]
    assert op.approx_choice() == ("sigmoid" if gelu == "exact" else "shiftgelu")
    cosine = result.report["accuracy"]["outputs"]["y"]["cosine_min"]
    assert cosine >= (0.9999 if gelu == "exact" else 0.95)
