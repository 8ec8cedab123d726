"""--inputs on models newer than onnxruntime: onnx 1.23's make_model stamps IR 14 and opset 28, which onnxruntime
1.31 refuses; the accuracy reference is then the onnx package's ReferenceEvaluator (codesign/reference_onnx.py)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import onnx
import pytest
import torch
from onnx import TensorProto, helper

from codesign.accuracy import reference_outputs
from codesign.api import compile as compile_model
from codesign.reference_onnx import ENGINE, is_version_refusal
from examples._common import export_onnx

ROOT = Path(__file__).resolve().parent.parent


def _default_stamped(path: Path) -> onnx.ModelProto:
    """LayerNorm -> MatMul -> GELU -> Softmax built with make_model's defaults (IR 14, opset 28)."""
    rng = np.random.default_rng(0)
    w = rng.standard_normal((16, 16)).astype(np.float32) * 0.3
    nodes = [helper.make_node("LayerNormalization", ["x", "g", "b"], ["ln"], axis=-1),
             helper.make_node("MatMul", ["ln", "w"], ["mm"]),
             helper.make_node("Gelu", ["mm"], ["act"]),
             helper.make_node("Softmax", ["act"], ["y"], axis=-1)]
    inits = [helper.make_tensor("g", TensorProto.FLOAT, [16], np.ones(16, np.float32).tolist()),
             helper.make_tensor("b", TensorProto.FLOAT, [16], np.zeros(16, np.float32).tolist()),
             helper.make_tensor("w", TensorProto.FLOAT, [16, 16], w.reshape(-1).tolist())]
    graph = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 8, 16])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 8, 16])], inits)
    model = helper.make_model(graph)
    onnx.save(model, path)
    return model


def test_onnxruntime_refuses_the_default_stamp(tmp_path: Path) -> None:
    """The premise: if onnxruntime ever loads this stamp, the fallback is no longer exercised (test still valid)."""
    import onnxruntime as ort

    model = _default_stamped(tmp_path / "m.onnx")
    assert model.ir_version >= 14
    with pytest.raises(Exception) as err:
        ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    assert is_version_refusal(err.value)


def test_reference_falls_back_to_the_evaluator(tmp_path: Path) -> None:
    path = tmp_path / "m.onnx"
    _default_stamped(path)
    x = np.random.default_rng(1).standard_normal((3, 1, 8, 16)).astype(np.float32)
    refs = reference_outputs(path, {"x": x}, extra=("mm",))
    assert refs.engine == ENGINE and len(refs) == 3 and set(refs[0]) == {"y", "mm"}
    # the evaluator computes the standard: compare with numpy
    ln = (x[0] - x[0].mean(-1, keepdims=True)) / np.sqrt(x[0].var(-1, keepdims=True) + 1e-5)
    w = onnx.numpy_helper.to_array(onnx.load(path).graph.initializer[2])
    np.testing.assert_allclose(refs[0]["mm"], ln @ w, rtol=1e-4, atol=1e-5)


def test_cli_inputs_on_a_new_model(tmp_path: Path) -> None:
    """Through the CLI: float exact, int8 with per-layer SQNR, both against the evaluator."""
    path = tmp_path / "m.onnx"
    _default_stamped(path)
    data = tmp_path / "x.npz"
    np.savez(data, x=np.random.default_rng(2).standard_normal((2, 1, 8, 16)).astype(np.float32))
    for quant, floor in (("none", 0.9999), ("int8", 0.99)):
        out = tmp_path / f"{quant}.json"
        proc = subprocess.run([sys.executable, "-m", "codesign", "compile", str(path), "--quant", quant, "--inputs",
                               str(data), "--json", str(out), "-q"], cwd=ROOT, capture_output=True, text=True,
                              timeout=300)
        assert proc.returncode == 0, proc.stderr
        acc = json.loads(out.read_text())["accuracy"]
        assert acc["reference"] == f"{ENGINE} FP32"
        assert acc["outputs"]["y"]["cosine_min"] >= floor
        if quant == "int8":
            assert any(layer["sqnr_db"] is not None for layer in acc["layers"])


def test_onnxruntime_still_the_reference_when_it_loads(tmp_path: Path) -> None:
    path = tmp_path / "t.onnx"
    export_onnx(torch.nn.Linear(4, 4).eval(), [torch.randn(1, 4)], path, input_names=["x"], output_names=["y"],
                exporter="legacy")
    result = compile_model(path, inputs={"x": np.random.default_rng(3).standard_normal((2, 1, 4)).astype(np.float32)})
    assert result.report["accuracy"]["reference"] == "onnxruntime FP32"


def test_content_errors_are_not_masked(tmp_path: Path) -> None:
    """A model onnxruntime refuses for its content (not its version) is still a one-line error, no fallback."""
    model = helper.make_model(helper.make_graph(
        [helper.make_node("Relu", ["x"], ["y"])], "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [2])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [2])]), opset_imports=[helper.make_opsetid("", 17)],
        ir_version=8)
    model.graph.node[0].op_type = "NoSuchOp"
    assert not is_version_refusal(RuntimeError("Could not find an implementation for NoSuchOp"))
    import onnxruntime as ort

    with pytest.raises(Exception) as err:
        ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    assert not is_version_refusal(err.value)
