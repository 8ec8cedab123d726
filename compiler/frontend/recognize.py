"""Recognise high-level transformer ops in a folded ONNX ``Graph``: the order the matchers run in.

Each matcher returns ``Match`` records (compiler/frontend/match.py): the nodes it replaces, the op it stands for and
that op's operands. MoE blocks go first (compiler/frontend/recognize_moe.py: a block holds GELUs and softmaxes that
belong to its experts and router), then the einsums they left are lowered and attention whose windows stay axes of
its scores is folded into the batch (compiler/frontend/window_axes.py), then one walk in graph order tries
attention at every softmax (compiler/frontend/attention_match.py), GELU and LayerNorm / RMSNorm at their anchor
nodes (compiler/frontend/norm_gelu_match.py), and views per-head Q/K norms for the attention matcher. Anything
left unmatched is lowered one node to one generic op by the dialect builder (compiler/frontend/to_dialect.py).
"""

from __future__ import annotations

from compiler.frontend.attention_match import match_attention
from compiler.frontend.attention_operands import materialize_operands
from compiler.frontend.einsum import lower_einsums
from compiler.frontend.gemm_forms import lower_gemm_forms
from compiler.frontend.graph import Graph, Node
from compiler.frontend.head_norm import view_head_norm, view_split_head_norms
from compiler.frontend.match import Match, MatchContext
from compiler.frontend.norm_gelu_match import match_gelu, match_norm
from compiler.frontend.normalize import normalize_for_recognition
from compiler.frontend.recognize_moe import recognize_moe
from compiler.frontend.window_axes import fold_window_axes

__all__ = ["Match", "recognize"]


def recognize(graph: Graph) -> list[Match]:
    """All MoE, attention, LayerNorm/RMSNorm and GELU matches, non-overlapping (MoE blocks first, in graph order)."""
    normalize_for_recognition(graph)
    ctx = MatchContext(graph, graph.producers(), graph.consumers(), {id(n): i for i, n in enumerate(graph.nodes)})
    # MoE first: a block holds GELUs and softmaxes that belong to its experts and router, not to the model.
    matches: list[Match] = recognize_moe(graph, ctx.producers, ctx.consumers, ctx.taken)
    # Einsums the MoE blocks did not take (their experts are stacked-weight einsums): Transpose / Reshape / ReduceSum
    # / MatMul, so the attention matcher and the GEMM lowering see their products. Then window axes kept apart from
    # the batch in the scores ([B, nW, H, S, S]) folded into it, as Swin's are (an einsum may have computed them).
    if lower_einsums(graph, ctx.taken) + fold_window_axes(graph, ctx.taken):
        ctx = MatchContext(graph, graph.producers(), graph.consumers(), {id(n): i for i, n in enumerate(graph.nodes)},
                           ctx.taken)
    norms: dict[str, tuple[str, list[Node]]] = {}  # recognised norms by output: their input and nodes
    for node in graph.nodes:
        if id(node) in ctx.taken:
            continue
        match = None
        if node.op_type == "Softmax":
            match = match_attention(ctx, node)
        elif node.op_type in ("Erf", "Tanh", "Sigmoid"):
            match = match_gelu(ctx, node)
        elif node.op_type == "ReduceMean":
            match = match_norm(ctx, node)
        elif node.op_type == "LayerNormalization":  # a per-head Q/K LayerNorm exported as one op (Persimmon)
            view_head_norm(graph, node, ctx.producers, ctx.consumers, ctx.order)
        elif node.op_type == "Concat":  # one norm per head, split and concatenated back (StableLM's qk_layernorm)
            view_split_head_norms(graph, node, norms, ctx.producers, ctx.consumers, ctx.order)
        if match is not None and not any(id(n) in ctx.taken for n in match.nodes):
            matches.append(match)
            ctx.taken.update(id(n) for n in match.nodes)
            if match.kind == "layernorm":  # a per-head Q/K norm (Qwen3, OLMo2) seen as [B, S, H*Dh] for attention
                view_head_norm(graph, match, ctx.producers, ctx.consumers, ctx.order)
                norms[match.output] = (match.operand("input"), match.nodes)
    # Gemm / MatMul forms the GEMM lowering does not read (transA, a C that is no [N] row, broadcast batch axes),
    # on the nodes no match took: after the walk, so a matcher sees a broadcast K/V head as exported (Falcon).
    lower_gemm_forms(graph, ctx.taken)
    for match in matches:  # masks summed, biases, layouts and rotations on the operands the attention op reads
        materialize_operands(graph, match)
    return matches
