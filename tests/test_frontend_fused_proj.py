"""Fused projections read through selections (compiler/frontend/fused_proj.py) and the score terms of
compiler/frontend/masks.py, on hand-built ONNX graphs: each rewrite must compute exactly what the graph computed."""

from __future__ import annotations

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from compiler.frontend.fused_proj import split_selected_projections
from compiler.frontend.graph import Graph, Node
from compiler.frontend.masks import additive_where, as_bhss
from compiler.frontend.onnx_loader import load_graph
from compiler.frontend.onnx_ops import run_node

B, S, H, DH = 1, 5, 2, 3
D = H * DH


def _model(nodes, outputs, inits) -> onnx.ModelProto:
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [B, S, D])
    outs = [helper.make_tensor_value_info(o, TensorProto.FLOAT, None) for o in outputs]
    tensors = [numpy_helper.from_array(np.asarray(v), k) for k, v in inits.items()]
    graph = helper.make_graph(nodes, "g", [x], outs, initializer=tensors)
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])


def _run(graph: Graph, x: np.ndarray) -> dict[str, np.ndarray]:
    values: dict[str, np.ndarray] = {"x": x, **graph.constants}
    for node in graph.nodes:
        args = [values[i] if i else None for i in node.inputs]
        values.update(zip(node.outputs, run_node(node.op_type, args, node.attrs, len(node.outputs))))
    return values


def _weights(n: int) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(0)
    return {"w": rng.normal(size=(D, n)).astype(np.float32), "b": rng.normal(size=n).astype(np.float32)}


def _bloom_style() -> onnx.ModelProto:
    """BLOOM: view [B, S, H, 3, Dh], Gather index 0 / 1 / 2 of axis 3, then the head transpose."""
    inits = {**_weights(3 * D), "shape": np.array([B, S, H, 3, DH]),
             **{f"i{r}": np.array(r) for r in range(3)}}
    nodes = [helper.make_node("MatMul", ["x", "w"], ["mm"]), helper.make_node("Add", ["mm", "b"], ["f"]),
             helper.make_node("Reshape", ["f", "shape"], ["heads"])]
    for r, role in enumerate("qkv"):
        nodes += [helper.make_node("Gather", ["heads", f"i{r}"], [f"{role}4"], axis=3),
                  helper.make_node("Transpose", [f"{role}4"], [role], perm=[0, 2, 1, 3])]
    return _model(nodes, ["q", "k", "v"], inits)


def _neox_style() -> onnx.ModelProto:
    """GPT-NeoX: view [B, S, H, 3*Dh], transpose, Split the last axis (the selection after the transpose)."""
    inits = {**_weights(3 * D), "shape": np.array([B, S, H, 3 * DH]), "split": np.array([DH, DH, DH])}
    nodes = [helper.make_node("MatMul", ["x", "w"], ["mm"]), helper.make_node("Add", ["mm", "b"], ["f"]),
             helper.make_node("Reshape", ["f", "shape"], ["v"]),
             helper.make_node("Transpose", ["v"], ["t"], perm=[0, 2, 1, 3]),
             helper.make_node("Split", ["t", "split"], ["q", "k", "v_"], axis=3)]
    return _model(nodes, ["q", "k", "v_"], inits)


@pytest.mark.parametrize("build", [_bloom_style, _neox_style])
def test_fused_projection_split_per_selection_computes_the_same(tmp_path, build) -> None:
    path = tmp_path / "m.onnx"
    onnx.save(build(), path)
    graph = load_graph(path)
    x = np.random.default_rng(1).normal(size=(B, S, D)).astype(np.float32)
    before = _run(graph, x)
    assert split_selected_projections(graph) == 1
    matmuls = [n for n in graph.nodes if n.op_type == "MatMul"]
    assert len(matmuls) == 3  # one projection per role, D columns each: the same MACs as the fused one
    assert all(graph.constants[n.inputs[1]].shape == (D, D) for n in matmuls)
    after = _run(graph, x)
    for out in graph.outputs:
        np.testing.assert_allclose(after[out], before[out], rtol=1e-6, atol=1e-6)


