"""A per-head Q/K normalisation (Qwen3, OLMo2, Gemma3: RMSNorm over each head's Dh values) seen as [B, S, H*Dh].

A norm applied after the head transpose ([B, H, S, Dh]: Gemma3) is moved before it first: it normalises each
head's Dh values of each token, so it commutes with a transpose that keeps the last axis; the transpose then
follows the norm, as the exporter's other head chains do.

Such a norm reads the projection viewed as [B, S, H, Dh] and its output goes on to RoPE and the head transpose. The
attention matcher follows Q and K back to a rank-3 [B, S, H*Dh] tensor, and the norm's output has rank 4. Inserting
two views after the norm (Reshape to [B, S, H*Dh], Reshape back) gives the matcher that tensor without changing what
is computed: the norm stays its own op, the attention op reads its output, and both Reshapes are views.
"""

from __future__ import annotations

import numpy as np

from compiler.frontend.graph import Graph, Node
from compiler.frontend.match import Match

__all__ = ["view_head_norm"]


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
    for _ in range(4):  # back through Casts to the view of the projection
        source = producers.get(name)
        if source is None or source.op_type not in ("Cast", "Identity", "Reshape"):
            return False
        name = source.inputs[0]
        if source.op_type == "Reshape":
            break
    if graph.shapes.get(name) != (shape[0], shape[1], shape[2] * shape[3]):
        return False
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
    last = max(nodes, key=lambda n: order[id(n)])
    at = graph.nodes.index(last) + 1
    graph.nodes[at:at] = [merge, split]
    for user in users:
        user.inputs = [back if i == out else i for i in user.inputs]
    producers[flat], producers[back] = merge, split
    consumers[out] = [merge]
    consumers[flat] = [split]
    consumers[back] = users
    order[id(merge)] = order[id(split)] = order[id(last)]
    return True


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
