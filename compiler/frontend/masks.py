"""Additive score terms of attention: what a constant mask blocks, and masks seen in a bmm-style layout.

The attention matcher (recognize.py) walks from the softmax back to QK^T collecting what is added to the scores:
constant masks (causal, banded, block-diagonal windows, padding), constant biases (ALiBi, relative-position tables)
and terms computed from inputs (a padding mask, DeBERTa's disentangled c2p/p2c terms, Swin's shifted-window mask).
``mask_kind`` classifies a constant one by structure, so schedules can skip fully masked tiles. Exports that compute
the scores as [B*H, Sq, Sk] (torch.baddbmm in BLOOM) add their terms in that layout before viewing the scores as
[B, H, Sq, Sk]; ``as_bhss`` gives such a term the 4-D shape the attention op's mask operand has.
"""

from __future__ import annotations

import numpy as np

from compiler.frontend.graph import Graph, Node

__all__ = ["additive_where", "as_bhss", "mask_kind"]


def mask_kind(mask: np.ndarray, sq: int, sk: int) -> str | None:
    """The structure of a constant additive (0 / very negative) or boolean (True = attend) mask: ``causal``,
    ``banded`` (causal within a window: sliding-window layers), ``block`` (block-diagonal windows), ``padding``
    (whole key columns blocked), ``other``; None when it blocks nothing."""
    try:
        m = np.broadcast_to(mask, mask.shape[:-2] + (sq, sk)) if mask.ndim >= 2 else np.broadcast_to(mask, (sq, sk))
    except ValueError:
        return "other"
    flat = m.reshape(-1, sq, sk)
    if m.dtype == bool:
        allowed = flat
    else:
        if not np.all((flat == 0) | (flat < -1e4)):
            return None if np.all(flat == 0) else "other"  # a bias (ALiBi, relative positions): not a mask
        allowed = flat == 0
    if allowed.all():
        return None
    if not np.all(allowed == allowed[0]):
        return "other"
    a = allowed[0]
    tri = np.tril(np.ones((sq, sk), dtype=bool), k=sk - sq)
    if np.array_equal(a, tri):
        return "causal"
    for window in range(1, sk):
        if np.array_equal(a, tri & ~np.tril(np.ones((sq, sk), dtype=bool), k=sk - sq - window)):
            return "banded"
    if np.all(a == a[0]):
        return "padding"
    if sq == sk and np.array_equal(a, a.T) and np.all(np.diag(a)):
        starts = [i for i in range(sq) if i == 0 or not a[i, i - 1]]
        ends = starts[1:] + [sq]
        block = np.zeros_like(a)
        for lo, hi in zip(starts, ends):
            block[lo:hi, lo:hi] = True
        if np.array_equal(a, block):
            return "block"
    return "other"


def _bhss_shape(shape: tuple[int, ...], batch: int, heads: int) -> tuple[int, ...] | None:
    """The [B|1, H|1, a, b] shape of a term broadcast against [B*H, Sq, Sk] scores, or None if it has none."""
    full = (1,) * (3 - len(shape)) + tuple(shape)
    if len(full) != 3:
        return None
    if full[0] == 1:
        return (1, 1) + full[1:]
    if full[0] == batch * heads:
        return (batch, heads) + full[1:]
    return None


def as_bhss(graph: Graph, name: str, batch: int, heads: int, prefix: str) -> str | None:
    """``name`` (a term added to [B*H, Sq, Sk] scores) viewed as [B, H, Sq, Sk]: a new constant, or a Reshape
    inserted after the term's producer; None when it does not split that way."""
    shape = _bhss_shape(graph.shapes.get(name, ()), batch, heads)
    if shape is None:
        return None
    out = f"{prefix}_output_0"
    if graph.is_const(name):
        graph.constants[out] = graph.constants[name].reshape(shape)
    else:
        dims = f"{prefix}_shape"
        graph.constants[dims] = np.array(shape, dtype=np.int64)
        graph.shapes[dims], graph.dtypes[dims] = (len(shape),), np.dtype(np.int64)
        at = next((i + 1 for i, n in enumerate(graph.nodes) if name in n.outputs), 0)
        graph.nodes.insert(at, Node("Reshape", prefix, [name, dims], [out]))
    graph.shapes[out], graph.dtypes[out] = shape, graph.dtypes.get(name, np.dtype(np.float32))
    return out


def additive_where(graph: Graph, where: Node, keep_true: bool) -> str:
    """The additive mask of ``Where(cond, scores, fill)`` (``keep_true``) or ``Where(cond, fill, scores)`` whose
    condition comes from the inputs: a Where(cond, 0, fill) inserted before it. Adding it to the scores equals the
    Where wherever a row keeps a key, and a fill below -1e4 gives a masked key no weight either way."""
    cond, a, b = where.inputs
    fill = b if keep_true else a
    dtype = graph.dtypes.get(where.outputs[0], np.dtype(np.float32))
    zero, out = f"{where.name}/zero", f"{where.name}/additive_mask"
    graph.constants[zero] = np.zeros((), dtype=dtype)
    graph.shapes[zero], graph.dtypes[zero] = (), dtype
    fill_c = f"{where.name}/fill"
    graph.constants[fill_c] = graph.constants[fill].astype(dtype).reshape(())
    graph.shapes[fill_c], graph.dtypes[fill_c] = (), dtype
    inputs = [cond, zero, fill_c] if keep_true else [cond, fill_c, zero]
    graph.shapes[out], graph.dtypes[out] = graph.shapes[cond], dtype
    graph.nodes.insert(graph.nodes.index(where), Node("Where", f"{where.name}/additive", inputs, [out]))
    return out
