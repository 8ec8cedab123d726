"""Projections over a grid of tokens ([B, H, W, C]: ViTDet, SAM's image encoder) seen as [B, H*W, C].

An attention over image tokens kept in their 2-D grid applies its QKV projection to [B, H, W, C], then reshapes the
result to [B, H*W, 3, heads, Dh] to split the heads, and merges the heads of A.V back into [B, H, W, C] for its
output projection. The attention matcher (compiler/frontend/attention_match.py) follows Q, K and V back to a rank-3
[B, S, D] projection and A.V forward to one, and a grid of tokens has neither.

A projection acts on the last axis only, so viewing its input as [B, H*W, C] (a Reshape: the order of elements does
not change) and its result back as [B, H, W, N] computes the same tensor. Inserting that pair of views where a grid
projection reads a head merge (its input is a Reshape whose source keeps the leading [B, H, W] axes), and the first
of them where it feeds head splits (its result is only reshaped to [B, H*W, ...]: the splits then read the flat
result), gives the matcher its rank-3 tensors. The MatMul itself (and
its bias Add) is unchanged, and so are its MACs; a grid whose tokens are batch-like (MobileViT's [B, P, N, C], which
reshapes to [B * P, ...]) matches neither condition and is left alone.
"""

from __future__ import annotations

import math

import numpy as np

from compiler.frontend.graph import Graph, Node

__all__ = ["flatten_grid_projections"]


def _bias_add(graph: Graph, consumers: dict[str, list[Node]], out: str) -> Node | None:
    """The Add of a constant bias that is the only reader of ``out``, if there is one."""
    users = consumers.get(out, [])
    if len(users) != 1 or users[0].op_type != "Add" or out in graph.outputs:
        return None
    add = users[0]
    others = [i for i in add.inputs if i != out]
    return add if len(others) == 1 and graph.is_const(others[0]) and graph.constants[others[0]].ndim <= 1 else None


def _feeds_head_split(graph: Graph, consumers: dict[str, list[Node]], out: str, lead: tuple[int, ...]) -> bool:
    """Whether every reader of ``out`` is a Reshape to [B, prod(grid), ...]."""
    users = consumers.get(out, [])
    want = (lead[0], math.prod(lead[1:]))
    return bool(users) and out not in graph.outputs and all(
        u.op_type == "Reshape" and u.inputs[0] == out and graph.shapes.get(u.outputs[0], ())[:2] == want
        for u in users)


def _reads_head_merge(graph: Graph, producers: dict[str, Node], x: str, lead: tuple[int, ...]) -> bool:
    """Whether ``x`` is a Reshape of a tensor that keeps the leading [B, grid...] axes (heads merged behind them)."""
    node = producers.get(x)
    if node is None or node.op_type != "Reshape":
        return False
    source = graph.shapes.get(node.inputs[0], ())
    return len(source) > len(lead) and source[:len(lead)] == lead


def _view(graph: Graph, name: str, source: str, shape: tuple[int, ...], out: str = "") -> Node:
    """A Reshape node ``name`` of ``source`` to ``shape`` (its shape a new constant) writing ``out`` (default: a new
    name), its output's facts recorded."""
    target, out = f"{name}_shape", out or f"{name}_output_0"
    graph.constants[target] = np.array(shape, dtype=np.int64)
    graph.shapes[target], graph.dtypes[target] = (len(shape),), np.dtype(np.int64)
    graph.shapes[out], graph.dtypes[out] = shape, graph.dtypes.get(source, np.dtype(np.float32))
    return Node("Reshape", name, [source, target], [out])


def flatten_grid_projections(graph: Graph) -> int:
    """View every grid projection that feeds a head split or reads a head merge as [B, H*W, C] (module docstring);
    returns how many were rewritten."""
    producers, consumers = graph.producers(), graph.consumers()
    rewritten = 0
    for mm in list(graph.nodes):
        if mm.op_type != "MatMul" or not graph.is_const(mm.inputs[1]) or graph.constants[mm.inputs[1]].ndim != 2:
            continue
        x, y = mm.inputs[0], mm.outputs[0]
        shape = graph.shapes.get(x, ())
        if len(shape) < 4 or graph.shapes.get(y, ())[:-1] != shape[:-1]:
            continue
        lead = shape[:-1]
        add = _bias_add(graph, consumers, y)
        last = add.outputs[0] if add is not None else y
        splits = _feeds_head_split(graph, consumers, last, lead)
        if not (splits or _reads_head_merge(graph, producers, x, lead)):
            continue
        flat = (lead[0], math.prod(lead[1:]))
        before = _view(graph, f"{mm.name}/grid_view", x, (*flat, shape[-1]))
        out_shape, dtype = graph.shapes[last], graph.dtypes.get(last, np.dtype(np.float32))
        mm.inputs[0] = before.outputs[0]
        mm.outputs[0] = f"{y}_grid"  # the projection and its bias now write [B, H*W, N] under new names
        graph.shapes[mm.outputs[0]], graph.dtypes[mm.outputs[0]] = (*flat, out_shape[-1]), dtype
        if add is not None:
            add.inputs[add.inputs.index(y)] = mm.outputs[0]
            add.outputs[0] = f"{last}_grid"
            graph.shapes[add.outputs[0]], graph.dtypes[add.outputs[0]] = (*flat, out_shape[-1]), dtype
        graph.nodes.insert(graph.nodes.index(mm), before)
        if splits:  # each head split reshapes the flat result as it did the grid (the same elements in order)
            for user in consumers[last]:
                user.inputs[0] = (add or mm).outputs[0]
        else:  # the original name keeps its [B, H, W, N] shape for every reader
            after = _view(graph, f"{mm.name}/grid_unview", (add or mm).outputs[0], out_shape, out=last)
            graph.nodes.insert(graph.nodes.index(add if add is not None else mm) + 1, after)
        rewritten += 1
    return rewritten
