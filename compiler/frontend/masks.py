"""Additive score terms of attention: what a constant mask blocks, and masks seen in a bmm-style layout.

The attention matcher (attention_match.py) walks from the softmax back to QK^T collecting what is added to the scores:
constant masks (causal, banded, block-diagonal windows, padding), constant biases (ALiBi, relative-position tables)
and terms computed from inputs (a padding mask, DeBERTa's disentangled c2p/p2c terms, Swin's shifted-window mask).
``mask_kind`` classifies a constant one by structure, so schedules can skip fully masked tiles. Exports that compute
the scores as [B*H, Sq, Sk] (torch.baddbmm in BLOOM) add their terms in that layout before viewing the scores as
[B, H, Sq, Sk]; ``as_bhss`` gives such a term the 4-D shape the attention op's mask operand has. MViT-v2 adds its
decomposed relative-position terms (Q times a table per image axis: ``q @ rel_h`` and ``q @ rel_w``) in a
[B, H, qh, qw, kh, kw] view of the scores, each broadcast along the other axis: `grid_split` recognises such a view
and `grid_term` gives a term added there its [B, H, Sq, Sk] form (expanded along the axes it broadcasts over, then
viewed as 4-D). A term computed from Q is an additive mask like DeBERTa's c2p term: softmax(s + t) with t added to
the scores is what the attention op computes from its mask operand, whatever t is computed from.
"""

from __future__ import annotations

import numpy as np

from compiler.frontend.graph import Graph, Node

__all__ = ["additive_where", "as_bhss", "classify_terms", "grid_addend", "grid_split", "grid_term", "grid_view",
           "mask_kind", "masked_row_guard", "multiplied_mask", "same_tensor", "unfold_const", "unfold_input",
           "window_mask", "Classified",
           "ScoreTerm", "WINDOW_FILL"]


def mask_kind(mask: np.ndarray, sq: int, sk: int) -> str | None:
    """The structure of a constant additive (0 / very negative) or boolean (True = attend) mask: ``causal``,
    ``banded`` (causal within a window: sliding-window layers), ``block`` (tokens in regions attending within
    their region: block-diagonal windows, and per window Swin's shifted windows, whose per-head relative-position
    bias may be summed in: `window_mask`), ``padding`` (whole key columns blocked), ``other``; None when it blocks
    nothing."""
    try:
        m = np.broadcast_to(mask, mask.shape[:-2] + (sq, sk)) if mask.ndim >= 2 else np.broadcast_to(mask, (sq, sk))
    except ValueError:
        return "other"
    flat = m.reshape(-1, sq, sk)
    if m.dtype == bool:
        allowed = flat
    elif np.all((flat == 0) | (flat <= -1e4)):
        allowed = flat == 0
    elif np.all(flat == 0):
        return None
    else:
        windows = window_mask(m) if m.ndim == 4 else None
        if windows is None:
            return "other"  # a bias (ALiBi, relative positions): not a mask
        allowed = windows.reshape(-1, sq, sk)
    if allowed.all():
        return None
    if not np.all(allowed == allowed[0]):
        # Per-window masks (Swin's shifted windows: each window's tokens attend within their region of the image)
        return "block" if all(_partition(a) for a in allowed) else "other"
    a = allowed[0]
    tri = np.tril(np.ones((sq, sk), dtype=bool), k=sk - sq)
    if np.array_equal(a, tri):
        return "causal"
    for window in range(1, sk):
        if np.array_equal(a, tri & ~np.tril(np.ones((sq, sk), dtype=bool), k=sk - sq - window)):
            return "banded"
    if np.all(a == a[0]):
        return "padding"
    if sq == sk and np.array_equal(a, a.T) and np.all(np.diag(a)):
        starts = [i for i in range(sq) if i == 0 or not a[i, i - 1]]
        ends = starts[1:] + [sq]
        block = np.zeros_like(a)
        for lo, hi in zip(starts, ends):
            block[lo:hi, lo:hi] = True
        if np.array_equal(a, block):
            return "block"
    return "block" if _partition(a) else "other"


#: An additive term at or below this many units under a key's unmasked value blocks it: Swin's shifted-window mask
#: fills -100 (exp(-100) < 2^-144: below float32's resolution of any kept weight, which the row max makes >= 1).
WINDOW_FILL = -100.0


