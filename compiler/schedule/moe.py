"""Plan ``dataflow.moe`` as hardware tasks: router -> dispatch -> one task per active expert -> combine.

The stages follow Edge-MoE's MoE kernel (sharc-lab/Edge-MoE, src/moe.cpp; docs/SOURCES.md [1, 2]):

``router``   the gate GEMM [T x D] x [D x E] on the array, then per token a softmax over E and a top-k scan on the
             vector lanes (``router`` cost class: online softmax + insertion compare);
``dispatch`` the token rows are read once and reordered into per-expert queues on chip (Edge-MoE's patch
             reordering), a gather of ``kept assignments x D`` elements on the vector lanes;
``expert*``  each *active* expert (one with a non-empty queue) loads its weights once per inference and runs
             fc1 [n_e x D x H] -> activation -> fc2 [n_e x H x D] on the array; the activation and the weighted
             scatter-accumulate of score * y into the output run on the vector lanes, overlapped with the array;
             gated (SwiGLU / GeGLU) experts add the up projection fc3 [n_e x D x H] on the array and the product
             act(fc1) * fc3 [n_e x H] on the vector lanes; inactive experts cost nothing, not even their weights;
``combine``  the accumulated [T x D] output is written off chip.

Bit widths come from the IR types: the array prices the gate GEMM at (input, gate) bits and the experts' GEMMs at
(input, w1) bits, so after ``quantize`` (int8 input, int8 / int4 experts, <= 16-bit gate) they cost what int8 GEMMs
cost, and their weights are loaded at their stored width. An integer block adds its dyadic requants (fc1 ->
activation input, activation -> int8, fc2 -> int16; compiler/simulate/moe.py) to the vector lanes' work, and its
activation runs at the ``hidden_bits`` width.

Queue lengths (tokens per expert) come from the op's ``tokens_per_expert`` attribute (``route-moe`` pass: measured
from real inputs, or its stated uniform assumption); without it the uniform assumption is made here. Under the
uniform assumption T * k assignments spread as evenly as possible over the E experts (capacity clips them); image
routing sends each image's tokens to k experts, images spread round-robin.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from functools import partial
from typing import Any

from xdsl.dialects.builtin import DenseArrayBase, IntegerAttr, IntegerType, StringAttr

from compiler.dialect import dataflow as df
from compiler.schedule.plan import CostFn, LayerPlan, PlannedLayer, TaskSpec, element_bits, priced_task, tensor_bytes
from hw.models.base import Cost
from hw.perf.workload import GemmWork, MoveWork, VectorWork, Work

__all__ = ["plan_moe", "moe_shape", "assumed_tokens_per_expert", "tokens_per_expert_of", "expert_weight_bytes",
           "TOKENS_ATTR", "ROUTING_ATTR"]

TOKENS_ATTR = "tokens_per_expert"
"""Discardable attribute: [E] queue lengths (kept assignments per expert) the lowering prices."""
ROUTING_ATTR = "routing"
"""Discardable attribute: where ``tokens_per_expert`` came from: ``measured`` (real inputs) or ``assumed``."""

_ACTIVATION_COST = {"gelu": ("gelu", "exact"), "gelu_tanh": ("gelu", "exact"), "silu": ("gelu", "exact"),
                    "relu": ("relu", "exact")}


def moe_shape(op: df.MoeOp) -> dict[str, int]:
    """Tokens T, model dim D, hidden H, experts E, top_k k and images of a ``dataflow.moe``."""
    x = op.input.type.get_shape()  # type: ignore[attr-defined]
    d = x[-1]
    tokens = math.prod(x) // d
    images = math.prod(x[:-2]) if len(x) >= 3 else 1
    return {"tokens": tokens, "d": d, "hidden": op.w1.type.get_shape()[2],  # type: ignore[attr-defined]
            "experts": op.num_experts_value(), "top_k": op.top_k_value(), "images": images}


def assumed_tokens_per_expert(tokens: int, experts: int, top_k: int, mode: str, capacity_factor: float,
                              images: int = 1) -> list[int]:
    """Queue lengths under the uniform routing assumption (module docstring), capacity applied."""
    if mode == df.MoeMode.IMAGE:
        per_image = tokens // max(1, images)
        counts = [0] * experts
        for img in range(images):
            for j in range(top_k):
                counts[(img * top_k + j) % experts] += per_image
        return counts
    total = tokens * top_k
    base, extra = divmod(total, experts)
    counts = [base + (1 if e < extra else 0) for e in range(experts)]
    if capacity_factor > 0:
        cap = math.ceil(capacity_factor * tokens * top_k / experts - 1e-9)
        counts = [min(c, cap) for c in counts]
    return counts


def tokens_per_expert_of(op: df.MoeOp) -> tuple[list[int], str]:
    """(queue lengths, ``measured`` | ``assumed``): the op's routing attribute, else the uniform assumption."""
    attr = op.attributes.get(TOKENS_ATTR)
    source = op.attributes.get(ROUTING_ATTR)
    if isinstance(attr, DenseArrayBase):
        counts = [int(v) for v in attr.get_values()]
        return counts, source.data if isinstance(source, StringAttr) else "assumed"
    s = moe_shape(op)
    return assumed_tokens_per_expert(s["tokens"], s["experts"], s["top_k"], op.mode_choice().value,
                                     op.capacity_factor_value(), s["images"]), "assumed"


