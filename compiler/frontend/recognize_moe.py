"""Recognise mixture-of-experts blocks, whatever their exporter's spelling, and prove what they compute.

Exporters spell MoE very differently: M3ViT's export (examples/m3vit.py) picks the top-2 with two rounds of
ArgMax -> GatherElements -> ScatterElements and runs every expert densely with Einsum over stacked weights; HF
SwitchTransformers through the legacy exporter writes ArgMax -> OneHot -> CumSum (capacity) -> NonZero -> Gather ->
one unrolled MatMul pair per expert -> ScatterElements; hand-written routers use TopK with Gather or ScatterND.
Like the GELU / LayerNorm matchers (regions.py), the matcher finds the block by its shape in the graph and then
decides what it computes by running it:

1. anchor: an ArgMax / TopK whose input comes (through casts, softmax, knock-out scatters) from a MatMul of a tensor
   x with a constant gate [D, E] (a Gemm reading an [E, D] gate transposed, as the dynamo exporter writes
   nn.Linear, is rewritten to read it as [D, E]; image routing: of the token mean of x); where the gate reads a
   reshape of x that the experts do not (Mixtral's router flattens the tokens its experts read unflattened), x is
   the reshape's input;
2. block output: walking forward from the gate, the first point where every routing-dependent tensor has been
   consumed except one with x's element count: everything the routing touches meets there;
3. block: every node on a path from x to that output; it must read nothing but x and constants, and nothing it
   computes may be read outside it;
4. experts: stacked [E, D, H] / [E, H, D] constants (Einsum, MatMul, a Gather per expert, a GatherND per routed
   token; each stack counted once however often it is gathered) or E unrolled [D, H] / [H, D] MatMul
   pairs, with their biases and the activation between them; gated (SwiGLU / GeGLU) experts: a third stacked
   [E, D, H] up projection, or one fused [E, D, 2H] gate-and-up constant split in halves (transformers' Mixtral),
   or E unrolled [D, H], [D, H], [H, D] MatMul triples (a per-expert loop); which of the two is the gate the proof
   decides, and a square stacked weight (2H = D) is read both ways;
5. proof: the block evaluated on random x (float64) must equal ``compiler.numerics.router.moe_reference`` with
   those weights, for the routing semantics the spelling suggests (top-k, capacity, renormalisation, mode).

A block that gets past step 1 but fails a later step is an ``InputError`` naming its nodes: dropping the routing
silently would cost every expert on every token, or worse, compute the wrong thing.
"""

from __future__ import annotations

import itertools
import math
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

from compiler.frontend.graph import Graph, Node
from compiler.frontend.match import Match
from compiler.frontend.onnx_ops import run_node
from compiler.frontend.precision import FLOAT_TYPES, float_cast, widen
from hw.errors import InputError

if TYPE_CHECKING:  # the numerics package imports torch: loaded when a MoE block is proved, not at import
    from compiler.numerics.router import Scoring

__all__ = ["recognize_moe", "MOE_ANCHORS"]

MOE_ANCHORS = frozenset({"ArgMax", "TopK"})
#: Ops between a gate MatMul and the ArgMax / TopK that ranks its logits.
_ROUTE_BACK = frozenset({"Cast", "Identity", "Softmax", "ScatterElements", "ScatterND", "Div", "Mul", "Add", "Sub",
                         "Where", "Sigmoid", "Reshape", "Squeeze", "Unsqueeze"})
_GEMMS = frozenset({"MatMul", "Gemm", "Einsum"})
_MAX_BLOCK = 1500
_SEEDS = 12


@dataclass
class _Block:
    gate: Node
    x: str
    mode: str
    out: str | None = None
    nodes: list[Node] | None = None


def _describe(nodes: list[Node], limit: int = 6) -> str:
    shown = ", ".join(f"{n.op_type} '{n.name}'" for n in nodes[:limit])
    return shown + (f" and {len(nodes) - limit} more" if len(nodes) > limit else "")


def _partial(g: Graph, block: _Block, reason: str, nodes: list[Node]) -> InputError:
    return InputError(f"{g.source}: MoE block gated by {block.gate.describe()} is only partly recognised: {reason}; "
                      f"nodes: {_describe(nodes)}")


