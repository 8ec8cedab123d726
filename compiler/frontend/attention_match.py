"""Recognise attention from the softmax that normalises its scores, in a folded ONNX ``Graph``.

Matching is by meaning where spellings vary: head split/merge chains are checked by pushing an index tensor through
them (batch- or sequence-first, K/V heads repeated for grouped-query attention), rotary embeddings on Q and K are
fitted as per-position linear maps (compiler/frontend/rope.py), constant masks are classified by their structure
(compiler/frontend/masks.py). A match may add nodes to the graph (the rotation in the [B, S, D] layout, a
batch-first transpose, the sum of several masks, a per-head scale of the scores moved onto Q): they compute what the
replaced nodes computed, on the operands the attention op reads. Where a bmm-style [B*H, Sq, Sk] softmax gives no
[B, H, Sq, Sk] view of its scores, each split of B*H is tried; the head-split checks accept only the one the graph
computes. compiler/frontend/recognize.py calls ``match_attention`` for every softmax no other match has taken.
"""

from __future__ import annotations

import math

import numpy as np

from compiler.frontend.attention_operands import constant_queries
from compiler.frontend.graph import Node
from compiler.frontend.head_view import HeadViews, untranspose_product, view_operand, view_output
from compiler.frontend.masks import (
    ScoreTerm,
    additive_where,
    as_bhss,
    classify_terms,
    grid_addend,
    grid_term,
    grid_view,
    masked_row_guard,
    multiplied_mask,
    same_tensor,
    unfold_input,
)
from compiler.frontend.match import Match, MatchContext
from compiler.frontend.onnx_ops import run_node
from compiler.frontend.precision import MASKED, float_cast, pattern_eps, widen
from compiler.frontend.rope import fit_rope, rope_region
from compiler.frontend.score_views import per_head, scores_shapes, window_view
from compiler.frontend.sinks import Sinks, find_sinks, strip_row_max
from compiler.limits import check_memory

__all__ = ["match_attention"]

_MOVE_CHAIN = frozenset({"Reshape", "Transpose", "Cast", "Identity", "Squeeze", "Unsqueeze", "Flatten"})
#: Head repeats of grouped-query attention (repeat_kv: Unsqueeze -> Expand -> Reshape, or Tile) on the K/V side.
_REPEAT = frozenset({"Expand", "Tile"})
_SCALE_OPS = frozenset({"Mul", "Div"})


def _walk_back(ctx: MatchContext, name: str, rank: int, rope: bool = False) -> list[tuple[str, list[Node]]]:
    """Rank-``rank`` tensors reachable back from ``name`` through movement / constant-scale nodes, nearest first.

    Exporters sometimes pass through an intermediate [B*H, S, Dh] tensor, so every candidate is returned and the
    caller keeps the one whose layout check passes. With ``rope`` a rotary-embedding region (compiler/frontend/
    rope.py) where the movement chain stops is crossed to the projection it rotates, as a last candidate.
    """
    chain: list[Node] = []
    found: list[tuple[str, list[Node]]] = []
    # the operand itself, last: a single-head product reading a projection as is (EfficientViT-M's K^T is the
    # channels-first [B, D, N] projection)
    itself = [(name, [])] if len(ctx.graph.shapes.get(name, ())) == rank else []
    while len(chain) <= 12:
        if len(ctx.graph.shapes.get(name, ())) == rank and chain:
            found.append((name, list(chain)))
        node = ctx.producers.get(name)
        if node is None:
            break
        if node.op_type in _MOVE_CHAIN or (node.op_type in _REPEAT and ctx.graph.is_const(node.inputs[1])):
            name = node.inputs[0]
        elif node.op_type in _SCALE_OPS and ctx.graph.scalar(node.inputs[1]) is not None:
            name = node.inputs[0]
        elif node.op_type == "Mul" and ctx.graph.scalar(node.inputs[0]) is not None:
            name = node.inputs[1]
        elif node.op_type == "Add" and sum(ctx.graph.is_const(i) for i in node.inputs) == 1:
            # a constant added after the head split (Funnel's per-head r_w_bias; _layout_factor moves it onto the
            # projection); a projection's own bias Add stays the nearer candidate, tried first
            name = next(i for i in node.inputs if not ctx.graph.is_const(i))
        else:
            if rope:
                region = rope_region(ctx.graph, ctx.producers, name)
                if region is not None:
                    inner = sorted(region[1], key=lambda n: -ctx.order[id(n)])
                    found.append((region[0], chain + inner))
                return found + itself
            break
        chain.append(node)
    if len(ctx.graph.shapes.get(name, ())) == rank and chain and (not found or found[-1][0] != name):
        found.append((name, list(chain)))
    return found + itself


