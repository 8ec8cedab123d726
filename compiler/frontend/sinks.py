"""Attention sinks around a softmax: one learned logit per head that joins every softmax row and is dropped after.

OpenAI's gpt-oss (and StreamingLLM-style sinks, the "off-by-one" softmax with a sink of 0) computes
``softmax(concat([scores, sink_h], -1))[..., :-1]``: the sink is a column of the scores' rows, constant along the
rows, one value per head, that adds ``exp(sink_h)`` to each row's denominator and whose probability is thrown
away. Exporters spell it as a Concat of the [B, H, Sq, Sk] scores with a constant [B, H, Sq, 1] column (the
expanded per-head parameter, folded; first or last), often a subtraction of the row max (which a softmax
ignores), the Softmax, maybe a Cast (the legacy exporter's), and a Slice of the last axis keeping the score
columns. `find_sinks` recognises that spelling around a Softmax so
the attention matcher (compiler/frontend/attention_match.py) walks the scores and the probabilities as it does without
sinks, and the attention op carries the sinks (one value per query head).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from compiler.frontend.graph import Graph, Node
from compiler.frontend.precision import float_cast

__all__ = ["Sinks", "find_sinks", "strip_row_max"]


@dataclass(frozen=True)
class Sinks:
    """A sink column around a softmax: ``scores`` ([B, H, Sq, Sk]) is what the Concat joins the column to,
    ``probs`` the Slice output (the probabilities of the score columns), ``values`` one sink logit per head and
    ``nodes`` the Concat, row-max subtraction and Slice that the attention op replaces."""

    scores: str
    probs: str
    values: np.ndarray
    nodes: tuple[Node, ...]


def _axis(node: Node, rank: int) -> int | None:
    axis = node.attrs.get("axis")
    return None if axis is None else int(axis) % rank


def strip_row_max(g: Graph, producers: dict[str, Node], name: str) -> tuple[str, list[Node]]:
    """(x, nodes) where ``name`` is ``x - ReduceMax(x, last axis, keepdims)`` (a shift a softmax ignores), else
    (name, [])."""
    sub = producers.get(name)
    if sub is None or sub.op_type != "Sub" or g.is_const(sub.inputs[0]):
        return name, []
    x = sub.inputs[0]
    red = producers.get(sub.inputs[1])
    rank = len(g.shapes.get(x, ()))
    if red is None or red.op_type != "ReduceMax" or red.inputs[0] != x or rank == 0:
        return name, []
    axes = red.attrs.get("axes")
    if axes is None and len(red.inputs) > 1 and g.is_const(red.inputs[1]):
        axes = g.constants[red.inputs[1]].reshape(-1).tolist()
    if axes is None or [int(a) % rank for a in axes] != [rank - 1] or not red.attrs.get("keepdims", 1):
        return name, []
    return x, [sub, red]


def _per_head(value: np.ndarray) -> np.ndarray | None:
    """The per-head values of a [B, H, Sq, 1] column that varies along H only, else None."""
    if value.ndim != 4 or value.shape[-1] != 1:
        return None
    first = value[:1, :, :1, :]
    if not np.all(value == first):
        return None
    return first.reshape(-1).astype(np.float64)


def _slice_drops(g: Graph, node: Node, keep: tuple[int, int], width: int) -> bool:
    """Whether ``node`` is a Slice of the last axis (of ``width`` columns) keeping columns [keep[0], keep[1])."""
    if node.op_type != "Slice" or not all(g.is_const(i) for i in node.inputs[1:] if i):
        return False
    starts, ends = (g.constants[i].reshape(-1) for i in node.inputs[1:3])
    axes = g.constants[node.inputs[3]].reshape(-1) if len(node.inputs) > 3 and node.inputs[3] else None
    steps = g.constants[node.inputs[4]].reshape(-1) if len(node.inputs) > 4 and node.inputs[4] else None
    if len(starts) != 1 or (steps is not None and int(steps[0]) != 1):
        return False
    rank = len(g.shapes.get(node.inputs[0], ()))
    if rank == 0 or (axes is None and rank != 1) or (axes is not None and int(axes[0]) % rank != rank - 1):
        return False
    start, end = int(starts[0]), int(ends[0])
    start = max(0, start + width if start < 0 else min(start, width))
    end = max(0, end + width if end < 0 else min(end, width))
    return (start, end) == keep


def _casts_after(g: Graph, consumers: dict[str, list[Node]], name: str) -> tuple[list[Node], str]:
    """The float-to-float Cast / Identity nodes that alone read ``name`` one after another (the legacy exporter
    casts the probabilities to the softmax's dtype before the Slice), and the last tensor they write."""
    casts: list[Node] = []
    while len(users := consumers.get(name, [])) == 1 and (users[0].op_type == "Identity" or float_cast(g, users[0])) \
            and len(casts) < 4:
        casts.append(users[0])
        name = users[0].outputs[0]
    return casts, name


def find_sinks(g: Graph, producers: dict[str, Node], consumers: dict[str, list[Node]],
               softmax: Node) -> Sinks | None:
    """The sink column around the last-axis ``softmax`` (module docstring), or None where it has none."""
    shape = g.shapes.get(softmax.outputs[0], ())
    if len(shape) != 4 or softmax.attrs.get("axis", -1) not in (-1, 3):
        return None
    source, shift = strip_row_max(g, producers, softmax.inputs[0])
    concat = producers.get(source)
    if concat is None or concat.op_type != "Concat" or len(concat.inputs) != 2 or _axis(concat, 4) != 3:
        return None
    width = shape[-1]
    for at, (col, scores) in enumerate((concat.inputs[::-1], concat.inputs)):
        # at 0: the sink column last (gpt-oss); at 1: first. The Slice keeps the other columns.
        if not g.is_const(col) or g.is_const(scores) or g.shapes.get(col, ())[-1:] != (1,):
            continue
        values = _per_head(g.constants[col])
        if values is None or values.size != shape[1]:
            continue
        keep = (0, width - 1) if at == 0 else (1, width)
        casts, probs = _casts_after(g, consumers, softmax.outputs[0])
        users = consumers.get(probs, [])
        if len(users) != 1 or not _slice_drops(g, users[0], keep, width):
            return None
        if any(len(consumers.get(n.outputs[0], [])) != 1 for n in shift) \
                or len(consumers.get(source, [])) != (2 if shift else 1):
            return None  # the joined scores or the shifted logits are read elsewhere: not only this softmax's
        return Sinks(scores, users[0].outputs[0], values, (concat, *shift, *casts, users[0]))
    return None