def window_mask(term: np.ndarray) -> np.ndarray | None:
    """[W, 1, Sq, Sk] keep-mask (True = attend) of a [W, H, Sq, Sk] constant that is a per-head bias shared by
    every window (a relative-position bias) plus a per-window mask shared by every head whose entries are 0 or at
    most WINDOW_FILL (Swin's shifted windows: the bias and the cyclic-shift mask summed into one SDPA mask); None
    when it is not such a sum. The bias is the maximum over windows (some window keeps every pair: the windows
    inside the image, which the shift does not cut)."""
    if term.ndim != 4 or term.shape[0] < 2:
        return None
    values = term.astype(np.float64)
    mask = values - values.max(axis=0, keepdims=True)
    scale = max(1.0, float(np.abs(values).max()))
    tol = 1e-5 * scale  # rounding of the exporter's float32 sum
    if not np.allclose(mask, mask[:, :1], rtol=0, atol=tol):
        return None
    kept = mask[:, :1] > -tol
    if not np.all(kept | (mask[:, :1] <= WINDOW_FILL + tol)) or kept.all():
        return None
    return kept


def _partition(allowed: np.ndarray) -> bool:
    """Whether ``allowed`` (square, True = attend) groups the tokens into regions attending exactly within
    themselves (an equivalence relation: block-diagonal up to an order of the tokens, every row keeps itself)."""
    if allowed.shape[0] != allowed.shape[1] or not np.all(np.diag(allowed)):
        return False
    _, region = np.unique(allowed, axis=0, return_inverse=True)
    region = region.reshape(-1)
    return bool(np.array_equal(allowed, region[:, None] == region[None, :]))


def _bhss_shape(shape: tuple[int, ...], batch: int, heads: int) -> tuple[int, ...] | None:
    """The [B|1, H|1, a, b] shape of a term broadcast against [B*H, Sq, Sk] scores, or None if it has none."""
    full = (1,) * (3 - len(shape)) + tuple(shape)
    if len(full) != 3:
        return None
    if full[0] == 1:
        return (1, 1) + full[1:]
    if full[0] == batch * heads:
        return (batch, heads) + full[1:]
    return None


def as_bhss(graph: Graph, name: str, batch: int, heads: int, prefix: str) -> str | None:
    """``name`` (a term added to [B*H, Sq, Sk] scores) viewed as [B, H, Sq, Sk]: a new constant, or a Reshape
    inserted after the term's producer; None when it does not split that way."""
    shape = _bhss_shape(graph.shapes.get(name, ()), batch, heads)
    if shape is None:
        return None
    out = f"{prefix}_output_0"
    if graph.is_const(name):
        graph.constants[out] = graph.constants[name].reshape(shape)
    else:
        dims = f"{prefix}_shape"
        graph.constants[dims] = np.array(shape, dtype=np.int64)
        graph.shapes[dims], graph.dtypes[dims] = (len(shape),), np.dtype(np.int64)
        at = next((i + 1 for i, n in enumerate(graph.nodes) if name in n.outputs), 0)
        graph.nodes.insert(at, Node("Reshape", prefix, [name, dims], [out]))
    graph.shapes[out], graph.dtypes[out] = shape, graph.dtypes.get(name, np.dtype(np.float32))
    return out


def grid_split(view: tuple[int, ...], scores: tuple[int, ...]) -> int | None:
    """The axis where the key dims start if ``view`` is [B, H, *q, *k] with prod(q) == Sq and prod(k) == Sk for
    [B, H, Sq, Sk] ``scores`` (rank 5 or more: a grid view of the scores), else None."""
    if len(view) < 5 or len(scores) != 4 or tuple(view[:2]) != tuple(scores[:2]):
        return None
    for split in range(3, len(view)):
        if int(np.prod(view[2:split])) == scores[2] and int(np.prod(view[split:])) == scores[3]:
            return split
    return None


def grid_view(cur: tuple[int, ...], source: tuple[int, ...], views: set,
              scores: tuple[int, int, int, int]) -> tuple[tuple[int, ...], int] | None:
    """(the grid, where its key dims start) if a Reshape from ``source`` to ``cur`` views the scores (one of
    ``views``: [B, H, Sq, Sk] or bmm-style) as a [B, H, *q, *k] grid (`grid_split`) or back; None otherwise."""
    for flat, grid in ((cur, source), (source, cur)):
        split = grid_split(grid, scores) if flat in views else None
        if split is not None:
            return grid, split
    return None


