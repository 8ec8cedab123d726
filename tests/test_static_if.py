"""An If whose condition is a shape test (compiler/frontend/static_if.py; hand-built nested Ifs and a real torch.cond
export by the dynamo exporter) compiles as the branch it takes once
``--shape`` fixes the shapes: the branch's nodes join the graph, reading the graph's own tensors, and the
simulation equals onnxruntime's run of the If on either side of the test; nested Ifs too. An If on input values is
still refused in one line (tests/test_cli_errors.py)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch
from onnx import TensorProto, helper, numpy_helper

from codesign.api import compile


def _branch(name: str, nodes: list[onnx.NodeProto], out: str) -> onnx.GraphProto:
    return helper.make_graph(nodes, name, [], [helper.make_tensor_value_info(out, TensorProto.FLOAT, None)])


def _model() -> onnx.ModelProto:
    """y = MatMul(x, W) then: sequences longer than 4 add a bias table's first rows (a graph initializer the branch
    reads without naming it), shorter ones go through an inner If on the batch: batch 1 scales by 2, others Relu;
    x is [batch, seq, 8] with both dims symbolic."""
    rng = np.random.default_rng(0)
    inits = [numpy_helper.from_array(rng.standard_normal((8, 8)).astype(np.float32), "W"),
             numpy_helper.from_array(rng.standard_normal((16, 8)).astype(np.float32), "table"),
             numpy_helper.from_array(np.array([4], np.int64), "four"),
             numpy_helper.from_array(np.array([1], np.int64), "one"),
             numpy_helper.from_array(np.array([0], np.int64), "zero")]
    long_rows = _branch("long", [
        helper.make_node("Shape", ["x"], ["seq"], start=1, end=2),
        helper.make_node("Slice", ["table", "zero", "seq"], ["rows"]),
        helper.make_node("Add", ["h", "rows"], ["out_long"])], "out_long")
    inner = helper.make_node("If", ["single"], ["out_short"], name="inner",
                             then_branch=_branch("double", [helper.make_node("Add", ["h", "h"], ["twice"])], "twice"),
                             else_branch=_branch("relu", [helper.make_node("Relu", ["h"], ["relu"])], "relu"))
    short_rows = _branch("short", [
        helper.make_node("Shape", ["x"], ["batch"], start=0, end=1),
        helper.make_node("Equal", ["batch", "one"], ["single_1"]),
        helper.make_node("Squeeze", ["single_1"], ["single"]), inner], "out_short")
    nodes = [helper.make_node("MatMul", ["x", "W"], ["h"]),
             helper.make_node("Shape", ["x"], ["s"], start=1, end=2),
             helper.make_node("Greater", ["s", "four"], ["longer_1"]),
             helper.make_node("Squeeze", ["longer_1"], ["longer"]),
             helper.make_node("If", ["longer"], ["y"], name="by_length", then_branch=long_rows,
                              else_branch=short_rows)]
    graph = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT,
                                                                         ["batch", "seq", 8])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["batch", "seq", 8])], inits)
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=8)


@pytest.mark.parametrize("shape", [(2, 6), (1, 3), (3, 3)], ids=["long", "short-single", "short-batch"])
def test_a_shape_test_if_compiles_as_its_branch(shape: tuple[int, int], tmp_path: Path) -> None:
    path = tmp_path / "if.onnx"
    onnx.save(_model(), str(path))
    x = np.random.default_rng(1).standard_normal((*shape, 8)).astype(np.float32)
    want = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"]).run(None, {"x": x})[0]
    out = tmp_path / "out.npz"
    compile(str(path), shapes={"x": (*shape, 8)}, inputs={"x": x[None]}, outputs=str(out))
    np.testing.assert_allclose(np.load(out)["y"][0], np.asarray(want), rtol=1e-5, atol=1e-6)


class _Cond(torch.nn.Module):
    """``torch.cond`` on the sequence length: a Linear doubled past 4 positions, else through ReLU."""

    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.proj = torch.nn.Linear(8, 8)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.cond(x.shape[1] > 4, lambda t: self.proj(t) * 2, lambda t: self.proj(t).relu(), (x,))


@pytest.fixture(scope="module")
def cond_export(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """torch's exporter (dynamo) with a symbolic batch and sequence writes the cond as an If on Greater(Shape)."""
    path = tmp_path_factory.mktemp("cond") / "cond.onnx"
    seq = torch.export.Dim("seq", min=2, max=64)
    torch.onnx.export(_Cond().eval(), (torch.randn(2, 6, 8),), dynamo=True,
                      dynamic_shapes={"x": {0: torch.export.Dim("batch"), 1: seq}}).save(str(path))
    assert any(n.op_type == "If" for n in onnx.load(str(path)).graph.node)
    return path


@pytest.mark.parametrize("seq", [6, 3])
def test_a_torch_cond_on_a_shape_compiles_as_its_branch(seq: int, cond_export: Path, tmp_path: Path) -> None:
    x = np.random.default_rng(2).standard_normal((2, seq, 8)).astype(np.float32)
    name = onnx.load(str(cond_export)).graph.input[0].name
    want = ort.InferenceSession(str(cond_export), providers=["CPUExecutionProvider"]).run(None, {name: x})[0]
    out = tmp_path / "out.npz"
    result = compile(str(cond_export), shapes={name: (2, seq, 8)}, inputs={name: x[None]}, outputs=str(out))
    branch = "then_branch" if seq > 4 else "else_branch"
    assert any(branch in layer["name"] for layer in result.report["layers"])
    got = np.load(out)
    np.testing.assert_allclose(got[next(iter(got.files))][0], np.asarray(want), rtol=1e-5, atol=1e-6)