def _gate_of(g: Graph, producers: dict[str, Node], anchor: Node) -> Node | None:
    """The MatMul / Gemm with a constant [D, E] rhs whose logits ``anchor`` ranks (breadth-first, a few hops)."""
    e = g.shapes.get(anchor.inputs[0], (0,))[-1]
    frontier, seen = [anchor.inputs[0]], set()
    for _ in range(8):
        nxt = []
        for name in frontier:
            node = producers.get(name)
            if node is None or id(node) in seen:
                continue
            seen.add(id(node))
            if node.op_type in ("MatMul", "Gemm") and len(node.inputs) > 1 and g.is_const(node.inputs[1]):
                w = g.constants[node.inputs[1]]
                if w.ndim == 2 and w.shape[-1] == e and not node.attrs.get("transB", 0):
                    return node
                if w.ndim == 2 and w.shape[0] == e and node.op_type == "Gemm" and node.attrs.get("transB", 0):
                    return _untransposed(g, node)
            if node.op_type in _ROUTE_BACK:
                nxt += [i for i in node.inputs if i and not g.is_const(i)]
        frontier = nxt
    return None


def _untransposed(g: Graph, gemm: Node) -> Node:
    """``gemm`` (a Gemm with transB and a constant [E, D] gate, as the dynamo exporter writes nn.Linear) rewritten
    in place to read the gate as the [D, E] constant the MoE matcher and its dialect op take: the same product."""
    name = f"{gemm.inputs[1]}.T"
    if name not in g.constants:
        g.constants[name] = np.ascontiguousarray(g.constants[gemm.inputs[1]].T)
        g.shapes[name], g.dtypes[name] = g.constants[name].shape, g.constants[name].dtype
    gemm.inputs[1] = name
    gemm.attrs["transB"] = 0
    return gemm


def _router_input(g: Graph, producers: dict[str, Node], gate: Node) -> tuple[str, str]:
    """(x, mode): the gate's input, or for image routing the tensor the gate input is the token mean of."""
    name = gate.inputs[0]
    node = producers.get(name)
    if node is not None and node.op_type == "ReduceMean":
        src = node.inputs[0]
        rank = len(g.shapes.get(src, ()))
        axes = node.attrs.get("axes")
        if axes is None and len(node.inputs) > 1 and g.is_const(node.inputs[1]):
            axes = [int(a) for a in g.constants[node.inputs[1]].reshape(-1)]
        if rank >= 3 and axes is not None and [a % rank for a in axes] == [rank - 2]:
            return src, "image"
    return name, "token"


_VIEWS = frozenset({"Cast", "Reshape", "Flatten", "Identity", "Squeeze", "Unsqueeze"})


def _views_back(g: Graph, producers: dict[str, Node], x: str) -> list[str]:
    """``x`` and the tensors it is a view of (same element count and last dim), nearest first."""
    out = [x]
    for _ in range(4):
        node = producers.get(out[-1])
        if node is None or node.op_type not in _VIEWS or not node.inputs or node.inputs[0] not in g.shapes:
            break
        if node.op_type == "Cast" and not float_cast(g, node):
            break  # a float-to-float cast (DeepSeek's router reads x.float()) is a view of the values
        src, shape = node.inputs[0], g.shapes.get(out[-1], ())
        src_shape = g.shapes[src]
        if not shape or not src_shape or src_shape[-1] != shape[-1] or math.prod(src_shape) != math.prod(shape):
            break
        out.append(src)
    return out


def _find_output(g: Graph, consumers: dict[str, list[Node]], order: dict[int, int], block: _Block) -> tuple[
        str | None, list[Node]]:
    """Walk forward from the gate to where all routing-dependent tensors meet in one tensor of x's size."""
    gate = block.gate
    want = math.prod(g.shapes[block.x])
    d = g.shapes[block.x][-1]
    dep = {gate.outputs[0]}
    live = {gate.outputs[0]: len(consumers.get(gate.outputs[0], []))}
    visited: list[Node] = []
    seen_expert_gemm = False
    for node in g.nodes[order[id(gate)] + 1:order[id(gate)] + 1 + _MAX_BLOCK]:
        hits = [i for i in node.inputs if i in dep]
        if not hits:
            continue
        visited.append(node)
        if node.op_type in _GEMMS:
            seen_expert_gemm = True
        for i in hits:
            live[i] = live.get(i, 1) - 1
            if live[i] <= 0:
                live.pop(i, None)
        for o in node.outputs:
            if not o:
                continue
            dep.add(o)
            uses = len(consumers.get(o, [])) + (1 if o in g.outputs else 0)
            if uses:
                live[o] = uses
        if len(live) == 1 and seen_expert_gemm:
            (t,) = live
            shape = g.shapes.get(t)
            if shape and math.prod(shape) == want and shape[-1] == d:
                return t, visited
        if any(o in g.outputs for o in node.outputs if o) and len(live) > 1:
            break
    return None, visited


