"""Rotary position embeddings (RoPE) between a Q/K projection and QK^T, recognised by what they compute.

Exporters spell RoPE in many ways: rotate-half (LLaMA, Mistral, Qwen2: ``x*cos + cat(-x2, x1)*sin``), interleaved
pairs (GPT-J: stack/reshape of ``(-x[1::2], x[::2])``), partial rotary (Phi, GPT-J: only the first R of the Dh
dims rotate, the rest pass through a Slice/Concat), applied before or after the head transpose, with the attention
scale folded in or not. Once shape folding has turned the cos/sin tables into constants, every spelling is the same
function: per sequence position s and head, a fixed linear map of the head's Dh values in which output dim i reads
input dim i (times cos) and at most one partner dim p(i) (times +-sin). ``fit_rope`` measures that map by pushing
one-hot inputs through the chain and checks it on random data; the frontend then re-emits it in the [B, S, D]
layout the attention op reads (``materialize_rope``): one ``dataflow.rope`` op (rotate-half or interleaved, R of
the Dh dims rotating), or for any other pairing Reshape (a view), x*cos, Gather(x, p)*sin, Add, Reshape. The
arithmetic is what the export ran; only the head transpose moves behind the rotation.
"""

from __future__ import annotations

import hashlib
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from compiler.frontend.graph import Graph, Node
from compiler.frontend.precision import tolerance

__all__ = ["Rope", "fit_rope", "materialize_rope", "rope_op_form", "rope_region"]

#: Ops a RoPE region may contain between the rank-3 projection output and the rotated heads. Expand (to a constant
#: shape) is the K/V head repeat of grouped-query attention, which Falcon's new decoder applies before the rotation.
ROPE_OPS = frozenset({"Mul", "Add", "Sub", "Neg", "Slice", "Concat", "Split", "Unsqueeze", "Squeeze", "Reshape",
                      "Transpose", "Cast", "Identity", "Gather", "Flatten", "Expand"})
_MAX_NODES = 48