def grid_addend(graph: Graph, add: Node, grid: tuple[int, ...], split: int) -> tuple[str, str, bool] | None:
    """(the scores' input, the term, whether it is computed from the inputs) of ``add``, an Add of a term to scores
    viewed as ``grid``; a constant term comes back as its [B|1, H|1, Sq, Sk] constant (`grid_term`), one from the
    inputs as it is (`grid_term` views it once the match holds). None when the Add is not such a sum."""
    a, b = add.inputs
    scores, term = (a, b) if graph.shapes.get(a) == grid and not graph.is_const(a) else (b, a)
    if graph.shapes.get(scores) != grid or graph.is_const(scores) or graph.shapes.get(term) is None:
        return None
    if graph.is_const(term):
        viewed = grid_term(graph, term, grid, split, f"{add.name}/as_scores")
        return None if viewed is None else (scores, viewed, False)
    try:
        fits = np.broadcast_shapes(graph.shapes[term], grid) == tuple(grid)
    except ValueError:
        return None
    return (scores, term, True) if fits else None


def grid_term(graph: Graph, name: str, grid: tuple[int, ...], split: int, prefix: str) -> str | None:
    """``name`` (a term added to scores viewed as ``grid``, [B, H, *q, *k] with the key dims from axis ``split``)
    as a [B|1, H|1, Sq, Sk] term: a new constant, or an Expand to the grid's query / key dims and a Reshape inserted
    after the term's producer; None when it does not broadcast to ``grid``."""
    shape = graph.shapes.get(name)
    if shape is None or len(shape) > len(grid):
        return None
    full = (1,) * (len(grid) - len(shape)) + tuple(shape)
    if any(d not in (1, g) for d, g in zip(full, grid)):
        return None
    expanded = tuple(full[:2]) + tuple(grid[2:])
    flat = tuple(full[:2]) + (int(np.prod(grid[2:split])), int(np.prod(grid[split:])))
    dtype = graph.dtypes.get(name, np.dtype(np.float32))
    out = f"{prefix}_output_0"
    if graph.is_const(name):
        graph.constants[out] = np.ascontiguousarray(
            np.broadcast_to(graph.constants[name].reshape(full), expanded)).reshape(flat)
    else:
        at = next((i + 1 for i, n in enumerate(graph.nodes) if name in n.outputs), 0)
        src = name
        for step, dims in (("expand", expanded), ("view", flat)):
            const, result = f"{prefix}/{step}_shape", f"{prefix}/{step}_output_0" if step == "expand" else out
            graph.constants[const] = np.array(dims, dtype=np.int64)
            graph.shapes[const], graph.dtypes[const] = (len(dims),), np.dtype(np.int64)
            graph.nodes.insert(at, Node("Expand" if step == "expand" else "Reshape", f"{prefix}/{step}",
                                        [src, const], [result]))
            graph.shapes[result], graph.dtypes[result] = dims, dtype
            src, at = result, at + 1
    graph.shapes[out], graph.dtypes[out] = flat, dtype
    return out


def additive_where(graph: Graph, where: Node, keep_true: bool) -> str:
    """The additive mask of ``Where(cond, scores, fill)`` (``keep_true``) or ``Where(cond, fill, scores)`` whose
    condition comes from the inputs: a Where(cond, 0, fill) inserted before it. Adding it to the scores equals the
    Where wherever a row keeps a key, and a fill below -1e4 gives a masked key no weight either way."""
    cond, a, b = where.inputs
    fill = b if keep_true else a
    dtype = graph.dtypes.get(where.outputs[0], np.dtype(np.float32))
    zero, out = f"{where.name}/zero", f"{where.name}/additive_mask"
    graph.constants[zero] = np.zeros((), dtype=dtype)
    graph.shapes[zero], graph.dtypes[zero] = (), dtype
    fill_c = f"{where.name}/fill"
    graph.constants[fill_c] = graph.constants[fill].astype(dtype).reshape(())
    graph.shapes[fill_c], graph.dtypes[fill_c] = (), dtype
    inputs = [cond, zero, fill_c] if keep_true else [cond, fill_c, zero]
    graph.shapes[out], graph.dtypes[out] = graph.shapes[cond], dtype
    graph.nodes.insert(graph.nodes.index(where), Node("Where", f"{where.name}/additive", inputs, [out]))
    return out


def unfold_const(value: np.ndarray, score_heads: int, group: int, sq: int) -> np.ndarray | None:
    """A constant term of scores whose query heads were folded into the query axis ([B, KV, group*Sq, Sk]) in the
    attention op's [B, H, Sq, Sk] layout; unchanged when it broadcasts over heads and rows alike (a key-padding
    row), None when it has more than 4 dims."""
    if group == 1:
        return value
    if value.ndim > 4:
        return None
    shape = (1,) * (4 - value.ndim) + tuple(value.shape)
    if shape[1] == 1 and shape[2] == 1:
        return value
    full = np.broadcast_to(value.reshape(shape), (shape[0], score_heads, group * sq, shape[3]))
    return full.reshape(shape[0], score_heads * group, sq, shape[3])