def _block_nodes(g: Graph, producers: dict[str, Node], consumers: dict[str, list[Node]], order: dict[int, int],
                 block: _Block) -> list[Node]:
    """Nodes on a path from x to the output, in graph order; checks the block reads and leaks nothing else."""
    assert block.out is not None
    start = order[id(producers[block.x])] if block.x in producers else -1
    found: dict[int, Node] = {}
    stack = [block.out]
    external: list[Node] = []
    while stack:
        name = stack.pop()
        if name == block.x or g.is_const(name):
            continue
        node = producers.get(name)
        if node is None or order[id(node)] <= start:
            reader = next((n for n in found.values() if name in n.inputs), None)
            external.append(reader or block.gate)
            continue
        if id(node) in found:
            continue
        found[id(node)] = node
        stack += [i for i in node.inputs if i]
    nodes = sorted(found.values(), key=lambda n: order[id(n)])
    if external:
        raise _partial(g, block, f"it reads a tensor other than its input '{block.x}' and constants", external)
    inside = {id(n) for n in nodes}
    for node in nodes:
        for o in node.outputs:
            if not o or o == block.out:
                continue
            if o in g.outputs or any(id(c) not in inside for c in consumers.get(o, [])):
                raise _partial(g, block, f"its intermediate '{o}' is also read outside the block", [node])
    return nodes


def _block_on_views(g: Graph, producers: dict[str, Node], consumers: dict[str, list[Node]], order: dict[int, int],
                    block: _Block) -> list[Node]:
    """``_block_nodes`` with ``block.x`` moved back through views of it until the block reads nothing else (the
    first error stands when none does)."""
    first: InputError | None = None
    for x in _views_back(g, producers, block.x):
        block.x = x
        try:
            return _block_nodes(g, producers, consumers, order, block)
        except InputError as err:
            first = first or err
    assert first is not None
    raise first


def _const_operand(g: Graph, node: Node) -> tuple[int, np.ndarray] | None:
    for pos, name in enumerate(node.inputs):
        if name and g.is_const(name) and g.constants[name].ndim >= 2:
            return pos, g.constants[name]
    return None


def _bias_after(g: Graph, consumers: dict[str, list[Node]], node: Node, width: int, experts: int | None) -> tuple[
        str | None, np.ndarray | None]:
    """A constant added right after ``node`` (through casts): [width] or [experts, width]."""
    name = node.outputs[0]
    for _ in range(3):
        users = consumers.get(name, [])
        if len(users) != 1:
            return None, None
        user = users[0]
        if user.op_type == "Add":
            other = user.inputs[1] if user.inputs[0] == name else user.inputs[0]
            if g.is_const(other):
                c = g.constants[other]
                shape = (width,) if experts is None else (experts, width)
                if c.size == math.prod(shape) and c.shape[-1] == width:
                    return other, c.reshape(shape)
            return None, None
        if user.op_type not in ("Cast", "Identity", "Reshape"):
            return None, None
        name = user.outputs[0]
    return None, None


def _oriented(w: np.ndarray, key: str, d: int, axis: int, flip: bool) -> tuple[np.ndarray, str]:
    """A stacked [E, ., .] weight with D on ``axis`` (1: w1, w3 [E, D, H]; 2: w2 [E, H, D]): transposed where D is
    on the other axis, or where it is square (the shape cannot tell) and ``flip`` asks for it."""
    if (w.shape[axis] != d and w.shape[3 - axis] == d) or (flip and w.shape[1] == w.shape[2]):
        return w.transpose(0, 2, 1), key + ".T"
    return w, key


