"""Lower inference ``BatchNormalization`` nodes to a per-channel Mul and Add before recognition.

With constant statistics and parameters, BatchNormalization is ``x * a + b`` per channel (axis 1), where
``a = scale / sqrt(var + epsilon)`` and ``b = B - mean * a``: two element-wise ops with constants broadcast over the
channel axis (a ``[C, 1, ...]`` shape), which the dialect and every target already run and price. Where a Linear or
Conv alone feeds it, it is folded into that layer's weights instead (`_fold_into_producer`). LeViT follows each Linear
and Conv with one. A training-mode node, or statistics that are not constants, raise one `InputError` line
naming the node.
"""

from __future__ import annotations

import numpy as np

from compiler.frontend.graph import Graph, Node
from hw.errors import InputError

__all__ = ["lower_batchnorms"]


def _lower(graph: Graph, node: Node, producers: dict[str, Node], consumers: dict[str, list[Node]]) -> list[Node]:
    x = node.inputs[0]
    params = node.inputs[1:5]
    if (len(params) != 4 or not all(graph.is_const(p) for p in params) or node.attrs.get("training_mode", 0)
            or len([o for o in node.outputs if o]) != 1):
        raise InputError(f"{graph.source}: unsupported op BatchNormalization (node '{node.name}'): only inference "
                         "form with constant scale, bias, mean and variance is supported")
    scale, bias, mean, var = (graph.constants[p].astype(np.float64).reshape(-1) for p in params)
    eps = float(node.attrs.get("epsilon", 1e-5))
    a = scale / np.sqrt(var + eps)
    b = bias - mean * a
    rank = len(graph.shapes[x])
    shape = (a.size,) + (1,) * max(rank - 2, 0)
    dtype = graph.dtypes.get(x, np.dtype(np.float32))
    folded = _fold_into_producer(graph, node, a, b, dtype, producers, consumers)
    if folded is not None:
        return folded
    names = []
    for what, value in (("scale", a), ("shift", b)):
        name = f"{node.name}/folded_{what}"
        graph.constants[name] = value.reshape(shape).astype(dtype)
        graph.shapes[name], graph.dtypes[name] = shape, dtype
        names.append(name)
    scaled = f"{node.name}/scaled_output_0"
    graph.shapes[scaled], graph.dtypes[scaled] = graph.shapes[x], dtype
    return [Node("Mul", f"{node.name}/scale", [x, names[0]], [scaled]),
            Node("Add", node.name, [scaled, names[1]], [node.outputs[0]])]


def _fold_into_producer(graph: Graph, node: Node, a: np.ndarray, b: np.ndarray, dtype: np.dtype,
                        producers: dict[str, Node], consumers: dict[str, list[Node]]) -> list[Node] | None:
    """Fold the normalisation into the weights of the Linear or Conv that feeds it alone, as deployed LeViT does:
    a MatMul with a constant [K, C] weight (through a Flatten / Reshape that keeps C last, BatchNorm1d on [B*N, C])
    gets columns ``W * a`` and a bias Add of ``b`` right after it; a Conv gets output channels ``W * a`` and bias
    ``bias * a + b``. The same tensor results, the GEMM keeps its MACs, and a fused projection stays recognisable.
    Returns the nodes replacing the BatchNormalization (the moved view, or none), or None when it does not apply.
    ``producers`` / ``consumers`` are the graph's before any rewrite: a fold renames only its own Linear / Conv
    output, so a BatchNorm reading another one's output sees that BatchNorm as its producer and is not folded."""
    x = node.inputs[0]
    prod = producers.get(x)
    view = None
    if prod is not None and prod.op_type in ("Flatten", "Reshape") and len(graph.shapes[x]) == 2:
        if graph.shapes[prod.inputs[0]][-1:] != graph.shapes[x][-1:] or len(consumers.get(x, [])) != 1:
            return None
        view, prod = prod, producers.get(prod.inputs[0])
    if prod is None or len(consumers.get(prod.outputs[0], [])) != 1 or prod.outputs[0] in graph.outputs:
        return None
    if prod.op_type == "MatMul" and graph.is_const(prod.inputs[1]) and graph.constants[prod.inputs[1]].ndim == 2 \
            and graph.constants[prod.inputs[1]].shape[1] == a.size:
        w = graph.constants[prod.inputs[1]]
        wname = f"{node.name}/folded_weight"
        graph.constants[wname] = (w * a).astype(w.dtype)
        graph.shapes[wname], graph.dtypes[wname] = w.shape, w.dtype
        prod.inputs[1] = wname
        bname = f"{node.name}/folded_bias"
        graph.constants[bname] = b.astype(dtype)
        graph.shapes[bname], graph.dtypes[bname] = b.shape, dtype
        biased = f"{node.name}/biased_output_0" if view is not None else node.outputs[0]
        graph.shapes[biased], graph.dtypes[biased] = graph.shapes[prod.outputs[0]], dtype
        add = Node("Add", node.name, [prod.outputs[0], bname], [biased])
        if view is None:
            return [add]
        view.inputs[0], view.outputs[0] = biased, node.outputs[0]
        return [add, view]  # the view moves after the bias Add (lower_batchnorms drops it from its old place)
    if prod.op_type == "Conv" and view is None and graph.is_const(prod.inputs[1]) \
            and graph.constants[prod.inputs[1]].shape[0] == a.size \
            and (len(prod.inputs) < 3 or not prod.inputs[2] or graph.is_const(prod.inputs[2])):
        w = graph.constants[prod.inputs[1]]
        old = graph.constants[prod.inputs[2]] if len(prod.inputs) > 2 and prod.inputs[2] else np.zeros(a.size)
        wname, bname = f"{node.name}/folded_weight", f"{node.name}/folded_bias"
        graph.constants[wname] = (w * a.reshape((-1,) + (1,) * (w.ndim - 1))).astype(w.dtype)
        graph.constants[bname] = (old.astype(np.float64) * a + b).astype(w.dtype)
        for name in (wname, bname):
            graph.shapes[name], graph.dtypes[name] = graph.constants[name].shape, graph.constants[name].dtype
        prod.inputs[1:] = [wname, bname]
        prod.outputs[0] = node.outputs[0]
        return []
    return None


def lower_batchnorms(graph: Graph) -> int:
    """Replace every BatchNormalization of ``graph`` in place; returns how many were lowered."""
    if not any(n.op_type == "BatchNormalization" for n in graph.nodes):
        return 0
    nodes: list[Node] = []
    lowered = 0
    producers, consumers = graph.producers(), graph.consumers()
    for node in graph.nodes:
        if node.op_type == "BatchNormalization":
            new = _lower(graph, node, producers, consumers)
            nodes = [n for n in nodes if not any(n is m for m in new)] + new
            lowered += 1
        else:
            nodes.append(node)
    graph.nodes[:] = nodes
    return lowered
