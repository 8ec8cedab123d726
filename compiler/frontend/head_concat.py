"""Move a concatenation of head parts from different projections before the head split.

Multi-head latent attention (DeepSeek-V2/V3) builds each key head from two parts: a per-head part (the latent's
up-projection, split into heads) and a rotary part computed once from another projection and shared by every head,
concatenated along the head dim after the head transpose: ``K[b, h, s] = cat(k_nope[b, h, s], k_rot[b, h, s])``.
The attention matcher (compiler/frontend/attention_match.py) follows Q, K and V back to one rank-3 [B, S, H*Dh] tensor,
and this key has none: its heads come from two.

This rewrite gives it one. For a Concat along the head-dim axis of rank-4 parts that come from more than one rank-3
tensor and that reaches a product of two computed tensors (QK^T or A.V) through movement ops, the roles of its axes
(batch, heads, sequence, head dim) are read off that product by pushing index tensors through the movement chain;
each part is transposed to [B, S, H, d_i], the parts are concatenated there and viewed as [B, S, H*Dh], and that
view is split back into heads and transposed to the Concat's layout. The values are the Concat's; the matcher now
finds the [B, S, H*Dh] tensor. The parts' own work (the rotation of the shared part, its Expand to every head) stays
their own ops. A concatenation of parts of one projection (partial rotary: Phi, NeoX) is left to the matcher's
rotary fit.
"""

from __future__ import annotations

import numpy as np

from compiler.frontend.graph import Graph, Node
from compiler.frontend.onnx_ops import run_node

__all__ = ["hoist_head_concats"]

_MOVE = frozenset({"Reshape", "Transpose", "Identity", "Cast", "Squeeze", "Unsqueeze", "Flatten"})
#: Head repeats of grouped-query attention on the K/V side (to a constant shape or by constant repeats), as the
#: attention matcher crosses them: the ONNX ``Attention`` function's body (opset 23) always writes one, an
#: Unsqueeze -> Expand -> Reshape that repeats each KV head for its query heads (once, without grouping).
_REPEAT = frozenset({"Expand", "Tile"})
_SCALE = frozenset({"Mul", "Div"})
_MAX_WALK = 64


def _sources(graph: Graph, producers: dict[str, Node], end: str) -> set[str] | None:
    """The non-constant rank-3 tensors first met walking back from ``end`` (graph inputs count), or None if the
    walk is larger than ``_MAX_WALK`` nodes."""
    found: set[str] = set()
    seen: set[str] = set()
    stack = [end]
    while stack:
        name = stack.pop()
        if name in seen or graph.is_const(name):
            continue
        seen.add(name)
        if len(seen) > _MAX_WALK:
            return None
        node = producers.get(name)
        if name != end and len(graph.shapes.get(name, ())) == 3 or node is None:
            found.add(name)
            continue
        stack.extend(i for i in node.inputs if i)
    return found


def _to_product(graph: Graph, consumers: dict[str, list[Node]], start: str) -> tuple[list[Node], Node] | None:
    """The movement nodes (and constant head repeats) from ``start`` to the MatMul of two computed tensors that reads
    it (scalar scales are crossed and left out of the chain), and that MatMul; None if ``start`` does not reach one
    that way."""
    chain: list[Node] = []
    name = start
    for _ in range(12):
        users = consumers.get(name, [])
        if len(users) != 1:
            return None
        user = users[0]
        if user.op_type == "MatMul":
            other = user.inputs[1] if user.inputs[0] == name else user.inputs[0]
            return (chain, user) if not graph.is_const(other) else None
        if user.op_type in _MOVE or (user.op_type in _REPEAT and user.inputs[0] == name
                                     and graph.is_const(user.inputs[1])):
            chain.append(user)
        elif not (user.op_type in _SCALE and any(graph.scalar(i) is not None for i in user.inputs if i != name)):
            return None
        name = user.outputs[0]
    return None