def _experts(g: Graph, consumers: dict[str, list[Node]], block: _Block, nodes: list[Node], e: int,
             d: int, flip: frozenset[str] = frozenset()) -> dict[str, Any]:
    """Stacked or unrolled expert weights [E, D, H] / [E, H, D] (+ biases) of the block. ``flip``: the stacked
    weights ("w1", "w2", "w3") read the other way round where they are square (``square`` in the result lists
    them; the proof decides which reading the block computes)."""
    stacked: list[tuple[Node, str, np.ndarray]] = []
    flat: list[tuple[Node, str, np.ndarray]] = []
    for node in nodes:
        if node is block.gate or node.op_type not in _GEMMS | {"Gather", "GatherND"}:
            continue
        found = _const_operand(g, node)
        if found is None:
            continue
        pos, w = found
        # a Gather of the stacked weights per expert, or a GatherND per routed token (the dynamo export of
        # transformers' batched_mm experts)
        if node.op_type in ("Gather", "GatherND") and (pos != 0 or w.ndim != 3):
            continue
        if w.ndim == 3 and w.shape[0] == e:
            # a per-expert loop (DBRX) gathers each stacked weight once per expert it runs: one stack, listed once
            if all(node.inputs[pos] != key for _, key, _ in stacked):
                stacked.append((node, node.inputs[pos], w))
        elif w.ndim == 2 and node.op_type in ("MatMul", "Gemm") and pos == 1 and not node.attrs.get("transB", 0):
            flat.append((node, node.inputs[pos], w))
    out: dict[str, Any] = {"w3": None, "w3_name": None}
    if len(stacked) in (2, 3):
        (n1, k1, w1), (n2, k2, w2) = stacked[0], stacked[-1]
        out["square"] = [k for k, (_, _, w) in zip(("w1", "w3", "w2"), stacked[:-1] + stacked[-1:])
                         if w.shape[1] == w.shape[2]]
        w1, k1 = _oriented(w1, k1, d, 1, "w1" in flip)
        w2, k2 = _oriented(w2, k2, d, 2, "w2" in flip)
        h = w2.shape[1]
        nodes_used = [n1, n2]
        if len(stacked) == 3:  # gated: gate and up projections stacked apart
            n3, k3, w3 = stacked[1]
            w3, k3 = _oriented(w3, k3, d, 1, "w3" in flip)
            out.update(w3=w3, w3_name=k3)
            nodes_used.insert(1, n3)
        elif w1.shape[2] == 2 * h:  # gated, fused: [gate | up] along the hidden axis
            out.update(w3=w1[:, :, h:], w3_name=None)
            w1, k1 = w1[:, :, :h], None
        b1k, b1 = _bias_after(g, consumers, n1, h, e) if out["w3"] is None else (None, None)
        b2k, b2 = _bias_after(g, consumers, n2, d, e)
        out.update(w1=w1, w2=w2, w1_name=k1, w2_name=k2, b1=b1, b2=b2, b1_name=b1k, b2_name=b2k, spelling="stacked",
                   expert_nodes=nodes_used)
    elif flat and not stacked and len(flat) == 3 * e and all(
            t[0][2].shape == t[1][2].shape == t[2][2].shape[::-1] and t[0][2].shape[0] == d
            for t in (flat[i:i + 3] for i in range(0, len(flat), 3))):
        # gated experts unrolled (a per-expert loop: gate, up and down projection MatMuls per expert, in graph
        # order); which of the first two is the gate the proof decides
        triples = [flat[i:i + 3] for i in range(0, len(flat), 3)]
        if len({t[0][2].shape for t in triples}) != 1:
            raise _partial(g, block, "the unrolled experts differ in hidden size", [t[0][0] for t in triples])
        out.update(w1=np.stack([t[0][2] for t in triples]), w3=np.stack([t[1][2] for t in triples]),
                   w2=np.stack([t[2][2] for t in triples]), w1_name=None, w2_name=None, w3_name=None, b1=None,
                   b2=None, b1_name=None, b2_name=None, spelling="unrolled",
                   expert_nodes=[n for t in triples for n, _, _ in t])
    elif flat and not stacked:
        pairs = [(flat[i], flat[i + 1]) for i in range(0, len(flat) - 1, 2)
                 if flat[i][2].shape[0] == d and flat[i + 1][2].shape[-1] == d
                 and flat[i][2].shape[1] == flat[i + 1][2].shape[0]]
        if len(pairs) * 2 != len(flat) or len(pairs) != e:
            raise _partial(g, block, f"the gate ranks {e} experts but the block holds {len(flat)} expert matrices "
                           f"({len(pairs)} [D, H] / [H, D] pairs); a legacy-exporter trace unrolls only the experts "
                           "its input reached — re-export with a trace input that reaches every expert",
                           [n for n, _, _ in flat] or nodes)
        h = pairs[0][0][2].shape[1]
        if any(p[0][2].shape != (d, h) for p in pairs):
            raise _partial(g, block, "the unrolled experts differ in hidden size", [p[0][0] for p in pairs])
        b1s = [_bias_after(g, consumers, p[0][0], h, None)[1] for p in pairs]
        b2s = [_bias_after(g, consumers, p[1][0], d, None)[1] for p in pairs]
        out.update(w1=np.stack([p[0][2] for p in pairs]), w2=np.stack([p[1][2] for p in pairs]), w1_name=None,
                   w2_name=None, b1=_stack_all(b1s), b2=_stack_all(b2s), b1_name=None, b2_name=None,
                   spelling="unrolled", expert_nodes=[n for p in pairs for n in (p[0][0], p[1][0])])
    else:
        raise _partial(g, block, f"no expert weights found (expected two stacked [{e}, D, H] / [{e}, H, D] "
                       f"constants (three for gated experts) or {e} unrolled MatMul pairs)", nodes)
    return out


