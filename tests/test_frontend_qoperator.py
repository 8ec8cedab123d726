"""Models in onnxruntime's QOperator format (compiler/frontend/qoperator.py): each QLinear* / QGemm op imports as
DequantizeLinear -> float op -> QuantizeLinear, the QDQ form, so a transformer's patterns are those of its QDQ
export and the simulation matches onnxruntime's run of the quantized model; what is not expanded is refused in one
line naming the node.

The models are the repository's real exports (and a torch CNN built here) quantized by onnxruntime.quantization's
``quantize_static`` itself; onnxruntime runs them as the reference, and also runs the rewritten model, which must
compute the same integers."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch
from onnx import TensorProto, helper, numpy_helper
from onnxruntime.quantization import CalibrationDataReader, QuantFormat, quantize_static

from codesign.api import compile
from codesign.cli import main
from compiler.frontend.qoperator import expand_qoperator
from tests.conftest import model_path
from tests.test_frontend_dynamic_quant import _feeds


class _Reader(CalibrationDataReader):
    def __init__(self, samples: list[dict[str, np.ndarray]]):
        self.samples = iter(samples)

    def get_next(self) -> dict[str, np.ndarray] | None:
        return next(self.samples, None)


def _run(model: onnx.ModelProto, feeds: dict[str, np.ndarray]) -> np.ndarray:
    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL  # ORT's own kernels, unfused
    sess = ort.InferenceSession(model.SerializeToString(), options, providers=["CPUExecutionProvider"])
    return np.asarray(sess.run(None, feeds)[0])


def _ops(path: Path) -> set[str]:
    return {n.op_type for n in onnx.load(str(path)).graph.node}


def test_a_qoperator_transformer_imports_like_its_qdq_export(tmp_path: Path) -> None:
    src = model_path("bert_tiny.onnx")
    calib = [_feeds(src, seed) for seed in range(4)]
    paths = {fmt: tmp_path / f"{fmt.name}.onnx" for fmt in (QuantFormat.QDQ, QuantFormat.QOperator)}
    for fmt, path in paths.items():
        quantize_static(src, path, _Reader(calib), quant_format=fmt)
    qop = paths[QuantFormat.QOperator]
    assert {"QLinearMatMul", "QLinearAdd", "QLinearMul", "QLinearSoftmax"} <= _ops(qop)
    x = _feeds(src, 7)
    # the rewrite computes onnxruntime's integers: its run of the rewritten model is the QOperator model's
    model = onnx.load(str(qop))
    want = _run(model, x)
    got = _run(expand_qoperator(model, str(qop)), x)
    cosine = float((want * got).sum() / np.linalg.norm(want) / np.linalg.norm(got))
    assert cosine > 0.9999
    report = compile(str(qop), inputs={k: v[None] for k, v in x.items()}).report
    assert report is not None
    assert report["patterns"] == compile(str(paths[QuantFormat.QDQ])).report["patterns"]  # type: ignore[index]
    assert report["patterns"]["attention"] == 2 and report["patterns"]["gelu"] == 2
    assert report["patterns"]["layernorm"] == 5
    assert report["accuracy"]["reference"].startswith("onnxruntime")  # its run of the QOperator model itself
    assert min(v["cosine_min"] for v in report["accuracy"]["outputs"].values()) > 0.99
    fp32 = _run(onnx.load(str(src)), x)
    assert float((fp32 * want).sum() / np.linalg.norm(fp32) / np.linalg.norm(want)) > 0.99


def test_the_cli_compiles_a_qoperator_transformer_with_int8(tmp_path: Path) -> None:
    src = model_path("bert_tiny.onnx")
    qop = tmp_path / "qop.onnx"
    quantize_static(src, qop, _Reader([_feeds(src, seed) for seed in range(2)]), quant_format=QuantFormat.QOperator)
    samples: dict[str, Any] = {k: v[None] for k, v in _feeds(src, 5).items()}  # numpy's stub: not allow_pickle
    np.savez(str(tmp_path / "x.npz"), **samples)
    assert main(["compile", str(qop), "-q", "--quant", "int8", "--inputs", str(tmp_path / "x.npz"),
                 "--json", str(tmp_path / "r.json")]) == 0
    report = json.loads((tmp_path / "r.json").read_text())
    assert report["patterns"]["attention"] == 2
    assert min(v["cosine_mean"] for v in report["accuracy"]["outputs"].values()) > 0.99


class _Cnn(torch.nn.Module):
    """Conv / ReLU / MaxPool / Concat / LeakyReLU / AvgPool / Sigmoid / GlobalAveragePool / Linear: every CNN op
    quantize_static's QOperator format writes as a QLinear* op, or runs on the integer tensor (MaxPool, Split,
    Pad, Slice, Transpose, Resize)."""

    def __init__(self) -> None:
        super().__init__()
        self.stem = torch.nn.Conv2d(3, 8, 3, padding=1)
        self.a, self.b = torch.nn.Conv2d(8, 8, 1), torch.nn.Conv2d(8, 8, 3, padding=1)
        self.fc = torch.nn.Linear(16, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = torch.nn.functional.max_pool2d(torch.relu(self.stem(x)), 2)
        u, v = torch.split(y, 4, dim=1)  # Split, Pad, Slice, Transpose, Resize: run on the uint8 tensors
        y = torch.cat([torch.nn.functional.pad(u, (1, 1, 1, 1))[:, :, 1:-1, 1:-1], v.transpose(2, 3)], dim=1)
        y = torch.nn.functional.interpolate(torch.nn.functional.max_pool2d(y, 2), scale_factor=2.0, mode="nearest")
        z = torch.cat([self.a(y), torch.nn.functional.leaky_relu(self.b(y), 0.1)], dim=1)
        z = torch.nn.functional.avg_pool2d(z, 2) * torch.sigmoid(z.mean(dim=(2, 3), keepdim=True))
        return self.fc(torch.nn.functional.adaptive_avg_pool2d(z + 0.5, 1).flatten(1))


def test_a_qoperator_cnn_matches_onnxruntime(tmp_path: Path) -> None:
    torch.manual_seed(0)
    src, qop = tmp_path / "cnn.onnx", tmp_path / "cnn_qop.onnx"
    torch.onnx.export(_Cnn().eval(), (torch.randn(1, 3, 16, 16),), str(src), input_names=["x"], output_names=["y"],
                      opset_version=17, dynamo=False)
    rng = np.random.default_rng(0)
    calib = [{"x": rng.standard_normal((1, 3, 16, 16)).astype(np.float32)} for _ in range(8)]
    quantize_static(src, qop, _Reader(calib), quant_format=QuantFormat.QOperator, per_channel=True)
    assert {"QLinearConv", "QGemm", "QLinearConcat", "QLinearLeakyRelu", "QLinearAveragePool", "QLinearSigmoid",
            "QLinearGlobalAveragePool", "QLinearAdd", "QLinearMul", "MaxPool", "Split", "Pad", "Slice", "Transpose",
            "Resize"} <= _ops(qop)
    x = rng.standard_normal((3, 1, 3, 16, 16)).astype(np.float32)
    model = onnx.load(str(qop))
    rewritten = expand_qoperator(model, str(qop))
    for sample in x:  # the same integers as onnxruntime's QOperator kernels, per-channel weights included
        np.testing.assert_array_equal(_run(rewritten, {"x": sample}), _run(model, {"x": sample}))
    report = compile(str(qop), inputs={"x": x}).report
    assert report is not None and report["patterns"] == compile(str(src)).report["patterns"]  # type: ignore[index]
    count = sum(n.op_type.startswith(("QLinear", "QGemm")) for n in model.graph.node)
    notes = report["import_notes"]
    assert len(notes) == 1 and notes[0].startswith(f"{count} QOperator op(s) (1 QGemm, ")
    assert min(v["cosine_min"] for v in report["accuracy"]["outputs"].values()) > 0.999


def _qlinear_add(scale: np.ndarray, extra: onnx.NodeProto | None = None) -> onnx.ModelProto:
    """x + x, each quantized by its own QuantizeLinear (the second with scale ``scale``, per axis 1 when it has
    several), by QLinearAdd, then DequantizeLinear."""
    zero = np.full(scale.shape, 128, np.uint8)
    inits = [numpy_helper.from_array(scale.astype(np.float32), "s"), numpy_helper.from_array(zero, "z"),
             numpy_helper.from_array(np.array(0.1, np.float32), "ys"),
             numpy_helper.from_array(np.array(128, np.uint8), "yz")]
    nodes = [helper.make_node("QuantizeLinear", ["x", "ys", "yz"], ["xq"], name="q"),
             helper.make_node("QuantizeLinear", ["x", "s", "z"], ["xq2"], name="q2", axis=1),
             helper.make_node("QLinearAdd", ["xq", "ys", "yz", "xq2", "s", "z", "ys", "yz"], ["aq"], name="add",
                              domain="com.microsoft"),
             helper.make_node("DequantizeLinear", ["aq", "ys", "yz"], ["y"], name="dq")]
    if extra is not None:
        nodes.insert(3, extra)
        nodes[-1].input[0] = extra.output[0]
    graph = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 4])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 4])], inits)
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17), helper.make_opsetid(
        "com.microsoft", 1)], ir_version=8)


@pytest.mark.parametrize("case,expected", [
    ("per-axis", "unsupported com.microsoft.QLinearAdd (node 'add'): 'xq2' is quantized per axis (4 scales"),
    ("integer-op", "unsupported Relu (node 'relu'): it reads the quantized integer tensor 'aq' directly"),
    ("qattention", "unsupported op com.microsoft.QAttention (node 'qatt'): only the standard ONNX operator set is "
                   "supported (an onnxruntime QOperator op that is not expanded"),
])
def test_what_is_not_expanded_is_refused_in_one_line(case: str, expected: str, tmp_path: Path, capsys) -> None:
    if case == "per-axis":
        model = _qlinear_add(np.full(4, 0.1))
    elif case == "integer-op":
        model = _qlinear_add(np.array(0.1), helper.make_node("Relu", ["aq"], ["r"], name="relu"))
    else:
        model = _qlinear_add(np.array(0.1), helper.make_node("QAttention", ["aq"], ["r"], name="qatt",
                                                               domain="com.microsoft"))
    path = tmp_path / f"{case}.onnx"
    onnx.save(model, str(path))
    assert main(["compile", str(path), "-q"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith(f"codesign: error: {path}: ") and expected in err


def test_qlinear_where_and_softmax_compute_onnxruntimes_integers(tmp_path: Path) -> None:
    """QLinearWhere (written by quantize_static only with ForceQuantizeNoInputCheck), QLinearSoftmax and
    QLinearLeakyRelu on a hand-built graph: onnxruntime's contrib kernels against its run of the rewrite."""
    def const(name: str, value: Any) -> onnx.TensorProto:
        return numpy_helper.from_array(np.asarray(value), name)

    inits = [const("s", np.float32(0.05)), const("z", np.uint8(120)), const("s2", np.float32(0.03)),
             const("z2", np.uint8(128)), const("s3", np.float32(0.04)), const("z3", np.uint8(100)),
             const("s4", np.float32(1 / 256)), const("z4", np.uint8(0))]
    ms = "com.microsoft"
    nodes = [helper.make_node("QuantizeLinear", ["x", "s", "z"], ["xq"]),
             helper.make_node("QuantizeLinear", ["w", "s2", "z2"], ["wq"]),
             helper.make_node("QLinearWhere", ["cond", "xq", "s", "z", "wq", "s2", "z2", "s3", "z3"], ["yq"],
                              domain=ms, name="where"),
             helper.make_node("QLinearLeakyRelu", ["yq", "s3", "z3", "s2", "z2"], ["rq"], domain=ms, alpha=0.2),
             helper.make_node("QLinearSoftmax", ["yq", "s3", "z3", "s4", "z4"], ["pq"], domain=ms, axis=-1,
                              opset=17),
             helper.make_node("DequantizeLinear", ["rq", "s2", "z2"], ["r"]),
             helper.make_node("DequantizeLinear", ["pq", "s4", "z4"], ["p"])]
    shape = [2, 3, 8]
    graph = helper.make_graph(
        nodes, "g", [helper.make_tensor_value_info(n, t, shape) for n, t in
                     [("x", TensorProto.FLOAT), ("w", TensorProto.FLOAT), ("cond", TensorProto.BOOL)]],
        [helper.make_tensor_value_info(n, TensorProto.FLOAT, shape) for n in ("r", "p")], inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17), helper.make_opsetid(ms, 1)],
                              ir_version=8)
    rng = np.random.default_rng(0)
    feeds = {"x": rng.standard_normal(shape).astype(np.float32),  # within the ranges: nothing clips
             "w": rng.standard_normal(shape).astype(np.float32), "cond": rng.random(shape) > 0.5}
    sessions = [ort.InferenceSession(m.SerializeToString(), providers=["CPUExecutionProvider"])
                for m in (model, expand_qoperator(model, "hand-built"))]
    want, got = (s.run(None, feeds) for s in sessions)
    for w, g in zip(want, got, strict=True):
        np.testing.assert_array_equal(g, w)
    path = tmp_path / "where.onnx"
    onnx.save(model, str(path))
    report = compile(str(path), inputs={k: v[None] for k, v in feeds.items()}).report
    assert report is not None and report["patterns"]["softmax"] == 1
    assert min(v["cosine_min"] for v in report["accuracy"]["outputs"].values()) > 0.99


