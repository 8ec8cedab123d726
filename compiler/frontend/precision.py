"""The float precision a pattern was exported in, for judging it by value (compiler/frontend/regions.py, rope.py).

The matchers prove a pattern by evaluating its nodes in float64 on random data and comparing the result with the
function it should compute. A half-precision export (torch ``.half()`` / ``.bfloat16()``, onnxruntime's float16
converter) stores that pattern's constants rounded to 11 or 8 significant bits: GELU's 1/sqrt(2) is 1.4141 in
float16, a rotary table's cos^2 + sin^2 is 1 only to within 2^-11. Judged with float32 tolerances such a pattern
fails, and the model loses its GELUs and attentions. The tolerance therefore follows the narrowest float type the
pattern reads or writes: float32 patterns keep the tolerances they always had, a float16 one is allowed the rounding
of its constants and no more, so a region that computes another function still fails.

The evaluation itself always runs in float64 (``widen``): ONNX's binary ops keep their first operand's type, and a
float16 constant on the left would otherwise round the judge's own arithmetic.
"""

from __future__ import annotations

from collections.abc import Iterable

import ml_dtypes
import numpy as np

from compiler.frontend.graph import Graph, Node

__all__ = ["BFLOAT16", "FLOAT_TYPES", "MASKED", "float_cast", "is_float", "mask_threshold", "pattern_eps",
           "precision_label", "tolerance", "weights_precision", "widen"]

BFLOAT16 = np.dtype(ml_dtypes.bfloat16)
_FLOAT32_EPS = float(np.finfo(np.float32).eps)
#: |x| at or above this is a mask's "minus infinity", not a score: exporters mask with the float type's most negative
#: value (HF's ``finfo(dtype).min``: -3.4e38 in float32 and bfloat16, -65504 in float16) or -inf.
MASKED = float(np.finfo(np.float16).max)
#: ONNX TensorProto element types of floats: FLOAT, FLOAT16, DOUBLE, BFLOAT16.
FLOAT_TYPES = frozenset({1, 10, 11, 16})


def mask_threshold(dtype: np.dtype) -> float:
    """|x| at or above which a value of ``dtype`` holds a mask's "minus infinity" rather than data, for calibration:
    :data:`MASKED` in float16, whose most negative value (-65504) is what its masks use; 1e30 in every wider type,
    where |x| of 65504 is an activation a float32 or bfloat16 model can legitimately reach (a range that left it out
    would saturate it)."""
    return MASKED if np.dtype(dtype) == np.float16 else 1e30


def is_float(dtype: np.dtype) -> bool:
    """Whether ``dtype`` is a float type (bfloat16 included, which NumPy sees as an opaque ``V`` kind)."""
    return np.dtype(dtype).kind == "f" or np.dtype(dtype) == BFLOAT16


def float_cast(graph: Graph, node: Node) -> bool:
    """Whether ``node`` is a Cast from a float type to a float type: it only rounds (to the narrower of the two), so
    a matcher may walk through it as through an Identity. A Cast to or from integers or bool changes values and
    stops every walk. An input of unknown type counts as float (what every matcher assumed before types were read
    here)."""
    if node.op_type != "Cast" or not node.inputs:
        return False
    source = graph.dtypes.get(node.inputs[0], np.dtype(np.float32))
    to = node.attrs.get("to")
    return is_float(source) and isinstance(to, int) and to in FLOAT_TYPES


def widen(value: np.ndarray) -> np.ndarray:
    """``value`` in float64 if it is a float array of another width (the judge's arithmetic), else unchanged."""
    if isinstance(value, np.ndarray) and is_float(value.dtype) and value.dtype != np.float64:
        return value.astype(np.float64)
    return value


def _eps(dtype: np.dtype) -> float:
    return float(ml_dtypes.finfo(dtype).eps) if dtype == BFLOAT16 else float(np.finfo(dtype).eps)


def pattern_eps(graph: Graph, nodes: Iterable[Node]) -> float:
    """Machine epsilon of the narrowest float type among the tensors ``nodes`` read and write (float32's when they
    are all float32 or wider, or carry no float at all)."""
    eps = _FLOAT32_EPS
    for node in nodes:
        for name in (*node.inputs, *node.outputs):
            dtype = graph.dtypes.get(name) if name else None
            if dtype is not None and is_float(dtype) and np.dtype(dtype).itemsize < 4:
                eps = max(eps, _eps(np.dtype(dtype)))
    return eps


def tolerance(base: float, eps: float, ulps: float = 4.0) -> float:
    """A comparison tolerance: ``base`` (the one the float32 judge uses) or ``ulps`` roundings of a type with
    machine epsilon ``eps``, whichever is looser. For float32 ``base`` always wins, so float32 judging is unchanged."""
    return max(base, ulps * eps)


def weights_precision(weights: Iterable[tuple[np.dtype, int]]) -> str:
    """The precision a model was exported in, from its constants' (dtype, element count): the float type holding
    most weight elements (``float32`` when there are none). A float16 model that computes its norms and softmax in
    float32 between Casts (autocast-style exports, HF's RMSNorm) is a float16 model: its weights say so."""
    counts: dict[np.dtype, int] = {}
    for dtype, size in weights:
        if is_float(dtype):
            counts[np.dtype(dtype)] = counts.get(np.dtype(dtype), 0) + int(size)
    return str(max(counts, key=lambda d: counts[d])) if counts else "float32"


def precision_label(precision: str) -> str:
    """``FP32`` / ``FP16`` / ``BF16`` / ``FP64``: how reports name a precision (``onnxruntime FP16``)."""
    return {"bfloat16": "BF16"}.get(precision, precision.replace("float", "FP"))
