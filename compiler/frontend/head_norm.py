"""A per-head Q/K normalisation (Qwen3, OLMo2, Gemma3: RMSNorm over each head's Dh values) seen as [B, S, H*Dh].

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
