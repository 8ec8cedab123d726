"""A [B, S, H*D] view of an attention operand that was computed per head, for the attention matcher.

The matcher (compiler/frontend/attention_match.py) follows Q, K^T and V of the score and value products back through
head-split chains to a rank-3 [B, S, H*D] tensor: the projection the attention op reads. Some models compute on the
heads after the split, with an op that is no movement: a LayerNorm per head on the fused-QKV split (timm's
``qk_norm``), an L2 normalisation of Q and K (scaled-cosine attention: Swin-v2, timm's and torchvision's), a rotary
embedding applied in the [B, H, S, D] layout. The chain then stops at a rank-4 tensor and the attention went
unrecognised although the products, the softmax and the head merge are exactly attention.

`view_operand` gives such an operand the rank-3 tensor the matcher needs without changing what is computed: it
inserts, before the product that reads it, the head merge (Transpose to [B, S, H, D], Reshape to [B, S, H*D]) and
its inverse (Reshape back, Transpose back) and points the product at the result. The matcher's walk then finds the
merged tensor and proves the head split as for any projection; the per-head op stays its own (generic) op, the
merge before the attention op is a real move. `view_output` does the same for the product of the probabilities
and V when what reads it is no head merge the matcher knows (Visformer and CoAtNet write the heads back as a
channels-first image, [B, H*D, h, w]): the merge and its inverse after the product give the attention op its
[B, S, H*D] output, the moves to the image stay generic. `untranspose_product` rewrites the value product written
from the other side, V^T-major: ``V' @ P^T`` with V' = V^T ([B, H, Dv, Sk]: EfficientViT-M's cascaded group
attention and SHViT on channels-first [B, D, N] tensors) is ``(P @ V'^T)^T``, so it becomes a Transpose of V', the
product P @ V and a Transpose of that product back to [.., Dv, Sq]: both transposes are moves the matcher walks (the
first to V's source, the second into the head merge, channels-first). If the match fails after all, `undo`
restores the graph.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from compiler.frontend.graph import Node
from compiler.frontend.match import MatchContext

__all__ = ["HeadViews", "untranspose_product", "view_operand", "view_output"]

#: role -> (perm of the operand to [B, S, H, D], perm of [B, S, H, D] back to the operand's layout). Q and V are
#: [B, H, S, D]; the score product reads K transposed, [B, H, D, S].
_PERMS = {"q": ((0, 2, 1, 3), (0, 2, 1, 3)), "v": ((0, 2, 1, 3), (0, 2, 1, 3)), "k": ((0, 3, 1, 2), (0, 2, 3, 1))}


@dataclass
class HeadViews:
    """The views inserted for one attempted match, so that a failed match leaves the graph as it found it."""

    nodes: list[Node] = field(default_factory=list)
    rewired: list[tuple[Node, int, str]] = field(default_factory=list)  # (reader, input index, original tensor)
    removed: list[tuple[int, Node]] = field(default_factory=list)  # (graph position, node) of the nodes replaced

    def undo(self, ctx: MatchContext) -> None:
        """Remove the inserted views, put back the nodes they replaced and point their readers back at the original
        tensors."""
        for reader, index, name in reversed(self.rewired):
            ctx.consumers[reader.inputs[index]] = [c for c in ctx.consumers.get(reader.inputs[index], [])
                                                   if c is not reader]
            reader.inputs[index] = name
            ctx.consumers.setdefault(name, []).append(reader)
        ids = {id(n) for n in self.nodes}
        ctx.graph.nodes[:] = [n for n in ctx.graph.nodes if id(n) not in ids]
        restored = {name for _, node in self.removed for name in node.outputs}  # their readers never changed
        for node in self.nodes:
            for name in node.inputs:
                ctx.consumers[name] = [c for c in ctx.consumers.get(name, []) if c is not node]
            for name in node.outputs:
                ctx.producers.pop(name, None)
                if name not in restored:
                    ctx.consumers.pop(name, None)
        for at, node in reversed(self.removed):  # each position was taken in the graph of that moment
            ctx.graph.nodes.insert(at, node)
        for _, node in self.removed:
            for name in node.outputs:
                ctx.producers[name] = node
            for name in node.inputs:  # readers in graph order, as they were
                ctx.consumers[name] = [n for n in ctx.graph.nodes if name in n.inputs]
        self.nodes.clear()
        self.rewired.clear()
        self.removed.clear()


def _insert(ctx: MatchContext, name: str, perms: tuple[tuple[int, ...], tuple[int, ...]], base: str, next_to: Node,
            after: bool, views: HeadViews) -> str:
    """Insert before (or ``after``) ``next_to`` the merge of rank-4 ``name`` (``perms[0]`` to [B, S, H, D],
    Reshape to [B, S, H*D]) and its inverse (Reshape back, ``perms[1]``); return the last tensor, equal to
    ``name``."""
    g = ctx.graph
    shape = g.shapes[name]
    rows = tuple(shape[p] for p in perms[0])  # [B, S, H, D]
    flat = (rows[0], rows[1], rows[2] * rows[3])
    dtype = g.dtypes.get(name, np.dtype(np.float32))
    tensors = [f"{base}/rows", f"{base}/merged", f"{base}/split", f"{base}/heads"]
    for tensor, dims in zip(tensors, (rows, flat, rows, shape)):
        g.shapes[tensor], g.dtypes[tensor] = tuple(dims), dtype
    for key, dims in (("merged", flat), ("split", rows)):
        const = f"{base}/{key}_shape"
        g.constants[const] = np.array(dims, dtype=np.int64)
        g.shapes[const], g.dtypes[const] = (len(dims),), np.dtype(np.int64)
    nodes = [Node("Transpose", f"{base}/to_rows", [name], [tensors[0]], {"perm": list(perms[0])}),
             Node("Reshape", f"{base}/merge_heads", [tensors[0], f"{base}/merged_shape"], [tensors[1]]),
             Node("Reshape", f"{base}/split_heads", [tensors[1], f"{base}/split_shape"], [tensors[2]]),
             Node("Transpose", f"{base}/to_heads", [tensors[2]], [tensors[3]], {"perm": list(perms[1])})]
    _place(ctx, nodes, g.nodes.index(next_to) + after, ctx.order[id(next_to)], views)
    return tensors[3]


def _place(ctx: MatchContext, nodes: list[Node], at: int, order: int, views: HeadViews) -> None:
    """Put new ``nodes`` into the graph at index ``at`` with the match order ``order``, register their producers
    and consumers, and record them in ``views`` (for `HeadViews.undo`)."""
    ctx.graph.nodes[at:at] = nodes
    for node in nodes:
        ctx.order[id(node)] = order
        ctx.producers[node.outputs[0]] = node
        for i in node.inputs:
            ctx.consumers.setdefault(i, []).append(node)
    views.nodes += nodes


def _rewire(ctx: MatchContext, reader: Node, index: int, name: str, views: HeadViews) -> None:
    """Point input ``index`` of ``reader`` at ``name``, recorded for `HeadViews.undo`."""
    old = reader.inputs[index]
    ctx.consumers[old] = [c for c in ctx.consumers.get(old, []) if c is not reader]
    reader.inputs[index] = name
    ctx.consumers.setdefault(name, []).append(reader)
    views.rewired.append((reader, index, old))


def view_output(ctx: MatchContext, av: Node, heads: int, views: HeadViews) -> bool:
    """Insert the head merge and its inverse after ``av`` (the probabilities times V, [B, H, S, D]) and point its
    readers at the result, recording them in ``views``. Returns whether it did."""
    g = ctx.graph
    name = av.outputs[0]
    shape = g.shapes.get(name, ())
    readers = list(ctx.consumers.get(name, []))
    if len(shape) != 4 or shape[1] != heads or name in g.outputs or not readers:
        return False
    last = _insert(ctx, name, ((0, 2, 1, 3), (0, 2, 1, 3)), f"{name}/head_view", av, True, views)
    for reader in readers:
        for index, i in enumerate(reader.inputs):
            if i == name:
                _rewire(ctx, reader, index, last, views)
    return True


def view_operand(ctx: MatchContext, reader: Node, index: int, role: str, heads: int, views: HeadViews) -> bool:
    """Insert the head merge and its inverse between input ``index`` of ``reader`` (the score or value MatMul) and
    the per-head operand it reads (``role`` "q", "k" or "v", ``heads`` heads), recording them in ``views``. Returns
    whether it did: the operand must be rank 4 with ``heads`` on axis 1, or for K / V a divisor of them (grouped or
    multi-query KV heads the product broadcasts: Falcon's single KV head against an empty cache)."""
    g = ctx.graph
    name = reader.inputs[index]
    shape = g.shapes.get(name, ())
    if len(shape) != 4 or name in g.outputs or not shape[1] or not (
            shape[1] == heads or (role in ("k", "v") and heads % shape[1] == 0)):
        return False
    last = _insert(ctx, name, _PERMS[role], f"{name}/{reader.name}/head_view", reader, False, views)
    _rewire(ctx, reader, index, last, views)
    return True


def _swapped(shape: tuple[int, ...]) -> tuple[int, ...]:
    return shape[:-2] + (shape[-1], shape[-2])


def untranspose_product(ctx: MatchContext, transpose: Node, views: HeadViews) -> Node | None:
    """If ``transpose`` swaps the last two axes of the probabilities P and only a MatMul reads it, as its right
    operand (``V' @ P^T``, V' not constant), replace the two nodes by Transpose(V'), ``P @ V'^T`` and a Transpose of
    that product back to the MatMul's output (module docstring), recorded in ``views``; return the new product (P on
    the left, as the matcher expects). None, and nothing changed, otherwise."""
    g = ctx.graph
    probs, pt = transpose.inputs[0], transpose.outputs[0]
    shape = g.shapes.get(probs, ())
    readers = ctx.consumers.get(pt, [])
    rank = len(shape)
    if (transpose.op_type != "Transpose" or rank < 3 or list(transpose.attrs.get("perm", []))
            != [*range(rank - 2), rank - 1, rank - 2] or len(readers) != 1 or pt in g.outputs):
        return None
    product = readers[0]
    left, out = product.inputs[0], product.outputs[0]
    if (product.op_type != "MatMul" or product.inputs[1] != pt or left == pt or g.is_const(left)
            or len(g.shapes.get(left, ())) != rank or len(g.shapes.get(out, ())) != rank):
        return None
    dtype = g.dtypes.get(out, np.dtype(np.float32))
    left_t, flipped = f"{out}/untransposed/v", f"{out}/untransposed/pv"
    g.shapes[left_t], g.dtypes[left_t] = _swapped(g.shapes[left]), g.dtypes.get(left, dtype)
    g.shapes[flipped], g.dtypes[flipped] = _swapped(g.shapes[out]), dtype
    perm = {"perm": [*range(rank - 2), rank - 1, rank - 2]}
    nodes = [Node("Transpose", f"{product.name}/untransposed/v", [left], [left_t], dict(perm)),
             Node("MatMul", f"{product.name}/untransposed", [probs, left_t], [flipped]),
             Node("Transpose", f"{product.name}/untransposed/out", [flipped], [out], dict(perm))]
    order = ctx.order[id(product)]
    for node in (transpose, product):
        at = g.nodes.index(node)
        del g.nodes[at]
        views.removed.append((at, node))
        for name in node.inputs:
            ctx.consumers[name] = [c for c in ctx.consumers.get(name, []) if c is not node]
        for name in node.outputs:
            ctx.producers.pop(name, None)
    # where the product stood: past both operands' producers, before its readers
    _place(ctx, nodes, views.removed[-1][0], order, views)
    return nodes[1]
