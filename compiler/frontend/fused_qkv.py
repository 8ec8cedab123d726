"""Split a fused QKV projection (timm / M3ViT style) into three projections, so attention is recognised.

timm's ``qkv(x).reshape(B, T, 3, H, Dh).permute(2, 0, 3, 1, 4)`` followed by an unbind exports as
MatMul(x, W[D, 3D]) (+ bias) -> Reshape [B, T, 3, H, Dh] -> Transpose [2, 0, 3, 1, 4] -> Split(axis 0) -> 3 x Squeeze.
The attention matcher follows q, k and v back through head-split chains to [B, S, D] tensors, which this spelling
does not have. Rewriting it as three MatMuls with the column thirds of W (and of the bias), each followed by
Reshape [B, T, H, Dh] -> Transpose [0, 2, 1, 3], computes exactly the same three tensors (the reshape puts the
``3`` before the heads, so q is columns [0, D), k [D, 2D), v [2D, 3D)) and costs the same MACs. ViTDet and SAM's
image encoder merge batch and heads after the permute (a Reshape to [3, B*H, T, Dh] before the split): each third
then ends with the same Reshape to [B*H, T, Dh].
"""

from __future__ import annotations

import numpy as np

from compiler.frontend.graph import Graph, Node

__all__ = ["split_fused_qkv"]


def _single_user(consumers: dict[str, list[Node]], name: str, graph: Graph) -> Node | None:
    users = consumers.get(name, [])
    return users[0] if len(users) == 1 and name not in graph.outputs else None


def _unit_slice(graph: Graph, node: Node) -> int | None:
    """``i`` if ``node`` is a Slice of element ``i`` (to ``i + 1``, step 1) along axis 0, else None."""
    if node.op_type != "Slice" or not all(graph.is_const(i) for i in node.inputs[1:] if i):
        return None
    starts, ends = (graph.constants[node.inputs[k]].reshape(-1) for k in (1, 2))
    axes = graph.constants[node.inputs[3]].reshape(-1) if len(node.inputs) > 3 and node.inputs[3] else [0]
    steps = graph.constants[node.inputs[4]].reshape(-1) if len(node.inputs) > 4 and node.inputs[4] else [1]
    if len(starts) != 1 or list(axes) != [0] or list(steps) != [1] or int(ends[0]) != int(starts[0]) + 1:
        return None
    return int(starts[0])


def _slices_as_splits(graph: Graph) -> None:
    """Three unit Slices along axis 0 of a [3, ...] tensor (the dynamo exporter's ``unbind(0)``) become the one
    Split the legacy exporter writes: the same three tensors."""
    for name, users in graph.consumers().items():
        shape = graph.shapes.get(name, ())
        if not shape or shape[0] != 3 or len(users) != 3:
            continue
        index = {_unit_slice(graph, u): u for u in users}
        if sorted(k for k in index if k is not None) != [0, 1, 2]:
            continue
        first = min(graph.nodes.index(u) for u in users)
        split = Node("Split", f"{index[0].name}_split", [name], [index[i].outputs[0] for i in range(3)], {"axis": 0})
        gone = {id(u) for u in users}
        graph.nodes[:] = [n for n in graph.nodes if id(n) not in gone]
        graph.nodes.insert(first, split)


