"""Accuracy rows of short-last-axis outputs (compiler/output_rows.py): an image head's [C, 2, 2] map is judged as a
whole, not as rows of two values whose cosine is the sign of one element."""

from __future__ import annotations

import numpy as np
import onnx
from onnx import TensorProto, helper

from codesign.accuracy import _cosine_rows
from codesign.api import compile as compile_model
from compiler.output_rows import ROW_MIN, as_rows, row_length
from compiler.quant_auto import output_cosine


def test_row_length_merges_short_trailing_axes() -> None:
    assert row_length((12, 64)) == 64  # a token's hidden state stays a row
    assert row_length((8, 2, 2)) == 32  # a 2x2 map: the whole sample
    assert row_length((8, 7, 7)) == 49  # a 7x7 map: one channel's map
    assert row_length((1000,)) == 1000
    assert row_length((3,)) == 3 and row_length(()) == 1
    assert row_length((4, 4)) == ROW_MIN
    assert as_rows(np.zeros((5, 8, 2, 2)), 1).shape == (5, 32)  # rows never cross the sample axis


def _flipped_pair() -> tuple[np.ndarray, np.ndarray]:
    """A [2 samples, 8, 2, 2] reference and a copy off by 1e-3 of its scale, with one tiny pair of values negated."""
    ref = np.random.default_rng(0).standard_normal((2, 8, 2, 2))
    ref[0, 3, 1] = [1e-4, -1e-4]
    got = ref + 1e-3 * np.random.default_rng(1).standard_normal(ref.shape)
    got[0, 3, 1] = -ref[0, 3, 1]
    return ref, got


def test_report_cosine_of_an_image_output_is_over_the_map() -> None:
    ref, got = _flipped_pair()
    cos = _cosine_rows(got, ref)
    assert cos.shape == (2,)  # per sample: 8 x 2 x 2 values
    assert cos.min() > 0.999  # rows of two values gave -1 for the flipped pair
    whole = (ref * got).sum((1, 2, 3)) / np.linalg.norm(ref.reshape(2, -1), axis=1) / np.linalg.norm(
        got.reshape(2, -1), axis=1)
    np.testing.assert_allclose(cos, whole, rtol=1e-12)


def test_auto_quant_cosine_uses_the_same_rows() -> None:
    ref, got = _flipped_pair()
    mean = output_cosine([{"y": g} for g in got], [{"y": r} for r in ref])
    assert mean > 0.999
    np.testing.assert_allclose(mean, _cosine_rows(got, ref).mean(), rtol=1e-12)


def test_token_rows_unchanged() -> None:
    ref = np.random.default_rng(2).standard_normal((1, 6, 32))
    got = ref.copy()
    got[0, 2] *= -1  # one token entirely wrong
    cos = _cosine_rows(got, ref)
    assert cos.shape == (6,) and np.isclose(cos.min(), -1.0)


def test_compiled_image_head_reports_one_row_per_sample(tmp_path) -> None:
    """Through the API: a conv head leaving a [1, 8, 2, 2] map; int8 compile, cosine rows over the whole map."""
    rng = np.random.default_rng(3)
    w = rng.standard_normal((8, 3, 4, 4)).astype(np.float32)
    graph = helper.make_graph(
        [helper.make_node("Conv", ["x", "w"], ["y"], strides=[4, 4])], "head",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3, 8, 8])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 8, 2, 2])],
        [helper.make_tensor("w", TensorProto.FLOAT, w.shape, w.reshape(-1).tolist())])
    path = tmp_path / "head.onnx"
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=8), path)
    x = rng.standard_normal((3, 1, 3, 8, 8)).astype(np.float32)
    out = compile_model(path, inputs={"x": x}, quant="int8").report["accuracy"]["outputs"]["y"]
    assert 0.99 < out["cosine_min"] <= out["cosine_mean"] <= 1.0
