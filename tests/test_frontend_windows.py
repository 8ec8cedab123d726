"""Conv and pooling windows longer than their padded input (compiler/frontend/windows.py): onnx's shape inference gives
such a node one output position (truncating division); the compile refuses it in one line. The Conv cases are checked
against onnxruntime, which runs a shape that compiles and refuses one that is refused (its pools truncate as onnx's
inference does, so they are not an oracle there)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper, numpy_helper

from codesign.cli import main


def _windowed(path: Path, op: str, spatial: list[int], attrs: dict[str, Any]) -> None:
    """One ``op`` on a [1, 2, *spatial] input (Conv: 3 output channels of a seeded kernel_shape-sized weight)."""
    rank = len(spatial)
    inits, inputs = [], ["x"]
    if op == "Conv":
        k = attrs.pop("kernel", [3] * rank)
        w = np.random.default_rng(0).standard_normal((3, 2, *k)).astype(np.float32)
        inits.append(numpy_helper.from_array(w, "w"))
        inputs.append("w")
    node = helper.make_node(op, inputs, ["y"], name="win", **attrs)
    graph = helper.make_graph([node], "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 2, *spatial])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)], inits)
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=8), str(path))


CASES: dict[str, tuple[str, list[int], dict[str, Any], str | None]] = {
    # name: (op, spatial input, attributes, the refusal's axis / lengths, or None where onnxruntime runs it)
    "conv-overhang-under-a-stride": ("Conv", [8], {"kernel": [10], "strides": [5]},
                                     "is 8 long on spatial axis 0 (8 with padding), shorter than its 10-wide window"),
    "conv-exact-fit": ("Conv", [10], {"kernel": [10], "strides": [5]}, None),
    "conv-padded-to-fit": ("Conv", [8], {"kernel": [10], "pads": [1, 1]}, None),
    "conv-dilated": ("Conv", [12, 8], {"kernel": [3, 3], "dilations": [1, 4]},
                     "is 8 long on spatial axis 1 (8 with padding), shorter than its 9-wide window"),
    "conv-same-padding": ("Conv", [2, 2], {"kernel": [5, 5], "auto_pad": "SAME_UPPER"}, None),
    "maxpool-2d-short": ("MaxPool", [4, 2], {"kernel_shape": [3, 3]},
                         "is 2 long on spatial axis 1 (2 with padding), shorter than its 3-wide window"),
    "maxpool-padded": ("MaxPool", [4, 1], {"kernel_shape": [3, 3], "pads": [1, 1, 1, 1]}, None),
    "averagepool-short-ceil": ("AveragePool", [5], {"kernel_shape": [6], "strides": [4], "ceil_mode": 1},
                               "is 5 long on spatial axis 0 (5 with padding), shorter than its 6-wide window"),
}


@pytest.mark.parametrize("case", list(CASES))
def test_windows_agree_with_onnxruntime(case: str, tmp_path: Path, capsys) -> None:
    op, spatial, attrs, refusal = CASES[case]
    path = tmp_path / "win.onnx"
    _windowed(path, op, spatial, dict(attrs))
    x = np.random.default_rng(1).standard_normal((1, 2, *spatial)).astype(np.float32)
    try:
        ort.InferenceSession(str(path), providers=["CPUExecutionProvider"]).run(None, {"x": x})
        ort_runs = True
    except Exception:  # onnxruntime's errors share no base class
        ort_runs = False
    if op == "Conv":
        assert ort_runs == (refusal is None)
    code = main(["compile", str(path), "-q"])
    err = capsys.readouterr().err.strip()
    if refusal is None:
        assert code == 0, err
    else:
        assert code == 2 and err == (f"codesign: error: {path}: {op} 'win': its input 'x' "
                                     f"(1x2x{'x'.join(map(str, spatial))}) {refusal} (no position of it fits): give a "
                                     "longer input (--shape)"), err
