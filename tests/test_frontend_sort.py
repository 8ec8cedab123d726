"""A TopK of a computed tensor is a ``sort`` move (ViTMAE's argsort of its masking noise): values and indices, k a
constant; the simulation equals onnxruntime, and a TopK the move cannot run is refused in one line."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from codesign.api import compile
from compiler.dialect import dataflow as df
from hw.errors import InputError

N = 8


def _model(path: Path, k: int) -> Path:
    noise = helper.make_tensor_value_info("noise", TensorProto.FLOAT, [1, N])
    data = helper.make_tensor_value_info("data", TensorProto.FLOAT, [1, N])
    out = helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, k])
    nodes = [helper.make_node("TopK", ["noise", "k"], ["v", "i"], name="argsort", axis=1, largest=0),
             helper.make_node("Slice", ["i", "zero", "kk", "one"], ["keep"], name="keep"),
             helper.make_node("GatherElements", ["data", "keep"], ["g"], name="gather", axis=1),
             helper.make_node("Add", ["g", "v"], ["y"], name="add")]
    consts = [numpy_helper.from_array(np.array([a], np.int64), n) for n, a in
              (("k", k), ("zero", 0), ("kk", k), ("one", 1))]
    graph = helper.make_graph(nodes, "sort", [noise, data], [out], initializer=consts)
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=9), path)
    return path


def test_an_argsort_is_a_sort_move_equal_to_onnxruntime(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    feeds = {"noise": rng.random((1, 1, N)).astype(np.float32), "data": rng.standard_normal((1, 1, N)).astype(np.float32)}
    result = compile(_model(tmp_path / "sort.onnx", 3), inputs=feeds)
    moves = [o for o in result.module.walk() if isinstance(o, df.MoveOp) and o.kind_value() == "sort"]
    assert len(moves) == 1
    assert result.report is not None
    assert result.report["accuracy"]["outputs"]["y"]["max_abs_error"] == 0.0


def test_a_topk_beyond_its_axis_is_refused_in_one_line(tmp_path: Path) -> None:
    with pytest.raises(InputError) as err:
        compile(_model(tmp_path / "bad.onnx", N + 2))
    assert "\n" not in str(err.value) and "TopK" in str(err.value)
