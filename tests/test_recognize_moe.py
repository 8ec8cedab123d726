"""MoE recognition on each exporter spelling (compiler/frontend/recognize_moe.py), and the partial-pattern error."""

from __future__ import annotations

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from compiler.frontend.onnx_loader import load_graph
from compiler.frontend.recognize import recognize
from compiler.frontend.to_dialect import build_module
from compiler.numerics.router import moe_reference
from hw.errors import InputError

T, D, H, E = 6, 8, 12, 4


def _c(name: str, value, dtype: type[np.generic] = np.float32) -> onnx.TensorProto:
    return numpy_helper.from_array(np.asarray(value, dtype=dtype), name)


def _model(nodes, inits, outputs=("y",), out_shape=(1, T, D), x_shape=(1, T, D)) -> onnx.ModelProto:
    graph = helper.make_graph(
        nodes, "moe", [helper.make_tensor_value_info("x", TensorProto.FLOAT, list(x_shape))],
        [helper.make_tensor_value_info(o, TensorProto.FLOAT, None) for o in outputs[1:]]
        + [helper.make_tensor_value_info(outputs[0], TensorProto.FLOAT, list(out_shape))],
        initializer=list(inits))
    # the block output first in the graph's output list
    graph.output.insert(0, graph.output.pop())
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])


def _weights(seed=0):
    rng = np.random.default_rng(seed)
    return (rng.normal(size=(D, E)), rng.normal(size=(E, D, H)) / 3, rng.normal(size=(E, H, D)) / 3)


def _topk_scatternd_einsum(extra_output: bool = False, broken: bool = False) -> onnx.ModelProto:
    """Mixtral-style: TopK on the softmax, renormalised, combine matrix by ScatterND, experts by Einsum."""
    gate, w1, w2 = _weights()
    rows = np.stack(np.meshgrid(np.arange(1), np.arange(T), np.arange(2), indexing="ij"), -1)[..., :2]  # [1,T,2,2]
    nodes = [
        helper.make_node("MatMul", ["x", "gate"], ["logits"], name="router/MatMul"),
        helper.make_node("Softmax", ["logits"], ["probs"], axis=-1, name="router/Softmax"),
        helper.make_node("TopK", ["probs", "k"], ["vals", "idx"], axis=-1, name="router/TopK"),
        helper.make_node("ReduceSum", ["vals", "ax"], ["vsum"], keepdims=1, name="router/ReduceSum"),
        helper.make_node("Div", ["vals", "vsum"], ["wts"], name="router/Div"),
        helper.make_node("Unsqueeze", ["idx", "ax"], ["idx4"], name="router/Unsqueeze"),
        helper.make_node("Concat", ["rows", "idx4"], ["nd"], axis=-1, name="router/Concat"),
        helper.make_node("ScatterND", ["zeros", "nd", "wts"], ["comb"], name="router/ScatterND"),
        helper.make_node("Einsum", ["x", "w1"], ["h"], equation="btd,edh->bteh", name="experts/Einsum"),
        helper.make_node("Relu", ["h"], ["a"], name="experts/Relu"),
        helper.make_node("Einsum", ["a", "w2"], ["o"], equation="bteh,ehd->bted", name="experts/Einsum_1"),
        helper.make_node("Einsum", ["x" if broken else "comb", "o"] if not broken else ["comb", "o"], ["y0"],
                         equation="bte,bted->btd", name="combine/Einsum"),
    ]
    if broken:  # the combine weights multiply a token-independent constant: not an MoE any more
        nodes.insert(-1, helper.make_node("Mul", ["o", "half"], ["o_half"], name="experts/Mul"))
        nodes[-1] = helper.make_node("Einsum", ["comb", "o_half"], ["y0"], equation="bte,bted->btd",
                                     name="combine/Einsum")
        nodes.append(helper.make_node("Add", ["y0", "x"], ["y"], name="combine/Add"))
    else:
        nodes.append(helper.make_node("Identity", ["y0"], ["y"], name="combine/Identity"))
    inits = [_c("gate", gate), _c("w1", w1), _c("w2", w2), _c("k", [2], np.int64), _c("ax", [-1], np.int64),
             _c("rows", rows, np.int64), _c("zeros", np.zeros((1, T, E))), _c("half", 0.5)]
    return _model(nodes, inits, outputs=("y", "probs") if extra_output else ("y",))


