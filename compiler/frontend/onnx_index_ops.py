"""NumPy semantics of ONNX's index ops: Gather, GatherElements, GatherND, ScatterElements and ScatterND.

Each computes what the ONNX operator specification (onnx/onnx ``docs/Operators.md``) defines, so the loader can fold
them and the simulator can run them as generic moves. An index outside its axis is a ValueError naming it
(``checked_indices``): the model's data (a token id past the vocabulary), which onnxruntime refuses too, and which the
simulator reports as the op's one line.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

__all__ = ["INDEX_OPS", "checked_indices"]

Array = np.ndarray


def checked_indices(idx: Array, size: int, what: str = "axis") -> Array:
    """``idx`` with negative entries counted from the end, as ONNX's Gather* and Scatter* read them; an entry outside
    [-size, size - 1] is a ValueError naming it (the model's data, e.g. a token id past the vocabulary, not a bug:
    onnxruntime refuses the same sample)."""
    idx = np.asarray(idx)
    if idx.size:
        lo, hi = int(idx.min()), int(idx.max())
        if lo < -size or hi >= size:
            bad = lo if lo < -size else hi
            raise ValueError(f"index {bad} is out of range for {what} of size {size} (valid: {-size}..{size - 1})")
    return np.where(idx < 0, idx + size, idx)


def _gather(inputs: Sequence[Array], attrs: dict[str, Any]) -> list[Array]:
    x, idx = inputs
    axis = int(attrs.get("axis", 0)) % max(x.ndim, 1)
    return [np.take(x, checked_indices(idx, x.shape[axis], f"axis {axis}"), axis=axis)]


def _gather_elements(inputs: Sequence[Array], attrs: dict[str, Any]) -> list[Array]:
    x, idx = inputs
    axis = int(attrs.get("axis", 0)) % x.ndim
    # ONNX lets the indices be shorter than the data on the other axes (numpy would broadcast instead)
    x = x[tuple(slice(None) if d == axis else slice(0, n) for d, n in enumerate(idx.shape))]
    return [np.take_along_axis(x, checked_indices(idx, x.shape[axis], f"axis {axis}"), axis=axis)]


#: ONNX's Scatter reductions (opset 16 / 18): how an update combines with the element it lands on. "none" replaces
#: it (duplicate indices are undefined in ONNX; NumPy keeps the last, as onnxruntime does).
_REDUCTIONS: dict[str, Any] = {"add": np.add, "mul": np.multiply, "max": np.maximum, "min": np.minimum}


def _reduction(attrs: dict[str, Any]) -> Any:
    """The ufunc of a Scatter's ``reduction`` attribute (None for "none"); another value is a ValueError naming it."""
    reduction = attrs.get("reduction", "none")
    reduction = reduction.decode() if isinstance(reduction, bytes) else str(reduction)
    if reduction != "none" and reduction not in _REDUCTIONS:
        raise ValueError(f"reduction '{reduction}' is not an ONNX Scatter reduction (none, add, mul, max, min)")
    return _REDUCTIONS.get(reduction)


def _scatter_elements(inputs: Sequence[Array], attrs: dict[str, Any]) -> list[Array]:
    data, idx, upd = inputs
    out = data.copy()
    axis = int(attrs.get("axis", 0)) % data.ndim
    combine = _reduction(attrs)
    grid: list[Any] = list(np.indices(idx.shape))
    grid[axis] = checked_indices(idx, data.shape[axis], f"axis {axis}")
    where = tuple(grid)
    if combine is None:
        out[where] = upd
    else:  # unbuffered: every update counts, duplicates included
        combine.at(out, where, upd)
    return [out]


def _scatter_nd(inputs: Sequence[Array], attrs: dict[str, Any]) -> list[Array]:
    data, idx, upd = inputs
    out = data.copy()
    k = idx.shape[-1]
    flat_idx = idx.reshape(-1, k).astype(np.int64)  # a copy: negative entries are rewritten
    for axis in range(k):
        flat_idx[:, axis] = checked_indices(flat_idx[:, axis], data.shape[axis], f"axis {axis}")
    flat_upd = upd.reshape((flat_idx.shape[0],) + data.shape[k:])
    combine = _reduction(attrs)
    for i, where in enumerate(map(tuple, flat_idx)):
        out[where] = flat_upd[i] if combine is None else combine(out[where], flat_upd[i])
    return [out]


def _gather_nd(inputs: Sequence[Array], attrs: dict[str, Any]) -> list[Array]:
    data, idx = inputs
    b = int(attrs.get("batch_dims", 0))
    batch_shape = data.shape[:b]
    k = idx.shape[-1]
    flat_data = data.reshape((-1,) + data.shape[b:])
    flat_idx = idx.reshape((int(np.prod(batch_shape)) if b else 1, -1, k))
    out = []
    for i in range(flat_idx.shape[0]):
        src = flat_data[i] if b else data
        rows = [src[tuple(int(v) for v in row)] for row in flat_idx[i]]
        out.append(np.stack(rows) if rows else np.empty((0,) + src.shape[k:], dtype=data.dtype))
    result = np.stack(out).reshape(idx.shape[:-1] + data.shape[b + k:])
    return [result.astype(data.dtype)]


INDEX_OPS: dict[str, Callable[..., list[Array]]] = {
    "Gather": _gather, "GatherElements": _gather_elements, "GatherND": _gather_nd,
    "ScatterElements": _scatter_elements, "ScatterND": _scatter_nd,
}