def unfold_input(graph: Graph, name: str, score_heads: int, group: int, sq: int) -> str:
    """``unfold_const`` for a term computed from the inputs: an Expand to [B, KV, group*Sq, Sk] and a Reshape to
    [B, H, Sq, Sk] inserted after its producer (``name`` itself when nothing needs unfolding)."""
    shape = (1,) * (4 - len(graph.shapes[name])) + tuple(graph.shapes[name])
    if group == 1 or (shape[1] == 1 and shape[2] == 1):
        return name
    at = next((i + 1 for i, n in enumerate(graph.nodes) if name in n.outputs), 0)
    dtype = graph.dtypes.get(name, np.dtype(np.float32))
    src = name
    for step, dims in (("expand", (shape[0], score_heads, group * sq, shape[3])),
                       ("unfold", (shape[0], score_heads * group, sq, shape[3]))):
        const, out = f"{name}/{step}_shape", f"{name}/{step}_output_0"
        graph.constants[const] = np.array(dims, dtype=np.int64)
        graph.shapes[const], graph.dtypes[const] = (4,), np.dtype(np.int64)
        graph.nodes.insert(at, Node("Expand" if step == "expand" else "Reshape", f"{name}/{step}", [src, const],
                                    [out]))
        graph.shapes[out], graph.dtypes[out] = dims, dtype
        src, at = out, at + 1
    return src


#: A score term the attention matcher found: ("add" | "bmm", the tensor added, True) or ("where", the Where node,
#: whether it keeps the scores where its condition is true).
ScoreTerm = tuple[str, "str | Node", bool]

#: What `classify_terms` finds: (constant masks, the index in the terms of the causal constant that became the
#: causal flag (None: no causal flag), mask kind, terms from inputs, Wheres on inputs with their keep sense, terms
#: of bmm-style scores).
Classified = tuple[list[str], "int | None", "str | None", list[str], list[tuple[Node, bool]], list[str]]


def classify_terms(graph: Graph, terms: list[ScoreTerm], score_heads: int, group: int, sq: int,
                   sk: int) -> Classified | None:
    """The terms the attention matcher found added to (``add``, ``bmm``: bmm-style [B*H, Sq, Sk] scores) or
    selected into (``where``) the scores, sorted out (`Classified`); None when they cannot be seen in the
    [B, H, Sq, Sk] layout. The first causal constant becomes the causal flag (its index in ``terms`` is returned);
    the mask kind is the one kind seen, ``input`` for terms from inputs, ``other`` for several. Constants are
    classified in the attention op's layout: with ``group`` query heads folded into the query axis, unfolded
    first."""
    masks: list[str] = []
    inputs: list[str] = []
    wheres: list[tuple[Node, bool]] = []
    bmm: list[str] = []
    causal: int | None = None
    kind_seen = None
    for at, (tag, term, keep_true) in enumerate(terms):
        if isinstance(term, str) and tag == "bmm":
            if group != 1:
                return None
            bmm.append(term)
            kind_seen = "other" if kind_seen else ("other" if graph.is_const(term) else "input")
            continue
        source = term.inputs[0] if isinstance(term, Node) else term
        if not graph.is_const(source):
            if isinstance(term, Node):
                wheres.append((term, keep_true))
            else:
                inputs.append(term)
            kind_seen = "other" if kind_seen else "input"
            continue
        if isinstance(term, str):
            value = unfold_const(graph.constants[term], score_heads, group, sq)
            if value is None:
                return None
            name = term if value is graph.constants[term] else f"{term}/unfolded"
        else:
            _, a, b = term.inputs
            keep = graph.constants[source].astype(bool)
            keep = unfold_const(keep if keep_true else ~keep, score_heads, group, sq)
            if keep is None:
                return None
            fill = graph.scalar(b) if keep_true else graph.scalar(a)
            if fill is None:  # the matcher took only Wheres with a scalar fill
                return None
            # Where(keep, scores, fill) == scores + where(keep, 0, fill) wherever a row keeps a key.
            name = f"{term.name}/additive_mask"
            value = np.where(keep, 0.0, fill).astype(graph.dtypes.get(term.outputs[0], np.float32))
        kind = mask_kind(value, sq, sk)
        if kind == "causal" and causal is None:
            causal = at
        elif kind is not None:
            if name not in graph.constants or graph.constants[name] is not value:
                graph.constants[name] = value
                graph.shapes[name], graph.dtypes[name] = tuple(value.shape), value.dtype
            masks.append(name)
        kind_seen = "other" if kind_seen and kind and kind != "causal" else kind_seen or kind
    return masks, causal, kind_seen, inputs, wheres, bmm


