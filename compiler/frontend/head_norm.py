"""A per-head Q/K normalisation (Qwen3, OLMo2, Gemma3: RMSNorm over each head's Dh values) seen as [B, S, H*Dh].

A norm applied after the head transpose ([B, H, S, Dh]: Gemma3) is moved before it first: it normalises each
head's Dh values of each token, so it commutes with a transpose that keeps the last axis; the transpose then
follows the norm, as the exporter's other head chains do.

Such a norm reads the projection viewed as [B, S, H, Dh] and its output goes on to RoPE and the head transpose. The
attention matcher follows Q and K back to a rank-3 [B, S, H*Dh] tensor, and the norm's output has rank 4. Inserting
two views after the norm (Reshape to [B, S, H*Dh], Reshape back) gives the matcher that tensor without changing what
is computed: the norm stays its own op, the attention op reads its output, and both Reshapes are views.

A per-head norm with per-head weights (StableLM's qk_layernorm: ``torch.split`` of [B, H, S, Dh] into heads, one
LayerNorm each, ``torch.cat`` back) is the same case spelt as Split -> one norm per piece -> Concat after the head
transpose: `view_split_head_norms` moves the transpose after the Concat (each piece's norm still normalises its own
Dh values, so the pieces and their norms are the same ops on the untransposed layout) and inserts the view there.
Every norm stays its own op with its own weights.
"""

from __future__ import annotations

import numpy as np

from compiler.frontend.graph import Graph, Node
from compiler.frontend.match import Match

__all__ = ["view_head_norm", "view_split_head_norms"]


def view_head_norm(graph: Graph, match: Match | Node, producers: dict[str, Node], consumers: dict[str, list[Node]],
                   order: dict[int, int]) -> bool:
    """Insert the [B, S, H*Dh] view after a norm (a recognised one, or an ONNX LayerNormalization node) over the
    last axis of a rank-4 view of a rank-3 projection; producers, consumers and order are kept current. Returns
    whether it did."""
    if isinstance(match, Node):
        out, name, nodes = match.outputs[0], match.inputs[0], [match]
    else:
        _after_head_transpose(graph, match, producers, consumers, order)
        out, name, nodes = match.output, str(match.operands.get("input")), match.nodes
    shape = graph.shapes.get(out, ())
    if len(shape) != 4 or out in graph.outputs:
        return False
    users = consumers.get(out, [])
    if (len(users) == 1 and users[0].op_type == "Reshape"
            and graph.shapes.get(users[0].outputs[0]) == (shape[0], shape[1], shape[2] * shape[3])):
        return False  # already viewed (compiler/frontend/head_rows.py moved it before the head transpose)
    if not _views_projection(graph, name, shape, producers):
        return False
    _insert_view(graph, out, max(nodes, key=lambda n: order[id(n)]), producers, consumers, order)
    return True


def _views_projection(graph: Graph, name: str, shape: tuple[int, ...], producers: dict[str, Node]) -> bool:
    """Whether ``name`` is (through Casts) a Reshape of a rank-3 [B, S, H*Dh] tensor to [B, S, H, Dh] = ``shape``:
    a projection split into heads, the only place a [B, S, H*Dh] view is worth inserting."""
    for _ in range(4):
        source = producers.get(name)
        if source is None or source.op_type not in ("Cast", "Identity", "Reshape"):
            return False
        name = source.inputs[0]
        if source.op_type == "Reshape":
            break
    return graph.shapes.get(name) == (shape[0], shape[1], shape[2] * shape[3])