def test_partial_rotary_slices_of_one_projection_are_not_split(tmp_path) -> None:
    """Rotated and passed-through dims sliced from one projection and concatenated back: not a fused QKV."""
    inits = {**_weights(D), "shape": np.array([B, S, H, DH]), "c": np.full((1,), 0.5, np.float32),
             **{k: np.array([v]) for k, v in (("s0", 0), ("s1", 2), ("s2", DH), ("ax", 3))}}
    nodes = [helper.make_node("MatMul", ["x", "w"], ["mm"]), helper.make_node("Reshape", ["mm", "shape"], ["v"]),
             helper.make_node("Slice", ["v", "s0", "s1", "ax"], ["rot"]),
             helper.make_node("Slice", ["v", "s1", "s2", "ax"], ["pass"]),
             helper.make_node("Mul", ["rot", "c"], ["rot2"]),
             helper.make_node("Concat", ["rot2", "pass"], ["y"], axis=3)]
    path = tmp_path / "m.onnx"
    onnx.save(_model(nodes, ["y"], inits), path)
    graph = load_graph(path)
    assert split_selected_projections(graph) == 0


def _graph(shapes: dict[str, tuple[int, ...]], consts: dict[str, np.ndarray]) -> Graph:
    return Graph(nodes=[], inputs=list(shapes), outputs=[], constants=dict(consts),
                 shapes={**shapes, **{k: v.shape for k, v in consts.items()}},
                 dtypes={**{k: np.dtype(np.float32) for k in shapes}, **{k: v.dtype for k, v in consts.items()}})


def test_bmm_style_terms_view_as_bhss() -> None:
    """ALiBi's [B*H, 1, Sk] bias and a broadcast [Sq, Sk] term, added to [B*H, Sq, Sk] scores, equal the same terms
    viewed as [B, H, Sq, Sk] added to the 4-D scores."""
    rng = np.random.default_rng(2)
    alibi = rng.normal(size=(2 * H, 1, S)).astype(np.float32)
    g = _graph({"scores": (2 * H, S, S), "term": (S, S)}, {"alibi": alibi})
    scores = rng.normal(size=(2 * H, S, S))
    viewed = as_bhss(g, "alibi", 2, H, "v")
    assert viewed is not None and g.shapes[viewed] == (2, H, 1, S)
    np.testing.assert_array_equal((scores + alibi).reshape(2, H, S, S), scores.reshape(2, H, S, S)
                                  + g.constants[viewed])
    flat = as_bhss(g, "term", 2, H, "t")
    assert flat is not None and g.shapes[flat] == (1, 1, S, S) and g.nodes[0].op_type == "Reshape"
    assert as_bhss(_graph({"odd": (3, S, S)}, {}), "odd", 2, H, "o") is None  # 3 is neither 1 nor B*H


@pytest.mark.parametrize("keep_true", [True, False])
def test_input_mask_where_becomes_an_additive_mask(keep_true: bool) -> None:
    rng = np.random.default_rng(3)
    cond = rng.random((1, 1, S, S)) < 0.5
    cond[..., 0] = keep_true  # every row keeps a key
    fill = np.array(np.finfo(np.float32).min, dtype=np.float32)
    g = _graph({"cond": cond.shape, "scores": (1, H, S, S)}, {"fill": fill})
    g.dtypes["cond"] = np.dtype(bool)
    inputs = ["cond", "scores", "fill"] if keep_true else ["cond", "fill", "scores"]
    where = Node("Where", "w", inputs, ["out"])
    g.nodes.append(where)
    g.shapes["out"] = (1, H, S, S)
    mask = additive_where(g, where, keep_true)
    assert g.nodes[0].op_type == "Where" and g.nodes[1] is where
    scores = rng.normal(size=(1, H, S, S)).astype(np.float32)
    values = {"cond": cond, "scores": scores, **g.constants}
    additive = run_node("Where", [values[i] for i in g.nodes[0].inputs], {})[0]
    assert g.nodes[0].outputs == [mask]
    original = run_node("Where", [values[i] for i in inputs], {})[0]

    def softmax(z: np.ndarray) -> np.ndarray:
        e = np.exp(z - z.max(-1, keepdims=True))
        return e / e.sum(-1, keepdims=True)

    np.testing.assert_allclose(softmax(scores + additive), softmax(original), rtol=1e-6, atol=1e-7)