def _topk_gather_weights() -> onnx.ModelProto:
    """Per-token Gather of stacked expert weights by the TopK indices (no renormalisation, GELU experts)."""
    gate, w1, w2 = _weights(1)
    nodes = [
        helper.make_node("MatMul", ["x", "gate"], ["logits"], name="moe/gate"),
        helper.make_node("TopK", ["logits", "k"], ["lv", "idx"], axis=-1, name="moe/TopK"),
        helper.make_node("Softmax", ["logits"], ["probs"], axis=-1, name="moe/Softmax"),
        helper.make_node("GatherElements", ["probs", "idx"], ["wts"], axis=-1, name="moe/GatherElements"),
        helper.make_node("Gather", ["w1", "idx"], ["w1g"], axis=0, name="moe/Gather_w1"),
        helper.make_node("Einsum", ["x", "w1g"], ["h"], equation="btd,btkdh->btkh", name="moe/fc1"),
        helper.make_node("Gelu", ["h"], ["a"], name="moe/act"),
        helper.make_node("Gather", ["w2", "idx"], ["w2g"], axis=0, name="moe/Gather_w2"),
        helper.make_node("Einsum", ["a", "w2g"], ["o"], equation="btkh,btkhd->btkd", name="moe/fc2"),
        helper.make_node("Einsum", ["wts", "o"], ["y"], equation="btk,btkd->btd", name="moe/combine"),
    ]
    return helper.make_model(helper.make_graph(
        nodes, "moe", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, T, D])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, T, D])],
        initializer=[_c("gate", gate), _c("w1", w1), _c("w2", w2), _c("k", [2], np.int64)]),
        opset_imports=[helper.make_opsetid("", 20)])


def _image_routed() -> onnx.ModelProto:
    """Mobile V-MoE: the gate sees the token mean; every token of the image uses the image's top-1 expert."""
    gate, w1, w2 = _weights(2)
    nodes = [
        helper.make_node("ReduceMean", ["x"], ["pooled"], axes=[1], keepdims=1, name="moe/pool"),
        helper.make_node("MatMul", ["pooled", "gate"], ["logits"], name="moe/gate"),
        helper.make_node("Softmax", ["logits"], ["probs"], axis=-1, name="moe/Softmax"),
        helper.make_node("ArgMax", ["logits"], ["idx"], axis=-1, keepdims=1, name="moe/ArgMax"),
        helper.make_node("GatherElements", ["probs", "idx"], ["p"], axis=-1, name="moe/GatherElements"),
        helper.make_node("ScatterElements", ["zeros", "idx", "p"], ["comb"], axis=-1, name="moe/Scatter"),
        helper.make_node("Einsum", ["x", "w1"], ["h"], equation="btd,edh->bteh", name="moe/fc1"),
        helper.make_node("Relu", ["h"], ["a"], name="moe/act"),
        helper.make_node("Einsum", ["a", "w2"], ["o"], equation="bteh,ehd->bted", name="moe/fc2"),
        helper.make_node("Einsum", ["comb", "o"], ["y"], equation="bre,bted->btd", name="moe/combine"),
    ]
    return helper.make_model(helper.make_graph(
        nodes, "moe", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [2, T, D])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [2, T, D])],
        initializer=[_c("gate", gate), _c("w1", w1), _c("w2", w2), _c("zeros", np.zeros((2, 1, E)))]),
        opset_imports=[helper.make_opsetid("", 17)])


def _moe(matches):
    found = [m for m in matches if m.kind == "moe"]
    assert found, [m.kind for m in matches]
    return found


def test_m3vit_export_is_one_task_routed_top2_block(models_dir):
    for name in ("m3vit_tiny.onnx", "m3vit_tiny_dynamo.onnx"):
        (m,) = _moe(recognize(load_graph(models_dir / name)))
        p = m.props
        assert (p["num_experts"], p["top_k"], p["mode"], p["renormalize"]) == (4, 2, "task", False)
        assert (p["spelling"], p["activation"], p["capacity_factor"]) == ("stacked", "gelu", 0.0)
        assert p["w1"].shape == (4, 64, 128) and p["b1"].shape == (4, 128) and p["b2"].shape == (4, 64)


