"""Split a fused projection that is read only through selections into one projection per selection.

Fused QKV projections are spelled many ways: BLOOM views ``[B, S, H, 3, Dh]`` and Gathers index 0/1/2 of axis 3;
GPT-NeoX views ``[B, S, H, 3*Dh]``, transposes and Slices the last axis; Falcon's multi-query layer views
``[B, S, H+2, Dh]`` and Slices H query heads and one K and one V head; CodeGen views ``[B, S, mp, 3*Dh*H/mp]`` and
Splits the last axis. All of them compute ``MatMul(x, W) (+ b)`` of shape [B, S, N] (or [B, 1, S, N]: DeepSeek's MLA
up-projects its latent viewed as one head, each projection then reads it as [B, S, K]) and then read disjoint sets of
its N columns through movement ops (Reshape, Transpose, ...) ending in one selection (Gather with constant indices,
Slice, Split) per path.

What each selection output T reads is measured, not parsed: the movement and selection nodes are run on an index
tensor standing for the projection output, which says for every element of T the (batch, position, column) it
copies. When T keeps the batch and position axes whole (each along one axis of T, or absent when of size 1) and
reads the same columns ``cols`` at every (batch, position), then T equals ``MatMul(x, W[:, cols]) (+ b[cols])``
viewed (Reshape) and transposed to T's layout. Rewriting every selection that way leaves the fused projection dead,
costs the same MACs (the columns are disjoint) and gives the attention matcher the per-role [B, S, K] projections it
follows Q, K and V back to.
"""

from __future__ import annotations

import numpy as np

from compiler.frontend.graph import Graph, Node
from compiler.frontend.onnx_ops import run_node

__all__ = ["split_selected_projections"]

_MOVE = frozenset({"Reshape", "Transpose", "Squeeze", "Unsqueeze", "Flatten", "Identity"})
_SELECT = frozenset({"Gather", "Slice", "Split"})


def _projection(graph: Graph, producers: dict[str, Node], name: str) -> tuple[Node, Node | None] | None:
    """(MatMul with a constant 2-D weight, its constant bias Add or None) producing ``name``."""
    node = producers.get(name)
    add = None
    if node is not None and node.op_type == "Add":
        consts = [i for i in node.inputs if graph.is_const(i)]
        if len(consts) != 1 or graph.constants[consts[0]].size != graph.shapes[name][-1]:
            return None
        add = node
        node = producers.get(next(i for i in node.inputs if not graph.is_const(i)))
    if node is None or node.op_type != "MatMul" or not graph.is_const(node.inputs[1]):
        return None
    if graph.constants[node.inputs[1]].ndim != 2:
        return None
    return node, add


def _region(graph: Graph, consumers: dict[str, list[Node]], start: str) -> tuple[list[Node], list[str]] | None:
    """Movement nodes from ``start`` up to the first selection on every path, and the selection outputs; None when
    a path leaves without a selection (the whole projection is used somewhere)."""
    nodes: list[Node] = []
    frontier: list[str] = []
    stack = [start]
    while stack:
        name = stack.pop()
        if name in graph.outputs:
            return None
        for user in consumers.get(name, []):
            data_only = all(graph.is_const(i) for i in user.inputs[1:] if i) and user.inputs[0] == name
            if not data_only or user.op_type not in _MOVE | _SELECT or len(nodes) > 32:
                return None
            if any(user is n for n in nodes):
                continue
            nodes.append(user)
            if user.op_type in _SELECT:
                frontier.extend(o for o in user.outputs if o)
            else:
                stack.extend(user.outputs)
    return nodes, frontier


def _rejoined(consumers: dict[str, list[Node]], frontier: list[str], depth: int = 16) -> bool:
    """Whether two selections meet again before a MatMul: a partial rotary embedding slices one projection into
    the rotated and the passed-through dims and concatenates them back, which is not a fused projection."""
    owner: dict[int, int] = {}
    for k, start in enumerate(frontier):
        stack, steps = [start], 0
        while stack and steps < depth:
            for user in consumers.get(stack.pop(), []):
                if user.op_type == "MatMul":
                    continue
                if owner.setdefault(id(user), k) != k:
                    return True
                steps += 1
                stack.extend(user.outputs)
    return False


