"""Attention written as the ONNX ``Attention`` op (opset 23, torch's exporter at ``opset_version=23``) is recognised.

Its function body (compiler/frontend/onnx_functions.py) ends in a guard, ``Where(ReduceMax(bias) == -inf, 0, P)``:
a query row whose every key is masked gives 0 instead of softmax's NaN. With a padding-mask input that guard stays
in the graph; the matcher takes it as the attention op's ``masked_rows_zero`` property, which every attention kernel
honours, so a fully masked row (a hand-built mask, or an all-zero attention_mask) equals onnxruntime too. A guard on
another bias than the one added to the scores stays generic ops. The body also always repeats K/V heads (an
Unsqueeze -> Expand -> Reshape, once without grouping), which DeepSeek-V3's hoisted key concat
(compiler/frontend/head_concat.py) now crosses.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from codesign.api import compile
from compiler.dialect import dataflow as df
from compiler.frontend.onnx_functions import function_body

S, D, H = 8, 16, 2
#: The query row whose every key the hand-built mask blocks.
EMPTY_ROW = 3


def _ort(path: Path, feeds: dict[str, np.ndarray]) -> np.ndarray:
    import onnxruntime as ort

    return np.asarray(ort.InferenceSession(str(path), providers=["CPUExecutionProvider"]).run(None, feeds)[0])


def _attention_ops(result) -> list[df.AttentionOp]:
    return [op for op in result.module.walk() if isinstance(op, df.AttentionOp)]


def _model(nodes: list[onnx.NodeProto], inputs: list[onnx.ValueInfoProto], path: Path) -> Path:
    """x [1, S, D] -> Q, K, V projections -> ``nodes`` (reading q, k, v, writing a) -> output projection y."""
    rng = np.random.default_rng(0)
    weights = [numpy_helper.from_array(rng.normal(0, 0.3, (D, D)).astype(np.float32), n)
               for n in ("wq", "wk", "wv", "wo")]
    graph = helper.make_graph(
        [helper.make_node("MatMul", ["x", f"w{r}"], [r]) for r in "qkv"] + nodes
        + [helper.make_node("MatMul", ["a", "wo"], ["y"])], "attention",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, S, D]), *inputs],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, S, D])], initializer=weights)
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 23)], ir_version=10), str(path))
    return path


def _mask_input(name: str) -> onnx.ValueInfoProto:
    return helper.make_tensor_value_info(name, TensorProto.BOOL, [1, 1, S, S])


def _feeds(*masks: str) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(1)
    feeds: dict[str, np.ndarray] = {"x": rng.normal(size=(1, S, D)).astype(np.float32)}
    for name in masks:
        mask = rng.random((1, 1, S, S)) < 0.6
        mask[..., EMPTY_ROW, :] = False
        feeds[name] = mask
    return feeds


@pytest.fixture(scope="module")
def attention_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One ``Attention`` node on [B, S, H*Dh] projections with a boolean mask input."""
    node = helper.make_node("Attention", ["q", "k", "v", "mask"], ["a"], q_num_heads=H, kv_num_heads=H)
    return _model([node], [_mask_input("mask")], tmp_path_factory.mktemp("opset23") / "attention.onnx")


@pytest.mark.parametrize("algorithm", ["standard", "flash", "edge-moe"])
def test_fully_masked_row_is_zero_as_onnxruntime(attention_model: Path, algorithm: str) -> None:
    """A mask blocking every key of one query row: that row is 0 (onnxruntime's Attention and its function body
    agree), not NaN, in every evaluation order; the others are softmax attention as before."""
    feeds = _feeds("mask")
    want = _ort(attention_model, feeds)
    assert not np.any(want[0, EMPTY_ROW])
    result = compile(attention_model, inputs={k: v[None] for k, v in feeds.items()}, attention=algorithm)
    (op,) = _attention_ops(result)
    assert op.masked_rows_zero_value()
    np.testing.assert_allclose(result.env.artifacts["outputs"]["y"][0], want, atol=2e-6, rtol=0)


def test_int8_zeroes_the_fully_masked_row(attention_model: Path) -> None:
    """The integer softmax would make an all -2^31 row uniform; with the property that row's output is exactly 0."""
    feeds = _feeds("mask")
    result = compile(attention_model, inputs={k: v[None] for k, v in feeds.items()}, quant="int8")
    (op,) = _attention_ops(result)
    assert op.masked_rows_zero_value()
    got = result.env.artifacts["outputs"]["y"][0]
    want = _ort(attention_model, feeds)
    assert not np.any(got[0, EMPTY_ROW])
    assert np.abs(got - want).max() <= 0.05 * np.abs(want).max()


def test_guard_on_another_bias_stays_generic(tmp_path: Path) -> None:
    """The Attention body with its guard reading a second mask's bias: a row it zeroes need not be masked in the
    scores, so no attention op can say what it computes. It stays generic ops, simulated as onnxruntime runs it."""
    attention = helper.make_node("Attention", ["q", "k", "v", "mask"], ["a"], name="att", q_num_heads=H,
                                 kv_num_heads=H)
    types = [helper.make_tensor_type_proto(TensorProto.FLOAT, [1, S, D])] * 3 + \
        [helper.make_tensor_type_proto(TensorProto.BOOL, [1, 1, S, S])]
    body = function_body(attention, 23, types)
    assert body is not None
    (reduce_max,) = [n for n in body if n.op_type == "ReduceMax"]
    other = [helper.make_node("Constant", [], ["zero"], value=numpy_helper.from_array(np.zeros(1, np.float32))),
             helper.make_node("Constant", [], ["ninf"], value=numpy_helper.from_array(np.full(1, -np.inf, np.float32))),
             helper.make_node("Where", ["mask2", "zero", "ninf"], ["bias2"])]
    reduce_max.input[0] = "bias2"
    path = _model(other + body, [_mask_input("mask"), _mask_input("mask2")], tmp_path / "other_bias.onnx")
    feeds = _feeds("mask", "mask2")
    feeds["mask"][..., EMPTY_ROW, 0] = True  # no row of the scores fully masked: no NaN before the guard
    feeds["mask2"][..., EMPTY_ROW + 1, :] = False  # rows the guard zeroes that the scores' mask keeps
    result = compile(path, inputs={k: v[None] for k, v in feeds.items()})
    assert result.imported.patterns["attention"] == 0
    np.testing.assert_allclose(result.env.artifacts["outputs"]["y"][0], _ort(path, feeds), atol=2e-6, rtol=0)