def test_switch_legacy_export_every_block_recognised_with_its_capacity(models_dir):
    imported = build_module(load_graph(models_dir / "switch_tiny.onnx"))
    assert imported.patterns["moe"] == 2
    matches = _moe(recognize(load_graph(models_dir / "switch_tiny.onnx")))
    for m in matches:
        p = m.props
        assert (p["top_k"], p["mode"], p["spelling"], p["activation"]) == (1, "token", "unrolled", "relu")
        assert p["capacity"] == 16 and p["capacity_factor"] == pytest.approx(4.0)
        assert p["w1"].shape == (4, 64, 128) and p["b1"] is None


def test_topk_scatternd_einsum_router_is_renormalised_token_routing():
    (m,) = _moe(recognize(load_graph(_topk_scatternd_einsum())))
    assert (m.props["top_k"], m.props["renormalize"], m.props["mode"], m.props["activation"]) == (2, True, "token",
                                                                                               "relu")


def test_topk_with_gathered_expert_weights_is_recognised():
    (m,) = _moe(recognize(load_graph(_topk_gather_weights())))
    assert (m.props["top_k"], m.props["renormalize"], m.props["mode"]) == (2, False, "task")
    assert m.props["activation"] == "gelu"


def test_image_routing_is_recognised_from_the_token_mean():
    (m,) = _moe(recognize(load_graph(_image_routed())))
    assert (m.props["mode"], m.props["top_k"], m.props["images"]) == ("image", 1, 2)
    x = np.random.default_rng(5).normal(size=(2, T, D))
    gate, w1, w2 = _weights(2)
    y, r = moe_reference(x, gate, w1, w2, top_k=1, mode="image", activation="relu")
    assert all(len(set(r.experts[i * T:(i + 1) * T, 0])) == 1 for i in range(2))


def test_block_with_a_routing_tensor_read_outside_is_a_clear_error():
    with pytest.raises(InputError) as err:
        recognize(load_graph(_topk_scatternd_einsum(extra_output=True)))
    msg = str(err.value)
    assert "MoE block gated by MatMul 'router/MatMul' is only partly recognised" in msg
    assert "Softmax 'router/Softmax'" in msg


def test_block_that_is_not_an_moe_after_all_stays_its_ops_and_says_so():
    """A router and experts whose combine none of the MoE op's routings computes (here the combine weights multiply
    a token-independent constant) is not priced as an MoE: it stays its own ops, which compute it exactly, and the
    import names it and why (the report's ``recognition_notes``)."""
    result = build_module(load_graph(_topk_scatternd_einsum(broken=True)))
    assert result.patterns["moe"] == 0
    [note] = result.notes
    assert note.startswith("MoE block gated by MatMul 'router/MatMul' left as generic ops: ")
    assert "does not compute a top-2 MoE over 4 experts" in note


def test_legacy_export_with_missing_experts_says_to_reexport(models_dir):
    model = onnx.load(str(models_dir / "switch_tiny.onnx"))
    # drop expert 3's second matrix: its MatMul now reads the first, the block holds 7 expert matrices
    for node in model.graph.node:
        if node.name.endswith("block.0/layer.1/mlp/experts/expert_3/wo/MatMul"):
            node.input[1] = [n for n in model.graph.node
                             if n.name.endswith("block.0/layer.1/mlp/experts/expert_3/wi/MatMul")][0].input[1]
    with pytest.raises(InputError) as err:
        build_module(load_graph(model))
    assert "only partly recognised" in str(err.value)


def test_the_report_names_what_recognition_left_as_generic_ops():
    from codesign.api import compile

    report = compile(_topk_scatternd_einsum(broken=True)).report
    assert report["patterns"]["moe"] == 0
    assert [n.split(":")[0] for n in report["recognition_notes"]] == [
        "MoE block gated by MatMul 'router/MatMul' left as generic ops"]
    assert compile(_topk_scatternd_einsum()).report["recognition_notes"] == []