def _layout(idx: np.ndarray, b: int, s: int, n: int) -> tuple[list[int], np.ndarray] | None:
    """(perm, cols) with ``transpose(T, perm).reshape(b, s, len(cols))`` reading column cols[k] of each row."""
    pos = (idx // n) % s
    bat = idx // (s * n)
    axes: list[int] = []
    for size, comp in ((b, bat), (s, pos)):
        if size == 1:
            continue
        found = [a for a in range(idx.ndim) if idx.shape[a] == size and np.array_equal(
            comp, np.broadcast_to(np.arange(size).reshape([-1 if i == a else 1 for i in range(idx.ndim)]),
                                  idx.shape))]
        if len(found) != 1:
            return None
        axes.append(found[0])
    rows = np.arange(b)[:, None, None] * s + np.arange(s)[None, :, None]
    # The layout as it is first (B = 1 leaves the batch axis free), then with the batch and position axes leading.
    for perm in (list(range(idx.ndim)), axes + [a for a in range(idx.ndim) if a not in axes]):
        flat = idx.transpose(perm).reshape(b, s, -1)
        cols = flat[0, 0] % n
        if np.array_equal(flat, rows * n + cols[None, None, :]):
            return perm, cols
    return None


def _add(graph: Graph, node: Node, shape: tuple[int, ...], dtype: np.dtype) -> Node:
    graph.shapes[node.outputs[0]], graph.dtypes[node.outputs[0]] = shape, dtype
    return node


def _const(graph: Graph, name: str, value: np.ndarray) -> str:
    graph.constants[name], graph.shapes[name], graph.dtypes[name] = value, tuple(value.shape), value.dtype
    return name


def split_selected_projections(graph: Graph) -> int:
    """Rewrite every fused projection of ``graph`` read only through column selections, in place; returns how
    many were rewritten."""
    rewritten = 0
    producers, consumers = graph.producers(), graph.consumers()
    gone: set[int] = set()
    for root in list(graph.nodes):
        if root.op_type not in _SELECT or id(root) in gone:
            continue
        # Walk back from a selection through movement nodes to a projection output.
        name = root.inputs[0]
        while name in producers and producers[name].op_type in _MOVE:
            name = producers[name].inputs[0]
        shape: tuple[int, ...] = graph.shapes.get(name, ())
        proj = _projection(graph, producers, name) if len(shape) >= 3 and set(shape[1:-2]) <= {1} else None
        found = _region(graph, consumers, name) if proj is not None else None
        if proj is None or found is None or len(found[1]) < 2 or _rejoined(consumers, found[1]):
            continue
        mm, add = proj
        region, frontier = found
        if any(len(consumers.get(o, [])) != 1 for o in (mm.outputs + (add.outputs if add else [])) if o != name):
            continue
        dims = list(shape)
        b, s, n = dims[0], dims[-2], dims[-1]  # [B, 1, .., S, N] (DeepSeek's latent viewed [B, 1, S, R])
        values: dict[str, np.ndarray] = {name: np.arange(b * s * n, dtype=np.int64).reshape(shape)}
        for node in sorted(region, key=graph.nodes.index):
            args = [values.get(i, graph.constants.get(i)) if i else None for i in node.inputs]
            values.update(zip(node.outputs, run_node(node.op_type, args, node.attrs, len(node.outputs))))
        layouts = [_layout(values[t], b, s, n) for t in frontier]
        if any(lay is None for lay in layouts) or sum(len(lay[1]) for lay in layouts) > n:  # type: ignore[index]
            continue
        w = graph.constants[mm.inputs[1]]
        bias = graph.constants[next(i for i in add.inputs if graph.is_const(i))].reshape(-1) if add else None
        dtype = graph.dtypes.get(name, np.dtype(np.float32))
        new: list[Node] = []
        x = mm.inputs[0]
        if len(shape) > 3:  # the input viewed as [B, S, K] first, so that each projection is [B, S, k]
            xshape = (b, s, graph.shapes[x][-1])
            vname = _const(graph, f"{mm.name}_rows_shape", np.array(xshape, dtype=np.int64))
            new.append(_add(graph, Node("Reshape", f"{mm.name}_rows", [x, vname], [f"{mm.name}_rows_output"]),
                            xshape, graph.dtypes.get(x, dtype)))
            x = f"{mm.name}_rows_output"
        for j, (t, (perm, cols)) in enumerate(zip(frontier, layouts)):  # type: ignore[misc]
            base = f"{mm.name}_sel{j}"
            k = len(cols)
            cur = f"{base}_output"
            wname = _const(graph, f"{mm.inputs[1]}.sel{j}", np.ascontiguousarray(w[:, cols]))
            new.append(_add(graph, Node("MatMul", base, [x, wname], [cur]), (b, s, k), dtype))
            if bias is not None:
                bname = _const(graph, f"{wname}.bias", np.ascontiguousarray(bias[cols]))
                new.append(_add(graph, Node("Add", f"{base}_bias", [cur, bname], [f"{base}_bias_output"]),
                                (b, s, k), dtype))
                cur = f"{base}_bias_output"
            tshape = graph.shapes[t]
            view = tuple(tshape[p] for p in perm)
            identity = perm == sorted(perm)
            out = t if identity else f"{base}_view"
            sname = _const(graph, f"{base}_view_shape", np.array(view, dtype=np.int64))
            new.append(_add(graph, Node("Reshape", f"{base}_view", [cur, sname], [out]), view, dtype))
            if not identity:
                inverse = [int(i) for i in np.argsort(perm)]
                new.append(_add(graph, Node("Transpose", f"{base}_layout", [out], [t], {"perm": inverse}), tshape,
                                dtype))
        dead = {id(n) for n in region + [mm] + ([add] if add else [])}
        at = min(graph.nodes.index(n) for n in region)
        graph.nodes[at:at] = new
        graph.nodes[:] = [n for n in graph.nodes if id(n) not in dead]
        gone |= dead
        producers, consumers = graph.producers(), graph.consumers()
        rewritten += 1
    return rewritten
