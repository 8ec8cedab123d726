"""How many elements an ONNX op would produce on given constant inputs, computed without running it.

Constant folding runs ops on constants; ops whose output size is a *value* (ConstantOfShape, Range, Expand, Tile,
OneHot) or a broadcast of their inputs can produce far more than they read: a 1 KB model asks ConstantOfShape for
[32768, 32768] (4 GiB), a ``--shape input_ids=1x1000000000`` makes the position ids' Range 8 GB. The folder asks
:func:`output_elements` first and leaves such nodes unfolded instead of letting NumPy allocate.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

__all__ = ["output_elements"]

Array = np.ndarray


def _ints(value: Array) -> list[int]:
    return [int(v) for v in np.asarray(value).reshape(-1)]


def _broadcast(*shapes: Sequence[int]) -> list[int]:
    """NumPy broadcasting of ``shapes`` (dims compared from the right), tolerant of mismatches (max per dim)."""
    rank = max((len(s) for s in shapes), default=0)
    padded = [[1] * (rank - len(s)) + [int(d) for d in s] for s in shapes]
    return [max(col) for col in zip(*padded)] if padded else []


def _range(inputs: Sequence[Any], attrs: dict[str, Any]) -> int:
    start, limit, delta = (np.asarray(v).reshape(-1)[0].item() for v in inputs[:3])
    if delta == 0:
        return 0
    if all(isinstance(v, int) for v in (start, limit, delta)):
        return max(-(-(limit - start) // delta), 0)
    return max(math.ceil((limit - start) / delta), 0)


def _matmul(inputs: Sequence[Any], attrs: dict[str, Any]) -> int:
    a, b = (np.shape(x) for x in inputs[:2])
    a = (1, *a) if len(a) == 1 else a
    b = (*b, 1) if len(b) == 1 else b
    return math.prod(_broadcast(a[:-2], b[:-2])) * a[-2] * b[-1]


def _gather(inputs: Sequence[Any], attrs: dict[str, Any]) -> int:
    x, idx = inputs[0], inputs[1]
    axis = int(attrs.get("axis", 0)) % max(np.ndim(x), 1)
    return int(np.size(x)) // max(np.shape(x)[axis], 1) * int(np.size(idx)) if np.ndim(x) else 0


_ELEMENTWISE = ("Add", "Sub", "Mul", "Div", "Pow", "Min", "Max", "Mod", "Equal", "Less", "Greater", "LessOrEqual",
                "GreaterOrEqual", "And", "Or", "Where", "Sum", "Mean")

# Estimators take the inputs as known (None where unknown) and let NumPy's errors on a None fall to the caller's
# except, so their inputs are typed Any rather than Array | None.
_ESTIMATES: dict[str, Callable[[Sequence[Any], dict[str, Any]], int]] = {
    "ConstantOfShape": lambda i, a: math.prod(_ints(i[0])),
    "Range": _range,
    "Expand": lambda i, a: math.prod(_broadcast(np.shape(i[0]), _ints(i[1]))),
    "Tile": lambda i, a: math.prod(d * r for d, r in zip(np.shape(i[0]), _ints(i[1]))),
    "OneHot": lambda i, a: int(np.size(i[0])) * _ints(i[1])[0],
    "MatMul": _matmul,
    "Gather": _gather,
    "Concat": lambda i, a: sum(int(np.size(x)) for x in i if x is not None),
    **{op: (lambda i, a: math.prod(_broadcast(*(np.shape(x) for x in i if x is not None)))) for op in _ELEMENTWISE},
}


def output_elements(op_type: str, inputs: Sequence[Array | None], attrs: dict[str, Any],
                    known: Sequence[tuple[int, ...] | None] = ()) -> int:
    """The largest output of ``op_type`` on ``inputs``, in elements; 0 when nothing says it could be large.

    ``known``: output shapes shape inference already gave (``None`` where it did not); they count as they are.
    """
    sizes = [math.prod(s) for s in known if s is not None]
    estimate = _ESTIMATES.get(op_type)
    if estimate is not None:
        try:
            sizes.append(estimate(inputs, attrs))
        except (TypeError, ValueError, IndexError, ZeroDivisionError, OverflowError):
            pass  # malformed inputs: running the op reports them, with the node's name
    return max(sizes, default=0)
