"""Move per-row work on Q or K heads (each head's Dh values of each token, on their own) before the head transpose.

Swin-v2's cosine attention divides each Q and K head by its L2 norm (``F.normalize`` over Dh, lowered to
``x / Expand(Clip(Sqrt(ReduceSum(x * x))))`` by compiler/frontend/reductions.py) after the [B, S, H, Dh] ->
[B, H, S, Dh] head transpose. The attention matcher (compiler/frontend/attention_match.py) follows Q and K back through
movement ops to a rank-3 [B, S, H*Dh] tensor, and that work stands between them. Work that reads and writes each row
of the last axis on its own commutes with a transpose that keeps the last axis, so it can run before the transpose:
the region then reads the head view of the projection, a [B, S, H*Dh] view of its result is inserted (as for a
per-head norm, compiler/frontend/head_norm.py), and the transpose follows. The region stays its own ops (the vector
unit runs them); the attention op reads their result, normalised Q and K, as it reads a per-head norm's.

A region is row-wise by construction, not by evaluation: element-wise ops whose constants are scalars or one value
per channel ([Dh]), reductions over the last axis that keep it, and Expands back to the head shape. Only a region
with a reduction is moved: element-wise work alone is already crossed by the matcher (a scalar scale).

A norm after rotary embeddings (HunYuan, nanochat: RoPE on [B, H, S, Dh], then a per-head RMSNorm) is a region
that also holds position-wise work: the rotation's element-wise products with cos / sin tables laid out for the
transposed heads ([1, 1, S, Dh]) and its rotate-half (Slices, a Neg and a Concat of the last axis). Where the strict
region finds nothing, the region is taken again with those ops admitted; moved, each table is transposed with the
work ([1, S, 1, Dh]), and the last-axis Slices and Concat read the same axis. The rotation then stays element-wise
ops of its own (the attention op reads the normalised result, as it reads any per-head norm's).
"""

from __future__ import annotations

import numpy as np

from compiler.frontend.graph import Graph, Node

__all__ = ["hoist_head_rows"]

_UNARY = frozenset({"Sqrt", "Reciprocal", "Neg", "Abs", "Exp", "Log", "Cast", "Identity", "Clip"})
_BINARY = frozenset({"Add", "Sub", "Mul", "Div", "Pow", "Max", "Min"})
_REDUCE = frozenset({"ReduceSum", "ReduceMean", "ReduceMax"})
_MAX_NODES = 16
_MAX_POSITIONAL = 32  # a rotation (about 7 ops) and a norm with its casts and scale (about 10) fit twice over


def _axes(graph: Graph, node: Node) -> list[int] | None:
    """The reduction's axes (an attribute before opset 18, the second input from it on), or None if unknown."""
    if len(node.inputs) > 1 and node.inputs[1]:
        value = graph.constants.get(node.inputs[1])
        return None if value is None else [int(a) for a in value.reshape(-1)]
    axes = node.attrs.get("axes")
    return None if axes is None else [int(a) for a in axes]


def _last_axis(graph: Graph, node: Node) -> bool:
    """Whether a Slice / Concat / Split ``node`` works along the last axis only (constant starts, ends, sizes)."""
    if node.op_type == "Slice":
        axes = graph.constants.get(node.inputs[3]) if len(node.inputs) > 3 and node.inputs[3] else None
        return (axes is not None and [int(a) for a in axes.reshape(-1)] in ([-1], [3])
                and all(graph.is_const(i) for i in node.inputs[1:] if i))
    along = int(node.attrs.get("axis", 0)) in (-1, 3)
    if node.op_type == "Split":  # its sizes (an input from opset 13 on) must be constants
        return along and all(graph.is_const(i) for i in node.inputs[1:] if i)
    return along


def _broadcasts(value: np.ndarray, head: tuple[int, ...]) -> bool:
    try:
        return value.ndim <= 4 and tuple(np.broadcast_shapes(value.shape, head)) == head
    except ValueError:
        return False


def _row_wise(graph: Graph, node: Node, head: tuple[int, ...], positional: bool = False) -> bool:
    """Whether ``node`` reads and writes each last-axis row of a ``head``-shaped tensor on its own; ``positional``
    admits element-wise tables broadcast over the head shape and last-axis Slices / Concats / Splits (rotary
    embeddings: module docstring)."""
    consts = [i for i in node.inputs if i and graph.is_const(i)]
    if positional and node.op_type in ("Slice", "Concat", "Split"):
        return _last_axis(graph, node)
    if node.op_type in _UNARY or node.op_type in _BINARY:
        if node.op_type == "Clip":
            return all(graph.constants[i].size == 1 for i in consts)
        if positional:
            return all(_broadcasts(graph.constants[i], head) for i in consts)
        return all(graph.constants[i].ndim <= 1 and graph.constants[i].size in (1, head[-1]) for i in consts)
    if node.op_type in _REDUCE:
        return _axes(graph, node) in ([-1], [3]) and int(node.attrs.get("keepdims", 1)) == 1
    if node.op_type == "Expand":
        return graph.shapes.get(node.outputs[0]) == head and graph.is_const(node.inputs[1])
    return False


