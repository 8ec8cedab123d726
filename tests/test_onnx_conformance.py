"""The NumPy op table (compiler/frontend/onnx_ops.py) against the ONNX specification's own test cases.

The onnx package ships a generator for every operator's conformance cases (``onnx.backend.test.case.node``: the
inputs, attributes and expected outputs that ONNX backends are checked with). Every single-node case whose op the
table evaluates must give the expected outputs (values, shapes and element types); the only exceptions are the
named refusals below, which raise `UnsupportedOp` (the compile's one-line "unsupported op" error), never a wrong
value. An op or attribute the table evaluates without honouring it (ScatterElements' ``reduction="max"``, Mod's
``fmod``, ArgMax's ``select_last_index``, Resize's coordinate transforms on a downsampling scale) fails here.
"""

from __future__ import annotations

import fnmatch
import warnings
from collections import defaultdict
from typing import Any

import numpy as np
import onnx
import pytest
from onnx import numpy_helper

from compiler.frontend.onnx_loader import node_attrs
from compiler.frontend.onnx_ops import ONNX_OPS, UnsupportedOp, run_node

#: Cases the table refuses on purpose, and why.
_RANDOM = "Dropout in training mode with a nonzero ratio draws random elements: no simulation reproduces them"
REFUSED = {"test_training_dropout": _RANDOM, "test_training_dropout_mask": _RANDOM,
           "test_training_dropout_default*": _RANDOM}
#: Cases where onnxruntime computes something else than the case expects, and the table follows onnxruntime (and
#: torch, whose exports these are): checked against onnxruntime's result instead.
FOLLOWS_ONNXRUNTIME = {
    "test_resize_downsample_scales_*_align_corners": "align_corners over the rounded output length (4 x 0.6 -> 2, "
                                                     "not 2.4), as torch's interpolate defines it"}


def _cases() -> dict[str, list[Any]]:
    """op type -> its single-node conformance cases that the table claims to evaluate."""
    from onnx.backend.test.case.node import collect_testcases

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the generators divide by zero on purpose (empty reductions)
        cases = collect_testcases(None)
    by_op: dict[str, list[Any]] = defaultdict(list)
    for case in cases:
        nodes = case.model.graph.node
        if len(nodes) == 1 and (nodes[0].op_type in ONNX_OPS or nodes[0].op_type == "Split"):
            by_op[nodes[0].op_type].append(case)
    return dict(sorted(by_op.items()))


CASES = _cases()


def _array(value: Any) -> np.ndarray:
    return numpy_helper.to_array(value) if isinstance(value, onnx.TensorProto) else np.asarray(value)


def _onnxruntime(model: onnx.ModelProto, feed: dict[str, np.ndarray]) -> list[np.ndarray]:
    import onnxruntime as ort

    outs = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"]).run(None, feed)
    return [np.asarray(o) for o in outs]


def _mismatch(got: np.ndarray, want: np.ndarray) -> str:
    """Why ``got`` is not ``want`` ("" when it is): shape, element type, then values (floats to 1e-3 relative,
    NaN equal to NaN; ml_dtypes' formats compared through float32)."""
    if got.shape != want.shape:
        return f"shape {got.shape} instead of {want.shape}"
    if got.dtype != want.dtype:
        return f"element type {got.dtype} instead of {want.dtype}"
    if want.dtype.type.__module__.startswith("ml_dtypes"):
        got, want = got.astype(np.float32), want.astype(np.float32)
    if want.dtype.kind in "fc":
        ok = np.allclose(got.astype(np.float64), want.astype(np.float64), rtol=1e-3, atol=1e-5, equal_nan=True)
    elif want.dtype.kind == "O":  # string tensors
        ok = bool(np.all(got == want))
    else:
        ok = np.array_equal(got, want)
    return "" if ok else f"values differ (got {got.reshape(-1)[:6]}, want {want.reshape(-1)[:6]})"


@pytest.mark.parametrize("op_type", list(CASES))
def test_op_table_computes_what_the_onnx_spec_tests_expect(op_type: str) -> None:
    failures = []
    for case in CASES[op_type]:
        node, graph = case.model.graph.node[0], case.model.graph
        refused = next((why for pattern, why in REFUSED.items() if fnmatch.fnmatch(case.name, pattern)), None)
        for inputs, outputs in case.data_sets:
            feed = dict(zip([i.name for i in graph.input], (_array(v) for v in inputs)))
            args = [feed[name] if name else None for name in node.input]
            with warnings.catch_warnings(), np.errstate(all="ignore"):
                warnings.simplefilter("ignore")
                try:
                    got = run_node(node.op_type, args, node_attrs(node, node.name, case.name), len(node.output))
                except UnsupportedOp as err:
                    if refused is None:
                        failures.append(f"{case.name}: refused ({err})")
                    continue
            if refused is not None:
                failures.append(f"{case.name}: evaluated, but REFUSED says: {refused}")
                continue
            if any(fnmatch.fnmatch(case.name, pattern) for pattern in FOLLOWS_ONNXRUNTIME):
                outputs = _onnxruntime(case.model, feed)
            for k, want in enumerate(outputs):
                if k < len(got) and (why := _mismatch(np.asarray(got[k]), _array(want))):
                    failures.append(f"{case.name} output {k}: {why}")
    assert not failures, "\n".join(failures)


def test_every_table_op_has_spec_cases() -> None:
    """The conformance run covers the table: an op with no case here is one the check above never sees."""
    uncovered = sorted(set(ONNX_OPS) - set(CASES))
    assert uncovered == [], f"ops without ONNX conformance cases: {uncovered}"
