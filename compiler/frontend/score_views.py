"""Shapes and views of attention scores that the attention matcher (compiler/frontend/attention_match.py) reads.

The matcher walks from a softmax back to the QK^T product; these helpers say which [B, H, Sq, Sk] the softmax's
scores are (a bmm-style [B*H, Sq, Sk] softmax has several candidates), whether a Reshape on the way only views them
with the windows split out of the batch, and whether a Mul scales each head by its own constant.
"""

from __future__ import annotations

import numpy as np

from compiler.frontend.graph import Graph, Node
from compiler.frontend.match import MatchContext

__all__ = ["scores_shapes", "window_view", "per_head"]


def scores_shapes(ctx: MatchContext, softmax: Node) -> list[tuple[int, int, int, int]]:
    """[B, H, Sq, Sk] of the scores a last-axis softmax normalises, as candidates: a bmm-style [B*H, Sq, Sk]
    softmax (XGLM) takes B and H from the 4-D view of its scores a few nodes back; where there is none (no mask
    was added in that view: FSMT without an attention_mask input), every split of B*H into B and H, fewest batch
    rows first. The head-split checks of the match decide between them: each proves the split it assumed."""
    shape = ctx.graph.shapes.get(softmax.outputs[0], ())
    if len(shape) not in (3, 4) or softmax.attrs.get("axis", -1) not in (-1, len(shape) - 1):
        return []
    if len(shape) == 4:
        return [shape]  # type: ignore[list-item]
    name = softmax.inputs[0]
    for _ in range(6):
        node = ctx.producers.get(name)
        if node is None:
            break
        name = next((i for i in node.inputs if i and not ctx.graph.is_const(i)), "")
        view = ctx.graph.shapes.get(name, ())
        if len(view) == 4 and view[2:] == shape[1:] and view[0] * view[1] == shape[0]:
            return [view]  # type: ignore[list-item]
    n, sq, sk = shape
    return [(b, n // b, sq, sk) for b in range(1, n + 1) if n % b == 0]


def window_view(cur: tuple[int, ...], source: tuple[int, ...], scores: tuple[int, int, int, int]) -> bool:
    """Whether a Reshape from ``source`` to ``cur`` views [B, H, Sq, Sk] ``scores`` as [B', nW, H, Sq, Sk] (windows
    split out of the batch, a mask per window added there) or back."""
    five, four = (cur, source) if len(cur) == 5 else (source, cur)
    return (four == tuple(scores) and len(five) == 5 and five[2:] == tuple(scores[1:])
            and five[0] * five[1] == scores[0])


def per_head(g: Graph, node: Node, cur: tuple[int, ...], heads: int) -> tuple[np.ndarray, str] | None:
    """(one factor per head, the scores) if ``node`` multiplies [B, H, Sq, Sk] scores by a constant that varies
    along the heads axis only (shaped [H, 1, 1] or [1, H, 1, 1]); None otherwise. Such a factor scales each head's
    QK^T, which is scaling that head's Q: the matcher moves it onto the Q operand."""
    if len(cur) != 4:
        return None
    for c, other in (node.inputs, node.inputs[::-1]):
        value = g.constants.get(c)
        if value is None or g.is_const(other) or g.shapes.get(other) != tuple(cur) or value.ndim > 4:
            continue
        shape = (1,) * (4 - value.ndim) + value.shape
        if shape[0] == 1 and shape[2:] == (1, 1) and shape[1] == heads:
            return value.reshape(heads).astype(np.float64), other
    return None