def test_grouped_latent_key_through_the_body_head_repeat(tmp_path: Path) -> None:
    """A key built as MLA builds it (per-KV-head part of one projection, a part shared by every head from another,
    concatenated after the head transpose) with fewer KV heads than query heads: the Attention body repeats each KV
    head twice (Unsqueeze -> Expand -> Reshape) after the concat, and the concat is still hoisted before the head
    split (head_concat.py), so the attention is recognised, grouped-query, and equals onnxruntime."""
    heads, kv, d1, d2 = 4, 2, 4, 4
    dh = d1 + d2
    rng = np.random.default_rng(2)
    inits = [numpy_helper.from_array(rng.normal(0, 0.3, shape).astype(np.float32), name) for name, shape in
             (("wq2", (D, heads * dh)), ("wk1", (D, kv * d1)), ("wk2", (D, d2)), ("wv2", (D, kv * dh)),
              ("wo2", (heads * dh, D)))]
    inits += [numpy_helper.from_array(np.array(v, np.int64), name) for name, v in
              (("sq", [1, S, heads, dh]), ("sk1", [1, S, kv, d1]), ("sk2", [1, S, 1, d2]), ("sv", [1, S, kv, dh]),
               ("ek2", [1, kv, S, d2]), ("so", [1, S, heads * dh]))]

    def heads_of(x: str, weight: str, shape: str, out: str) -> list[onnx.NodeProto]:
        return [helper.make_node("MatMul", [x, weight], [f"{out}_flat"]),
                helper.make_node("Reshape", [f"{out}_flat", shape], [f"{out}_bshd"]),
                helper.make_node("Transpose", [f"{out}_bshd"], [out], perm=[0, 2, 1, 3])]

    nodes = [*heads_of("x", "wq2", "sq", "q4"), *heads_of("x", "wk1", "sk1", "k_nope"),
             *heads_of("x", "wk2", "sk2", "k_shared"), helper.make_node("Expand", ["k_shared", "ek2"], ["k_rot"]),
             helper.make_node("Concat", ["k_nope", "k_rot"], ["k4"], axis=-1), *heads_of("x", "wv2", "sv", "v4"),
             helper.make_node("Attention", ["q4", "k4", "v4"], ["a4"]),
             helper.make_node("Transpose", ["a4"], ["a_bshd"], perm=[0, 2, 1, 3]),
             helper.make_node("Reshape", ["a_bshd", "so"], ["a_flat"]),
             helper.make_node("MatMul", ["a_flat", "wo2"], ["y"])]
    graph = helper.make_graph(nodes, "mla", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, S, D])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, S, D])], initializer=inits)
    path = tmp_path / "mla.onnx"
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 23)], ir_version=10), str(path))
    feeds = {"x": rng.normal(size=(1, S, D)).astype(np.float32)}
    result = compile(path, inputs={"x": feeds["x"][None]})
    (op,) = _attention_ops(result)
    assert (op.num_heads_value(), op.kv_heads_value()) == (heads, kv)
    np.testing.assert_allclose(result.env.artifacts["outputs"]["y"][0], _ort(path, feeds), atol=2e-6, rtol=0)


#: Zoo models exported at opset 23: a padding-mask input (the guard stays) and DeepSeek-V3's multi-head latent
#: attention (its key a concat of per-head and shared rotary parts, then the body's K/V head repeat).
ZOO = [("llama", "dynamo:mask"), ("bert", "dynamo:mask"), ("deepseek-v3", "dynamo:nomask")]


@pytest.mark.slow
@pytest.mark.parametrize("name, variant", ZOO)
def test_zoo_at_opset_23_recognises_every_attention(tmp_path: Path, name: str, variant: str) -> None:
    """Every attention the module runs is recognised (float and int8), the float simulation equals onnxruntime on
    the zoo's sample and, with an attention_mask input, on an all-zero mask (an encoder's every row fully masked)."""
    from examples import zoo

    path = tmp_path / f"{name}.onnx"
    module = zoo.export(name, variant, path, opset=23)
    assert "Attention" in {n.op_type for n in onnx.load(str(path)).graph.node}
    feeds = [zoo.feeds(name, variant)]
    if "attention_mask" in feeds[0]:
        feeds.append({**feeds[0], "attention_mask": np.zeros_like(feeds[0]["attention_mask"])})
    samples = {k: np.stack([f[k] for f in feeds]) for k in feeds[0]}
    result = compile(path, inputs=samples)
    assert result.imported.patterns["attention"] == zoo.expected(module, name, variant)["attention"]
    for i, f in enumerate(feeds):
        want = _ort(path, f)
        np.testing.assert_allclose(result.env.artifacts["outputs"]["last_hidden_state"][i], want,
                                   atol=5e-6 * np.abs(want).max(), rtol=0)
    choices: dict[str, Any] = zoo.INT8
    quant = compile(path, inputs=samples, **choices)
    assert quant.imported.patterns["attention"] == zoo.ARCHS[name].attention
