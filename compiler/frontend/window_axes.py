"""Attention whose windows stay axes of Q, K, V and the scores, folded into the batch for the attention matcher.

Window attention is one attention per window. Swin folds its windows into the batch before the QKV projection, so
the matcher (compiler/frontend/attention_match.py) sees [B*nW, H, S, S] scores. Other models keep the windows (or
blocks, mask units, grid cells) as axes of their own: Twins' locally-grouped attention and torchvision's MaxViT
compute [B, nW, H, S, S] scores, NesT and Hiera [B, H, nW, S, S]; a softmax over rank-5 (or higher) scores is no
attention the matcher knows, and it stayed generic ops.

Every leading axis that Q, K^T, V and the scores share is one the two products batch over, so the whole block is the
same attention with those axes moved in front of the heads and merged into the batch. `fold_window_axes` rewrites
it that way in place: Q, K^T and V are moved to [B', H, S, D] (through the head merge [B', S, H*D] the matcher
follows back to its operand; a constant scale of Q or K and K's transpose, read by the product alone, are folded
with the block so that the attention op's scale holds them), the nodes from the QK^T product to the A.V product
(scalar scales, additive terms, masks, the softmax) compute on [B', H, Sq, Sk] (their constant inputs moved the same
way; a computed one of rank > 2 leaves the block as it is) and the A.V product is moved back to the layout its
readers expect. Which leading axis is the heads is read off Q's movement chain (else V's, else K's): the axis that
steps along the channels of the tensor the chain starts from (a projection) and along nothing else; where none
does (a size-one heads axis, an op per head before every chain) the block is taken as one head. The rewrite is
exact whatever the matcher then decides: only movement nodes are added, and a block whose leading axes Q, K or V
broadcast is left alone.
"""

from __future__ import annotations

import math

import numpy as np

from compiler.frontend.graph import Graph, Node
from compiler.frontend.onnx_ops import run_node
from compiler.limits import check_memory

__all__ = ["fold_window_axes"]

#: Ops between the QK^T product and the softmax (and after it, before the A.V product) that act element by element on
#: the scores; their other inputs broadcast against them.
_ELEMENTWISE = frozenset({"Add", "Sub", "Mul", "Div", "Where", "Max", "Min", "Tanh", "Cast", "Identity"})
_AFTER_SOFTMAX = frozenset({"Cast", "Identity"})
#: Movement ops Q's chain is read through to find the heads axis (their first input is the data).
_MOVES = frozenset({"Reshape", "Transpose", "Squeeze", "Unsqueeze", "Flatten", "Split", "Slice", "Gather", "Identity"})


def _scalar_scale(g: Graph, node: Node) -> bool:
    """Whether ``node`` multiplies or divides its first input by a constant scalar."""
    return node.op_type in ("Mul", "Div") and len(node.inputs) == 2 and g.scalar(node.inputs[1]) is not None \
        and not g.is_const(node.inputs[0])


def _only_reader(g: Graph, consumers: dict[str, list[Node]], name: str, node: Node) -> bool:
    users = consumers.get(name, [])
    return len(users) == 1 and users[0] is node and name not in g.outputs


