"""The views the attention matcher inserts (compiler/frontend/head_view.py) compute what they replace, and a failed
match leaves the graph as it found it: here the V^T-side value product's rewrite, checked on a hand-built graph."""

from __future__ import annotations

import numpy as np
import onnx
import onnxruntime as ort
from onnx import TensorProto, helper

from compiler.frontend.graph import Graph
from compiler.frontend.head_view import HeadViews, untranspose_product
from compiler.frontend.match import MatchContext
from compiler.frontend.onnx_loader import load_graph
from compiler.frontend.onnx_ops import run_node

B, DV, N = 2, 3, 5


def _model() -> onnx.ModelProto:
    """probs [B, N, N] transposed and read as the right operand of ``v @ probs^T`` (v: [B, Dv, N])."""
    p = helper.make_tensor_value_info("p", TensorProto.FLOAT, [B, N, N])
    v = helper.make_tensor_value_info("v", TensorProto.FLOAT, [B, DV, N])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, [B, DV, N])
    nodes = [helper.make_node("Transpose", ["p"], ["pt"], name="t", perm=[0, 2, 1]),
             helper.make_node("MatMul", ["v", "pt"], ["o"], name="av"),
             helper.make_node("Relu", ["o"], ["y"], name="after")]
    model = helper.make_model(helper.make_graph(nodes, "g", [p, v], [y]),
                              opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8  # what the installed onnxruntime reads (onnx's helper writes its newest)
    return model


def _context(g: Graph) -> MatchContext:
    return MatchContext(g, g.producers(), g.consumers(), {id(n): i for i, n in enumerate(g.nodes)})


def _run(g: Graph, feeds: dict[str, np.ndarray]) -> np.ndarray:
    """The graph evaluated node by node (the loader's folding evaluator), to check a rewrite before matching."""
    values = dict(feeds)
    for node in g.nodes:
        outs = run_node(node.op_type, [values.get(i, g.constants.get(i)) for i in node.inputs], node.attrs)
        values.update(zip(node.outputs, outs))
    return values["y"]


def test_untransposed_product_computes_the_same_and_undo_restores_the_graph() -> None:
    model = _model()
    g = load_graph(model)
    before = [(n, list(n.inputs), list(n.outputs)) for n in g.nodes]
    ctx = _context(g)
    rng = np.random.default_rng(0)
    feeds = {"p": rng.random((B, N, N)).astype(np.float32), "v": rng.standard_normal((B, DV, N)).astype(np.float32)}
    want = np.asarray(ort.InferenceSession(model.SerializeToString()).run(["y"], feeds)[0])
    views = HeadViews()
    product = untranspose_product(ctx, ctx.producers["pt"], views)
    assert product is not None and product.op_type == "MatMul" and product.inputs[0] == "p"
    assert [n.op_type for n in g.nodes] == ["Transpose", "MatMul", "Transpose", "Relu"]
    assert g.shapes[product.outputs[0]] == (B, N, DV)
    np.testing.assert_allclose(_run(g, feeds), want, rtol=1e-6, atol=1e-6)
    views.undo(ctx)
    assert [(n, list(n.inputs), list(n.outputs)) for n in g.nodes] == before
    assert ctx.producers == g.producers()
    assert {k: [id(n) for n in v] for k, v in ctx.consumers.items() if v} == \
        {k: [id(n) for n in v] for k, v in g.consumers().items()}


def test_only_the_transpose_of_the_last_two_axes_read_as_the_right_operand_is_rewritten() -> None:
    g = load_graph(_model())
    ctx = _context(g)
    assert untranspose_product(ctx, ctx.producers["o"], HeadViews()) is None  # not a Transpose
    ctx.producers["pt"].attrs["perm"] = [1, 0, 2]  # a batch / row swap is no transposed product
    assert untranspose_product(ctx, ctx.producers["pt"], HeadViews()) is None
    assert [n.op_type for n in g.nodes] == ["Transpose", "MatMul", "Relu"]