def _run_chain(ctx: MatchContext, chain: list[Node], source: str, x: np.ndarray) -> np.ndarray:
    """Push ``x`` (standing for ``source``) through ``chain``, listed from its output back to ``source``."""
    values: dict[str, np.ndarray | None] = {source: x}
    for node in reversed(chain):
        args = [values.get(i, ctx.graph.constants.get(i)) if i else None for i in node.inputs]
        if node.op_type == "Cast":  # between float types only (precision.py); a Cast to integers changes values
            if not float_cast(ctx.graph, node):
                raise ValueError(f"{node.describe()}: casts to or from a non-float type")
            values[node.outputs[0]] = args[0]
            continue
        # float64 throughout: a float16 cos table on the left of a Mul would round the probe to 11 bits
        args = [widen(a) if a is not None else a for a in args]
        for name, value in zip(node.outputs, run_node(node.op_type, args, node.attrs, len(node.outputs))):
            values[name] = value
    out = values[chain[0].outputs[0]] if chain else x
    if out is None:  # a Cast of a tensor neither computed nor constant: the chain does not run
        raise ValueError(f"{chain[0].name}: the chain reads an unknown tensor")
    return out


def _conform(got: np.ndarray, shape: tuple[int, ...]) -> np.ndarray | None:
    """``got`` seen as ``shape``: equal; broadcast (one K/V head that the QK^T MatMul broadcasts over the query
    heads: Falcon's multi-query attention); or with batch and heads merged ([B*H, S, D] of bmm-style exports)."""
    if got.shape == shape:
        return got
    if got.ndim == len(shape):
        try:
            return np.broadcast_to(got, shape)
        except ValueError:
            return None
    if len(shape) == 4 and got.shape == (shape[0] * shape[1],) + shape[2:]:
        return got.reshape(shape)
    return None


def _layout_factor(ctx: MatchContext, chain: list[Node], source: str, expect) -> tuple[float, np.ndarray | None] | None:
    """If the chain computes ``c * expect(x + bias)`` for a scalar c and a constant ``bias`` shaped like ``source``
    (a constant the chain adds after the head split, moved before it), return (c, bias or None)."""
    shape = ctx.graph.shapes[source]
    # the index tensor, the chain's result, the expectation and allclose's temporaries: about 6 float64 copies
    check_memory(f"{ctx.graph.source}: recognizing attention: tracing the layout of '{source}' "
                 f"({'x'.join(map(str, shape))})", 6 * 8 * math.prod(shape))
    x = np.arange(1, int(np.prod(shape)) + 1, dtype=np.float64).reshape(shape)
    biased = any(n.op_type == "Add" for n in chain)
    try:
        want = expect(x)
        got = _conform(_run_chain(ctx, chain, source, x), want.shape)
        base = _conform(_run_chain(ctx, chain, source, np.zeros(shape)), want.shape) if biased else None
    except (ValueError, IndexError, KeyError):
        return None
    if got is None or (biased and base is None):
        return None
    if base is not None:
        got = got - base
    factor = float(got.reshape(-1)[0] / want.reshape(-1)[0])
    if factor == 0.0 or not np.allclose(got, want * factor, rtol=1e-6, atol=0):
        return None
    if base is None or not np.any(base):
        return factor, None
    # expect moves source element j (holding j + 1) to where ``want`` holds j + 1: invert it on the offset
    bias = np.zeros(x.size)
    bias[(want.reshape(-1) - 1).astype(np.int64)] = (base / factor).reshape(-1)
    bias = bias.reshape(shape)
    if not np.allclose(expect(bias), base / factor, rtol=1e-6, atol=1e-12):
        return None  # not one offset per source element (heads repeated with different offsets)
    rows = bias.reshape(-1, shape[-1])
    return factor, rows[0] if np.all(rows == rows[:1]) else bias


