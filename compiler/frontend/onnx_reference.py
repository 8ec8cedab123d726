"""ONNX ops run by the specification's own reference implementation, and the error for ops not evaluated at all.

The op table (compiler/frontend/onnx_ops.py) computes each op in NumPy, which is fast enough for thousands of
single-node evaluations. A few details the specification defines do not reduce to NumPy: casts that round and
saturate into float8 / float4 / int4 (ml_dtypes' ``astype`` neither saturates nor rounds as ONNX says) and Resize's
coordinate transforms (compiler/frontend/onnx_resize.py). Those run one node through ``onnx.reference``, the
implementation the specification's expected outputs come from; it builds an evaluator per call (milliseconds), so
the table keeps it off the common paths.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import onnx

__all__ = ["UnsupportedOp", "narrow", "run_reference"]


class UnsupportedOp(KeyError):
    """The op type has no NumPy semantics here."""


def narrow(dtype: np.dtype) -> bool:
    """Whether ``dtype`` is a format narrower than 16 bits that ml_dtypes represents (float8 / float4 / int4 / int2
    / e8m0): ONNX rounds and saturates casts to them in ways a plain ``astype`` does not (`run_reference`)."""
    return dtype.type.__module__.startswith("ml_dtypes") and dtype.itemsize < 2


def run_reference(op_type: str, inputs: Sequence[np.ndarray | None], attrs: dict[str, Any], n_out: int = 1,
                  opset: int = onnx.defs.onnx_opset_version()) -> list[np.ndarray]:
    """One node run by ONNX's reference implementation (``onnx.reference``): for what the specification defines in
    detail that the table's NumPy does not reproduce (Resize's coordinate transforms, casts that saturate into
    float8). It builds an evaluator per call (milliseconds), so the table keeps it off the common paths."""
    from onnx.reference import ReferenceEvaluator

    names = [f"in{i}" if v is not None else "" for i, v in enumerate(inputs)]
    feeds = {n: np.asarray(v) for n, v in zip(names, inputs) if n}
    node = onnx.helper.make_node(op_type, names, [f"out{i}" for i in range(n_out)],
                                 **{k: v for k, v in attrs.items() if v is not None})
    graph = onnx.helper.make_graph(
        [node], op_type, [onnx.helper.make_tensor_value_info(n, onnx.helper.np_dtype_to_tensor_dtype(v.dtype), None)
                          for n, v in feeds.items()],
        [onnx.helper.make_tensor_value_info(f"out{i}", onnx.TensorProto.UNDEFINED, None) for i in range(n_out)])
    model = onnx.helper.make_model(graph, opset_imports=[onnx.helper.make_opsetid("", opset)])
    return [np.asarray(y) for y in ReferenceEvaluator(model).run(None, feeds)]
