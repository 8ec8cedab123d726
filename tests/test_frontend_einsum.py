"""Einsum lowering (compiler/frontend/einsum.py), and the other rewrites run before recognition: pools
(pooling.py: tiling, floor mode, overlapping / padded / ceil mode) and inference BatchNormalization (batchnorm.py).

Each lowered graph is run node by node with the frontend's NumPy op table and compared with ``np.einsum`` / torch;
a torch.einsum attention exported by torch.onnx compiles with its attention recognised and its MACs counted; an
equation the rules do not cover is refused in one line naming the node.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

from codesign.api import compile
from compiler.frontend.batchnorm import lower_batchnorms
from compiler.frontend.einsum import lower_einsums, parse_equation
from compiler.frontend.graph import Graph, Node
from compiler.frontend.onnx_ops import run_node
from compiler.frontend.pooling import lower_pools
from examples._common import export_onnx
from hw.errors import InputError
from hw.perf.workload import VectorWork

_SIZES = {"b": 2, "i": 3, "n": 4, "d": 5, "j": 6, "t": 7, "s": 2, "h": 3, "k": 4}


def _run(graph: Graph, feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    values = {**feeds, **graph.constants}
    for node in graph.nodes:
        for name, value in zip(node.outputs, run_node(node.op_type, [values[i] for i in node.inputs], node.attrs)):
            assert value.shape == graph.shapes[name], node.describe()
            values[name] = value
    return values


def _einsum_graph(equation: str, arrays: list[np.ndarray], consts: tuple[int, ...]) -> Graph:
    names = [f"x{i}" for i in range(len(arrays))]
    out = np.einsum(equation, *arrays)
    return Graph([Node("Einsum", "e", names, ["y"], {"equation": equation.encode()})],
                 [n for i, n in enumerate(names) if i not in consts], ["y"],
                 {n: a for i, (n, a) in enumerate(zip(names, arrays)) if i in consts},
                 {**{n: a.shape for n, a in zip(names, arrays)}, "y": out.shape}, {})


@pytest.mark.parametrize("equation, consts, ops", [
    ("bind,bjnd->bnij", (), {"MatMul"}),  # Funnel's content scores
    ("bnij,bjnd->bind", (), {"MatMul"}),  # and its A.V
    ("td,dnh->tnh", (1,), {"MatMul"}),  # a constant weight stays a constant (no Transpose of it)
    ("binh,tnh->bnit", (), {"MatMul"}),
    ("bind,snd->bnis", (1,), {"MatMul"}),
    ("...ij,...jk->...ik", (), {"MatMul"}),
    ("ij,jk", (0,), {"MatMul"}),  # implicit output
    ("bij->bji", (), {"Transpose"}),
    ("bij->b", (), {"ReduceSum"}),
    ("bij->", (), {"ReduceSum"}),
    ("bi,bj->bij", (), {"Mul"}),  # outer product: no contraction
    ("bhd,bhd->bhd", (), {"Mul"}),
    ("bin,bjk->bij", (), {"Mul", "ReduceSum"}),  # letters only one side reads are summed first
])
def test_lowered_einsum_equals_numpy(equation: str, consts: tuple[int, ...], ops: set[str]) -> None:
    rng = np.random.default_rng(0)
    terms = equation.split("->")[0].split(",")
    arrays = [rng.normal(size=[_SIZES[c] for c in t.replace("...", "bs")]).astype(np.float32) for t in terms]
    graph = _einsum_graph(equation, arrays, consts)
    assert lower_einsums(graph) == 1
    kinds = {n.op_type for n in graph.nodes}
    assert "Einsum" not in kinds and ops <= kinds
    assert not any(n.op_type == "Transpose" and set(n.inputs) & set(graph.constants) for n in graph.nodes)
    got = _run(graph, {n: a for n, a in zip([f"x{i}" for i in range(len(arrays))], arrays)})["y"]
    np.testing.assert_allclose(got, np.einsum(equation, *arrays), rtol=1e-4, atol=1e-4)


def test_parse_equation_expands_ellipsis_and_implicit_output() -> None:
    assert parse_equation("...ij,...jk->...ik", [4, 3]) == (["YZij", "Zjk"], "YZik")
    assert parse_equation("ij,jk", [2, 2]) == (["ij", "jk"], "ik")


@pytest.mark.parametrize("equation, shapes, words", [
    ("ii->i", [(3, 3)], "repeats a letter"),
    ("ij,jk,kl->il", [(2, 3), (3, 4), (4, 5)], "3 operands"),
    ("bij,bjk->bik", [(2, 3, 4), (1, 4, 5)], "letter 'b' has sizes 2 and 1"),
])
def test_unlowered_einsum_is_one_line_naming_the_node(equation: str, shapes, words: str) -> None:
    arrays = [np.zeros(s, dtype=np.float32) for s in shapes]
    names = [f"x{i}" for i in range(len(arrays))]
    graph = Graph([Node("Einsum", "layer/Einsum_3", names, ["y"], {"equation": equation})], names, ["y"], {},
                  {n: a.shape for n, a in zip(names, arrays)} | {"y": (1,)}, {}, source="m.onnx")
    with pytest.raises(InputError) as err:
        lower_einsums(graph)
    message = str(err.value)
    assert "\n" not in message and "unsupported op Einsum (node 'layer/Einsum_3')" in message and words in message


class _EinsumAttention(torch.nn.Module):
    """Multi-head attention written with torch.einsum, as Funnel writes its scores and A.V."""

    def __init__(self, d: int = 32, heads: int = 4) -> None:
        super().__init__()
        self.q, self.k, self.v = (torch.nn.Linear(d, d) for _ in range(3))
        self.heads = heads

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, s, d = x.shape
        q, k, v = (f(x).view(b, s, self.heads, d // self.heads) for f in (self.q, self.k, self.v))
        scores = torch.einsum("bind,bjnd->bnij", q, k) / (d // self.heads) ** 0.5
        out = torch.einsum("bnij,bjnd->bind", scores.softmax(-1), v)
        return out.reshape(b, s, d)


def test_einsum_attention_compiles_recognised(tmp_path: Path) -> None:
    torch.manual_seed(0)
    module = _EinsumAttention().eval()
    x = torch.randn(1, 16, 32)
    path = tmp_path / "einsum_attention.onnx"
    export_onnx(module, [x], path, input_names=["x"], output_names=["y"], exporter="legacy")
    result = compile(path, inputs={"x": x.numpy()[None]})
    assert result.imported.patterns["attention"] == 1
    assert result.report["macs"] == 3 * 16 * 32 * 32 + 2 * 4 * 16 * 16 * 8
    assert result.report["accuracy"]["outputs"]["y"]["cosine_min"] >= 0.9999


def test_tiling_pool_is_reshape_and_reduce() -> None:
    x = np.random.default_rng(1).normal(size=(1, 3, 8, 6)).astype(np.float32)
    for op, ref in (("AveragePool", torch.nn.functional.avg_pool2d), ("MaxPool", torch.nn.functional.max_pool2d)):
        graph = Graph([Node(op, "pool", ["x"], ["y"], {"kernel_shape": [2, 3], "strides": [2, 3]})], ["x"], ["y"],
                      {}, {"x": x.shape, "y": (1, 3, 4, 2)}, {})
        assert lower_pools(graph) == 1 and {n.op_type for n in graph.nodes} <= {"Reshape", "ReduceMean", "ReduceMax"}
        want = ref(torch.from_numpy(x), (2, 3)).numpy()
        np.testing.assert_allclose(_run(graph, {"x": x})["y"], want, rtol=1e-6)


@pytest.mark.parametrize("kernel, stride, pad, ceil, include_pad, dilation", [
    (3, 1, 1, False, False, 1),  # PoolFormer / EfficientFormer token mixer (count_include_pad=False)
    (3, 2, 1, False, True, 1),  # ViTamin's strided average shortcut (divisor counts the zero padding)
    (3, 2, 1, True, False, 1),  # ceil mode: the last window reaches past the padding
    (2, 2, 0, True, True, 1),  # a partial ceil-mode window of a tiling pool (torch divides by its in-bounds part)
    (3, 1, 1, False, False, 2),  # dilated (max pools only in torch)
    ((3, 1), (2, 1), (1, 0), False, False, 1),  # MViT-v2's pooled keys along one axis
])
@pytest.mark.parametrize("op", ["AveragePool", "MaxPool"])
def test_overlapping_pool_lowers_exactly(op: str, kernel: Any, stride: Any, pad: Any, ceil: bool, include_pad: bool,
                                         dilation: int) -> None:
    """Pad + one strided Slice per kernel offset + Sum / Max (+ reciprocal divisors) equals torch's pool."""
    if op == "AveragePool" and dilation != 1:
        pytest.skip("torch's avg_pool2d has no dilation")
    x = torch.from_numpy(np.random.default_rng(3).normal(size=(1, 3, 9, 8)).astype(np.float32))
    k2, s2, p2 = (v if isinstance(v, tuple) else (v, v) for v in (kernel, stride, pad))
    if op == "AveragePool":
        want = torch.nn.functional.avg_pool2d(x, k2, s2, p2, ceil_mode=ceil, count_include_pad=include_pad)
        attrs: dict[str, Any] = {"count_include_pad": int(include_pad)}
    else:
        want = torch.nn.functional.max_pool2d(x, k2, s2, p2, dilation=dilation, ceil_mode=ceil)
        attrs = {"dilations": [dilation] * 2}
    attrs.update(kernel_shape=list(k2), strides=list(s2), pads=[*p2, *p2], ceil_mode=int(ceil))
    graph = Graph([Node(op, "mixer/pool", ["x"], ["y"], attrs)], ["x"], ["y"], {},
                  {"x": tuple(x.shape), "y": tuple(want.shape)}, {})
    assert lower_pools(graph) == 1 and op not in {n.op_type for n in graph.nodes}
    np.testing.assert_allclose(_run(graph, {"x": x.numpy()})["y"], want.numpy(), rtol=1e-5, atol=1e-6)