def _activation(nodes: list[Node]) -> list[str]:
    types = {n.op_type for n in nodes}
    if "Relu" in types:
        return ["relu"]
    if "Erf" in types or "Gelu" in types:
        return ["gelu", "gelu_tanh"]
    if "Tanh" in types:
        return ["gelu_tanh", "gelu"]
    if "Sigmoid" in types:
        return ["silu", "identity"]
    return ["identity"]


def _routing_hints(g: Graph, nodes: list[Node], block: _Block) -> tuple[int, int | None]:
    """(top_k, capacity): ArgMax rounds or TopK's k, and the constant a CumSum position is compared with."""
    k = 0
    e = g.constants[block.gate.inputs[1]].shape[1]
    topks = [n for n in nodes if n.op_type == "TopK" and len(n.inputs) > 1 and g.is_const(n.inputs[1])]
    if len(topks) > 1:  # a grouped router (DeepSeek-V3): the experts are the last top-k over all E scores
        over_e = [n for n in topks if len(g.shapes.get(n.inputs[0], ())) == 2 and g.shapes[n.inputs[0]][-1] == e]
        topks = over_e[-1:] or topks
    for n in nodes:
        if n.op_type == "ArgMax":
            k += 1
        elif n in topks:
            k += int(g.constants[n.inputs[1]].reshape(-1)[0])
    cap = None
    cum = {o for n in nodes if n.op_type == "CumSum" for o in n.outputs}
    for n in nodes:
        if n.op_type in ("LessOrEqual", "Less") and n.inputs[0] in cum and g.scalar(n.inputs[1]) is not None:
            cap = int(g.scalar(n.inputs[1])) - (1 if n.op_type == "Less" else 0)  # type: ignore[arg-type]
    return k, cap


def _run(g: Graph, nodes: list[Node], x_name: str, x: np.ndarray, out: str) -> np.ndarray:
    """Evaluate the block in float64 (float casts kept in float64, integer and bool casts honoured)."""
    values: dict[str, np.ndarray] = {x_name: x}
    for node in nodes:
        args: list[Any] = []
        for name in node.inputs:
            if not name:
                args.append(None)
            elif name in values:
                args.append(values[name])
            else:
                c = g.constants[name]
                args.append(widen(c))
        if node.op_type == "Cast" and int(node.attrs.get("to", 1)) in FLOAT_TYPES:
            res = [np.asarray(args[0], dtype=np.float64)]
        elif node.op_type == "Einsum":
            res = [np.einsum(str(node.attrs["equation"]), *args, optimize=True)]
        else:
            res = run_node(node.op_type, args, node.attrs, len(node.outputs))
        for name, value in zip(node.outputs, res):
            if name:
                values[name] = np.asarray(value)
    return values[out]