def _roles(graph: Graph, concat: Node, chain: list[Node], product: Node) -> tuple[int, int, int, int] | None:
    """The Concat's (batch, heads, sequence, head-dim) axes, read off the product operand its chain makes: Q or
    A [B, H, S, Dh] on the left, K^T [B, H, Dh, S] or V [B, H, S, Dh] on the right. An axis the chain repeats
    (grouped-query attention's KV heads, each read by r consecutive query heads) is found r times larger on the
    operand, each of its indices r times in a row."""
    shape = graph.shapes[concat.outputs[0]]
    operand = chain[-1].outputs[0] if chain else concat.outputs[0]
    target = graph.shapes.get(operand, ())
    if len(target) != 4:
        return None
    where: dict[int, int] = {}  # concat axis -> operand axis
    for axis in range(4):
        if shape[axis] == 1:
            continue
        values: dict[str, np.ndarray] = {concat.outputs[0]: np.indices(shape)[axis]}
        try:
            for node in chain:
                args = [values.get(i, graph.constants.get(i)) if i else None for i in node.inputs]
                if args[0] is None:
                    return None
                values[node.outputs[0]] = args[0] if node.op_type == "Cast" else \
                    run_node(node.op_type, args, node.attrs)[0]
        except (ValueError, IndexError, KeyError, TypeError):
            return None
        got = values[operand]
        match = [b for b in range(4) if got.shape == target and target[b] % shape[axis] == 0
                 and np.array_equal(got, np.indices(target)[b] // (target[b] // shape[axis]))]
        if len(match) != 1:
            return None
        where[axis] = match[0]
    dim = int(concat.attrs.get("axis", 0)) % 4
    head_dim_at = where.get(dim)
    if head_dim_at is None:
        return None
    left = product.inputs[0] == operand
    order = (0, 1, 2, 3) if left or head_dim_at == 3 else (0, 1, 3, 2)  # operand axes of B, H, S, Dh
    if head_dim_at != order[3]:
        return None
    by_operand = {b: a for a, b in where.items()}
    free = [a for a in range(4) if a not in where]  # size-1 axes: their place does not move any data
    roles = [by_operand[b] if b in by_operand else free.pop(0) for b in order]
    return roles[0], roles[1], roles[2], roles[3]


def _hoist(graph: Graph, concat: Node, roles: tuple[int, int, int, int]) -> list[Node]:
    """The nodes replacing ``concat``: parts to [B, S, H, d_i], Concat, [B, S, H*Dh] view, back to its layout."""
    b, h, s, d = roles
    shape = graph.shapes[concat.outputs[0]]
    dtype = graph.dtypes.get(concat.outputs[0], np.dtype(np.float32))
    perm = [b, s, h, d]
    nodes: list[Node] = []

    def add(op: str, inputs: list[str], out_shape: tuple[int, ...], attrs: dict, out: str | None = None) -> str:
        name = f"{concat.name}/heads_{op.lower()}_{len(nodes)}"
        out = out or f"{name}_output_0"
        graph.shapes[out], graph.dtypes[out] = out_shape, dtype
        nodes.append(Node(op, name, inputs, [out], attrs))
        return out

    def const(value: list[int], what: str) -> str:
        name = f"{concat.name}/heads_{what}"
        graph.constants[name] = np.array(value, dtype=np.int64)
        graph.shapes[name], graph.dtypes[name] = (len(value),), np.dtype(np.int64)
        return name

    moved = perm != [0, 1, 2, 3]  # parts already [B, S, H, d_i] need no transpose
    parts = []
    for part in concat.inputs:
        part_shape = graph.shapes[part]
        parts.append(add("Transpose", [part], tuple(part_shape[p] for p in perm), {"perm": perm}) if moved else part)
    bshd = tuple(shape[p] for p in perm)
    joined = add("Concat", parts, bshd, {"axis": 3})
    flat = add("Reshape", [joined, const([bshd[0], bshd[1], bshd[2] * bshd[3]], "flat")],
               (bshd[0], bshd[1], bshd[2] * bshd[3]), {})
    if not moved:
        add("Reshape", [flat, const(list(bshd), "split")], bshd, {}, out=concat.outputs[0])
        return nodes
    split = add("Reshape", [flat, const(list(bshd), "split")], bshd, {})
    inverse = [perm.index(a) for a in range(4)]
    add("Transpose", [split], shape, {"perm": inverse}, out=concat.outputs[0])
    return nodes


def hoist_head_concats(graph: Graph) -> int:
    """Rewrite ``graph`` in place (module docstring); returns how many Concats were moved."""
    producers, consumers = graph.producers(), graph.consumers()
    replaced: dict[int, list[Node]] = {}
    for node in graph.nodes:
        shape = graph.shapes.get(node.outputs[0], ())
        if node.op_type != "Concat" or len(shape) != 4 or len(node.inputs) < 2 or \
                any(graph.is_const(i) or len(graph.shapes.get(i, ())) != 4 for i in node.inputs):
            continue
        dim = int(node.attrs.get("axis", 0)) % 4
        if any(graph.shapes[i][:dim] + graph.shapes[i][dim + 1:] != shape[:dim] + shape[dim + 1:]
               for i in node.inputs):
            continue
        sources = _sources(graph, producers, node.outputs[0])
        if sources is None or len(sources) < 2:
            continue
        found = _to_product(graph, consumers, node.outputs[0])
        roles = _roles(graph, node, *found) if found is not None else None
        if roles is not None and roles[3] == dim:
            replaced[id(node)] = _hoist(graph, node, roles)
    if replaced:
        graph.nodes[:] = [n for node in graph.nodes for n in replaced.get(id(node), [node])]
    return len(replaced)