@dataclass
class Rope:
    """``y[b, s, h, i] = x[b, s, h, source[i]] * cos[s, i] + x[b, s, h, partner[i]] * sin[s, i]`` (sin carries the
    sign). ``source`` is None where output dim i reads its own input dim (every rotation but a permuting one:
    DeepSeek's ``rope_interleave`` de-interleaves the pairs it rotates, so output dim i reads dims 2i and 2i+1)."""

    cos: np.ndarray
    sin: np.ndarray
    partner: np.ndarray
    source: np.ndarray | None = None

    @property
    def style(self) -> str:
        """``half`` (rotate-half), ``interleaved`` (pairs 2i, 2i+1) or ``other``; R rotated dims of Dh."""
        if self.source is not None:
            return "other"
        moved = np.flatnonzero(self.partner != np.arange(self.partner.size))
        if moved.size == 0:
            return "none"
        if np.array_equal(self.partner[moved], moved ^ 1):
            return "interleaved"
        r = moved.size
        if np.array_equal(moved, np.arange(r)) and np.array_equal(self.partner[moved], (moved + r // 2) % r):
            return "half"
        return "other"

    def apply(self, x: np.ndarray, dh: int) -> np.ndarray:
        """The rotation on a [B, S, H*dh] array."""
        b, s, d = x.shape
        x4 = x.reshape(b, s, d // dh, dh)
        own = x4 if self.source is None else x4[..., self.source]
        y = own * self.cos[None, :, None, :] + x4[..., self.partner] * self.sin[None, :, None, :]
        return y.reshape(b, s, d)


def rope_region(graph: Graph, producers: dict[str, Node], end: str) -> tuple[str, list[Node]] | None:
    """The nodes computing ``end`` from a single rank-3 tensor and constants through ROPE_OPS, and that tensor.

    The walk stops at the first rank-3 tensors on every path (the projection output or its bias Add); any other
    non-constant leaf, or more than one rank-3 leaf, means this is not a rotation of one projection."""
    nodes: dict[int, Node] = {}
    leaves: set[str] = set()
    stack = [end]
    seen: set[str] = set()
    while stack:
        name = stack.pop()
        if name in seen or graph.is_const(name):
            continue
        seen.add(name)
        if name != end and len(graph.shapes.get(name, ())) == 3:
            leaves.add(name)
            continue
        node = producers.get(name)
        if node is None or node.op_type not in ROPE_OPS or len(nodes) >= _MAX_NODES:
            return None
        if node.op_type in ("Gather", "Expand") and not graph.is_const(node.inputs[1]):
            return None
        nodes[id(node)] = node
        stack.extend(i for i in node.inputs if i)
    if len(leaves) != 1 or not any(n.op_type == "Mul" for n in nodes.values()):
        return None
    return leaves.pop(), list(nodes.values())


#: Rotations fitted recently, by (input shape, head dim): every layer of a model rotates Q (and K) with the same
#: tables, so each later layer only has to pass the random-data check (one run of its chain), not the Dh / H probes.
_RECENT: OrderedDict[tuple[tuple[int, ...], int], list[tuple[float, Rope | None]]] = OrderedDict()
_RECENT_KEYS = 16


def fit_rope(run: Callable[[np.ndarray], np.ndarray], shape: tuple[int, ...], dh: int,
             expect: Callable[[np.ndarray], np.ndarray], eps: float = 0.0) -> tuple[float, Rope | None] | None:
    """(c, rope) with ``run(x) == c * expect(rope(x))`` for a [B, S, H*dh] input, rope None for no rotation.

    ``expect`` is the head split the attention op does itself (a pure index map). Column j of each position's map
    comes from an input that is 1 at dim j of one head; each probe gives every head its own column, so Dh / H
    probes measure the map (a LLaMA-7B layer: 4 for Q, 16 for its 8 KV heads). The final check on random data
    then confirms that every batch row and every head rotates the same way. That check alone decides: a rotation
    fitted for an earlier chain of the same shape is tried first, and the probes run only when it fails. ``eps`` is
    the machine epsilon of the chain's narrowest float type (compiler/frontend/precision.py): a float16 export's
    cos / sin tables keep cos^2 + sin^2 = 1 only to within its rounding."""
    if len(shape) != 3 or shape[2] % dh:
        return None
    key = (tuple(shape), dh)
    x = _random_input(key[0])
    for candidate in _RECENT.get(key, []):
        if _confirmed(run, x, dh, expect, *candidate):
            _RECENT.move_to_end(key)
            return candidate
    fitted = _probe(run, shape, dh, expect, tolerance(1e-5, eps))
    if fitted is None or not _confirmed(run, x, dh, expect, *fitted):
        return None
    _RECENT.setdefault(key, []).insert(0, fitted)
    del _RECENT[key][4:]
    _RECENT.move_to_end(key)
    while len(_RECENT) > _RECENT_KEYS:
        _RECENT.popitem(last=False)
    return fitted


def _random_input(shape: tuple[int, ...]) -> np.ndarray:
    """The check's random data for ``shape`` (seeded, drawn once per shape while that shape is in use)."""
    key = (shape, -1)
    if key not in _INPUTS:
        _INPUTS[key] = np.random.default_rng(0).normal(size=shape)
        _INPUTS[key].flags.writeable = False
        while len(_INPUTS) > 4:
            _INPUTS.popitem(last=False)
    _INPUTS.move_to_end(key)
    return _INPUTS[key]


_INPUTS: OrderedDict[tuple[tuple[int, ...], int], np.ndarray] = OrderedDict()


def _confirmed(run: Callable[[np.ndarray], np.ndarray], x: np.ndarray, dh: int,
               expect: Callable[[np.ndarray], np.ndarray], c: float, rope: Rope | None) -> bool:
    """``run(x) == c * expect(rope(x))`` on the random ``x``: |got - want| <= 1e-6 |want| + 1e-9 max|want|
    everywhere (``np.allclose``'s test, in three passes over the data instead of its eight)."""
    want = np.asarray(c * expect(rope.apply(x, dh) if rope is not None else x))
    got = np.asarray(run(x))
    if got.shape != want.shape:
        return False
    bound = np.abs(want)
    atol = 1e-9 * float(bound.max(initial=0.0))
    bound *= 1e-6
    bound += atol
    err = np.subtract(got, want, dtype=np.float64)
    np.abs(err, out=err)
    return bool(np.all(err <= bound))


def _probe(run: Callable[[np.ndarray], np.ndarray], shape: tuple[int, ...], dh: int,
           expect: Callable[[np.ndarray], np.ndarray], rtol: float) -> tuple[float, Rope | None] | None:
    """The candidate (c, rope) measured with one-hot probes, not yet checked on random data; ``rtol``: how far the
    rotation's amplitude sqrt(cos^2 + sin^2) may stray from one scale c (the tables' rounding)."""
    b, s, d = shape
    hs = d // dh
    n = b * s * d
    # flat input index of every output element, made contiguous once (reshaping the strided view copies)
    where = np.ascontiguousarray(expect(np.arange(n, dtype=np.float64).reshape(shape)).astype(np.int64))
    flat = where.reshape(-1)
    per_pos = np.zeros((s, dh, dh))
    for first in range(0, dh, hs):
        x = np.zeros((b, s, hs, dh))
        cols = [(h, first + h) for h in range(hs) if first + h < dh]
        for h, j in cols:
            x[:, :, h, j] = 1.0
        y = run(x.reshape(shape))
        if y.shape != where.shape:
            return None
        y = np.ascontiguousarray(y).reshape(-1)
        z = np.full(n, np.nan)
        z[flat] = y
        if np.isnan(z).any() or not np.array_equal(z[flat], y):
            return None
        z4 = z.reshape(b, s, hs, dh)
        for h, j in cols:
            per_pos[:, :, j] = z4[0, :, h, :]
    eye = np.arange(dh)
    scale_ref = float(np.abs(per_pos).max())
    if scale_ref == 0.0:
        return None
    used: np.ndarray = np.any(np.abs(per_pos) > 1e-9 * scale_ref, axis=0)  # [dh out, dh in]
    if (used.sum(axis=1) > 2).any() or not used.any(axis=1).all():
        return None
    # Output dim i reads its own dim (times cos) and at most one partner (times sin); where it does not read its
    # own dim (a permuting rotation), the lower of the two it reads takes cos's place.
    own = used[eye, eye]
    source = np.where(own, eye, used.argmax(axis=1))
    others: np.ndarray = used.copy()
    others[eye, source] = False
    partner = np.where(others.any(axis=1), others.argmax(axis=1), source)
    diag = per_pos[:, eye, source]
    sin = np.where(partner != source, per_pos[:, eye, partner], 0.0)
    amp = np.sqrt(diag**2 + sin**2)
    c = float(amp.mean())
    if not np.allclose(amp, c, rtol=rtol, atol=0):
        return None
    rope: Rope | None = Rope(cos=(diag / c), sin=(sin / c), partner=partner.astype(np.int64),
                             source=None if own.all() else source.astype(np.int64))
    if rope is not None and rope.style == "none" and np.allclose(rope.cos, 1.0, rtol=1e-7, atol=0):
        rope = None
    return c, rope


def _table(graph: Graph, kind: str, value: np.ndarray, dtype: np.dtype) -> str:
    """A constant shared by every layer and by Q and K (same content, same name)."""
    value = np.ascontiguousarray(value.astype(dtype))
    digest = hashlib.sha1(value.tobytes() + str(value.shape).encode()).hexdigest()[:12]
    name = f"rope.{kind}.{digest}"
    graph.constants[name] = value
    graph.shapes[name] = tuple(value.shape)
    graph.dtypes[name] = value.dtype
    return name


def rope_op_form(rope: Rope, dtype: np.dtype) -> tuple[str, int] | None:
    """(style, rotary dim R) when ``rope`` is a ``dataflow.rope``: the first R dims rotate as rotate-half or
    interleaved pairs, and the rest pass through exactly (cos 1, sin 0 in ``dtype``); else None."""
    moved = np.flatnonzero(rope.partner != np.arange(rope.partner.size))
    r = int(moved.size)
    if r == 0 or r % 2 or not np.array_equal(moved, np.arange(r)) or rope.source is not None:
        return None
    if np.array_equal(rope.partner[:r], (moved + r // 2) % r):
        style = "rotate_half"
    elif np.array_equal(rope.partner[:r], moved ^ 1):
        style = "interleaved"
    else:
        return None
    if not (np.all(rope.cos[:, r:].astype(dtype) == 1) and np.all(rope.sin[:, r:] == 0)):
        return None
    return style, r


def materialize_rope(graph: Graph, source: str, rope: Rope, dh: int, prefix: str) -> str:
    """Insert the rotation of ``source`` ([B, S, H*dh]) into ``graph`` right after its producer; returns its
    output. Rotate-half and interleaved rotations become one internal ``Rope`` node (``dataflow.rope``, its cos and
    sin tables [S, R] shared by every layer); any other pairing stays the element-wise form."""
    b, s, d = graph.shapes[source]
    hs = d // dh
    dtype = graph.dtypes.get(source, np.dtype(np.float32))
    fdtype = dtype if dtype.kind == "f" else np.dtype(np.float32)
    at = next((i + 1 for i, n in enumerate(graph.nodes) if source in n.outputs), 0)
    form = rope_op_form(rope, fdtype)
    if form is not None:
        style, r = form
        cos = _table(graph, "cos", rope.cos[:, :r], fdtype)
        sin = _table(graph, "sin", rope.sin[:, :r], fdtype)
        out = f"{prefix}/rope_output_0"
        graph.shapes[out], graph.dtypes[out] = (b, s, d), dtype
        graph.nodes[at:at] = [Node("Rope", prefix, [source, cos, sin], [out],
                                   {"style": style, "head_dim": dh, "rotary_dim": r})]
        return out
    cos = _table(graph, "cos", rope.cos.reshape(s, 1, dh), fdtype)
    sin = _table(graph, "sin", rope.sin.reshape(s, 1, dh), fdtype)
    partner = _table(graph, "partner", rope.partner, np.dtype(np.int64))
    split = _table(graph, "shape", np.array([b, s, hs, dh]), np.dtype(np.int64))
    merge = _table(graph, "shape", np.array([b, s, d]), np.dtype(np.int64))
    t = {k: f"{prefix}/{k}_output_0" for k in ("heads", "own", "cos", "rot", "sin", "sum", "out")}
    new = [Node("Reshape", f"{prefix}/heads", [source, split], [t["heads"]])]
    own = t["heads"]
    if rope.source is not None:  # a permuting rotation: output dim i's cos term reads dim source[i]
        own = t["own"]
        new.append(Node("Gather", f"{prefix}/own", [t["heads"], _table(graph, "source", rope.source,
                                                                          np.dtype(np.int64))], [own], {"axis": 3}))
    new += [
        Node("Mul", f"{prefix}/cos", [own, cos], [t["cos"]]),
        Node("Gather", f"{prefix}/rot", [t["heads"], partner], [t["rot"]], {"axis": 3}),
        Node("Mul", f"{prefix}/sin", [t["rot"], sin], [t["sin"]]),
        Node("Add", f"{prefix}/add", [t["cos"], t["sin"]], [t["sum"]]),
        Node("Reshape", f"{prefix}/merge", [t["sum"], merge], [t["out"]]),
    ]
    for name in ("heads", "own", "cos", "rot", "sin", "sum"):
        graph.shapes[t[name]], graph.dtypes[t[name]] = (b, s, hs, dh), dtype
    graph.shapes[t["out"]], graph.dtypes[t["out"]] = (b, s, d), dtype
    graph.nodes[at:at] = new
    return t["out"]
