"""Costing of reordered attention: Edge-MoE's rotated-key lanes and flash-style tiles (``dataflow.attention``'s
``algorithm`` = ``edge-moe`` | ``flash``). ``standard`` stays in compiler/schedule/lower.py.

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
from typing import Any

from xdsl.dialects.builtin import IntegerAttr

from compiler.dialect import dataflow as df
from hw.models.base import Cost
from hw.perf.workload import GemmWork, VectorWork, Work

__all__ = ["fused_attention", "attention_buffers", "choose_flash_tiles", "TILE_Q_ATTR", "TILE_K_ATTR",
           "DEFAULT_LANES"]

TILE_Q_ATTR = df.TILE_Q_ATTR
TILE_K_ATTR = df.TILE_K_ATTR
DEFAULT_LANES = 4
"""Edge-MoE's ATTN_MATMUL_PARALLEL."""


def attention_buffers(target: Any) -> tuple[float, float, float]:
    """Bytes usable for (Q tile, K+V tiles, scores + output accumulators) on ``target``'s chip.

    FPGA: the act / weight / out buffers (half of each when double-buffered); NPU: a third of the scratchpad each;
    other kinds (GPU, optics) have no modelled scratchpad for attention: 64 KiB each, stated.
    """
    buffers = getattr(target, "buffers", None)
    if buffers is not None:
        half = 0.5 if buffers.double_buffered else 1.0
        return (buffers.act_kb * 1024 * half, buffers.weight_kb * 1024 * half, buffers.out_kb * 1024 * half)
    sram = getattr(target, "sram_kb", None)
    if sram is not None:
        third = sram * 1024 / 3
        return (third, third, third)
    return (65536.0, 65536.0, 65536.0)


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


def fused_attention(model: Any, op: df.AttentionOp, *, b: int, sq: int, sk: int, heads: int, dh: int, dv: int,
                    bits: int, softmax_cost: str, q_bytes: int, k_bytes: int, v_bytes: int, mask_bytes: int,
                    out_bytes: int) -> tuple[Cost, int, int, dict[str, Any], list[Work]]:
    """(cost, off-chip bytes in, off-chip bytes out, report detail, the work items it runs) of an ``edge-moe`` or
    ``flash`` attention."""
    algorithm = df.str_attr(op, "algorithm")
    approx = "online" if softmax_cost in ("exact", "online") else softmax_cost
    rows = b * heads * sq
    sm = VectorWork(kind="softmax", elements=rows * sk, rows=rows, approx=approx, bits=bits)
    c_sm = model.cost(sm)
    detail: dict[str, Any] = {"algorithm": algorithm, "score_bytes_offchip": 0}
    if algorithm == "edge-moe":
        lanes = _int(op, "lanes", DEFAULT_LANES)
        groups = math.ceil(sq / lanes)
        cycles = 2 * b * heads * groups * sk
        cost = Cost(unit="gemm", compute_cycles=max(cycles, c_sm.compute_cycles), tiles=max(1, b * heads))
        elem = max(1, bits // 8)
        detail.update(lanes=lanes, lane_cycles=cycles, buffer_bytes_per_step=(dh + dh) * elem,
                      buffer_bytes_per_step_unshared=lanes * 2 * dh * elem,
                      k_vector_reads=b * heads * groups * sk)
        # The P attention lanes are timed on the array (no work item of their own); the online softmax runs beside.
        return cost, q_bytes + k_bytes + v_bytes + mask_bytes, out_bytes, detail, [sm]
    tq = _int(op, TILE_Q_ATTR, sq)
    tk = _int(op, TILE_K_ATTR, sk)
    nq, nk = math.ceil(sq / tq), math.ceil(sk / tk)
    qk = GemmWork(m=tq, n=tk, k=dh, batch=b * heads * nq * nk, in_bits=bits, w_bits=bits, weights_static=False)
    av = GemmWork(m=tq, n=dv, k=tk, batch=b * heads * nq * nk, in_bits=bits, w_bits=bits, weights_static=False)
    c_qk, c_av = model.cost(qk), model.cost(av)
    mul = VectorWork(kind="mul", elements=b * heads * nq * nk * tq * dv, bits=32)
    rescale = model.cost(mul)
    vector = c_sm.compute_cycles + rescale.compute_cycles
    cost = Cost(unit=c_qk.unit, compute_cycles=max(c_qk.compute_cycles + c_av.compute_cycles, vector),
                tiles=b * heads * nq * nk, onchip_bytes=c_qk.onchip_bytes + c_av.onchip_bytes)
    kv_passes = 1 if nk == 1 else nq  # K and V of a head stay on chip when one key tile holds them
    detail.update(tile_q=tq, tile_k=tk, q_tiles=nq, k_tiles=nk, kv_passes=kv_passes)
    drain = sum(int(c.detail.get("drain_cycles", 0)) for c in (c_qk, c_av))
    if drain:  # the arrays' readout, as far as it lengthens the layer beyond the vector work (report shows it apart)
        detail["drain_cycles"] = cost.compute_cycles - max(c_qk.compute_cycles + c_av.compute_cycles - drain, vector)
    return cost, q_bytes + (k_bytes + v_bytes + mask_bytes) * kv_passes, out_bytes, detail, [qk, av, sm, mul]