class _Block:
    """The nodes of one attention over rank-5+ scores, found from its softmax, or ``ok`` False."""

    def __init__(self, g: Graph, producers: dict[str, Node], consumers: dict[str, list[Node]], softmax: Node):
        self.ok = False
        full = g.shapes.get(softmax.inputs[0], ())
        rank = len(full)
        if rank < 5 or softmax.attrs.get("axis", -1) not in (-1, rank - 1):
            return
        self.scores: list[Node] = []  # the nodes after the QK^T product up to the A.V product, in graph order
        name, node = softmax.inputs[0], softmax
        while True:
            prev = producers.get(name)
            if prev is None or not _only_reader(g, consumers, name, node) or len(self.scores) > 16:
                return
            if prev.op_type == "MatMul" and not any(g.is_const(i) for i in prev.inputs):
                qk = prev
                break
            data = [i for i in prev.inputs if i and not g.is_const(i) and g.shapes.get(i) == full]
            if prev.op_type not in _ELEMENTWISE or len(data) != 1 or g.shapes.get(prev.outputs[0]) != full:
                return
            self.scores.insert(0, prev)
            name, node = data[0], prev
        self.scores.append(softmax)
        probs = softmax.outputs[0]
        while True:
            users = consumers.get(probs, [])
            if len(users) != 1 or probs in g.outputs:
                return
            if users[0].op_type == "MatMul" and users[0].inputs[0] == probs:
                av = users[0]
                break
            if users[0].op_type not in _AFTER_SOFTMAX or len(self.scores) > 20:
                return
            self.scores.append(users[0])
            probs = users[0].outputs[0]
        lead = tuple(full[:-2])
        q, k, v = (g.shapes.get(i, ()) for i in (qk.inputs[0], qk.inputs[1], av.inputs[1]))
        if g.shapes.get(qk.outputs[0]) != full or len(q) != rank or len(k) != rank or len(v) != rank \
                or q[:-2] != lead or k[:-2] != lead or v[:-2] != lead or q[-1] != k[-2] or k[-1] != full[-1] \
                or q[-2] != full[-2] or v[-2] != full[-1] or g.shapes.get(av.outputs[0]) != lead + (q[-2], v[-1]):
            return  # an axis broadcast or contracted differently: not one attention per leading index
        self.qk, self.av, self.softmax, self.lead = qk, av, softmax, lead
        # A constant scale of Q or K (and the transpose of K) read by the product alone is folded too, so that the
        # attention op's scale holds it; ``swapped``: whether the operand where the fold starts is transposed.
        self.pre: dict[int, list[Node]] = {}
        self.swapped: dict[int, bool] = {}
        swap = list(range(rank - 2)) + [rank - 1, rank - 2]
        for index in (0, 1):
            chain, name, reader, swapped = [], qk.inputs[index], qk, index == 1
            while (node := producers.get(name)) is not None and _only_reader(g, consumers, name, reader) and (
                    _scalar_scale(g, node) or (node.op_type == "Transpose" and node.attrs.get("perm") == swap)):
                chain.insert(0, node)
                swapped ^= node.op_type == "Transpose"
                name, reader = node.inputs[0], node
            self.pre[index], self.swapped[index] = chain, swapped
        self.ok = True

    def operand(self, index: int) -> tuple[str, Node, bool]:
        """(the tensor, the node reading it, whether it is transposed: [.., D, S]) where the fold of Q (0) or K^T
        (1) starts."""
        chain = self.pre[index]
        name, reader = (chain[0].inputs[0], chain[0]) if chain else (self.qk.inputs[index], self.qk)
        return name, reader, self.swapped[index]


def _heads_axis(g: Graph, producers: dict[str, Node], name: str, lead: tuple[int, ...]) -> int | None:
    """The leading axis of Q (``name``, ``lead`` its leading axes) that steps along the channels (last axis) of the
    tensor Q's movement chain starts from, and along nothing else; None when no axis of size > 1 does."""
    chain: list[Node] = []
    source = name
    while len(chain) < 16 and (node := producers.get(source)) is not None:
        if not (node.op_type in _MOVES or _scalar_scale(g, node) or node.op_type == "Cast"):
            break
        if not all(g.is_const(i) for i in node.inputs[1:] if i):
            break
        chain.append(node)
        source = node.inputs[0]
    shape = g.shapes.get(source, ())
    if not chain or len(shape) < 2:
        return None
    check_memory(f"{g.source}: folding window axes: tracing the heads of '{name}'", 8 * 3 * math.prod(shape))
    values: dict[str, np.ndarray] = {source: np.arange(math.prod(shape), dtype=np.int64).reshape(shape)}
    try:
        for node in reversed(chain):
            if node.op_type in ("Mul", "Div", "Cast", "Identity"):  # no element moves
                values[node.outputs[0]] = values[node.inputs[0]]
                continue
            args = [values.get(i, g.constants.get(i)) if i else None for i in node.inputs]
            for out, value in zip(node.outputs, run_node(node.op_type, args, node.attrs, len(node.outputs))):
                values[out] = value
    except (ValueError, IndexError, KeyError, TypeError):
        return None
    got = values.get(name)
    if got is None or got.shape[:len(lead)] != lead:
        return None
    coords = np.unravel_index(got, shape)
    found = []
    for axis, size in enumerate(lead):
        if size == 1:
            continue
        steps = [np.diff(c, axis=axis) for c in coords]
        if all(not s.any() for s in steps[:-1]) and np.all(steps[-1] != 0):
            found.append(axis)
    return found[0] if len(found) == 1 else None