def expert_weight_bytes(op: df.MoeOp, counts: list[int]) -> tuple[int, int]:
    """(bytes of the active experts' weights and biases, bytes of all experts'): what one inference loads."""
    e = op.num_experts_value()
    per_expert = sum(tensor_bytes(v) for v in (op.w1, op.w2, op.b1, op.b2, op.w3) if v is not None) // e
    active = sum(1 for c in counts if c > 0)
    return active * per_expert, e * per_expert


@dataclass(frozen=True)
class _Expert:
    """One active expert's task: its GEMMs (fc1, fc2, gated: the up projection fc3) and the vector work beside them
    (activation, gated product, requants, score * y)."""

    index: int
    fc1: GemmWork
    fc2: GemmWork
    vector: tuple[VectorWork, ...]
    fc3: GemmWork | None = None

    def gemms(self) -> tuple[GemmWork, ...]:
        """The expert's array work, in issue order."""
        return (self.fc1, self.fc2) if self.fc3 is None else (self.fc1, self.fc3, self.fc2)


@dataclass(frozen=True)
class _MoePlan:
    """What the pricing of one MoE block needs from its op (module docstring)."""

    name: str
    gate: GemmWork
    route: VectorWork
    gather: MoveWork
    experts: tuple[_Expert, ...]
    combine: VectorWork
    router_bytes_in: int
    expert_bytes_in: int
    out_bytes: int
    deps: tuple[str, ...]
    macs_by_bits: tuple[tuple[int, int], ...]
    weight_bytes: int
    bytes_offchip: int
    detail: tuple[tuple[str, Any], ...]