#: Layouts of a rank-3 projection a head split may read, as the permutation that makes it batch-first [B, S, D] (each
#: is its own inverse): batch-first, sequence-first [S, B, D] (torch.nn.MultiheadAttention), channels-first
#: [B, D, S] (Conv1d kernel-1 projections: SqueezeBERT).
_LAYOUTS: tuple[tuple[int, int, int] | None, ...] = (None, (1, 0, 2), (0, 2, 1))


def _fit_role(ctx: MatchContext, head: str, expect, dh: int, rope: bool):
    """(source, chain, scale factor, rotation or None, layout, bias or None) of the rank-3 tensor that ``head`` (a
    Q, K^T or V operand of the attention products) splits into heads, or None. ``expect`` is the head split of a
    batch-first [B, S, D] source; the other `_LAYOUTS` are tried through their permutation (``layout``: None or
    that perm). A constant the chain adds after the split comes back as ``bias``, in the source's layout
    (`_layout_factor`)."""
    g = ctx.graph
    for source, chain in _walk_back(ctx, head, 3, rope=rope):
        for layout in _LAYOUTS:
            fit = (lambda x, p=layout: expect(x.transpose(p))) if layout else expect
            fitted = _layout_factor(ctx, chain, source, fit)
            if fitted is not None:
                return source, chain, fitted[0], None, layout, fitted[1]
            if not rope or layout == (0, 2, 1):
                continue
            shape = g.shapes[source]
            shape = tuple(shape[i] for i in layout) if layout else shape

            def run(x: np.ndarray, chain=chain, source=source, layout=layout, want=None) -> np.ndarray:
                got = _run_chain(ctx, chain, source, x.transpose(layout) if layout else x)
                fitted = _conform(got, want) if want is not None else got
                return got if fitted is None else fitted

            try:
                want = expect(np.zeros(shape)).shape
                rotated = fit_rope(lambda x, run=run, want=want: run(x, want=want), shape, dh, expect,
                                   pattern_eps(g, chain))
            except (ValueError, IndexError, KeyError):  # the chain or the head split does not fit this layout
                rotated = None
            if rotated is not None:
                return source, chain, rotated[0], rotated[1], layout, None
    return None