def _scorings(g: Graph, nodes: list[Node], e: int) -> list[Scoring | None]:
    """The softmax router (None), then the sigmoid routers the block's constants allow: a selection bias (a
    constant [E] added), expert groups (a [T, G, E/G] view) with the top-k of those groups, a routed scale (a
    scalar multiplied in)."""
    if not any(n.op_type == "Sigmoid" for n in nodes):
        return [None]
    from compiler.numerics.router import Scoring  # torch via the numerics package: see _prove
    biases: list[tuple[float, ...] | None] = [None]
    scales, groups = {1.0}, {(1, 1)}
    for n in nodes:
        consts = [g.constants[i] for i in n.inputs if i and g.is_const(i)]
        if n.op_type == "Add":
            biases += [tuple(float(v) for v in c.reshape(-1)) for c in consts if c.size == e and c.shape[-1] == e]
        elif n.op_type == "Mul":
            scales |= {float(c.reshape(-1)[0]) for c in consts if c.size == 1 and float(c.reshape(-1)[0]) > 0}
        elif n.op_type == "Reshape" and n.outputs[0] in g.shapes:
            shape = g.shapes[n.outputs[0]]
            if len(shape) == 3 and shape[1] > 1 and shape[1] * shape[2] == e:
                ks = {int(g.constants[t.inputs[1]].reshape(-1)[0]) for t in nodes if t.op_type == "TopK"
                      and len(t.inputs) > 1 and g.is_const(t.inputs[1])}
                groups |= {(shape[1], kg) for kg in ks if kg <= shape[1]}
    return [None] + [Scoring(bias=b, groups=gr, topk_groups=kg, scale=sc)
                     for b in biases for gr, kg in sorted(groups) for sc in sorted(scales)]


def _prove(g: Graph, block: _Block, nodes: list[Node], params: dict[str, Any], e: int, k: int,
           cap: int | None) -> dict[str, Any]:
    """Find routing semantics under which the block equals the reference on random data; InputError if none."""
    # compiler.numerics's package loads every kernel and torch: only a graph with an MoE candidate pays for it
    from compiler.numerics.router import moe_reference

    x_shape = g.shapes[block.x]
    d = x_shape[-1]
    tokens = math.prod(x_shape) // d
    images = math.prod(x_shape[:-2]) if len(x_shape) >= 3 else 1
    worst = math.inf
    evaluated = False
    failure = ""
    w1, w3 = params["w1"], params["w3"]
    orders = [(w1, w3, False)] + ([(w3, w1, True)] if w3 is not None else [])  # which half is the gate
    scorings = _scorings(g, nodes, e)
    for seed in range(_SEEDS):
        rng = np.random.default_rng(seed)
        x = rng.normal(0.0, 1.0, size=x_shape)
        try:
            with np.errstate(all="ignore"):
                got = _run(g, nodes, block.x, x, block.out)  # type: ignore[arg-type]
        except (ValueError, IndexError, KeyError, TypeError) as err:
            failure = str(err).splitlines()[0] if str(err) else type(err).__name__
            continue  # e.g. a legacy export whose unrolled loop needs every expert hit: try other data
        evaluated = True
        for scoring, renorm, act, (gw, uw, swapped) in (
                (sc, r, a, o) for sc in scorings for r in (False, True) for a in _activation(nodes) for o in orders):
            if scoring is not None and (cap is not None or block.mode != "token"):
                continue
            want, routing = moe_reference(
                x, g.constants[block.gate.inputs[1]], gw, params["w2"], top_k=k, mode=block.mode,
                b1=params["b1"], b2=params["b2"], activation=act, capacity=cap, renormalize=renorm,
                images=images, w3=uw, scoring=scoring)
            if got.size != want.size:
                continue
            err = float(np.max(np.abs(got.reshape(-1) - want.reshape(-1)))) if got.size else 0.0
            scale = max(1.0, float(np.max(np.abs(want)))) if want.size else 1.0
            worst = min(worst, err / scale)
            if err <= 1e-7 * scale:
                mode = block.mode
                if mode == "token" and cap is None and not renorm and scoring is None:
                    mode = "task"  # Edge-MoE's task gating: full-softmax top-k weights, no capacity
                cf = 0.0 if cap is None else cap * e / (tokens * k)
                return {"renormalize": renorm, "activation": act, "mode": mode, "capacity_factor": cf,
                        "scoring": scoring, "capacity": cap, "images": images, "checked_seed": seed,
                        "gate_swapped": swapped,
                        "tokens_per_expert_check": routing.tokens_per_expert().tolist()}
    if not evaluated:
        raise _partial(g, block, f"the block cannot be evaluated on test data ({failure})", nodes)
    raise _partial(g, block, f"it does not compute a top-{k} MoE over {e} experts with the weights found "
                   f"(closest relative difference {worst:.3g})", nodes)


