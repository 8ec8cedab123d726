"""Lower ``dataflow.moe`` to hardware tasks: router -> dispatch -> one task per active expert -> combine.

The stages follow Edge-MoE's MoE kernel (sharc-lab/Edge-MoE, src/moe.cpp; docs/SOURCES.md [1, 2]):

``router``   the gate GEMM [T x D] x [D x E] on the array, then per token a softmax over E and a top-k scan on the
             vector lanes (``router`` cost class: online softmax + insertion compare);
``dispatch`` the token rows are read once and reordered into per-expert queues on chip (Edge-MoE's patch
             reordering), a gather of ``kept assignments x D`` elements on the vector lanes;
``expert*``  each *active* expert (one with a non-empty queue) loads its weights once per inference and runs
             fc1 [n_e x D x H] -> activation -> fc2 [n_e x H x D] on the array; the activation and the weighted
             scatter-accumulate of score * y into the output run on the vector lanes, overlapped with the array;
             inactive experts cost nothing, not even their weights;
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
from typing import Any

from xdsl.dialects.builtin import DenseArrayBase, IntegerAttr, IntegerType, StringAttr

from compiler.dialect import dataflow as df
from compiler.schedule.plan import LayerPlan, Lowering, element_bits, tensor_bytes
from hw.models.base import Cost
from hw.perf.workload import GemmWork, MoveWork, VectorWork, Work

__all__ = ["lower_moe", "moe_shape", "assumed_tokens_per_expert", "tokens_per_expert_of", "expert_weight_bytes",
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
            "experts": df.int_attr(op, "num_experts"), "top_k": df.int_attr(op, "top_k"), "images": images}


def assumed_tokens_per_expert(tokens: int, experts: int, top_k: int, mode: str, capacity_factor: float,
                              images: int = 1) -> list[int]:
    """Queue lengths under the uniform routing assumption (module docstring), capacity applied."""
    if mode == "image":
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
    return assumed_tokens_per_expert(s["tokens"], s["experts"], s["top_k"], df.str_attr(op, "mode"),
                                     df.float_attr(op, "capacity_factor"), s["images"]), "assumed"


def expert_weight_bytes(op: df.MoeOp, counts: list[int]) -> tuple[int, int]:
    """(bytes of the active experts' weights and biases, bytes of all experts'): what one inference loads."""
    e = df.int_attr(op, "num_experts")
    per_expert = sum(tensor_bytes(v) for v in (op.w1, op.w2, op.b1, op.b2) if v is not None) // e
    active = sum(1 for c in counts if c > 0)
    return active * per_expert, e * per_expert


def lower_moe(lw: Lowering, op: df.MoeOp) -> LayerPlan:
    """The tasks and report numbers of one MoE block (module docstring)."""
    name = df.str_attr(op, "layer")
    s = moe_shape(op)
    t, d, h, e, k = s["tokens"], s["d"], s["hidden"], s["experts"], s["top_k"]
    in_bits, w_bits = element_bits(op.input), element_bits(op.w1)
    counts, source = tokens_per_expert_of(op)
    model = lw.model
    deps = lw.deps([op.input])
    x_bytes = tensor_bytes(op.input)
    gate_bytes = tensor_bytes(op.gate)
    plan = LayerPlan(name=name, op="moe", tasks=[])

    gate = GemmWork(m=t, n=e, k=d, in_bits=in_bits, w_bits=element_bits(op.gate))
    route = VectorWork(kind="router", elements=t * e, rows=t, bits=32)
    c_gate, c_route = model.cost(gate), model.cost(route)
    router = lw.task(f"{name}.router", Cost(unit=c_gate.unit, compute_cycles=c_gate.compute_cycles
                                            + c_route.compute_cycles, tiles=c_gate.tiles),
                     x_bytes + gate_bytes, 0, deps)
    kept = sum(counts)
    elem_bytes = max(1, in_bits // 8)
    gather = MoveWork(kind="gather", bytes=kept * d * elem_bytes)
    c_dispatch = model.cost(gather)
    dispatch = lw.task(f"{name}.dispatch", c_dispatch, 0, 0, (router.name,))
    tasks = [router, dispatch]
    works: list[Work] = [gate, route, gather]
    macs = gate.macs
    onchip = c_gate.onchip_bytes + c_route.onchip_bytes + c_dispatch.onchip_bytes
    per_expert_w = sum(tensor_bytes(v) for v in (op.w1, op.w2, op.b1, op.b2) if v is not None) // e
    act_kind = _ACTIVATION_COST.get(df.str_attr(op, "activation"))
    integer = isinstance(op.input.type.get_element_type(), IntegerType)  # type: ignore[attr-defined]
    hb = op.attributes.get("hidden_bits")
    act_bits = hb.value.data if isinstance(hb, IntegerAttr) else 32
    # Requants per expert row: fc1 -> activation input (H), activation -> int8 (H, not for ReLU / identity), fc2 (D).
    requant_per_row = (h + (h if act_kind is not None and act_kind[0] != "relu" else 0) + d) if integer else 0
    expert_names = []
    expert_macs = 0
    for idx, n_e in enumerate(counts):
        if n_e <= 0:
            continue
        fc1 = GemmWork(m=n_e, n=h, k=d, in_bits=in_bits, w_bits=w_bits)
        fc2 = GemmWork(m=n_e, n=d, k=h, in_bits=in_bits, w_bits=w_bits)
        c1, c2 = model.cost(fc1), model.cost(fc2)
        works += [fc1, fc2]
        vec = 0
        if act_kind is not None:
            works.append(VectorWork(kind=act_kind[0], elements=n_e * h, approx=act_kind[1], bits=act_bits))
            c_act = model.cost(works[-1])
            vec += c_act.compute_cycles
            onchip += c_act.onchip_bytes
        if requant_per_row:
            works.append(VectorWork(kind="requant", elements=n_e * requant_per_row, bits=32))
            c_rq = model.cost(works[-1])
            vec += c_rq.compute_cycles
            onchip += c_rq.onchip_bytes
        works.append(VectorWork(kind="mul", elements=n_e * d, bits=32))  # score * y, accumulated in place
        c_acc = model.cost(works[-1])
        vec += c_acc.compute_cycles
        cycles = max(c1.compute_cycles + c2.compute_cycles, vec)
        task = lw.task(f"{name}.expert{idx}", Cost(unit=c1.unit, compute_cycles=cycles, tiles=max(c1.tiles, c2.tiles)),
                       per_expert_w, 0, (dispatch.name,))
        tasks.append(task)
        expert_names.append(task.name)
        expert_macs += fc1.macs + fc2.macs
        onchip += c1.onchip_bytes + c2.onchip_bytes + c_acc.onchip_bytes
    out_bytes = tensor_bytes(op.result)
    works.append(VectorWork(kind="add", elements=t * d, bits=32))
    c_comb = model.cost(works[-1])
    combine = lw.task(f"{name}.combine", c_comb, 0, out_bytes, tuple(expert_names) or (dispatch.name,))
    tasks.append(combine)
    active_w, all_w = expert_weight_bytes(op, counts)
    plan.tasks, plan.works = tasks, works
    plan.macs = macs + expert_macs
    plan.macs_by_bits = {max(in_bits, element_bits(op.gate)): macs}
    by_bits = max(in_bits, w_bits)
    plan.macs_by_bits[by_bits] = plan.macs_by_bits.get(by_bits, 0) + expert_macs
    plan.weight_bytes = gate_bytes + active_w
    plan.bytes_offchip = x_bytes + gate_bytes + active_w + out_bytes
    plan.onchip_bytes = onchip + c_comb.onchip_bytes
    plan.detail.update(_detail(op, counts, source, active_w, all_w, t, k))
    return plan


def _detail(op: df.MoeOp, counts: list[int], source: str, active_w: int, all_w: int, tokens: int,
            top_k: int) -> dict[str, Any]:
    active = [c for c in counts if c > 0]
    mean = sum(counts) / len(counts) if counts else 0.0
    return {
        "experts": df.int_attr(op, "num_experts"),
        "top_k": top_k,
        "mode": df.str_attr(op, "mode"),
        "routing": source,
        "active_experts": len(active),
        "tokens_per_expert": ",".join(str(c) for c in counts),
        "max_tokens_per_expert": max(counts) if counts else 0,
        "load_imbalance": (max(counts) / mean) if mean else 0.0,
        "dropped_assignments": max(0, tokens * top_k - sum(counts)),
        "expert_weight_bytes": active_w,
        "expert_weight_bytes_all": all_w,
    }