def _split(x: np.ndarray, d: int, heads: int, shared: bool) -> np.ndarray:
    """[B, S, kv*d] -> [B, S, heads, d]; K/V heads shared by heads // kv query heads (GQA / MQA)."""
    kv = x.shape[2] // d
    if kv * d != x.shape[2] or heads % kv or (kv != heads and not shared):
        raise ValueError("head split does not fit")
    return np.repeat(x.reshape(x.shape[0], x.shape[1], kv, d), heads // kv, axis=2)


def _fold(q: np.ndarray, group: int) -> np.ndarray:
    """Query heads [B, H, Sq, Dh] with each KV head's ``group`` query heads folded into the query axis:
    [B, H/group, group*Sq, Dh] (a view: head h = kv*group + j lands on rows j*Sq .. (j+1)*Sq of KV head kv)."""
    b, h, s, d = q.shape
    return q if group == 1 else q.reshape(b, h // group, group * s, d)


def _query_groups(ctx: MatchContext, q_head: str, score_heads: int, score_rows: int, dh: int):
    """Query-group folds to try for the scores' Q operand: 1 (none), then each fold a [B, H, Sq, Dh] tensor on
    Q's movement chain implies (H a multiple of the scores' heads, H*Sq equal to their heads times rows)."""
    yield 1
    seen = {1}
    for name, _ in _walk_back(ctx, q_head, 4, rope=True):
        shape = ctx.graph.shapes[name]
        if shape[-1] != dh or shape[1] % score_heads or shape[1] * shape[2] != score_heads * score_rows:
            continue
        group = shape[1] // score_heads
        if group not in seen:
            seen.add(group)
            yield group


def _merge_walk(ctx: MatchContext, av: Node, x: np.ndarray,
                layouts3: list) -> tuple[str, list[Node], tuple[int, ...] | None] | None:
    """Forward from the A.V product to the head merge: (the merged tensor, the nodes to it listed output-first, its
    layout perm), or None. ``x`` indexes the product as [B, H, Sq, Dv]; ``layouts3`` are the merged layouts."""
    g = ctx.graph
    av_shape = g.shapes[av.outputs[0]]
    b_size, heads, sq, dv = x.shape
    out, walked = av.outputs[0], []
    fallback: tuple[str, list[Node]] | None = None
    found_out: tuple[str, list[Node], tuple[int, ...] | None] | None = None
    while found_out is None and len(walked) <= 4:
        out_shape = tuple(g.shapes.get(out, ()))
        if walked and len(out_shape) in (2, 3, 4):
            try:
                got = _run_chain(ctx, walked[::-1], av.outputs[0], x.reshape(av_shape))  # listed output-first
            except ValueError:  # a Cast to integers: the merged heads are not this chain's output
                break
            for perm, want in layouts3 if len(out_shape) != 4 else []:
                if got.shape == out_shape and want.size == got.size and np.array_equal(got, want.reshape(out_shape)
                                                                                   if len(out_shape) == 2 else want):
                    found_out = (out, list(walked), perm)
                    break
            if out_shape == (b_size, sq, heads, dv) and np.array_equal(got, x.transpose(0, 2, 1, 3)):
                fallback = (out, list(walked))
        if found_out is not None:
            break
        users = ctx.consumers.get(out, [])
        if len(users) != 1 or users[0].op_type not in _MOVE_CHAIN:
            break
        walked.append(users[0])
        out = users[0].outputs[0]
    if found_out is None and fallback is not None:
        return (*fallback, None)
    return found_out


def match_attention(ctx: MatchContext, softmax: Node) -> Match | None:
    """The attention whose scores ``softmax`` normalises (module docstring), or None. A softmax over the scores
    joined with a per-head sink column that a Slice drops after (compiler/frontend/sinks.py) is attention with
    sinks: the matcher walks back from the scores and on from the Slice."""
    sinks = find_sinks(ctx.graph, ctx.producers, ctx.consumers, softmax)
    if sinks is not None:
        return _match_attention_as(ctx, softmax, ctx.graph.shapes[sinks.scores], sinks)  # type: ignore[arg-type]
    for shape in scores_shapes(ctx, softmax):
        match = _match_attention_as(ctx, softmax, shape)
        if match is not None:
            return match
    return None


def _match_attention_as(ctx: MatchContext, softmax: Node, shape: tuple[int, int, int, int],
                        sinks: Sinks | None = None) -> Match | None:
    """The attention of ``softmax`` with its scores seen as [B, H, Sq, Sk] ``shape``, or None; ``sinks``: the sink
    column around it. Head views the attempt inserted (compiler/frontend/head_view.py) are removed if it fails."""
    head_views = HeadViews()
    match = _match_core(ctx, softmax, shape, sinks, head_views)
    if match is None:
        head_views.undo(ctx)
    return match


def _match_core(ctx: MatchContext, softmax: Node, shape: tuple[int, int, int, int], sinks: Sinks | None,
                head_views: HeadViews) -> Match | None:
    """`_match_attention_as`, recording in ``head_views`` the head views it inserts for operands computed per head."""
    g = ctx.graph
    batch, heads, sq, sk = shape
    views = {(batch * heads, sq, sk), shape}  # bmm-style and 4-D scores: a Reshape between them is a view
    region: list[Node] = [softmax, *(sinks.nodes if sinks else ())]
    scale = 1.0
    terms: list[ScoreTerm] = []  # classified once the query-group fold is known
    cap: float | None = None  # soft-capping c * tanh(s): the scale met after the Tanh (walking back) is c
    subtracted: list[Node] = []  # Sub(scores, term) from the inputs (Funnel's padding): -term added at the end
    # A per-head scale of the scores (Swin-v2's learnt logit scale): one factor per head, moved onto Q's heads.
    head_scale: tuple[np.ndarray, int] | None = None  # (the factors, how many terms were met before it)
    grid: tuple[tuple[int, ...], int] | None = None  # a [B, H, *q, *k] view of the scores (masks.grid_view)
    grid_inputs: list[tuple[str, tuple[int, ...], int, str]] = []  # (term, grid, split, name) from the inputs
    # Scores path: softmax input back to the QK^T MatMul (past a row max subtracted, which the softmax ignores).
    if sinks is None:
        name, shift = strip_row_max(g, ctx.producers, softmax.inputs[0])
        if shift and len(ctx.consumers.get(name, [])) != 2:
            return None  # the scores are read elsewhere too
        region += shift
    else:
        name = sinks.scores
    while True:
        node = ctx.producers.get(name)
        if node is None:
            return None
        if node.op_type == "MatMul" and not g.is_const(node.inputs[1]):
            qk = node  # Q may be a constant: learned queries (attention_operands.constant_queries)
            break
        region.append(node)
        cur = g.shapes.get(name, ())
        if cap is not None and node.op_type in ("Add", "Sub", "Where", "Max", "Tanh"):
            return None  # a mask inside the tanh no longer masks (tanh(-inf) = -1); one cap at most
        if node.op_type == "Tanh":  # logit soft-capping (Gemma 2): c * tanh(s / c), c the scale met so far
            if head_scale is not None:
                return None  # a cap per head
            cap, scale = scale, 1.0
            name = node.inputs[0]
        elif node.op_type == "Identity" or float_cast(g, node):
            name = node.inputs[0]
        elif node.op_type == "Reshape" and tuple(cur) in views and g.shapes.get(node.inputs[0]) in views:
            name = node.inputs[0]  # [B*H, Sq, Sk] scores (baddbmm) viewed as [B, H, Sq, Sk], or back
        elif node.op_type == "Reshape" and window_view(tuple(cur), g.shapes.get(node.inputs[0], ()), shape):
            name = node.inputs[0]  # windows' scores [B*nW, H, S, S] viewed as [B, nW, H, S, S] (Swin-v2), or back
        elif node.op_type == "Reshape" and (seen := grid_view(tuple(cur), tuple(g.shapes.get(node.inputs[0], ())),
                                                              views, shape)) is not None:
            grid, name = seen, node.inputs[0]
        elif node.op_type == "Add" and grid is not None and tuple(cur) == grid[0]:  # a term added in the grid view
            addend = grid_addend(g, node, *grid)
            if addend is None:
                return None
            name, term, from_inputs = addend
            if from_inputs:
                grid_inputs.append((term, grid[0], grid[1], node.name))  # viewed once the match holds
            else:
                terms.append(("add", term, True))
        elif node.op_type == "Add" and len(cur) == 5:  # a term added in that view: a constant shift-window mask
            const = next((i for i in node.inputs if g.is_const(i)), None)
            scores_side = next((i for i in node.inputs if i != const), None)
            if const is None or scores_side is None or g.shapes.get(scores_side) != tuple(cur):
                return None
            term = f"{node.name}/as_scores"  # [B, nW, ..] merged back into the batch; heads stay broadcast
            value = g.constants[const].reshape((1,) * (5 - g.constants[const].ndim) + g.constants[const].shape)
            value = np.broadcast_to(value, tuple(cur[:2]) + value.shape[2:])
            g.constants[term] = np.ascontiguousarray(value).reshape((cur[0] * cur[1],) + value.shape[2:])
            g.shapes[term], g.dtypes[term] = g.constants[term].shape, g.constants[term].dtype
            terms.append(("add", term, True))
            name = scores_side
        elif node.op_type == "Max" and min(g.scalar(i) or 0.0 for i in node.inputs) <= -MASKED:
            name = next(i for i in node.inputs if g.scalar(i) is None)  # a clamp at float min (fairseq, XGLM)
        elif node.op_type == "Mul" and (g.scalar(node.inputs[1]) is not None or g.scalar(node.inputs[0]) is not None):
            c, other = (node.inputs[1], node.inputs[0]) if g.scalar(node.inputs[1]) is not None else node.inputs
            scale *= g.scalar(c)  # type: ignore[operator]
            name = other
        elif node.op_type == "Div" and g.scalar(node.inputs[1]) is not None:
            scale /= g.scalar(node.inputs[1])  # type: ignore[operator]
            name = node.inputs[0]
        elif node.op_type == "Mul" and (kept := multiplied_mask(g, node, tuple(cur), terms)) is not None:
            name = kept  # s * B with B a constant 0 / 1 mask that the terms added after it already mask (GPT-1)
        elif node.op_type == "Mul" and head_scale is None and (factors := per_head(g, node, cur, heads)):
            head_scale, name = (factors[0], len(terms) + len(subtracted) + len(grid_inputs)), factors[1]
        elif node.op_type == "Add":
            a, b = node.inputs
            is_scores = g.shapes.get(a) == cur and not g.is_const(a)
            scores_side = a if is_scores else b
            other = b if scores_side == a else a
            # classified once the query-group folding is known (a term of bmm-style scores gets its [B, H, ..]
            # view then too)
            terms.append(("bmm" if len(cur) == 3 else "add", other, True))
            name = scores_side
        elif node.op_type == "Sub" and len(cur) == 4 and g.shapes.get(node.inputs[0]) == cur \
                and not g.is_const(node.inputs[0]):
            term = node.inputs[1]
            if g.is_const(term):  # a constant subtracted: its negation is an additive term like any other
                neg = f"{node.name}/negated"
                g.constants[neg] = -g.constants[term]
                g.shapes[neg], g.dtypes[neg] = g.constants[neg].shape, g.constants[neg].dtype
                terms.append(("add", neg, True))
            else:
                subtracted.append(node)
            name = node.inputs[0]
        elif node.op_type == "Where":
            cond, a, b = node.inputs
            fill = g.scalar(b) if g.scalar(b) is not None else g.scalar(a)
            if fill is None or fill > -1e4 or len(cur) != 4:
                return None
            # a boolean mask: constant, or from the inputs (DeBERTa's masked_fill)
            terms.append(("where", node, g.scalar(b) is not None))
            name = a if g.scalar(b) is not None else b
        else:
            return None
    # After softmax: optional Cast / guard of fully masked rows (masks.masked_row_guard), then the A.V MatMul.
    probs = sinks.probs if sinks else softmax.outputs[0]
    av = None
    guarded: tuple[str | None] | None = None  # (the bias whose all -inf rows the guard zeroes, None for IsNaN's)
    for _ in range(4):
        users = ctx.consumers.get(probs, [])
        if len(users) == 1 and users[0].op_type == "MatMul" and users[0].inputs[0] == probs:
            av = users[0]
            break
        if len(users) == 1 and (flipped := untranspose_product(ctx, users[0], head_views)) is not None:
            av = flipped  # V^T @ P^T (EfficientViT-M): P @ V between two transposes
            break
        guard = masked_row_guard(g, ctx.producers, ctx.consumers, probs) if guarded is None else None
        if guard is not None:
            region += guard[0]
            guarded = (guard[2],)
            probs = guard[1].outputs[0]
            continue
        merge = users[0] if len(users) == 1 and users[0].op_type == "Reshape" else None
        if merge is not None and g.shapes.get(merge.outputs[0]) in views:
            region.append(merge)  # [B, H, Sq, Sk] probabilities viewed as [B*H, Sq, Sk] for a bmm
            probs = merge.outputs[0]
            continue
        if len(users) == 1 and (users[0].op_type in ("Identity", "Dropout") or float_cast(g, users[0])):
            region.append(users[0])
            probs = users[0].outputs[0]
            continue
        return None
    if av is None:
        return None
    if head_scale is not None and len(terms) + len(subtracted) + len(grid_inputs) != head_scale[1]:
        return None  # a term added before the per-head scale is scaled with the scores: not one moved onto Q
    if guarded is not None and (sinks is not None or (guarded[0] is not None and (
            subtracted or [t[0] for t in terms] != ["add"]
            or same_tensor(g, ctx.producers, str(terms[0][1])) != guarded[0]))):
        return None  # the guard reads a bias that is not the scores' whole mask: a row it zeroes may not be masked
    region += [qk, av]
    q_head, k_head, v_head = qk.inputs[0], qk.inputs[1], av.inputs[1]
    dh = g.shapes[q_head][-1]
    dv = g.shapes[v_head][-1]
    score_heads, score_rows = heads, sq

    found, ropes, layouts, biases = {}, {}, {}, {}
    group = 0
    constant_q = g.is_const(q_head)
    for group in () if constant_q else _query_groups(ctx, q_head, score_heads, score_rows, dh):
        # Grouped-query attention is the same op whether K/V heads are repeated to the query heads (repeat_kv) or
        # each KV head's query groups are folded into the query axis (transformers' SDPA decode step): Q
        # [B, H, Sq, Dh] viewed as [B, KV, H/KV*Sq, Dh] against unrepeated K/V. ``group`` is that fold.
        heads, sq = score_heads * group, score_rows // group
        fitted = _fit_role(ctx, q_head, lambda x, n=heads, f=group: _fold(
            _split(x, dh, n, False).transpose(0, 2, 1, 3), f), dh, rope=True)
        if fitted is not None:
            break
    else:  # Q computed per head (a norm, an L2 normalisation after the split): its own merged view
        group, heads, sq = 1, score_heads, score_rows
        if constant_q:
            fitted = constant_queries(g, q_head, batch, heads, sq, dh)
            if fitted is None:
                return None
        elif not view_operand(ctx, qk, 0, "q", heads, head_views):
            return None
        else:
            fitted = _fit_role(ctx, qk.inputs[0], lambda x, n=heads: _split(x, dh, n, False).transpose(0, 2, 1, 3),
                               dh, rope=False)
        if fitted is None:
            return None
    k_split = lambda x: _split(x, dh, score_heads, True).transpose(0, 2, 3, 1)  # noqa: E731
    v_split = lambda x: _split(x, dv, score_heads, True).transpose(0, 2, 1, 3)  # noqa: E731
    k_fit = _fit_role(ctx, k_head, k_split, dh, rope=True)
    if k_fit is None and view_operand(ctx, qk, 1, "k", score_heads, head_views):
        k_fit = _fit_role(ctx, qk.inputs[1], k_split, dh, rope=False)
    v_fit = _fit_role(ctx, v_head, v_split, dh, rope=False)
    if v_fit is None and view_operand(ctx, av, 1, "v", score_heads, head_views):
        v_fit = _fit_role(ctx, av.inputs[1], v_split, dh, rope=False)
    for role, fit in (("q", fitted), ("k", k_fit), ("v", v_fit)):
        if fit is None:
            return None
        source, chain, factor, rope, layout, bias = fit
        if role in ("q", "k"):
            scale *= factor
        elif factor != 1.0 or rope is not None:
            return None
        found[role], ropes[role], layouts[role], biases[role] = source, rope, layout, bias
        region += chain
    def width(role: str) -> int:  # D of a source, whatever its layout
        layout = layouts[role] or (0, 1, 2)
        return g.shapes[found[role]][layout[2]]

    kv_heads = width("k") // dh
    if width("v") // dv != kv_heads and kv_heads == score_heads and view_operand(ctx, av, 1, "v", score_heads,
                                                                                 head_views):
        # K read in its merged head view after the K/V head repeat (its rotation left as generic ops: RoPE from a
        # position_ids input) while V's walk crossed the repeat to its projection: V's repeated heads in the same
        # view, so both sides hold the query's heads (an empty KV cache's prompt step of such an export)
        old = {id(n) for n in v_fit[1]} if v_fit is not None else set()
        v_fit = _fit_role(ctx, av.inputs[1], v_split, dh, rope=False)
        if v_fit is None:
            return None
        region = [n for n in region if id(n) not in old] + v_fit[1]
        found["v"], ropes["v"], layouts["v"], biases["v"] = v_fit[0], v_fit[3], v_fit[4], v_fit[5]
    if sinks is not None and (group != 1 or sinks.values.size != heads):
        return None  # one sink per query head, on scores that are not folded query groups
    if head_scale is not None and group != 1:
        return None  # the scores' heads are KV heads here: a factor per query head is not one per score head
    classified = classify_terms(g, terms, score_heads, group, sq, sk)
    if classified is None:
        return None
    masks, causal_at, kind_seen, input_terms, input_wheres, bmm_terms = classified
    causal = causal_at is not None
    # The causal fill replaces the masked scores only when its Where is the last term applied (the first one met
    # walking back from the softmax); otherwise the terms after it add onto it (GPT-Neo: Where(causal, s, min) +
    # padding mask, so a padded key in the future is min + min = -inf): the op's ``causal_first``.
    causal_first = causal and not (causal_at == 0 and terms[0][0] == "where" and not subtracted and not grid_inputs)
    for _ in range(len(subtracted) + len(grid_inputs)):
        kind_seen = "other" if kind_seen else "input"
    if grid_inputs and group != 1:
        return None  # the grid view's heads would be KV heads
    if width("v") // dv != kv_heads:
        return None
    # Merge heads: forward from A.V output to a rank-3 [B, Sq, H*Dv] tensor, sequence-first [Sq, B, H*Dv],
    # channels-first [B, H*Dv, Sq] or flattened [B*Sq, H*Dv]. Where the chain stops short of one (ConvBERT
    # concatenates these heads with its convolution heads before merging), at the last [B, Sq, H, Dv] view on it.
    av_shape = g.shapes[av.outputs[0]]
    b_size = math.prod(av_shape) // (heads * sq * dv)
    x = np.arange(1, int(np.prod(av_shape)) + 1, dtype=np.float64).reshape(b_size, heads, sq, dv)
    merged = x.transpose(0, 2, 1, 3).reshape(b_size, sq, heads * dv)
    layouts3 = [(None, merged), ((1, 0, 2), merged.transpose(1, 0, 2)), ((0, 2, 1), merged.transpose(0, 2, 1))]
    found_out = _merge_walk(ctx, av, x, layouts3)
    if found_out is None and view_output(ctx, av, heads, head_views):  # heads written back as an image (Visformer)
        found_out = _merge_walk(ctx, av, x, layouts3)
    if found_out is None:
        return None
    out, chain, out_perm = found_out
    region += chain
    # A chain tensor read elsewhere (e.g. a KV cache output) must keep its producer alive.
    ids = {id(n) for n in region}
    keep = [n for n in region if any(
        any(id(c) not in ids for c in ctx.consumers.get(o, [])) or o in g.outputs for o in n.outputs if o != out)]
    stack = list(keep)
    while stack:  # and the chain nodes that kept node reads (DeBERTa's c2p term reads the viewed Q heads)
        for i in stack.pop().inputs:
            p = ctx.producers.get(i)
            if p is not None and id(p) in ids and not any(p is k for k in keep):
                keep.append(p)
                stack.append(p)
    if any(n in (qk, av, softmax) for n in keep):
        return None
    nodes = [n for n in region if not any(n is k for k in keep)]
    unfolded = input_terms + [additive_where(g, where, keep_true) for where, keep_true in input_wheres]
    for node in subtracted:  # Sub(scores, term) == scores + Neg(term)
        neg = f"{node.name}/negated_output_0"
        g.shapes[neg], g.dtypes[neg] = g.shapes[node.inputs[1]], g.dtypes.get(node.inputs[1], np.dtype(np.float32))
        g.nodes.insert(g.nodes.index(node), Node("Neg", f"{node.name}/negated", [node.inputs[1]], [neg]))
        unfolded.append(neg)
    masks += [unfold_input(g, term, score_heads, group, sq) for term in unfolded]
    for i, term in enumerate(bmm_terms):
        viewed = as_bhss(g, term, b_size, heads, f"{softmax.name}/bhss_mask_{i}")
        if viewed is None:
            return None
        masks.append(viewed)
    for term, grid_shape, split, at in grid_inputs:
        viewed = grid_term(g, term, grid_shape, split, f"{at}/as_scores")
        if viewed is None:
            return None
        masks.append(viewed)
    # Several additive masks (T5: relative-position bias + padding) are summed into one operand (recognize()).
    mask = masks[0] if len(masks) == 1 else None
    softcap = None
    if cap is not None:  # cap * tanh(scale * QK^T) == c * tanh((scale * cap) * QK^T / c) with c = |cap|
        softcap, scale = abs(cap), scale * cap
        if softcap == 0.0:
            return None
    return Match("attention", nodes, out, {"q": found["q"], "k": found["k"], "v": found["v"], "mask": mask},
                 {"num_heads": heads, "head_dim": dh, "scale": scale, "causal": causal, "kv_heads": kv_heads,
                  "mask_kind": kind_seen, "rope": ropes, "layouts": layouts, "biases": biases,
                  "out_perm": out_perm, "softcap": softcap,
                  "q_scale": None if head_scale is None else np.repeat(head_scale[0], dh),
                  "mask_parts": masks, "sinks": None if sinks is None else sinks.values,
                  "masked_rows_zero": guarded is not None, "causal_first": causal_first and bool(masks)})