def _region(graph: Graph, source: str, consumers: dict[str, list[Node]],
            positional: bool = False) -> tuple[list[Node], str] | None:
    """The row-wise nodes reading ``source`` (the head transpose's output) and the one tensor they hand on, or
    None: every reader of ``source`` and of the region's tensors but that one must be row-wise (``positional``:
    `_row_wise`)."""
    head = graph.shapes[source]
    nodes: dict[int, Node] = {}
    stack = [source]
    while stack:
        name = stack.pop()
        for node in consumers.get(name, []):
            if id(node) in nodes:
                continue
            if not _row_wise(graph, node, head, positional):
                continue
            nodes[id(node)] = node
            if len(nodes) > (_MAX_POSITIONAL if positional else _MAX_NODES):
                return None
            stack.extend(node.outputs)
    inside = set(nodes)
    tensors = {source} | {o for n in nodes.values() for o in n.outputs}
    if any(i and not graph.is_const(i) and i not in tensors for n in nodes.values() for i in n.inputs):
        return None  # reads another non-constant tensor: not work on this head's rows alone
    leaving = [t for t in tensors if any(id(c) not in inside for c in consumers.get(t, [])) or t in graph.outputs]
    if len(leaving) != 1 or leaving[0] == source or graph.shapes.get(leaving[0]) != head:
        return None
    ordered = [n for n in graph.nodes if id(n) in inside]
    if not any(n.op_type in _REDUCE for n in ordered):
        # element-wise work alone (the scalar scale SDPA exports apply to each head) is crossed by the attention
        # matcher's walk and folded into the op's scale: moved, it would stay an op of its own
        return None
    return ordered, leaving[0]


def _views_projection(graph: Graph, name: str, producers: dict[str, Node]) -> bool:
    """Whether ``name`` [B, S, H, Dh] is a Reshape of a rank-3 [B, S, H*Dh] tensor (a projection split into heads)."""
    node = producers.get(name)
    shape = graph.shapes.get(name, ())
    return (node is not None and node.op_type == "Reshape" and len(shape) == 4
            and graph.shapes.get(node.inputs[0]) == (shape[0], shape[1], shape[2] * shape[3]))


def _hoist(graph: Graph, transpose: Node, nodes: list[Node], out: str) -> None:
    """Run ``nodes`` on the transpose's input and the transpose on their result ``out`` (module docstring)."""
    perm = [int(p) for p in transpose.attrs["perm"]]
    inverse = [int(i) for i in np.argsort(perm)]
    source, transposed = transpose.inputs[0], transpose.outputs[0]
    for node in nodes:
        node.inputs = [source if i == transposed else i for i in node.inputs]
        for o in node.outputs:
            if len(graph.shapes.get(o, ())) == 4:
                graph.shapes[o] = tuple(graph.shapes[o][i] for i in inverse)
        for k, name in enumerate(node.inputs):  # a table laid out for the transposed heads follows the move
            value = graph.constants.get(name) if name else None
            if value is not None and value.ndim >= 2 and node.op_type not in ("Slice", "Split", "Expand", "Reshape"):
                moved = f"{name}/untransposed"
                graph.constants[moved] = np.ascontiguousarray(
                    value.reshape((1,) * (4 - value.ndim) + value.shape).transpose(inverse))
                graph.shapes[moved], graph.dtypes[moved] = graph.constants[moved].shape, value.dtype
                node.inputs[k] = moved
        if node.op_type == "Expand":  # its target shape, in the untransposed layout
            target = f"{node.name}/untransposed_shape"
            graph.constants[target] = np.array(graph.shapes[node.outputs[0]], dtype=np.int64)
            graph.shapes[target], graph.dtypes[target] = (4,), np.dtype(np.int64)
            node.inputs[1] = target
    hoisted, flat, back = f"{out}/before_head_transpose", f"{out}/heads_merged", f"{out}/heads_split"
    shape = graph.shapes[out]
    dtype = graph.dtypes.get(out, np.dtype(np.float32))
    for node in nodes:
        node.outputs = [hoisted if o == out else o for o in node.outputs]
        node.inputs = [hoisted if i == out else i for i in node.inputs]
    graph.shapes[hoisted] = graph.shapes[back] = shape
    graph.shapes[flat] = (shape[0], shape[1], shape[2] * shape[3])
    graph.dtypes[hoisted] = graph.dtypes[flat] = graph.dtypes[back] = dtype
    views = []
    for key, value, src, dst in (("merge_heads", graph.shapes[flat], hoisted, flat),
                                 ("split_heads", shape, flat, back)):
        const = f"{out}/{key}_shape"
        graph.constants[const] = np.array(value, dtype=np.int64)
        graph.shapes[const], graph.dtypes[const] = (len(value),), np.dtype(np.int64)
        views.append(Node("Reshape", f"{out}/{key}", [src, const], [dst]))
    graph.shapes[out] = tuple(shape[p] for p in perm)
    transpose.inputs, transpose.outputs = [back], [out]
    graph.nodes.remove(transpose)
    at = graph.nodes.index(nodes[-1]) + 1
    graph.nodes[at:at] = [*views, transpose]


def hoist_head_rows(graph: Graph) -> int:
    """Move every row-wise region after a head transpose (perm keeping the last axis, of a head view of a
    projection) before it, with a [B, S, H*Dh] view of its result; returns how many were moved."""
    moved = 0
    producers, consumers = graph.producers(), graph.consumers()
    for transpose in [n for n in graph.nodes if n.op_type == "Transpose"]:
        perm = [int(p) for p in transpose.attrs.get("perm", [])]
        if len(perm) != 4 or perm[3] != 3 or perm == [0, 1, 2, 3] or transpose.outputs[0] in graph.outputs:
            continue
        if not _views_projection(graph, transpose.inputs[0], producers):
            continue
        found = (_region(graph, transpose.outputs[0], consumers)
                 or _region(graph, transpose.outputs[0], consumers, positional=True))
        if found is None:
            continue
        _hoist(graph, transpose, *found)
        producers, consumers = graph.producers(), graph.consumers()  # only after a move: most graphs have none
        moved += 1
    return moved
