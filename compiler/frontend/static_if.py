"""An ``If`` whose condition folds to a constant, replaced by the branch it always takes.

Exporters write shape-dependent choices as an If: the onnxruntime-genai builder picks Phi-3's long or short RoPE
tables by ``Greater(total_sequence_length, original_max_position_embeddings)``, torch's exporters write
``torch.cond`` on a shape test, and transformers code that branches on a sequence length becomes one. Once the
compile has fixed every input shape (``--shape``), such a condition is a constant: the If is then exactly its taken
branch. The branch's nodes join the graph with their own tensors renamed under the If's name (a subgraph may reuse
an outer name), its reads of outer tensors unchanged, and its outputs copied into the If's outputs by Identity.

An If whose condition depends on input values stays, and the loader refuses it in one line (compiler/frontend/
onnx_loader.py).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
import onnx

from compiler.frontend.graph import Node

__all__ = ["inline_static_ifs", "outer_reads"]


def _subgraph_reads(graph: onnx.GraphProto) -> set[str]:
    """Tensors a subgraph reads from enclosing scopes (nested subgraphs included)."""
    own = {i.name for i in graph.input} | {t.name for t in graph.initializer}
    own |= {o for n in graph.node for o in n.output if o}
    reads: set[str] = set()
    for n in graph.node:
        reads.update(t for t in n.input if t)
        for a in n.attribute:
            for g in [a.g] if a.HasField("g") else list(a.graphs):
                reads |= _subgraph_reads(g)
    reads.update(o.name for o in graph.output)
    return reads - own


def outer_reads(node: Node) -> list[str]:
    """Every tensor ``node`` reads: its inputs, and for a control-flow node what its subgraphs read from outside
    (an If's branches may use the graph's tensors without naming them as inputs)."""
    reads = [t for t in node.inputs if t]
    for value in node.attrs.values():
        if isinstance(value, onnx.GraphProto):
            reads += sorted(_subgraph_reads(value) - set(reads))
    return reads


def _branch(node: Node, taken: str, attrs_of: Callable[[onnx.NodeProto, str], dict[str, Any]]) -> list[Node]:
    graph = node.attrs[taken]
    assert isinstance(graph, onnx.GraphProto)
    prefix = f"{node.name}/{taken}"
    own = {o for n in graph.node for o in n.output if o}
    renamed = {t: f"{prefix}/{t}" for t in own}
    out: list[Node] = []
    for i, n in enumerate(graph.node):
        name = f"{prefix}/{n.name or f'{n.op_type}_{i}'}"
        out.append(Node(n.op_type, name, [renamed.get(t, t) for t in n.input], [renamed.get(t, t) for t in n.output],
                        attrs_of(n, name)))
    results = [o.name for o in graph.output]
    for i, (inner, outer) in enumerate(zip(results, node.outputs, strict=False)):
        if outer:
            out.append(Node("Identity", f"{prefix}/output_{i}", [renamed.get(inner, inner)], [outer]))
    return out


def inline_static_ifs(nodes: list[Node], constants: dict[str, np.ndarray],
                      attrs_of: Callable[[onnx.NodeProto, str], dict[str, Any]]) -> list[Node]:
    """``nodes`` with every If whose condition is in ``constants`` replaced by its taken branch (in place of the If,
    so the order stays topological); ``attrs_of(proto, name)`` converts a branch node's attributes as the loader
    does its own."""
    out: list[Node] = []
    for node in nodes:
        cond = constants.get(node.inputs[0]) if node.op_type == "If" and node.inputs else None
        if cond is None or cond.size != 1:
            out.append(node)
            continue
        out += _branch(node, "then_branch" if bool(cond.reshape(-1)[0]) else "else_branch", attrs_of)
    return out