def view_split_head_norms(graph: Graph, concat: Node, norms: dict[str, tuple[str, list[Node]]],
                          producers: dict[str, Node], consumers: dict[str, list[Node]], order: dict[int, int]) -> bool:
    """Give a Concat of per-piece norms of a Split of a head transpose a [B, S, H*Dh] view (module docstring).

    ``norms`` maps a recognised norm's output to its input and nodes; an ONNX LayerNormalization over the last axis
    counts as one too. Applies when the Concat joins, in order, one norm of each Split output along the Split's
    axis, nothing else reads the pieces, the norms or the Transpose, the norms' constants are per-channel (rank <=
    1: a constant laid out per head would not follow the move) and the Transpose keeps the last axis of a head view
    of a projection. Producers, consumers and order are kept current; returns whether it applied."""
    out = concat.outputs[0]
    shape = graph.shapes.get(out, ())
    if len(shape) != 4 or out in graph.outputs or not concat.inputs:
        return False
    axis = int(concat.attrs.get("axis", 0)) % 4
    groups: list[tuple[str, list[Node]]] = []
    for name in concat.inputs:
        node = producers.get(name)
        if name in norms:
            groups.append(norms[name])
        elif (node is not None and node.op_type == "LayerNormalization"
              and int(node.attrs.get("axis", -1)) in (-1, 3)):
            groups.append((node.inputs[0], [node]))
        else:
            return False
    split = producers.get(groups[0][0])
    if split is None or split.op_type != "Split" or int(split.attrs.get("axis", 0)) % 4 != axis or axis == 3:
        return False
    if [source for source, _ in groups] != split.outputs:
        return False
    inside = {id(n) for _, nodes in groups for n in nodes}
    for (source, nodes), name in zip(groups, concat.inputs):
        if not all(id(c) in inside for c in consumers.get(source, [])) or consumers.get(name) != [concat]:
            return False
        if any(graph.constants[i].ndim > 1 for n in nodes for i in n.inputs if i in graph.constants):
            return False
    transpose = producers.get(split.inputs[0])
    if transpose is None or transpose.op_type != "Transpose" or consumers.get(split.inputs[0]) != [split]:
        return False
    perm = [int(p) for p in transpose.attrs.get("perm", [])]
    source = transpose.inputs[0]
    if len(perm) != 4 or perm[3] != 3 or not _views_projection(graph, source, graph.shapes[source], producers):
        return False
    inverse = [int(i) for i in np.argsort(perm)]
    moved = f"{out}/before_head_transpose"
    for node in [split, *(n for _, nodes in groups for n in nodes)]:  # their tensors, in the untransposed layout
        for o in node.outputs:
            if len(graph.shapes.get(o, ())) == 4:
                graph.shapes[o] = tuple(graph.shapes[o][i] for i in inverse)
    producers.pop(split.inputs[0], None)
    consumers.pop(split.inputs[0], None)
    split.inputs[0] = source
    split.attrs["axis"] = concat.attrs["axis"] = perm[axis]
    graph.shapes[moved] = tuple(shape[i] for i in inverse)
    graph.dtypes[moved] = graph.dtypes.get(out, np.dtype(np.float32))
    concat.outputs = [moved]
    transpose.inputs, transpose.outputs = [moved], [out]
    # The recogniser iterates graph.nodes while this runs: the Transpose leaves a slot before the Concat, so the
    # node after the Concat (the first inserted view, never a matcher's anchor) is the one the loop steps over.
    graph.nodes.remove(transpose)
    graph.nodes.insert(graph.nodes.index(concat) + 1, transpose)
    order[id(transpose)] = order[id(concat)]
    producers[moved], producers[out] = concat, transpose
    consumers[source] = [split]
    consumers[moved] = [transpose]
    _insert_view(graph, moved, concat, producers, consumers, order)
    return True