def recognize_moe(graph: Graph, producers: dict[str, Node], consumers: dict[str, list[Node]],
                  taken: set[int]) -> list[Match]:
    """Every MoE block of ``graph`` as a ``Match`` of kind ``moe`` (adds their nodes to ``taken``).

    Raises ``InputError`` naming the nodes of a block that is only partly recognised (no combine, no expert count);
    a block whose experts are found but whose routing none of the MoE op's semantics computes is left as generic ops
    and named in ``graph.notes``.
    """
    g = graph
    order = {id(n): i for i, n in enumerate(g.nodes)}
    matches = []
    for anchor in g.nodes:
        if anchor.op_type not in MOE_ANCHORS or id(anchor) in taken:
            continue
        gate = _gate_of(g, producers, anchor)
        if gate is None or id(gate) in taken:
            continue
        x, mode = _router_input(g, producers, gate)
        if x not in g.shapes:
            continue
        block = _Block(gate=gate, x=x, mode=mode)
        block.out, visited = _find_output(g, consumers, order, block)
        if not any(n.op_type in _GEMMS for n in visited):
            continue  # a classifier's ArgMax, not a router: nothing is computed from its decision
        if block.out is None:
            raise _partial(g, block, "the routing decision never merges back into one tensor of the input's size "
                           "(is a routing tensor a graph output, or is the combine missing?)", [gate] + visited)
        nodes = _block_on_views(g, producers, consumers, order, block)
        x = block.x
        if gate not in nodes:
            nodes = sorted(nodes + [gate], key=lambda n: order[id(n)])
        e = g.constants[gate.inputs[1]].shape[1]
        d = g.shapes[x][-1]
        params = _experts(g, consumers, block, nodes, e, d)
        k, cap = _routing_hints(g, nodes, block)
        if not 1 <= k <= e:
            raise _partial(g, block, f"cannot tell how many experts each token uses (found {k})", [anchor])
        square = params.pop("square", [])
        # square stacked weights ([E, D, D]: a fused gate-and-up of 2H = D) are read both ways; the proof decides
        readings = [frozenset(c) for r in range(len(square) + 1) for c in itertools.combinations(square, r)]
        first: InputError | None = None
        for flip in readings:
            if flip:
                params = _experts(g, consumers, block, nodes, e, d, flip)
                params.pop("square", None)
            try:
                semantics = _prove(g, block, nodes, params, e, k, cap)
                break
            except InputError as err:
                first = first or err
        else:
            # Its experts and routing were found but it computes none of the routings the MoE op has (gpt-oss's
            # clamped SwiGLU with biases, PhiMoE's sparsemixer): its own ops compute it exactly, so it stays those
            # ops, and the report says it is not priced as an MoE.
            assert first is not None
            g.notes.append(f"MoE block gated by {block.gate.describe()} left as generic ops: "
                           f"{str(first).split(' is only partly recognised: ', 1)[-1].split('; ', 1)[0]}")
            continue
        if semantics.pop("gate_swapped"):
            params["w1"], params["w3"] = params["w3"], params["w1"]
            params["w1_name"], params["w3_name"] = params["w3_name"], params["w1_name"]
        name_nodes = params.pop("expert_nodes")
        props = {"num_experts": e, "top_k": k, "hidden": int(params["w1"].shape[2]), **params, **semantics,
                 "expert_node_names": [n.name for n in name_nodes]}
        matches.append(Match("moe", nodes, block.out, {"input": x, "gate": gate.inputs[1]}, props))
        taken.update(id(n) for n in nodes)
    return matches


def _stack_all(arrays: list[np.ndarray | None]) -> np.ndarray | None:
    """The arrays stacked along a new first axis, or None unless every one is there."""
    present = [a for a in arrays if a is not None]
    return np.stack(present) if len(present) == len(arrays) else None
