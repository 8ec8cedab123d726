"""Ops the ONNX standard defines as functions are expanded into their bodies (compiler/frontend/onnx_functions.py):
opset 23's ``Attention`` and ``RMSNormalization`` (what torch's exporter writes at ``opset_version=23``) compile to
the same recognised attention and RMSNorm as an opset-18 export, and ops with a plain function body
(MeanVarianceNormalization) simulate as onnxruntime runs them."""

from __future__ import annotations

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from compiler.frontend.onnx_loader import load_graph


def _ort(path, feeds: dict[str, np.ndarray]) -> np.ndarray:
    import onnxruntime as ort

    return np.asarray(ort.InferenceSession(str(path), providers=["CPUExecutionProvider"]).run(None, feeds)[0])


@pytest.mark.slow
def test_opset_23_llama_export_is_the_opset_18_model(tmp_path) -> None:
    """A grouped-query LLaMA exported by dynamo at opset 23 (one Attention and one RMSNormalization node each) is
    recognised as at opset 18: two attentions, five RMSNorms; its simulation equals onnxruntime's."""
    import torch
    import transformers

    from codesign.api import compile

    config = transformers.LlamaConfig(vocab_size=128, hidden_size=64, num_hidden_layers=2, num_attention_heads=4,
                                      num_key_value_heads=2, intermediate_size=128, max_position_embeddings=64)
    torch.manual_seed(0)
    model = transformers.LlamaModel(config).eval()

    class Wrap(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.model = model

        def forward(self, ids: torch.Tensor) -> torch.Tensor:
            return self.model(input_ids=ids, use_cache=False).last_hidden_state

    ids = np.random.default_rng(0).integers(0, 128, (1, 16)).astype(np.int64)
    patterns = {}
    for opset in (18, 23):
        path = tmp_path / f"llama{opset}.onnx"
        torch.onnx.export(Wrap().eval(), (torch.from_numpy(ids),), str(path), dynamo=True, opset_version=opset,
                          input_names=["ids"], output_names=["y"])
        ops = {n.op_type for n in onnx.load(str(path)).graph.node}
        assert (opset == 23) == ({"Attention", "RMSNormalization"} <= ops)
        result = compile(path, inputs={"ids": ids[None]})
        np.testing.assert_allclose(result.env.artifacts["outputs"]["y"][0], _ort(path, {"ids": ids}), atol=1e-5)
        patterns[opset] = result.report["patterns"]
    assert patterns[23] == patterns[18] and patterns[23]["attention"] == 2 and patterns[23]["layernorm"] == 5


def test_plain_function_body_simulates_as_onnxruntime(tmp_path) -> None:
    """MeanVarianceNormalization has a plain function body (attribute references bound from the node)."""
    from codesign.api import compile

    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3, 4, 5])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, None)
    w = numpy_helper.from_array(np.linspace(-1, 1, 5 * 5).reshape(5, 5).astype(np.float32), "w")
    nodes = [helper.make_node("MeanVarianceNormalization", ["x"], ["n"], name="mvn", axes=[0, 2, 3]),
             helper.make_node("MatMul", ["n", "w"], ["y"])]
    model = helper.make_model(helper.make_graph(nodes, "g", [x], [y], initializer=[w]),
                              opset_imports=[helper.make_opsetid("", 18)])
    model.ir_version = 8
    path = tmp_path / "mvn.onnx"
    onnx.save(model, str(path))
    graph = load_graph(str(path))
    assert "MeanVarianceNormalization" not in {n.op_type for n in graph.nodes}
    sample = np.random.default_rng(1).normal(0, 2, (1, 3, 4, 5)).astype(np.float32)
    got = compile(path, inputs={"x": sample[None]}).env.artifacts["outputs"]["y"][0]
    np.testing.assert_allclose(got, _ort(path, {"x": sample}), rtol=1e-5, atol=1e-5)