def plan_moe(op: df.MoeOp, deps: tuple[str, ...]) -> PlannedLayer:
    """The planned layer of one MoE block (its input produced by ``deps``): router -> dispatch -> experts ->
    combine (module docstring)."""
    name = op.layer_name()
    s = moe_shape(op)
    t, d, h, e, k = s["tokens"], s["d"], s["hidden"], s["experts"], s["top_k"]
    in_bits, w_bits = element_bits(op.input), element_bits(op.w1)
    counts, source = tokens_per_expert_of(op)
    x_bytes, gate_bytes = tensor_bytes(op.input), tensor_bytes(op.gate)
    gate = GemmWork(m=t, n=e, k=d, in_bits=in_bits, w_bits=element_bits(op.gate))
    elem_bytes = max(1, in_bits // 8)
    act_kind = _ACTIVATION_COST.get(op.activation_value())
    integer = isinstance(op.input.type.get_element_type(), IntegerType)  # type: ignore[attr-defined]
    hb = op.attributes.get("hidden_bits")
    act_bits = hb.value.data if isinstance(hb, IntegerAttr) else 32
    # Requants per expert row: fc1 -> activation input (H), activation -> int8 (H, not for ReLU / identity), fc2 (D).
    requant_per_row = (h + (h if act_kind is not None and act_kind[0] != "relu" else 0) + d) if integer else 0
    experts = []
    for idx, n_e in enumerate(counts):
        if n_e <= 0:
            continue
        vector: list[VectorWork] = []
        if act_kind is not None:
            vector.append(VectorWork(kind=act_kind[0], elements=n_e * h, approx=act_kind[1], bits=act_bits))
        if op.gated():
            vector.append(VectorWork(kind="mul", elements=n_e * h, bits=32))  # act(fc1) * fc3
        if requant_per_row:
            vector.append(VectorWork(kind="requant", elements=n_e * requant_per_row, bits=32))
        vector.append(VectorWork(kind="mul", elements=n_e * d, bits=32))  # score * y, accumulated in place
        fc3 = GemmWork(m=n_e, n=h, k=d, in_bits=in_bits, w_bits=w_bits) if op.gated() else None
        experts.append(_Expert(idx, GemmWork(m=n_e, n=h, k=d, in_bits=in_bits, w_bits=w_bits),
                               GemmWork(m=n_e, n=d, k=h, in_bits=in_bits, w_bits=w_bits), tuple(vector), fc3))
    active_w, all_w = expert_weight_bytes(op, counts)
    expert_macs = sum(g.macs for x in experts for g in x.gemms())
    by_bits = {max(in_bits, element_bits(op.gate)): gate.macs}
    by_bits[max(in_bits, w_bits)] = by_bits.get(max(in_bits, w_bits), 0) + expert_macs
    out_bytes = tensor_bytes(op.result)
    plan = _MoePlan(
        name=name, gate=gate, route=VectorWork(kind="router", elements=t * e, rows=t, bits=32),
        gather=MoveWork(kind="gather", bytes=sum(counts) * d * elem_bytes), experts=tuple(experts),
        combine=VectorWork(kind="add", elements=t * d, bits=32), router_bytes_in=x_bytes + gate_bytes,
        expert_bytes_in=sum(tensor_bytes(v) for v in (op.w1, op.w2, op.b1, op.b2, op.w3) if v is not None) // e,
        out_bytes=out_bytes, deps=deps, macs_by_bits=tuple(by_bits.items()), weight_bytes=gate_bytes + active_w,
        bytes_offchip=x_bytes + gate_bytes + active_w + out_bytes,
        detail=tuple(_detail(op, counts, source, active_w, all_w, t, k).items()))
    names = (f"{name}.router", f"{name}.dispatch", *(f"{name}.expert{x.index}" for x in experts), f"{name}.combine")
    return PlannedLayer(name, names, partial(_price_moe, plan))


def _price_moe(p: _MoePlan, cost: CostFn) -> LayerPlan:
    c_gate, c_route = cost(p.gate), cost(p.route)
    router = priced_task(TaskSpec(f"{p.name}.router", p.router_bytes_in, 0, p.deps),
                         Cost(unit=c_gate.unit, compute_cycles=c_gate.compute_cycles + c_route.compute_cycles,
                              tiles=c_gate.tiles))
    c_dispatch = cost(p.gather)
    dispatch = priced_task(TaskSpec(f"{p.name}.dispatch", 0, 0, (router.name,)), c_dispatch)
    tasks = [router, dispatch]
    works: list[Work] = [p.gate, p.route, p.gather]
    onchip = c_gate.onchip_bytes + c_route.onchip_bytes + c_dispatch.onchip_bytes
    for x in p.experts:
        gemms = [cost(g) for g in x.gemms()]
        works += [*x.gemms(), *x.vector]
        vector = [cost(w) for w in x.vector]
        cycles = max(sum(c.compute_cycles for c in gemms), sum(c.compute_cycles for c in vector))
        tasks.append(priced_task(TaskSpec(f"{p.name}.expert{x.index}", p.expert_bytes_in, 0, (dispatch.name,)),
                                 Cost(unit=gemms[0].unit, compute_cycles=cycles, tiles=max(c.tiles for c in gemms))))
        onchip += sum(c.onchip_bytes for c in gemms) + sum(c.onchip_bytes for c in vector)
    works.append(p.combine)
    c_comb = cost(p.combine)
    expert_names = tuple(t.name for t in tasks[2:])
    tasks.append(priced_task(TaskSpec(f"{p.name}.combine", 0, p.out_bytes, expert_names or (dispatch.name,)), c_comb))
    return LayerPlan(name=p.name, op="moe", tasks=tasks, works=works,
                     macs=sum(w.macs for w in (p.gate, *(g for x in p.experts for g in x.gemms()))),
                     macs_by_bits=dict(p.macs_by_bits), weight_bytes=p.weight_bytes, bytes_offchip=p.bytes_offchip,
                     onchip_bytes=onchip + c_comb.onchip_bytes, detail=dict(p.detail))


def _detail(op: df.MoeOp, counts: list[int], source: str, active_w: int, all_w: int, tokens: int,
            top_k: int) -> dict[str, Any]:
    active = [c for c in counts if c > 0]
    mean = sum(counts) / len(counts) if counts else 0.0
    return {
        "experts": op.num_experts_value(),
        "top_k": top_k,
        "mode": op.mode_choice().value,
        "routing": source,
        "active_experts": len(active),
        "tokens_per_expert": ",".join(str(c) for c in counts),
        "max_tokens_per_expert": max(counts) if counts else 0,
        "load_imbalance": (max(counts) / mean) if mean else 0.0,
        "dropped_assignments": max(0, tokens * top_k - sum(counts)),
        "expert_weight_bytes": active_w,
        "expert_weight_bytes_all": all_w,
    }