def _insert_view(graph: Graph, out: str, last: Node, producers: dict[str, Node], consumers: dict[str, list[Node]],
                 order: dict[int, int]) -> None:
    """Insert Reshape ``out`` [B, S, H, Dh] -> [B, S, H*Dh] -> [B, S, H, Dh] right after ``last`` (the node that
    finishes computing ``out``) and point the readers of ``out`` at the second view."""
    shape = graph.shapes[out]
    users = consumers.get(out, [])
    flat, back = f"{out}/heads_merged", f"{out}/heads_split"
    dims = {}
    for key, value in (("flat", (shape[0], shape[1], shape[2] * shape[3])), ("back", shape)):
        dims[key] = f"{out}/{key}_shape"
        graph.constants[dims[key]] = np.array(value, dtype=np.int64)
        graph.shapes[dims[key]], graph.dtypes[dims[key]] = (4 if key == "back" else 3,), np.dtype(np.int64)
    dtype = graph.dtypes.get(out, np.dtype(np.float32))
    graph.shapes[flat], graph.dtypes[flat] = (shape[0], shape[1], shape[2] * shape[3]), dtype
    graph.shapes[back], graph.dtypes[back] = shape, dtype
    merge = Node("Reshape", f"{out}/merge_heads", [out, dims["flat"]], [flat])
    split = Node("Reshape", f"{out}/split_heads", [flat, dims["back"]], [back])
    at = graph.nodes.index(last) + 1
    graph.nodes[at:at] = [merge, split]
    for user in users:
        user.inputs = [back if i == out else i for i in user.inputs]
    producers[flat], producers[back] = merge, split
    consumers[out] = [merge]
    consumers[flat] = [split]
    consumers[back] = users
    order[id(merge)] = order[id(split)] = order[id(last)]


def _after_head_transpose(graph: Graph, match: Match, producers: dict[str, Node], consumers: dict[str, list[Node]],
                          order: dict[int, int]) -> str | None:
    """If the norm ``match`` reads (through Casts) a Transpose of a head view that keeps the last axis, run the
    norm on the Transpose's input and the Transpose on the norm's output instead; the norm's new output name (the
    Transpose now produces the old one), or None when it does not apply."""
    name = str(match.operands.get("input"))
    chain: list[Node] = []
    for _ in range(3):
        node = producers.get(name)
        if node is None or node.op_type not in ("Cast", "Identity", "Transpose"):
            return None
        if len(consumers.get(name, [])) != 1 and name != match.operands.get("input"):
            return None
        if node.op_type == "Transpose":
            break
        chain.append(node)
        name = node.inputs[0]
    else:
        return None
    perm = [int(p) for p in node.attrs.get("perm", [])]
    out = match.output
    inside = {id(n) for n in chain + match.nodes}
    readers = consumers.get(node.outputs[0], [])
    if (len(perm) != 4 or perm[-1] != 3 or not all(id(r) in inside for r in readers) or out in graph.outputs
            or len(graph.shapes.get(out, ())) != 4):
        return None
    if any(graph.constants[i].ndim > 1 for n in match.nodes for i in n.inputs if i in graph.constants):
        return None  # a constant laid out for the transposed axes (a per-head gamma) would not follow the move
    inverse = [int(i) for i in np.argsort(perm)]
    source = node.inputs[0]
    for reader in readers:
        reader.inputs = [source if i == node.outputs[0] else i for i in reader.inputs]
    if match.operands.get("input") == node.outputs[0]:
        match.operands["input"] = source
    for n in chain + match.nodes:  # the norm's tensors, now in the Transpose's input layout
        for o in n.outputs:
            if len(graph.shapes.get(o, ())) == 4:
                graph.shapes[o] = tuple(graph.shapes[o][i] for i in inverse)
    moved = f"{out}/before_head_transpose"
    graph.shapes[moved], graph.dtypes[moved] = graph.shapes[out], graph.dtypes.get(out, np.dtype(np.float32))
    for n in match.nodes:
        n.outputs = [moved if o == out else o for o in n.outputs]
    graph.shapes[out] = tuple(graph.shapes[moved][p] for p in perm)
    node.inputs, node.outputs = [moved], [out]
    graph.nodes.remove(node)
    last = max(match.nodes, key=lambda n: order[id(n)])
    graph.nodes.insert(graph.nodes.index(last) + 1, node)
    order[id(node)] = order[id(last)]
    match.output = moved
    producers[moved] = producers[out]
    producers[out] = node
    consumers[source] = [c for c in consumers.get(source, []) if c is not node] + readers
    consumers[moved] = [node]
    return moved