def test_a_float_output_qgemm_with_alpha_matches_onnxruntime(tmp_path: Path) -> None:
    """QGemm without y_scale (float output), transB, per-channel weight steps and alpha, whose int32 C is in steps of
    alpha * a_scale * b_scale (ContribOperators.md)."""
    rng = np.random.default_rng(0)
    inits = [numpy_helper.from_array(v, n) for n, v in [
        ("s", np.array(0.05, np.float32)), ("z", np.array(120, np.uint8)),
        ("w", rng.integers(-127, 128, (6, 8)).astype(np.int8)), ("ws", (rng.random(6) * 0.02 + 0.01).astype(np.float32)),
        ("wz", np.zeros(6, np.int8)), ("c", rng.integers(-500, 500, 6).astype(np.int32))]]
    nodes = [helper.make_node("QuantizeLinear", ["x", "s", "z"], ["xq"]),
             helper.make_node("QGemm", ["xq", "s", "z", "w", "ws", "wz", "c"], ["y"], domain="com.microsoft",
                              name="gemm", transB=1, alpha=0.5)]
    graph = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [3, 8])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [3, 6])], inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17), helper.make_opsetid(
        "com.microsoft", 1)], ir_version=8)
    x = rng.standard_normal((2, 3, 8)).astype(np.float32)
    for sample in x:
        np.testing.assert_allclose(_run(expand_qoperator(model, "hand-built"), {"x": sample}),
                                   _run(model, {"x": sample}), rtol=1e-5, atol=1e-5)
    path = tmp_path / "qgemm.onnx"
    onnx.save(model, str(path))
    report = compile(str(path), inputs={"x": x}).report
    assert report is not None and report["patterns"]["gemm"] == 1
    assert min(v["cosine_min"] for v in report["accuracy"]["outputs"].values()) > 0.999


