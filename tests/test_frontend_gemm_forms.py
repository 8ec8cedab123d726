"""Gemm and MatMul forms the GEMM lowering does not read directly (compiler/frontend/gemm_forms.py), compiled and
simulated against onnxruntime: Gemm's transA, an activation B with transB and alpha, biases that are no [N] row
(an [M, 1] column with M == N was read as the row before: a silent wrong answer), and MatMul batch axes that
broadcast. Each model is small, built with onnx.helper; weights are seeded random constants."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from codesign.api import compile

RNG = np.random.default_rng(7)


def _model(path: Path, node: onnx.NodeProto, inputs: dict[str, tuple[int, ...]], consts: dict[str, np.ndarray],
           out: tuple[int, ...]) -> Path:
    graph = helper.make_graph(
        [node], "g", [helper.make_tensor_value_info(k, TensorProto.FLOAT, s) for k, s in inputs.items()],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, out)],
        [numpy_helper.from_array(v.astype(np.float32), k) for k, v in consts.items()])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    onnx.checker.check_model(model, full_check=True)
    onnx.save(model, path)
    return path


def _r(*shape: int) -> np.ndarray:
    return RNG.standard_normal(shape).astype(np.float32)


#: name -> (node, activation inputs with shapes, constants, output shape)
CASES = {
    "column_bias_square": (helper.make_node("Gemm", ["a", "w", "c"], ["y"]), {"a": (4, 3)},
                           {"w": _r(3, 4), "c": _r(4, 1)}, (4, 4)),
    "matrix_bias_beta": (helper.make_node("Gemm", ["a", "w", "c"], ["y"], beta=0.5, alpha=2.0), {"a": (4, 3)},
                         {"w": _r(3, 5), "c": _r(4, 5)}, (4, 5)),
    "scalar_bias": (helper.make_node("Gemm", ["a", "w", "c"], ["y"]), {"a": (4, 3)}, {"w": _r(3, 5), "c": _r()},
                    (4, 5)),
    "activation_bias": (helper.make_node("Gemm", ["a", "w", "c"], ["y"], beta=-1.5), {"a": (4, 3), "c": (4, 5)},
                        {"w": _r(3, 5)}, (4, 5)),
    "trans_a": (helper.make_node("Gemm", ["a", "w", "c"], ["y"], transA=1, transB=1), {"a": (3, 4)},
                {"w": _r(5, 3), "c": _r(5)}, (4, 5)),
    "activation_b_trans_alpha": (helper.make_node("Gemm", ["a", "b"], ["y"], transB=1, alpha=0.25),
                                 {"a": (4, 3), "b": (5, 3)}, {}, (4, 5)),
    "matmul_broadcast_both": (helper.make_node("MatMul", ["a", "b"], ["y"]), {"a": (3, 1, 4, 6), "b": (1, 2, 6, 5)},
                              {}, (3, 2, 4, 5)),
    "matmul_lower_rank_lhs": (helper.make_node("MatMul", ["a", "b"], ["y"]), {"a": (4, 6), "b": (3, 6, 5)}, {},
                              (3, 4, 5)),
    "matmul_unit_batch_weight": (helper.make_node("MatMul", ["a", "w"], ["y"]), {"a": (4, 6)}, {"w": _r(1, 6, 5)},
                                 (1, 4, 5)),
    "matmul_batched_weight": (helper.make_node("MatMul", ["a", "w"], ["y"]), {"a": (1, 4, 6)}, {"w": _r(2, 6, 5)},
                              (2, 4, 5)),
}


@pytest.mark.parametrize("case", list(CASES))
def test_form_compiles_and_simulates_like_onnxruntime(tmp_path: Path, case: str) -> None:
    node, inputs, consts, out = CASES[case]
    path = _model(tmp_path / f"{case}.onnx", node, inputs, consts, out)
    feeds = {k: RNG.standard_normal((1,) + s).astype(np.float32) for k, s in inputs.items()}
    result = compile(path, inputs=feeds)
    accuracy = result.report["accuracy"]["outputs"]["y"]
    assert accuracy["cosine_min"] > 0.99999 and accuracy["max_abs_error"] < 1e-4 * max(accuracy["max_abs_value"], 1)


def test_int8_compile_of_broadcast_matmul(tmp_path: Path) -> None:
    node, inputs, consts, out = CASES["matmul_batched_weight"]
    path = _model(tmp_path / "m.onnx", node, inputs, consts, out)
    result = compile(path, inputs={"a": RNG.standard_normal((8, 1, 4, 6)).astype(np.float32)}, quant="int8")
    assert result.report["accuracy"]["outputs"]["y"]["cosine_min"] > 0.99