def same_tensor(graph: Graph, producers: dict[str, Node], name: str) -> str:
    """``name`` with the Identity nodes and same-type Casts that produce it stepped over: the tensor it equals."""
    for _ in range(8):
        node = producers.get(name)
        if node is None or node.op_type not in ("Identity", "Cast") or (
                node.op_type == "Cast" and graph.dtypes.get(node.inputs[0]) != graph.dtypes.get(name)):
            break
        name = node.inputs[0]
    return name


def masked_row_guard(graph: Graph, producers: dict[str, Node], consumers: dict[str, list[Node]],
                     probs: str) -> tuple[list[Node], Node, str | None] | None:
    """(the guard's nodes, its Where, the bias whose all -inf rows it zeroes, or None for the IsNaN form) if the
    readers of softmax output ``probs`` are a guard giving 0 to rows with every key masked (module docstring); None
    otherwise. The bias form only holds as the attention's property where that bias is all the scores' mask, which
    the matcher checks."""
    users = consumers.get(probs, [])
    wheres = [u for u in users if u.op_type == "Where" and len(u.inputs) == 3 and u.inputs[2] == probs
              and u.inputs[0] != probs and graph.scalar(u.inputs[1]) == 0.0]
    if len(wheres) != 1:
        return None
    where = wheres[0]
    cond = producers.get(where.inputs[0])
    others = [u for u in users if u is not where]
    if cond is not None and cond.op_type == "IsNaN" and cond.inputs[0] == probs and others == [cond] \
            and len(consumers.get(cond.outputs[0], [])) == 1:
        return [cond, where], where, None
    if others or cond is None or cond.op_type != "Equal" or len(consumers.get(cond.outputs[0], [])) != 1:
        return None
    reduced = next((i for i in cond.inputs if not graph.is_const(i)), "")
    limit = next((graph.scalar(i) for i in cond.inputs if graph.is_const(i)), None)
    rmax = producers.get(reduced)
    if rmax is None or rmax.op_type != "ReduceMax" or limit != -np.inf or len(consumers.get(reduced, [])) != 1:
        return None
    bias = rmax.inputs[0]
    rank = len(graph.shapes.get(bias, ()))
    axes = graph.constants.get(rmax.inputs[1]) if len(rmax.inputs) > 1 and rmax.inputs[1] else \
        rmax.attrs.get("axes")
    if rank == 0 or axes is None or [int(a) % rank for a in np.ravel(axes)] != [rank - 1] \
            or not rmax.attrs.get("keepdims", 1) or rmax.attrs.get("noop_with_empty_axes", 0):
        return None
    return [rmax, cond, where], where, same_tensor(graph, producers, bias)


def multiplied_mask(g: Graph, node: Node, cur: tuple[int, ...], terms: list) -> str | None:
    """The scores side of ``scores * B`` when B is a constant 0 / 1 mask that the constant terms added after it
    already mask: ``w * b - 1e4 * (1 - b)`` (GPT-1, older causal LMs) adds at most -1e4 wherever b is 0, so the
    softmax gives those keys no weight whether their score was zeroed first or not (e^(s - 1e4) and e^(-1e4) both
    vanish in float32); every row of B keeps a key, so no row is masked whole (where the two would differ). None
    otherwise: a multiplicative mask with nothing added, or one whose zeros the additive terms do not cover."""
    const = next((i for i in node.inputs if g.is_const(i)), None)
    scores = next((i for i in node.inputs if i != const), None)
    if const is None or scores is None or g.shapes.get(scores) != cur:
        return None
    b = g.constants[const]
    added = [g.constants[t] for kind, t, _ in terms if kind == "add" and isinstance(t, str) and g.is_const(t)]
    if b.ndim > len(cur) or b.size < 2 or not added or not np.all((b == 0) | (b == 1)):
        return None
    try:
        total = np.broadcast_to(sum(np.asarray(a, np.float64) for a in added), cur)
        dropped = np.broadcast_to(b == 0, cur)
    except ValueError:
        return None
    if not np.all(total[dropped] <= -1e4) or not np.all(np.broadcast_to(b, cur).max(axis=-1) == 1):
        return None
    return scores
