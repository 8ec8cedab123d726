"""The plan of a ``dataflow.attention`` op and its pricing, for each ``algorithm`` and softmax.

``standard``  QK^T, softmax and A.V as three tasks; the score matrix is materialised off chip: QK^T writes it,
              softmax reads and writes it, A.V reads it (4 x B*H*Sq*Sk score bytes).
``softmax-free`` (SOFT) landmarks, Gaussian kernels, a Newton-Schulz pseudo-inverse and three products, one task
              (:func:`_soft_works`).

The reordered orders (``algorithm`` = ``edge-moe`` | ``flash``)
Both keep the score matrix on chip (an online softmax keeps (max, 1/sum) per query row), so the off-chip traffic of
attention falls from the standard order's 4 x B*H*Sq*Sk score bytes (QK^T writes them, softmax reads and writes them,
A.V reads them) to what Q, K, V and the output cost:

``edge-moe``  (Edge-MoE, src/attention.cpp; docs/SOURCES.md [1, 2]) P = ``lanes`` query lanes: lane o of
              group b handles query P*b + o and visits the keys rotated o..Sk-1, 0..o-1, so at every step all lanes
              read the *same* K (or V) vector and at most one lane loads a new Q vector: on-chip buffer bandwidth is
              one K vector + one Q vector per step whatever P is. Each lane finishes one dh-wide dot product (QK pass)
              or one dv-wide accumulate (A.V pass) per cycle: ``2 * B * H * ceil(Sq / P) * Sk`` cycles on the
              attention lanes, modelled on the GEMM unit. Q, K and V of a head are read from off-chip once (they sit
              in on-chip buffers), the output written once.
``flash``     tiles of ``tile_q`` queries x ``tile_k`` keys chosen by ``set-attention`` to fit the target's buffers;
              each Q tile is read once, K and V are streamed once per Q tile unless a head's K and V fit on chip
              (then once), the output written once. QK^T and A.V run on the array tile by tile; the online softmax and
              the rescale of the output accumulators (tile_q x dv per key tile) on the vector lanes, overlapped.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from functools import partial

from xdsl.dialects.builtin import IntegerAttr

from compiler.dialect import dataflow as df
from compiler.numerics.softmax_free import NEWTON_ITERS, soft_landmarks
from compiler.schedule.plan import (
    CostFn,
    LayerPlan,
    PlannedLayer,
    TaskSpec,
    element_bits,
    priced_task,
    readout_detail,
    tensor_bytes,
)
from hw.models.base import Cost
from hw.perf.workload import GemmWork, VectorWork
from hw.targets.schema import Target

__all__ = ["plan_attention", "softmax_cost_name", "attention_buffers", "choose_flash_tiles", "TILE_Q_ATTR",
           "TILE_K_ATTR", "DEFAULT_LANES"]

TILE_Q_ATTR = df.TILE_Q_ATTR
TILE_K_ATTR = df.TILE_K_ATTR
DEFAULT_LANES = 4
"""Edge-MoE's ATTN_MATMUL_PARALLEL."""


def attention_buffers(target: Target) -> tuple[float, float, float]:
    """Bytes usable for (Q tile, K+V tiles, scores + output accumulators) on ``target``'s chip.

    FPGA and ASIC: the act / weight / out buffers (half of each when double-buffered); NPU: a third of the
    scratchpad each; other kinds (GPU, optics) have no modelled scratchpad for attention: 64 KiB each, stated
    (``Target.attention_buffers``).
    """
    return target.attention_buffers()