def split_fused_qkv(graph: Graph) -> int:
    """Rewrite every fused QKV split of ``graph`` in place; returns how many were rewritten."""
    rewritten = 0
    _slices_as_splits(graph)
    producers, consumers = graph.producers(), graph.consumers()
    for split in list(graph.nodes):
        if split.op_type != "Split" or int(split.attrs.get("axis", 0)) != 0 or len(split.outputs) != 3:
            continue
        trans = producers.get(split.inputs[0])
        merge = None  # ViTDet / SAM merge batch and heads after the permute: Reshape to [3, B*H, T, Dh]
        if trans is not None and trans.op_type == "Reshape" and len(graph.shapes.get(split.inputs[0], ())) == 4:
            merge, trans = trans, producers.get(trans.inputs[0])
        if trans is None or trans.op_type != "Transpose" or list(trans.attrs.get("perm", [])) != [2, 0, 3, 1, 4]:
            continue
        resh = producers.get(trans.inputs[0])
        shape = graph.shapes.get(trans.inputs[0], ())
        if resh is None or resh.op_type != "Reshape" or len(shape) != 5 or shape[2] != 3:
            continue
        squeezes = [_single_user(consumers, o, graph) for o in split.outputs]
        if any(s is None or s.op_type != "Squeeze" for s in squeezes):
            continue
        src = resh.inputs[0]
        add = producers.get(src)
        bias = None
        mm = add
        if add is not None and add.op_type == "Add":
            other = [i for i in add.inputs if graph.is_const(i)]
            mm_out = [i for i in add.inputs if not graph.is_const(i)]
            if len(other) != 1 or len(mm_out) != 1:
                continue
            bias = graph.constants[other[0]].reshape(-1)
            mm = producers.get(mm_out[0])
        if mm is None or mm.op_type != "MatMul" or not graph.is_const(mm.inputs[1]):
            continue
        w = graph.constants[mm.inputs[1]]
        b, t, _, heads, dh = shape
        d = heads * dh
        if w.ndim != 2 or w.shape[1] != 3 * d or (bias is not None and bias.size != 3 * d):
            continue
        if merge is not None and graph.shapes.get(merge.outputs[0]) != (3, b * heads, t, dh):
            continue
        chain = [n for n in (mm, add if bias is not None else None, resh, trans, merge) if n is not None]
        if any(_single_user(consumers, n.outputs[0], graph) is None for n in chain):
            continue
        x = mm.inputs[0]
        dtype = graph.dtypes.get(mm.outputs[0], np.dtype(np.float32))
        new: list[Node] = []
        for i, (sq, role) in enumerate(zip(squeezes, "qkv")):
            assert sq is not None
            base = f"{mm.name}_{role}"
            wname = f"{mm.inputs[1]}.{role}"
            graph.constants[wname] = np.ascontiguousarray(w[:, i * d:(i + 1) * d])
            graph.shapes[wname], graph.dtypes[wname] = (w.shape[0], d), w.dtype
            cur = f"{base}_output"
            new.append(Node("MatMul", base, [x, wname], [cur]))
            graph.shapes[cur], graph.dtypes[cur] = (b, t, d), dtype
            if bias is not None:
                bname = f"{wname}.bias"
                graph.constants[bname] = np.ascontiguousarray(bias[i * d:(i + 1) * d])
                graph.shapes[bname], graph.dtypes[bname] = (d,), bias.dtype
                out = f"{base}_bias_output"
                new.append(Node("Add", f"{base}_bias", [cur, bname], [out]))
                graph.shapes[out], graph.dtypes[out] = (b, t, d), dtype
                cur = out
            sname = f"{base}_heads_shape"
            graph.constants[sname] = np.array([b, t, heads, dh], dtype=np.int64)
            graph.shapes[sname], graph.dtypes[sname] = (4,), np.dtype(np.int64)
            out = f"{base}_heads"
            new.append(Node("Reshape", f"{base}_split_heads", [cur, sname], [out]))
            graph.shapes[out], graph.dtypes[out] = (b, t, heads, dh), dtype
            if merge is None:
                new.append(Node("Transpose", f"{base}_to_bhsd", [out], [sq.outputs[0]], {"perm": [0, 2, 1, 3]}))
                continue
            heads_out = f"{base}_bhsd"
            new.append(Node("Transpose", f"{base}_to_bhsd", [out], [heads_out], {"perm": [0, 2, 1, 3]}))
            graph.shapes[heads_out], graph.dtypes[heads_out] = (b, heads, t, dh), dtype
            mname = f"{base}_merge_shape"
            graph.constants[mname] = np.array([b * heads, t, dh], dtype=np.int64)
            graph.shapes[mname], graph.dtypes[mname] = (3,), np.dtype(np.int64)
            new.append(Node("Reshape", f"{base}_merge_heads", [heads_out, mname], [sq.outputs[0]]))
        dead = {id(n) for n in chain + [split] + squeezes}  # type: ignore[operator]
        at = graph.nodes.index(squeezes[0])  # type: ignore[arg-type]
        graph.nodes[at:at] = new
        graph.nodes[:] = [n for n in graph.nodes if id(n) not in dead]
        producers, consumers = graph.producers(), graph.consumers()
        rewritten += 1
    return rewritten