@pytest.mark.parametrize("axis", [1, 2])
def test_an_opset_11_qlinear_softmax_keeps_its_coerced_axes(axis: int, tmp_path: Path) -> None:
    """QLinearSoftmax with ``opset=11`` (what quantize_static writes for an opset-11 model) is a softmax over the
    axes from ``axis`` on, flattened: over the last two of [2, 3, 8] for axis 1, over the last for axis 2 (then one
    Softmax, which attention recognition reads)."""
    ms = "com.microsoft"
    inits = [numpy_helper.from_array(np.asarray(v), n) for n, v in
             [("s", np.float32(0.05)), ("z", np.uint8(120)), ("s2", np.float32(1 / 256)), ("z2", np.uint8(0))]]
    nodes = [helper.make_node("QuantizeLinear", ["x", "s", "z"], ["xq"]),
             helper.make_node("QLinearSoftmax", ["xq", "s", "z", "s2", "z2"], ["pq"], domain=ms, axis=axis,
                              opset=11),
             helper.make_node("DequantizeLinear", ["pq", "s2", "z2"], ["p"])]
    shape = [2, 3, 8]
    graph = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, shape)],
                              [helper.make_tensor_value_info("p", TensorProto.FLOAT, shape)], inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 11), helper.make_opsetid(ms, 1)],
                              ir_version=7)
    feeds = {"x": np.random.default_rng(1).standard_normal(shape).astype(np.float32)}
    want = _run(model, feeds)
    np.testing.assert_array_equal(_run(expand_qoperator(model, "hand-built"), feeds), want)
    assert np.allclose(want.reshape(2, -1).sum(-1) if axis == 1 else want.sum(-1), 1.0, atol=0.05)
    path = tmp_path / "softmax11.onnx"
    onnx.save(model, str(path))
    result = compile(str(path), inputs={k: v[None] for k, v in feeds.items()})
    got = np.asarray(result.env.artifacts["outputs"]["p"])[0]
    np.testing.assert_allclose(got, want, atol=0.02)  # a float softmax of unrounded x against uint8 probabilities


def test_an_opset_11_qoperator_transformer_keeps_its_attention(tmp_path: Path) -> None:
    """BERT exported at opset 11 and quantized: its QLinearSoftmax ops carry opset 11 (over the last axis here)."""
    from examples import zoo

    src, qop = tmp_path / "bert11.onnx", tmp_path / "bert11_qop.onnx"
    zoo.export("bert-eager", "legacy:mask", src, opset=11)
    feeds = zoo.feeds("bert-eager", "legacy:mask")
    quantize_static(src, qop, _Reader([feeds]), quant_format=QuantFormat.QOperator)
    assert any(n.op_type == "QLinearSoftmax" and any(a.name == "opset" and a.i == 11 for a in n.attribute)
               for n in onnx.load(str(qop)).graph.node)
    result = compile(str(qop), inputs={k: v[None] for k, v in feeds.items()})
    assert result.imported.patterns["attention"] == 2
    assert result.report is not None
    assert result.report["accuracy"]["outputs"]["last_hidden_state"]["cosine_mean"] > 0.95