def choose_flash_tiles(sq: int, sk: int, dh: int, dv: int, in_bits: int, acc_bits: int,
                       caps: tuple[float, float, float], align: int = 16) -> tuple[int, int]:
    """(tile_q, tile_k): the largest key tile whose K and V fit their buffer, then the largest query tile whose Q,
    scores (tile_q x tile_k) and output accumulators (tile_q x dv) fit theirs; multiples of ``align`` when smaller
    than the sequence. Raises ValueError when not even one row fits."""
    q_cap, kv_cap, out_cap = caps
    in_b, acc_b = in_bits / 8, acc_bits / 8

    def aligned(n: int, limit: int) -> int:
        n = min(n, limit)
        return n if n == limit or n < align else n - n % align

    tk = aligned(int(kv_cap // ((dh + dv) * in_b)), sk)
    while tk >= 1:
        tq = min(int(q_cap // (dh * in_b)), int(out_cap // ((tk + dv) * acc_b)))
        if tq >= 1:
            return aligned(tq, sq), tk
        tk = tk // 2
    raise ValueError(f"attention tile of one query and one key (dh={dh}, dv={dv}) does not fit the buffers {caps}")


def _int(op: df.AttentionOp, key: str, default: int) -> int:
    attr = op.attributes.get(key)
    if isinstance(attr, IntegerAttr):
        return int(attr.value.data)
    return df.int_attr(op, key, default) if key in op.properties else default


def softmax_cost_name(approx: str) -> str:
    """The cost-table name of a ``--softmax`` choice (base2 is Softermax, log2q runs on the Shiftmax unit)."""
    return {"base2": "softermax", "log2q": "shiftmax", "softmax-free": "exact"}.get(approx, approx)


@dataclass(frozen=True)
class _Shape:
    """What the pricing of one attention layer needs from its op (sizes in elements, bytes of off-chip tensors)."""

    name: str
    b: int
    sq: int
    sk: int
    heads: int
    dh: int
    dv: int
    bits: int
    softmax: str  # cost-table name
    q_bytes: int
    k_bytes: int
    v_bytes: int
    mask_bytes: int
    out_bytes: int
    deps: tuple[str, ...]

    @property
    def score_bytes(self) -> int:
        return -(-self.b * self.heads * self.sq * self.sk * self.bits // 8)

    def standard_works(self) -> tuple[GemmWork, GemmWork, VectorWork]:
        """QK^T, A.V and the softmax over the whole score matrix."""
        batch = self.b * self.heads
        qk = GemmWork(m=self.sq, n=self.sk, k=self.dh, batch=batch, in_bits=self.bits, w_bits=self.bits,
                      weights_static=False)
        av = GemmWork(m=self.sq, n=self.dv, k=self.sk, batch=batch, in_bits=self.bits, w_bits=self.bits,
                      weights_static=False)
        sm = VectorWork(kind="softmax", elements=batch * self.sq * self.sk, rows=batch * self.sq,
                        approx=self.softmax, bits=self.bits)
        return qk, av, sm


def plan_attention(op: df.AttentionOp, deps: tuple[str, ...]) -> PlannedLayer:
    """The planned layer of ``op`` (its inputs produced by ``deps``): task names and the pricing of its order."""
    b, sq, _ = op.q.type.get_shape()  # type: ignore[attr-defined]
    heads = df.int_attr(op, "num_heads")
    shape = _Shape(
        name=df.str_attr(op, "layer"), b=b, sq=sq, sk=op.k.type.get_shape()[1],  # type: ignore[attr-defined]
        heads=heads, dh=df.int_attr(op, "head_dim"),
        dv=op.v.type.get_shape()[2] // df.kv_heads(op),  # type: ignore[attr-defined]  # K/V once per KV head
        bits=element_bits(op.q), softmax=softmax_cost_name(df.str_attr(op, "softmax")),
        q_bytes=tensor_bytes(op.q), k_bytes=tensor_bytes(op.k), v_bytes=tensor_bytes(op.v),
        mask_bytes=tensor_bytes(op.mask) if op.mask is not None else 0, out_bytes=tensor_bytes(op.result), deps=deps)
    name = shape.name
    if df.str_attr(op, "softmax") == "softmax-free":
        return PlannedLayer(name, (name,), partial(_price_soft, shape))
    algorithm = df.str_attr(op, "algorithm")
    if algorithm == "standard":
        return PlannedLayer(name, (f"{name}.qk", f"{name}.softmax", f"{name}.av"), partial(_price_standard, shape))
    if algorithm == "edge-moe":
        return PlannedLayer(name, (name,), partial(_price_edge_moe, shape, _int(op, "lanes", DEFAULT_LANES)))
    tiles = (_int(op, TILE_Q_ATTR, shape.sq), _int(op, TILE_K_ATTR, shape.sk))
    return PlannedLayer(name, (name,), partial(_price_flash, shape, tiles))


def _layer(shape: _Shape, cost: CostFn) -> tuple[LayerPlan, Cost]:
    """The layer's common part: MACs and on-chip bytes of the standard order (also reported for the others), and
    the QK^T cost (its operand passes are the layer's)."""
    qk, av, sm = shape.standard_works()
    c_qk, c_av, c_sm = cost(qk), cost(av), cost(sm)
    plan = LayerPlan(name=shape.name, op="attention", tasks=[], macs=qk.macs + av.macs)
    plan.macs_by_bits = {shape.bits: qk.macs + av.macs}
    plan.onchip_bytes = c_qk.onchip_bytes + c_av.onchip_bytes + c_sm.onchip_bytes
    return plan, c_qk


def _finish(plan: LayerPlan, shape: _Shape, c_qk: Cost) -> LayerPlan:
    plan.detail["score_bytes_standard"] = 4 * shape.score_bytes
    if "passes" in c_qk.detail:
        plan.detail["passes"] = c_qk.detail["passes"]
    plan.bytes_offchip = sum(t.bytes_in + t.bytes_out for t in plan.tasks)
    return plan


def _price_standard(shape: _Shape, cost: CostFn) -> LayerPlan:
    plan, c_qk = _layer(shape, cost)
    qk, av, sm = shape.standard_works()
    c_av, c_sm = cost(av), cost(sm)
    name, score = shape.name, shape.score_bytes
    t1 = priced_task(TaskSpec(f"{name}.qk", shape.q_bytes + shape.k_bytes, score, shape.deps), c_qk)
    t2 = priced_task(TaskSpec(f"{name}.softmax", score + shape.mask_bytes, score, (t1.name,)), c_sm)
    t3 = priced_task(TaskSpec(f"{name}.av", score + shape.v_bytes, shape.out_bytes, (t2.name,) + shape.deps), c_av)
    plan.tasks = [t1, t2, t3]
    plan.works = [qk, sm, av]
    plan.detail["score_bytes_offchip"] = 4 * score
    plan.detail.update(readout_detail(c_qk, c_av))
    return _finish(plan, shape, c_qk)


def _price_edge_moe(shape: _Shape, lanes: int, cost: CostFn) -> LayerPlan:
    """Edge-MoE's P = ``lanes`` query lanes (module docstring): the lanes are timed on the array (no work item of
    their own); the online softmax runs beside them."""
    plan, c_qk = _layer(shape, cost)
    rows = shape.b * shape.heads * shape.sq
    sm = VectorWork(kind="softmax", elements=rows * shape.sk, rows=rows, approx=_online(shape.softmax),
                    bits=shape.bits)
    c_sm = cost(sm)
    groups = math.ceil(shape.sq / lanes)
    cycles = 2 * shape.b * shape.heads * groups * shape.sk
    fused = Cost(unit="gemm", compute_cycles=max(cycles, c_sm.compute_cycles), tiles=max(1, shape.b * shape.heads))
    elem = max(1, shape.bits // 8)
    plan.tasks = [priced_task(TaskSpec(shape.name, shape.q_bytes + shape.k_bytes + shape.v_bytes + shape.mask_bytes,
                                       shape.out_bytes, shape.deps), fused)]
    plan.works = [sm]
    plan.onchip_bytes = max(plan.onchip_bytes, fused.onchip_bytes)
    plan.detail.update({"algorithm": "edge-moe", "score_bytes_offchip": 0, "lanes": lanes, "lane_cycles": cycles,
                        "buffer_bytes_per_step": 2 * shape.dh * elem,
                        "buffer_bytes_per_step_unshared": lanes * 2 * shape.dh * elem,
                        "k_vector_reads": shape.b * shape.heads * groups * shape.sk})
    return _finish(plan, shape, c_qk)


def _price_flash(shape: _Shape, tiles: tuple[int, int], cost: CostFn) -> LayerPlan:
    """Flash tiles (``tile_q`` x ``tile_k``, module docstring): QK^T and A.V tile by tile on the array, the online
    softmax and the output rescale on the vector lanes, overlapped."""
    plan, c_qk_std = _layer(shape, cost)
    tq, tk = tiles
    nq, nk = math.ceil(shape.sq / tq), math.ceil(shape.sk / tk)
    batch = shape.b * shape.heads * nq * nk
    rows = shape.b * shape.heads * shape.sq
    sm = VectorWork(kind="softmax", elements=rows * shape.sk, rows=rows, approx=_online(shape.softmax),
                    bits=shape.bits)
    qk = GemmWork(m=tq, n=tk, k=shape.dh, batch=batch, in_bits=shape.bits, w_bits=shape.bits, weights_static=False)
    av = GemmWork(m=tq, n=shape.dv, k=tk, batch=batch, in_bits=shape.bits, w_bits=shape.bits, weights_static=False)
    mul = VectorWork(kind="mul", elements=batch * tq * shape.dv, bits=32)
    c_sm, c_qk, c_av, rescale = cost(sm), cost(qk), cost(av), cost(mul)
    vector = c_sm.compute_cycles + rescale.compute_cycles
    fused = Cost(unit=c_qk.unit, compute_cycles=max(c_qk.compute_cycles + c_av.compute_cycles, vector), tiles=batch,
                 onchip_bytes=c_qk.onchip_bytes + c_av.onchip_bytes)
    kv_passes = 1 if nk == 1 else nq  # K and V of a head stay on chip when one key tile holds them
    bytes_in = shape.q_bytes + (shape.k_bytes + shape.v_bytes + shape.mask_bytes) * kv_passes
    plan.tasks = [priced_task(TaskSpec(shape.name, bytes_in, shape.out_bytes, shape.deps), fused)]
    plan.works = [qk, av, sm, mul]
    plan.onchip_bytes = max(plan.onchip_bytes, fused.onchip_bytes)
    plan.detail.update({"algorithm": "flash", "score_bytes_offchip": 0, "tile_q": tq, "tile_k": tk, "q_tiles": nq,
                        "k_tiles": nk, "kv_passes": kv_passes})
    drain = sum(int(c.detail.get("drain_cycles", 0)) for c in (c_qk, c_av))
    if drain:  # the arrays' readout, as far as it lengthens the layer beyond the vector work (report shows it apart)
        plan.detail["drain_cycles"] = fused.compute_cycles - max(c_qk.compute_cycles + c_av.compute_cycles - drain,
                                                                 vector)
    return _finish(plan, shape, c_qk_std)


def _online(softmax: str) -> str:
    """The reordered orders run an online softmax: the exact one becomes ``online``; approximations keep theirs."""
    return "online" if softmax in ("exact", "online") else softmax


def _soft_works(shape: _Shape) -> tuple[list[GemmWork], VectorWork, int]:
    """SOFT's products, its exponentials and its landmark count m, per head (``_price_soft``)."""
    m = soft_landmarks(shape.sq)
    batch, bits, sq, dh, dv = shape.b * shape.heads, shape.bits, shape.sq, shape.dh, shape.dv

    def g(mm: int, n: int, k: int) -> GemmWork:
        return GemmWork(m=mm, n=n, k=k, batch=batch, in_bits=bits, w_bits=bits, weights_static=False)

    gemms = [g(sq, m, dh), g(m, m, dh)]  # Q.L^T, L.L^T
    gemms += [g(m, m, m)] * (2 * NEWTON_ITERS + 1)  # Newton-Schulz pseudo-inverse
    gemms += [g(m, dv, sq), g(m, dv, m), g(sq, dv, m)]  # K1^T V, pinv . (K1^T V), K1 . (...)
    exps = VectorWork(kind="softmax", elements=batch * (sq * m + m * m), rows=batch * (sq + m), approx="exact",
                      bits=bits)
    return gemms, exps, m


def _price_soft(shape: _Shape, cost: CostFn) -> LayerPlan:
    """SOFT (softmax-free) attention: m landmarks, Gaussian kernels, a Newton-Schulz pseudo-inverse, three products.

    Per head: K1 = exp(-|Q - L|^2 / 2) (an S x m x d product + S*m exponentials), K2 the same for L x L, 20
    Newton-Schulz iterations of two m x m x m products (plus the initial one), then K1 (pinv(K2) (K1^T V)). Nothing
    of size S x S exists, so no score traffic; the N x m kernels are small enough to stay on chip.
    """
    plan, _ = _layer(shape, cost)
    gemms, exps, m = _soft_works(shape)
    costs = [cost(w) for w in gemms]
    c_exp = cost(exps)
    cycles = sum(c.compute_cycles for c in costs) + c_exp.compute_cycles
    fused = Cost(unit=costs[0].unit, compute_cycles=cycles, tiles=1,
                 onchip_bytes=sum(c.onchip_bytes for c in costs) + c_exp.onchip_bytes)
    bytes_in, bytes_out = shape.q_bytes + shape.v_bytes, shape.out_bytes
    plan.tasks = [priced_task(TaskSpec(shape.name, bytes_in, bytes_out, shape.deps), fused)]
    plan.works = [*gemms, exps]
    plan.macs = sum(w.macs for w in gemms)
    plan.macs_by_bits = {shape.bits: plan.macs}
    plan.onchip_bytes = fused.onchip_bytes
    batch = shape.b * shape.heads
    plan.detail.update({"landmarks": m, "newton_iters": NEWTON_ITERS, "score_bytes_offchip": 0,
                        "score_bytes_standard": 4 * (-(-batch * shape.sq * shape.sq * shape.bits // 8))})
    plan.detail.update(readout_detail(*costs))
    if "passes" in costs[0].detail:
        plan.detail["passes"] = costs[0].detail["passes"]
    plan.bytes_offchip = bytes_in + bytes_out
    return plan