class _Fold:
    """The move of leading axes ``lead`` to [B', H]: ``others`` merged into the batch, ``heads`` (or none) after."""

    def __init__(self, lead: tuple[int, ...], heads: int | None):
        self.lead, self.heads = lead, heads
        self.others = [a for a in range(len(lead)) if a != heads]
        self.batch = math.prod(lead[a] for a in self.others)
        self.h = 1 if heads is None else lead[heads]

    def lead_perm(self) -> list[int]:
        return self.others + ([] if self.heads is None else [self.heads])

    def side(self, shape: tuple[int, ...]) -> tuple[list[int], tuple[int, ...], bool] | None:
        """How a constant broadcast against the scores moves: (perm of its rank-padded shape, the 4-D shape it takes,
        whether its merged axes must first be broadcast to full size); None for a rank <= 2 one (it broadcasts
        against the trailing axes the same way)."""
        if len(shape) <= 2:
            return None
        rank = len(self.lead) + 2
        padded = (1,) * (rank - len(shape)) + tuple(shape)
        merged = [padded[a] for a in self.others]
        expand = any(m != 1 for m in merged) and merged != [self.lead[a] for a in self.others]
        batch = 1 if all(m == 1 for m in merged) else self.batch
        h = 1 if self.heads is None else padded[self.heads]
        return self.lead_perm() + [rank - 2, rank - 1], (batch, h) + padded[-2:], expand


def _view(g: Graph, at: int, source: str, steps: list[tuple[str, tuple[int, ...]]], base: str,
          out: str | None = None) -> tuple[str, list[Node]]:
    """Insert at position ``at`` the chain of ("Transpose", perm) / ("Reshape", shape) ``steps`` from ``source``
    (identity transposes left out); return its last tensor (named ``out`` if given) and the nodes."""
    dtype = g.dtypes.get(source, np.dtype(np.float32))
    steps = [s for s in steps if s[0] != "Transpose" or list(s[1]) != sorted(s[1])]
    nodes, cur = [], source
    for i, (op, arg) in enumerate(steps):
        shape = g.shapes[cur]
        new = tuple(shape[p] for p in arg) if op == "Transpose" else arg
        name = out if out is not None and i == len(steps) - 1 else f"{base}_{i}_output_0"
        node = Node(op, f"{base}_{i}", [cur], [name])
        if op == "Transpose":
            node.attrs["perm"] = list(arg)
        else:
            const = f"{base}_{i}_shape"
            g.constants[const] = np.array(arg, dtype=np.int64)
            g.shapes[const], g.dtypes[const] = (len(arg),), np.dtype(np.int64)
            node.inputs.append(const)
        g.shapes[name], g.dtypes[name] = tuple(new), dtype
        nodes.append(node)
        cur = name
    g.nodes[at:at] = nodes
    return cur, nodes


