"""onnxruntime's GatherBlockQuantized (compiler/frontend/ort_gather_block.py): the int4 embedding lookup the
onnxruntime-genai builder writes for tied embeddings imports as a Gather of the dequantized table, equal to
onnxruntime's kernel, with or without zero points, the codes stored as the lm_head's [N, blocks, block / 2] and
reshaped (as the builder does); what it does not implement is refused in one line naming the node."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper, numpy_helper

from codesign.api import compile
from codesign.cli import main

ROWS, WIDTH, BLOCK = 24, 64, 32


def _model(zero_points: bool, reshaped: bool, gather_axis: int = 0, bits: int = 4) -> onnx.ModelProto:
    rng = np.random.default_rng(0)
    blocks = WIDTH // BLOCK
    codes = rng.integers(0, 256, (ROWS, blocks, BLOCK // 2), dtype=np.uint8)
    inits = [numpy_helper.from_array(codes if reshaped else codes.reshape(ROWS, WIDTH // 2), "codes"),
             numpy_helper.from_array(rng.uniform(0.01, 0.1, (ROWS, blocks)).astype(np.float32), "scales")]
    nodes = []
    data = "codes"
    if reshaped:
        inits.append(numpy_helper.from_array(np.array([ROWS, WIDTH // 2], np.int64), "table_shape"))
        nodes.append(helper.make_node("Reshape", ["codes", "table_shape"], ["table"]))
        data = "table"
    inputs = [data, "ids", "scales"]
    if zero_points:
        inits.append(numpy_helper.from_array(rng.integers(0, 256, (ROWS, 1), dtype=np.uint8), "zp"))
        inputs.append("zp")
    nodes.append(helper.make_node("GatherBlockQuantized", inputs, ["y"], name="gbq", domain="com.microsoft",
                                  bits=bits, block_size=BLOCK, gather_axis=gather_axis, quantize_axis=1))
    graph = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("ids", TensorProto.INT64, [2, 5])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [2, 5, WIDTH])], inits)
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17),
                                                   helper.make_opsetid("com.microsoft", 1)], ir_version=8)


@pytest.mark.parametrize(("zero_points", "reshaped"), [(False, True), (True, False)])
def test_gather_block_quantized_matches_onnxruntime(zero_points: bool, reshaped: bool, tmp_path: Path) -> None:
    path = tmp_path / "gbq.onnx"
    onnx.save(_model(zero_points, reshaped), str(path))
    ids = np.random.default_rng(1).integers(0, ROWS, (2, 5))
    want = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"]).run(None, {"ids": ids})[0]
    out = tmp_path / "out.npz"
    result = compile(str(path), inputs={"ids": ids[None]}, outputs=str(out))
    assert any(layer["op"] == "embedding" for layer in result.report["layers"])
    np.testing.assert_allclose(np.load(out)["y"][0], np.asarray(want), rtol=1e-6, atol=1e-7)


def test_other_layouts_are_refused_in_one_line(tmp_path: Path, capsys) -> None:
    path = tmp_path / "gbq.onnx"
    onnx.save(_model(False, False, bits=8), str(path))
    assert main(["compile", str(path), "-q"]) == 2
    err = capsys.readouterr().err.strip()
    assert "\n" not in err and "com.microsoft.GatherBlockQuantized (node 'gbq'): bits=8" in err, err