def test_pool_with_indices_is_one_line() -> None:
    graph = Graph([Node("MaxPool", "stem/pool", ["x"], ["y", "idx"], {"kernel_shape": [3, 3], "strides": [2, 2]})],
                  ["x"], ["y"], {}, {"x": (1, 3, 8, 8), "y": (1, 3, 3, 3), "idx": (1, 3, 3, 3)}, {}, source="m.onnx")
    with pytest.raises(InputError, match=r"^m.onnx: unsupported op MaxPool \(node 'stem/pool'\): only pools without "
                                         r"indices are lowered"):
        lower_pools(graph)


def test_overlapping_pool_model_compiles(tmp_path: Path) -> None:
    """PoolFormer's token mixer (pool(x) - x, a 3x3 average of stride 1 without the padding in its divisor), and a
    strided max pool, exported by torch.onnx: compiled, no MACs added, the simulation equal to onnxruntime."""

    class Mixer(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.pool = torch.nn.AvgPool2d(3, 1, 1, count_include_pad=False)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return torch.nn.functional.max_pool2d(self.pool(x) - x, 3, 2, 1)

    x = torch.randn(1, 4, 8, 8)
    for exporter in ("legacy", "dynamo"):
        path = tmp_path / f"mixer_{exporter}.onnx"
        export_onnx(Mixer().eval(), [x], path, input_names=["x"], output_names=["y"], exporter=exporter)
        result = compile(path, inputs={"x": x.numpy()[None]})
        assert result.report["macs"] == 0
        assert result.report["accuracy"]["outputs"]["y"]["cosine_min"] >= 0.9999


@pytest.mark.parametrize("producer", ["matmul", "conv", "input"])
def test_batchnorm_folds_or_lowers_exactly(producer: str) -> None:
    rng = np.random.default_rng(2)
    c = 6
    params = {f"bn.{k}": rng.uniform(0.5, 1.5, c).astype(np.float32) for k in ("scale", "bias", "mean", "var")}
    nodes, consts = [], dict(params)
    if producer == "matmul":  # LeViT's Linear -> Flatten -> BatchNorm1d
        x = rng.normal(size=(1, 4, 5)).astype(np.float32)
        consts["w"] = rng.normal(size=(5, c)).astype(np.float32)
        nodes = [Node("MatMul", "lin", ["x", "w"], ["m"]), Node("Flatten", "flat", ["m"], ["f"], {"axis": 2})]
        shapes = {"m": (1, 4, c), "f": (4, c)}
        bn_in = "f"
    elif producer == "conv":
        x = rng.normal(size=(1, 3, 5, 5)).astype(np.float32)
        consts["w"] = rng.normal(size=(c, 3, 3, 3)).astype(np.float32)
        nodes = [Node("Conv", "conv", ["x", "w"], ["m"], {"kernel_shape": [3, 3], "pads": [1, 1, 1, 1]})]
        shapes, bn_in = {"m": (1, c, 5, 5)}, "m"
    else:
        x = rng.normal(size=(2, c, 3)).astype(np.float32)
        shapes, bn_in = {}, "x"
    nodes.append(Node("BatchNormalization", "bn", [bn_in, *params], ["y"], {"epsilon": 1e-5}))
    shapes = {"x": x.shape, **shapes, "y": shapes.get(bn_in, x.shape), **{k: v.shape for k, v in consts.items()}}
    graph = Graph(nodes, ["x"], ["y"], consts, shapes, {})
    ref = {"x": x, **consts}
    for node in nodes[:-1]:
        ref[node.outputs[0]] = run_node(node.op_type, [ref[i] for i in node.inputs], node.attrs)[0]
    v = ref[bn_in]
    shape = (c,) + (1,) * (v.ndim - 2)
    p = {k.split(".")[1]: a.reshape(shape) for k, a in params.items()}
    want = (v - p["mean"]) / np.sqrt(p["var"] + 1e-5) * p["scale"] + p["bias"]
    assert lower_batchnorms(graph) == 1
    assert all(n.op_type != "BatchNormalization" for n in graph.nodes)
    if producer != "input":  # folded: no per-element multiply left
        assert not any(n.op_type == "Mul" for n in graph.nodes)
    np.testing.assert_allclose(_run(graph, {"x": x})["y"], want, rtol=1e-4, atol=1e-5)


class _CappedAttention(torch.nn.Module):
    """Gemma 2's attention-logit soft-capping c * tanh(s / c) between QK^T and the (causal) softmax."""

    def __init__(self, d: int = 32, heads: int = 4, cap: float = 2.0) -> None:
        super().__init__()
        self.q, self.k, self.v = (torch.nn.Linear(d, d) for _ in range(3))
        self.heads, self.cap = heads, cap

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, s, d = x.shape
        q, k, v = (f(x).view(b, s, self.heads, -1).transpose(1, 2) for f in (self.q, self.k, self.v))
        scores = q @ k.transpose(-1, -2) * 0.5
        scores = torch.tanh(scores / self.cap) * self.cap
        scores = scores + torch.triu(torch.full((s, s), float("-inf")), 1)
        return (scores.softmax(-1) @ v).transpose(1, 2).reshape(b, s, d)


def test_soft_capped_attention_is_one_attention_op(tmp_path: Path) -> None:
    """The cap is an attribute of the attention op (the scale keeps the pre-cap scale), simulated like
    onnxruntime, priced as a tanh over the scores in every order, and the integer path runs."""
    from compiler.dialect import dataflow as df

    torch.manual_seed(0)
    module = _CappedAttention().eval()
    x = torch.randn(1, 16, 32) * 3  # scores beyond the cap, so the tanh bends them
    path = tmp_path / "capped.onnx"
    export_onnx(module, [x], path, input_names=["x"], output_names=["y"], exporter="legacy")
    sample = {"x": x.numpy()[None]}
    choices: list[dict[str, Any]] = [{}, {"attention": "flash"}, {"attention": "edge-moe"}]
    for options in choices:
        result = compile(path, inputs=sample, **options)
        assert result.imported.patterns["attention"] == 1
        (op,) = [op for op in result.module.walk() if isinstance(op, df.AttentionOp)]
        assert op.softcap_value() == pytest.approx(2.0) and df.float_attr(op, "scale") == pytest.approx(0.5)
        assert bool(op.properties["causal"].value.data)  # type: ignore[attr-defined]
        assert result.report["accuracy"]["outputs"]["y"]["cosine_min"] >= 0.9999
        plan = next(p for p in result.env.plans if p.op == "attention")
        caps = [w for w in plan.works if isinstance(w, VectorWork) and w.kind == "gelu"]
        softmax = next(w for w in plan.works if isinstance(w, VectorWork) and w.kind == "softmax")
        # over the scores the softmax visits: all 4 x 16 x 16 in standard order, the unmasked tiles' when reordered
        assert len(caps) == 1 and caps[0].elements == softmax.elements
        if not options:
            assert caps[0].elements == 4 * 16 * 16
    quant = compile(path, inputs=sample, quant="int8")
    assert quant.report["accuracy"]["outputs"]["y"]["cosine_mean"] >= 0.95
