"""Nodes an attention match adds to the graph so the attention op reads [B, S, D] operands.

The attention matcher (compiler/frontend/attention_match.py) records what it found rather than rewriting while it
matches: several additive masks (summed into one operand), a constant added after the head split (moved onto the
projection), a sequence- or channels-first source (transposed to batch-first), rotary embeddings on Q and K
(re-emitted on the projection, compiler/frontend/rope.py) and a per-head scale of the scores (a Mul of Q's heads);
learned constant queries become one merged [B, Sq, H*Dh] constant (`constant_queries`).
Each inserted node computes, on the operand, what the replaced nodes computed after the head split.
"""

from __future__ import annotations

import numpy as np

from compiler.frontend.graph import Graph, Node
from compiler.frontend.match import Match
from compiler.frontend.rope import materialize_rope

__all__ = ["constant_queries", "materialize_operands"]


def _sum_masks(graph: Graph, parts: list[str], name: str) -> str:
    """Insert Adds summing additive masks (one broadcast [.., Sq, Sk] operand) after the last of their producers."""
    at = max((i + 1 for i, n in enumerate(graph.nodes) if any(p in n.outputs for p in parts)), default=0)
    total = parts[0]
    for i, part in enumerate(parts[1:]):
        out = f"{name}_{i}_output_0"
        shape = np.broadcast_shapes(graph.shapes[total], graph.shapes[part])
        graph.shapes[out] = tuple(shape)
        graph.dtypes[out] = np.result_type(graph.dtypes.get(total, np.float32), graph.dtypes.get(part, np.float32))
        graph.nodes.insert(at + i, Node("Add", f"{name}_{i}", [total, part], [out]))
        total = out
    return total


def _to_batch_first(graph: Graph, source: str, perm: tuple[int, int, int], name: str) -> str:
    """Insert the Transpose ``perm`` of ``source`` ([S, B, D] or [B, D, S]) to [B, S, D] right after its producer
    (a Reshape when the order of elements does not change: a batch of one, sequence-first)."""
    shape = graph.shapes[source]
    new = tuple(shape[p] for p in perm)
    out = f"{name}_output_0"
    graph.shapes[out], graph.dtypes[out] = new, graph.dtypes.get(source, np.dtype(np.float32))
    view = [p for p in perm if shape[p] != 1] == sorted(p for p in perm if shape[p] != 1)
    node = Node("Reshape" if view else "Transpose", name, [source], [out])
    if view:
        target = f"{name}_shape"
        graph.constants[target] = np.array(new, dtype=np.int64)
        graph.shapes[target], graph.dtypes[target] = (3,), np.dtype(np.int64)
        node.inputs.append(target)
    else:
        node.attrs["perm"] = list(perm)
    at = next((i + 1 for i, n in enumerate(graph.nodes) if source in n.outputs), 0)
    graph.nodes.insert(at, node)
    return out


def _add_bias(graph: Graph, source: str, bias: np.ndarray, name: str, op: str = "Add") -> str:
    """Insert ``source + bias`` (a constant found after the head split, moved onto the projection) right after the
    producer of ``source``; with ``op`` "Mul", ``source * bias`` (a per-head scale of the scores, on Q)."""
    dtype = graph.dtypes.get(source, np.dtype(np.float32))
    const, out = f"{name}_value", f"{name}_output_0"
    graph.constants[const] = bias.astype(dtype)
    graph.shapes[const], graph.dtypes[const] = bias.shape, dtype
    graph.shapes[out], graph.dtypes[out] = graph.shapes[source], dtype
    at = next((i + 1 for i, n in enumerate(graph.nodes) if source in n.outputs), 0)
    graph.nodes.insert(at, Node(op, name, [source, const], [out]))
    return out


def materialize_operands(graph: Graph, match: Match) -> None:
    """Insert the nodes ``match`` (an attention match; other kinds pass through) recorded and point its operands at
    their outputs."""
    if match.kind != "attention":
        return
    base = match.nodes[0].name.rsplit("/", 1)[0]
    if len(match.props.get("mask_parts", ())) > 1:
        match.operands["mask"] = _sum_masks(graph, match.props["mask_parts"], f"{base}/mask_sum")
    for role, bias in match.props.get("biases", {}).items():
        if bias is not None:
            match.operands[role] = _add_bias(graph, match.operand(role), bias, f"{base}/{role}_bias")
    for role, layout in match.props.get("layouts", {}).items():
        if layout:
            match.operands[role] = _to_batch_first(graph, match.operand(role), layout,
                                                   f"{base}/{role}_batch_first")
    ropes = [(role, rope) for role, rope in match.props.get("rope", {}).items() if rope is not None]
    for role, rope in ropes:
        match.operands[role] = materialize_rope(graph, match.operands[role], rope,  # type: ignore[arg-type]
                                                match.props["head_dim"], f"{base}/rope_{role}")
    if match.props.get("q_scale") is not None:  # last: it scales the rotated, batch-first Q, as it scaled QK^T
        match.operands["q"] = _add_bias(graph, match.operand("q"), match.props["q_scale"], f"{base}/q_head_scale",
                                        "Mul")


def constant_queries(g: Graph, q_head: str, batch: int, heads: int, sq: int, dh: int):
    """The attention matcher's role fit (attention_match.py `_fit_role`) for a constant Q operand: learned
    queries, the same for every sample (DETR's first decoder layer, whose queries are its query embeddings alone;
    attention-pooling heads with a learned probe). The constant ([1 or B, H, Sq, Dh], or bmm-style [H or B*H, Sq,
    Dh]) merged back to the [B, Sq, H*Dh] source an attention op reads, as a new constant; None when its shape is
    not one of those."""
    value = np.asarray(g.constants[q_head])
    if value.ndim == 3 and value.shape[0] in (heads, batch * heads):
        value = value.reshape(-1, heads, *value.shape[1:])
    if value.ndim != 4 or value.shape[0] not in (1, batch) or value.shape[1:] != (heads, sq, dh):
        return None
    merged = np.broadcast_to(value.transpose(0, 2, 1, 3).reshape(value.shape[0], sq, heads * dh),
                             (batch, sq, heads * dh))
    name = f"{q_head}/merged_heads"
    g.constants[name] = np.ascontiguousarray(merged)
    g.shapes[name], g.dtypes[name] = merged.shape, g.dtypes.get(q_head, merged.dtype)
    return name, [], 1.0, None, None, None
