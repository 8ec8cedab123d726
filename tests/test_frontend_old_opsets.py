"""Models exported at ONNX opsets before 13 (compiler/frontend/opset_upgrade.py): upgraded at load by onnx's version
converter, they compile to what the same model exported at the exporter's usual opset compiles to: the same
recognised attention, norms and GELU, the same MACs, simulated outputs equal to onnxruntime's on the original
file. A coerced Softmax over several axes stays one over several axes; a model the converter cannot upgrade is one
line and exit 2."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper, numpy_helper

from codesign.api import compile
from codesign.cli import main as codesign_main
from examples import zoo
from examples.zoo_archs import LAYERS


def _export(name: str, opset: int | None, path: Path) -> dict[str, np.ndarray]:
    """The zoo's ``name`` (legacy exporter, with its attention mask) at ``opset`` (None: the exporter's usual)."""
    variant = "legacy:mask"
    feeds = zoo.feeds(name, variant)
    zoo.export(name, variant, path, opset=opset)
    if opset is not None:
        assert onnx.load(str(path)).opset_import[0].version == opset
    return feeds


@pytest.mark.parametrize(("name", "opset"), [("bert-eager", 11), ("gpt2-eager", 9), ("llama-eager", 12)])
def test_old_opset_compiles_like_a_current_export(tmp_path: Path, name: str, opset: int) -> None:
    feeds = _export(name, opset, tmp_path / "old.onnx")
    _export(name, None, tmp_path / "new.onnx")
    samples = {k: v[None] for k, v in feeds.items()}
    old, new = (compile(str(tmp_path / f), "fpga-u280", inputs=samples) for f in ("old.onnx", "new.onnx"))
    assert old.imported.patterns["attention"] == new.imported.patterns["attention"] == LAYERS
    assert old.imported.patterns == new.imported.patterns
    assert old.report is not None and new.report is not None and old.report["macs"] == new.report["macs"]
    got = np.asarray(old.env.artifacts["outputs"]["last_hidden_state"])[0]
    want = np.asarray(ort.InferenceSession(str(tmp_path / "old.onnx")).run(None, feeds)[0])
    np.testing.assert_allclose(got, want, atol=1e-5)


def _softmax_model(axis: int, path: Path) -> None:
    """x [2, 3, 4] -> Softmax(axis) at opset 11: softmax over the flattened axes from ``axis`` on."""
    graph = helper.make_graph([helper.make_node("Softmax", ["x"], ["y"], axis=axis)], "g",
                              [helper.make_tensor_value_info("x", TensorProto.FLOAT, [2, 3, 4])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [2, 3, 4])])
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 11)], ir_version=7), str(path))


@pytest.mark.parametrize("axis", [1, 2])
def test_coerced_softmax_keeps_its_axes(tmp_path: Path, axis: int) -> None:
    path = tmp_path / "softmax.onnx"
    _softmax_model(axis, path)
    x = np.random.default_rng(0).normal(size=(2, 3, 4)).astype(np.float32) * 3
    result = compile(str(path), "fpga-u280", inputs={"x": x[None]})
    got = np.asarray(result.env.artifacts["outputs"]["y"])[0]
    want = np.asarray(ort.InferenceSession(str(path)).run(None, {"x": x})[0])
    np.testing.assert_allclose(got, want, atol=1e-6)
    assert np.allclose(want.reshape(2, -1).sum(-1) if axis == 1 else want.sum(-1), 1.0)


def test_a_model_the_converter_cannot_upgrade_is_one_line(tmp_path: Path, capsys) -> None:
    """Opset 7's BatchNormalization with ``spatial=0`` (per-element statistics) has no opset-9 form."""
    inits = [numpy_helper.from_array(np.ones(4, np.float32), n) for n in "sbmv"]
    node = helper.make_node("BatchNormalization", ["x", "s", "b", "m", "v"], ["y"], spatial=0)
    graph = helper.make_graph([node], "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [2, 4])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [2, 4])], inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 7)], ir_version=4)
    onnx.checker.check_model(model)
    path = tmp_path / "bn7.onnx"
    onnx.save(model, str(path))
    assert codesign_main(["compile", str(path), "-q"]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and str(path) in err and "opset 7 could not be upgraded to 13" in err
    assert "spatial" in err