def _fold_block(g: Graph, block: _Block, fold: _Fold) -> bool:
    """Rewrite ``block`` on [B', H, ..] (module docstring); False, leaving the graph unchanged, when an input of
    its element-wise nodes is computed with rank > 2 (a mask from the inputs, per window)."""
    rank = len(block.lead) + 2
    lead_perm = fold.lead_perm()
    b, h = fold.batch, fold.h
    region = {block.qk.outputs[0]} | {out for n in block.scores for out in n.outputs}
    plans: list[tuple[Node, int, tuple[list[int], tuple[int, ...], bool]]] = []
    for node in block.scores:
        for index, name in enumerate(node.inputs):
            if not name or name in region:
                continue
            plan = fold.side(g.shapes.get(name, ()))
            if plan is None:
                continue
            if not g.is_const(name):
                return False  # a computed mask or bias over the windows: left to generic ops
            plans.append((node, index, plan))
    base = f"{block.softmax.name}/window_fold"
    for i, (node, index, (perm, shape, expand)) in enumerate(plans):
        name = node.inputs[index]
        padded = (1,) * (rank - len(g.shapes[name])) + tuple(g.shapes[name])
        value = g.constants[name].reshape(padded).transpose(perm)
        if expand:
            merged = tuple(block.lead[a] for a in fold.others)
            value = np.broadcast_to(value, merged + value.shape[len(merged):])
        const = f"{base}/side_{i}"
        g.constants[const] = np.ascontiguousarray(value).reshape(shape)
        g.shapes[const], g.dtypes[const] = shape, g.constants[const].dtype
        node.inputs[index] = const
    for node in (*block.pre[0], *block.pre[1], block.qk, *block.scores):
        for out in node.outputs:
            old = g.shapes[out]
            g.shapes[out] = (b, h) + tuple(old[-2:])
        if node.op_type == "Transpose":  # K's transpose in the pre-chain: the last two axes of [B', H, ..]
            node.attrs["perm"] = [0, 1, 3, 2]
    if block.softmax.attrs.get("axis", -1) != -1:
        block.softmax.attrs["axis"] = 3
    # [L, S, D] operands (Q, K, V) to [B', S, H*D] then [B', H, S, D]; transposed ones [L, D, S] (K^T) to
    # [B', S, H*D] then [B', H, D, S].
    for role, (name, reader, swapped) in (("q", block.operand(0)), ("k", block.operand(1)),
                                          ("v", (block.av.inputs[1], block.av, False))):
        tokens, width, back = (rank - 1, rank - 2, (0, 2, 3, 1)) if swapped else (rank - 2, rank - 1, (0, 2, 1, 3))
        shape = g.shapes[name]
        s, d = shape[tokens], shape[width]
        steps = [("Transpose", tuple(fold.others + [tokens] + lead_perm[len(fold.others):] + [width])),
                 ("Reshape", (b, s, h * d)), ("Reshape", (b, s, h, d)), ("Transpose", back)]
        viewed, _ = _view(g, g.nodes.index(reader), name, steps, f"{base}/{role}")
        reader.inputs[reader.inputs.index(name)] = viewed
    out = block.av.outputs[0]
    sq, dv = g.shapes[out][-2:]
    folded = f"{out}/window_folded"
    block.av.outputs[0] = folded
    g.shapes[folded], g.dtypes[folded] = (b, h, sq, dv), g.dtypes.get(out, np.dtype(np.float32))
    order = fold.others + [rank - 2] + lead_perm[len(fold.others):] + [rank - 1]
    unfolded = tuple(block.lead[a] for a in fold.others) + (sq,) + ((h,) if fold.heads is not None else ()) + (dv,)
    steps = [("Transpose", (0, 2, 1, 3)), ("Reshape", (b, sq, h * dv)), ("Reshape", unfolded),
             ("Transpose", tuple(int(i) for i in np.argsort(order)))]
    _view(g, g.nodes.index(block.av) + 1, folded, steps, f"{base}/out", out)
    return True


def fold_window_axes(graph: Graph, keep: set[int] | frozenset[int] = frozenset()) -> int:
    """Fold the leading window axes of every attention over rank-5+ scores into its batch (module docstring),
    except at softmaxes whose ``id`` is in ``keep`` (taken by a recognised block); returns how many were folded."""
    folded = 0
    producers, consumers = graph.producers(), graph.consumers()
    for softmax in [n for n in graph.nodes if n.op_type == "Softmax" and id(n) not in keep]:
        block = _Block(graph, producers, consumers, softmax)
        if not block.ok:
            continue
        # Q's chain first; V's (no per-head op on it, as a query pooling or norm may be) and K's where it is unread
        operands = (block.qk.inputs[0], block.av.inputs[1], block.qk.inputs[1])
        heads = next((a for a in (_heads_axis(graph, producers, n, block.lead) for n in operands) if a is not None),
                     None)
        if _fold_block(graph, block, _Fold(block.lead, heads)):
            folded += 1
            producers, consumers = graph.producers(), graph.consumers()
    return folded