def _where_model(cond: np.ndarray, out_shape) -> onnx.ModelProto:
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [2, 3])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, out_shape)
    inits = [numpy_helper.from_array(cond, "c"), numpy_helper.from_array(np.zeros((), np.float32), "zero")]
    nodes = [helper.make_node("Exp", ["x"], ["e"]), helper.make_node("CastLike", ["zero", "e"], ["z"]),
             helper.make_node("Where", ["c", "z", "e"], ["y"], name="guard")]
    return helper.make_model(helper.make_graph(nodes, "g", [x], [y], initializer=inits),
                             opset_imports=[helper.make_opsetid("", 18)])


def test_a_where_whose_constant_condition_picks_one_branch_is_that_branch() -> None:
    graph = load_graph(_where_model(np.zeros((2, 1), bool), [2, 3]))
    guard = next(n for n in graph.nodes if n.name == "guard")
    assert guard.op_type == "Identity" and guard.inputs == ["e"]
    assert "CastLike" not in {n.op_type for n in graph.nodes}  # it reads only the other operand's type: folded
    mixed = load_graph(_where_model(np.array([[True], [False]]), [2, 3]))
    assert next(n for n in mixed.nodes if n.name == "guard").op_type == "Where"


def test_function_body_defined_at_an_earlier_opset_is_used(tmp_path) -> None:
    """GroupNormalization-21's body is defined at opset 21 only: a model at opset 23 (wav2vec2's feature extractor
    from a dynamo export) still gets it, and simulates as onnxruntime runs it."""
    from codesign.api import compile

    rng = np.random.default_rng(2)
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 4, 6])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, None)
    inits = [numpy_helper.from_array(rng.normal(1, 0.2, 4).astype(np.float32), "scale"),
             numpy_helper.from_array(rng.normal(0, 0.2, 4).astype(np.float32), "bias"),
             numpy_helper.from_array(rng.normal(0, 1, (6, 6)).astype(np.float32), "w")]
    nodes = [helper.make_node("GroupNormalization", ["x", "scale", "bias"], ["n"], name="gn", num_groups=2,
                              epsilon=1e-5),
             helper.make_node("MatMul", ["n", "w"], ["y"])]
    model = helper.make_model(helper.make_graph(nodes, "g", [x], [y], initializer=inits),
                              opset_imports=[helper.make_opsetid("", 23)])
    model.ir_version = 10
    path = tmp_path / "gn.onnx"
    onnx.save(model, str(path))
    assert "GroupNormalization" not in {n.op_type for n in load_graph(str(path)).nodes}
    sample = rng.normal(0, 2, (1, 4, 6)).astype(np.float32)
    got = compile(path, inputs={"x": sample[None]}).env.artifacts["outputs"]["y"][0]
    np.testing.assert_allclose(got, _ort(path, {"x": sample}), rtol=1e-4, atol=1e-4)


def test_weight_norm_of_constants_folds_to_a_constant_weight() -> None:
    """A weight-normed Conv's weight g * v / ||v|| (ReduceL2 of a constant) folds, so the Conv has a constant
    weight (it was refused: 'the weight is not a constant')."""
    rng = np.random.default_rng(3)
    v = rng.normal(0, 1, (4, 2, 3)).astype(np.float32)
    g = rng.normal(1, 0.1, (1, 1, 3)).astype(np.float32)
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 2, 8])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, None)
    nodes = [helper.make_node("ReduceL2", ["v", "axes"], ["norm"], keepdims=1),
             helper.make_node("Div", ["v", "norm"], ["unit"]), helper.make_node("Mul", ["g", "unit"], ["w"]),
             helper.make_node("Conv", ["x", "w"], ["y"], name="conv")]
    inits = [numpy_helper.from_array(v, "v"), numpy_helper.from_array(g, "g"),
             numpy_helper.from_array(np.array([0, 1], np.int64), "axes")]
    graph = load_graph(helper.make_model(helper.make_graph(nodes, "g", [x], [y], initializer=inits),
                                         opset_imports=[helper.make_opsetid("", 18)]))
    conv = next(n for n in graph.nodes if n.name == "conv")
    want = g * v / np.sqrt((v * v).sum(axis=(0, 1), keepdims=True))
    np.testing.assert_allclose(graph.constants[conv.inputs[1]], want, rtol=1e-6)
