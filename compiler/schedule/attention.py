"""The plan of a ``dataflow.attention`` op and its pricing, for each ``algorithm`` and softmax.

``standard``  QK^T, a full-row softmax and A.V. On a target with a systolic array whose buffers hold a tile of it,
              one task that keeps the scores on chip and pipelines the three steps tile by tile across heads
              (``compiler/schedule/attention_pipeline.py``: the softmax of one tile under the array's GEMMs of the
              next, heads in parallel on sub-arrays); elsewhere three tasks that materialise the score matrix off
              chip: QK^T writes it, softmax reads and writes it, A.V reads it (4 x B*H*Sq*Sk score bytes). Either
              way the layer's last task is named after the layer (it produces the output).
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

Fully masked tiles. With a causal flag, or a constant mask whose structure (``mask_kind``) is causal, banded or
block-diagonal, a key tile whose every (query, key) pair is masked adds nothing to an online softmax (its exp(s - m)
are all 0), so ``flash`` and ``edge-moe`` do not issue it: no QK^T, no exponentials, no A.V, no K/V traffic for it.
Which tiles are fully masked comes from the mask itself (:func:`allowed_keys`: the causal flag, and the constant mask
operand when the plan is given the weights), so any band width or window works; a mask with a window axis
dividing the batch (Swin's shifted windows) gives one pattern per window, counted window by window. Every row
of these kinds keeps at least one key, so the result is unchanged. The layer reports ``masked_tiles_skipped`` (of
``tiles_total``) and ``cycles_saved``, the compute cycles the skipped tiles would have taken.

Decode steps. :func:`with_kv_len` re-plans an attention for a cache of that many positions
(compiler/schedule/decode.py): Sk and the K/V bytes scale with it, the query rows stay those of the op's ``q``.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, fields, replace
from functools import partial
from typing import Any

import numpy as np
from xdsl.dialects.builtin import IntegerAttr

from compiler.dialect import dataflow as df
from compiler.frontend.masks import window_mask
from compiler.schedule.attention_pipeline import onchip_target, plan_tiles, softcap_work
from compiler.schedule.plan import (
    GEMM_TILES,
    CostFn,
    LayerPlan,
    PlannedLayer,
    TaskSpec,
    element_bits,
    priced_task,
    readout_detail,
    tensor_bytes,
)
from compiler.soft_params import NEWTON_ITERS, soft_landmarks
from hw.errors import InputError
from hw.models.base import Cost
from hw.perf.vec_queue import Machine, attention_cycles
from hw.perf.workload import GemmWork, VectorWork
from hw.targets.schema import Target

__all__ = ["plan_attention", "softmax_cost_name", "attention_buffers", "choose_flash_tiles", "allowed_keys",
           "flash_active_tiles", "edge_moe_active_steps", "TILE_Q_ATTR", "TILE_K_ATTR", "DEFAULT_LANES",
           "SKIPPABLE_MASKS", "with_kv_len"]

TILE_Q_ATTR = df.TILE_Q_ATTR
TILE_K_ATTR = df.TILE_K_ATTR
DEFAULT_LANES = 4
"""Edge-MoE's ATTN_MATMUL_PARALLEL."""
SKIPPABLE_MASKS = ("causal", "banded", "block")
"""Mask structures whose fully masked tiles the reordered orders skip (every row keeps a key)."""


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


def allowed_keys(op: df.AttentionOp, weights: Mapping[str, np.ndarray] | None = None,
                 per_window: bool = False) -> np.ndarray | None:
    """[Sq, Sk] bool: the (query, key) pairs some batch and head attends, when the mask is known and its structure
    lets fully masked tiles be skipped (the causal flag, or a constant ``mask`` of kind causal / banded / block
    found in ``weights``); None otherwise (no mask, a mask from an input, or a kind that may mask whole rows).

    ``per_window``: a constant mask with a leading axis of W > 1 windows dividing the batch (Swin's shifted windows:
    batch element i is window i mod W) gives [W, Sq, Sk], the pairs some head of each window attends, so that each
    window skips its own masked tiles."""
    sq, sk = op.q.type.get_shape()[1], op.k.type.get_shape()[1]  # type: ignore[attr-defined]
    kind = op.mask_kind_choice()
    causal = op.causal_value()
    if op.mask is None and not causal:
        return None
    allowed = np.tril(np.ones((sq, sk), dtype=bool), k=sk - sq) if causal else np.ones((sq, sk), dtype=bool)
    if op.mask is not None:
        owner = op.mask.owner
        mask = weights.get(owner.layer_name()) if weights is not None and isinstance(owner, df.WeightOp) \
            else None
        if mask is None or kind not in SKIPPABLE_MASKS or mask.ndim < 2 or mask.shape[-2:] not in (
                (sq, sk), (1, sk)) or not np.issubdtype(mask.dtype, np.number):
            return None
        windows = window_mask(mask)  # Swin: a relative-position bias summed with the shifted-window mask
        low, high = mask.min(), mask.max()
        masked = ~windows if windows is not None else mask <= low if low < high else np.zeros(mask.shape, dtype=bool)
        dims = tuple(int(n) for n in np.shape(masked))
        w = dims[0] if len(dims) >= 3 else 1
        batch = op.q.type.get_shape()[0]  # type: ignore[attr-defined]
        if per_window and w > 1 and batch % w == 0:
            keep = ~masked.reshape((w, -1) + masked.shape[-2:]).all(axis=1)  # [W, Sq', Sk]: some head keeps
            windows_allowed = allowed[None] & np.broadcast_to(keep, (w, sq, sk))
            if windows_allowed.all() or not windows_allowed.any(axis=2).all():
                return None
            return windows_allowed
        keep = ~masked.reshape((-1,) + masked.shape[-2:]).all(axis=0)  # a pair some batch / head keeps
        allowed &= np.broadcast_to(keep, (sq, sk))
    if allowed.all() or not allowed.any(axis=1).all():
        return None  # nothing to skip, or a row with no key (skipping would change it)
    return allowed[None] if per_window else allowed


def flash_active_tiles(allowed: np.ndarray, tq: int, tk: int) -> tuple[int, int]:
    """(tiles with at least one attended pair, (query, key) elements in them) of the tq x tk tiling of ``allowed``
    (per batch and head; [W, Sq, Sk]: summed over the W windows)."""
    if allowed.ndim == 3:
        tiles, elements = zip(*(flash_active_tiles(a, tq, tk) for a in allowed))
        return sum(tiles), sum(elements)
    sq, sk = allowed.shape
    nq, nk = -(-sq // tq), -(-sk // tk)
    padded = np.zeros((nq * tq, nk * tk), dtype=bool)
    padded[:sq, :sk] = allowed
    occupied = padded.reshape(nq, tq, nk, tk).any(axis=(1, 3))
    rows = np.minimum(tq, sq - tq * np.arange(nq))
    cols = np.minimum(tk, sk - tk * np.arange(nk))
    return int(occupied.sum()), int((rows[:, None] * cols[None, :])[occupied].sum())


def edge_moe_active_steps(allowed: np.ndarray, lanes: int) -> tuple[int, int]:
    """(steps issued, lane visits) of Edge-MoE's rotated order over ``allowed`` (per batch and head): lane o of a
    group visits key (s + o) mod Sk at step s; a step whose every lane meets a masked key is not issued ([W, Sq,
    Sk]: summed over the W windows)."""
    if allowed.ndim == 3:
        steps, visits = zip(*(edge_moe_active_steps(a, lanes) for a in allowed))
        return sum(steps), sum(visits)
    sq, sk = allowed.shape
    groups = -(-sq // lanes)
    active = np.zeros((groups, sk), dtype=bool)
    counts = np.zeros(groups, dtype=np.int64)
    for o in range(min(lanes, sq)):
        rows = allowed[o::lanes]  # query lanes * g + o, one per group
        active[:len(rows)] |= np.roll(rows, -o, axis=1)
        counts[:len(rows)] += 1
    steps = active.sum(axis=1)
    return int(steps.sum()), int((steps * counts).sum())


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
    #: [W, Sq, Sk] pairs attended per window (batch element i is window i mod W; W = 1: every batch element) when
    #: fully masked tiles may be skipped (:func:`allowed_keys`), else None
    allowed: np.ndarray | None = None
    softcap: bool = False  # logits soft-capped (c * tanh(s / c)) before the softmax
    sinks: bool = False  # attention sinks: each softmax row holds one more element (its head's sink logit)
    causal: bool = False  # the op's causal flag (a mask without a mask operand)

    @property
    def windows(self) -> int:
        """W, the batch period of ``allowed`` (1 without one)."""
        return 1 if self.allowed is None else int(self.allowed.shape[0])

    @property
    def sink_visits(self) -> int:
        """Sink logits an online softmax takes per (batch, head) copy, summed over the W windows: one per query row
        with ``sinks`` (the running max and sum meet the head's sink as one more key whose value is 0)."""
        return self.windows * self.sq if self.sinks else 0

    @property
    def copies(self) -> int:
        """(batch, head) copies of one window's work: counts summed over the W windows are multiplied by this."""
        return self.b // self.windows * self.heads

    def cap_work(self, elements: int) -> VectorWork | None:
        """The soft-capping tanh over ``elements`` scores (`softcap_work`), None without a cap."""
        return softcap_work(elements, self.bits) if self.softcap else None

    @property
    def score_bytes(self) -> int:
        return -(-self.b * self.heads * self.sq * self.sk * self.bits // 8)

    def standard_works(self) -> tuple[GemmWork, GemmWork, VectorWork]:
        """QK^T, A.V and the softmax over the whole score matrix (and each row's sink logit with ``sinks``)."""
        batch = self.b * self.heads
        qk = GemmWork(m=self.sq, n=self.sk, k=self.dh, batch=batch, in_bits=self.bits, w_bits=self.bits,
                      weights_static=False)
        av = GemmWork(m=self.sq, n=self.dv, k=self.sk, batch=batch, in_bits=self.bits, w_bits=self.bits,
                      weights_static=False)
        sm = VectorWork(kind="softmax", elements=batch * self.sq * (self.sk + self.sinks), rows=batch * self.sq,
                        approx=self.softmax, bits=self.bits)
        return qk, av, sm


def plan_attention(op: df.AttentionOp, deps: tuple[str, ...],
                   weights: Mapping[str, np.ndarray] | None = None) -> PlannedLayer:
    """The planned layer of ``op`` (its inputs produced by ``deps``): task names and the pricing of its order.

    ``weights`` (the compile's WeightStore) lets a constant mask show which tiles are fully masked."""
    b, sq, _ = op.q.type.get_shape()  # type: ignore[attr-defined]
    heads = op.num_heads_value()
    sk = op.k.type.get_shape()[1]  # type: ignore[attr-defined]
    mask_bytes = tensor_bytes(op.mask) if op.mask is not None else 0
    k_bytes, v_bytes = tensor_bytes(op.k), tensor_bytes(op.v)
    reordered = op.algorithm_choice() in (df.AttentionAlgorithm.FLASH, df.AttentionAlgorithm.EDGE_MOE) \
        and op.softmax_choice() != df.SoftmaxApprox.SOFTMAX_FREE
    allowed = allowed_keys(op, weights, per_window=True) if reordered else None  # only reordered orders skip
    shape = _Shape(
        name=op.layer_name(), b=b, sq=sq, sk=sk,
        heads=heads, dh=op.head_dim_value(),
        dv=op.v.type.get_shape()[2] // op.kv_heads_value(),  # type: ignore[attr-defined]  # K/V once per KV head
        bits=element_bits(op.q), softmax=softmax_cost_name(op.softmax_choice().value),
        q_bytes=tensor_bytes(op.q), k_bytes=k_bytes, v_bytes=v_bytes,
        mask_bytes=mask_bytes, out_bytes=tensor_bytes(op.result), deps=deps, allowed=allowed,
        softcap=op.softcap_value() is not None, sinks=op.sinks_value() is not None,
        causal=bool(op.causal_value()))
    name = shape.name
    if shape.sinks and op.softmax_choice() == df.SoftmaxApprox.SOFTMAX_FREE:
        raise InputError(f"attention '{name}': attention sinks need a softmax row to sit in, not --softmax "
                         "softmax-free")
    if op.softmax_choice() == df.SoftmaxApprox.SOFTMAX_FREE:
        return PlannedLayer(name, (name,), partial(_price_soft, shape))
    algorithm = op.algorithm_choice()
    if algorithm == df.AttentionAlgorithm.STANDARD:
        # Its off-chip order adds {name}.qk and {name}.softmax before the A.V task {name}.
        return PlannedLayer(name, (name,), partial(_price_standard, shape))
    if algorithm == df.AttentionAlgorithm.EDGE_MOE:
        return PlannedLayer(name, (name,), partial(_price_edge_moe, shape, op.lanes_value(DEFAULT_LANES)))
    tiles = (min(_int(op, TILE_Q_ATTR, shape.sq), shape.sq), min(_int(op, TILE_K_ATTR, shape.sk), shape.sk))
    return PlannedLayer(name, (name,), partial(_price_flash, shape, tiles))


def with_kv_len(layer: PlannedLayer, kv_len: int, mask_bytes: int,
                tiles: tuple[int, int] | None = None) -> PlannedLayer:
    """``layer`` (an attention planned by :func:`plan_attention`) for a cache of ``kv_len`` positions: Sk and the
    K/V bytes scaled from the op's bytes per position, ``mask_bytes`` the mask this step reads; flash ``tiles`` if
    given (else the op's, clipped)."""
    fn = layer.price
    assert isinstance(fn, partial) and isinstance(fn.args[0], _Shape)
    shape: _Shape = fn.args[0]
    per = shape.sk
    scaled = replace(shape, sk=kv_len, k_bytes=shape.k_bytes // per * kv_len, v_bytes=shape.v_bytes // per * kv_len,
                     mask_bytes=mask_bytes, allowed=None)
    args = fn.args[1:]
    if fn.func is _price_flash:
        args = (tiles if tiles is not None else (min(args[0][0], shape.sq), min(args[0][1], kv_len)),)
    return PlannedLayer(layer.name, layer.task_names, partial(fn.func, scaled, *args))


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
    """On chip, pipelined (:func:`_price_onchip`) where the target's buffers hold a tile; else three tasks through
    off-chip memory."""
    qk = shape.standard_works()[0]
    c_qk = cost(qk)
    if c_qk.detail.get("execute_queue"):
        return _price_execute_queue(shape, cost, c_qk)
    tiled = plan_tiles(shape.b, shape.heads, shape.sq, shape.sk, shape.dh, shape.dv, shape.bits, shape.softmax, cost,
                       onchip_target(cost), shape.softcap, shape.sinks)
    if tiled is not None:
        return _price_onchip(shape, tiled, cost)
    plan, c_qk = _layer(shape, cost)
    qk, av, sm = shape.standard_works()
    c_av, c_sm = cost(av), cost(sm)
    cap = shape.cap_work(sm.elements)
    if cap is not None:  # the tanh runs on the softmax's pass over the scores, before it
        c_cap = cost(cap)
        c_sm = replace(c_sm, compute_cycles=c_sm.compute_cycles + c_cap.compute_cycles,
                       onchip_bytes=c_sm.onchip_bytes + c_cap.onchip_bytes)
    name, score = shape.name, shape.score_bytes
    t1 = priced_task(TaskSpec(f"{name}.qk", shape.q_bytes + shape.k_bytes, score, shape.deps), c_qk)
    t2 = priced_task(TaskSpec(f"{name}.softmax", score + shape.mask_bytes, score, (t1.name,)), c_sm)
    t3 = priced_task(TaskSpec(name, score + shape.v_bytes, shape.out_bytes, (t2.name,) + shape.deps), c_av)
    plan.tasks = [t1, t2, t3]
    plan.works = [qk, sm, av] + ([cap] if cap is not None else [])
    plan.detail["score_bytes_offchip"] = 4 * score
    plan.detail.update(readout_detail(c_qk, c_av))
    return _finish(plan, shape, c_qk)


def _price_execute_queue(shape: _Shape, cost: CostFn, c_qk: Cost) -> LayerPlan:
    """The system top level (``gemm.execute_queue``): the op as ``compiler/backend/attention.py`` runs it on the
    one execute queue (``hw.perf.vec_queue.attention_cycles``), its loads and stores inside its cycles: one
    task."""
    plan, _ = _layer(shape, cost)
    d = c_qk.detail
    mach = Machine(**{f.name: int(d[f"system_{f.name}"]) for f in fields(Machine)})
    masked = shape.mask_bytes > 0 or shape.causal  # the backend adds the causal mask's halves as any mask's
    cycles = shape.b * attention_cycles(shape.heads, shape.sq, shape.sk, shape.dh, shape.dv, masked, mach,
                                        int(d["array_rows"]))
    task = priced_task(TaskSpec(shape.name, 0, 0, shape.deps),
                       Cost(unit=c_qk.unit, compute_cycles=cycles, onchip_bytes=plan.onchip_bytes,
                            detail={"execute_queue": True}))
    plan.tasks = [task]
    qk, av, sm = shape.standard_works()
    plan.works = [qk, sm, av]
    plan.detail["execute_queue"] = True
    plan = _finish(plan, shape, c_qk)
    plan.bytes_offchip = shape.q_bytes + shape.k_bytes + shape.v_bytes + shape.mask_bytes + shape.out_bytes
    return plan


def _price_onchip(shape: _Shape, tiled: Any, cost: CostFn) -> LayerPlan:
    """The standard order on chip (``attention_pipeline``): one task reading Q, K, V and the mask once and writing
    the output once, for the simulated pipeline's cycles; its work items are the tiles' products and softmaxes."""
    plan, c_qk_std = _layer(shape, cost)
    n = len(tiled.tiles)
    first = tiled.costs[tiled.tiles[0]]
    qk = GemmWork(m=tiled.tile_q, n=shape.sk, k=shape.dh, batch=shape.b * shape.heads * -(-shape.sq // tiled.tile_q),
                  in_bits=shape.bits, w_bits=shape.bits, weights_static=False)
    av = GemmWork(m=tiled.tile_q, n=shape.dv, k=shape.sk, batch=qk.batch, in_bits=shape.bits, w_bits=shape.bits,
                  weights_static=False)
    _, _, sm = shape.standard_works()
    # Loads stream head by head (a tile's Q, a group's K and V) at least as finely as the pipeline's tiles.
    fused = Cost(unit=first[0].unit, compute_cycles=tiled.result.cycles, tiles=min(max(n, shape.b * shape.heads),
                                                                                    GEMM_TILES),
                 onchip_bytes=sum(c.onchip_bytes for c in first))
    bytes_in = shape.q_bytes + shape.k_bytes + shape.v_bytes + shape.mask_bytes
    plan.tasks = [priced_task(TaskSpec(shape.name, bytes_in, shape.out_bytes, shape.deps), fused)]
    cap = shape.cap_work(sm.elements)
    plan.works = [qk, sm, av] + ([cap] if cap is not None else [])
    plan.detail.update({"algorithm": "standard", "score_bytes_offchip": 0, "tile_q": tiled.tile_q,
                        "heads_per_tile": tiled.heads_per_tile, "pipeline_tiles": n,
                        "array_cycles": tiled.result.array_cycles, "vector_cycles": tiled.result.vector_cycles})
    if tiled.drain:
        plan.detail["drain_cycles"] = tiled.drain
    for key in ("mapping", "partition_split"):
        if key in first[0].detail:
            plan.detail[f"qk_{key}"] = first[0].detail[key]
        if key in first[2].detail:
            plan.detail[f"av_{key}"] = first[2].detail[key]
    return _finish(plan, shape, c_qk_std)


def _price_edge_moe(shape: _Shape, lanes: int, cost: CostFn) -> LayerPlan:
    """Edge-MoE's P = ``lanes`` query lanes (module docstring): the lanes are timed on the array (no work item of
    their own); the online softmax runs beside them. Steps whose every lane meets a masked key are not issued."""
    plan, c_qk = _layer(shape, cost)
    groups = math.ceil(shape.sq / lanes)
    w = shape.windows
    steps, visits = w * groups * shape.sk, w * shape.sq * shape.sk  # summed over the W windows
    if shape.allowed is not None:
        steps, visits = edge_moe_active_steps(shape.allowed, lanes)
    fused, sm = _edge_moe_cost(shape, steps, visits, cost)
    elem = max(1, shape.bits // 8)
    plan.tasks = [priced_task(TaskSpec(shape.name, shape.q_bytes + shape.k_bytes + shape.v_bytes + shape.mask_bytes,
                                       shape.out_bytes, shape.deps), fused)]
    cap = shape.cap_work(sm.elements)
    plan.works = [sm, cap] if cap is not None else [sm]
    plan.onchip_bytes = max(plan.onchip_bytes, fused.onchip_bytes)
    plan.detail.update({"algorithm": "edge-moe", "score_bytes_offchip": 0, "lanes": lanes,
                        "lane_cycles": 2 * shape.copies * steps,
                        "buffer_bytes_per_step": 2 * shape.dh * elem,
                        "buffer_bytes_per_step_unshared": lanes * 2 * shape.dh * elem,
                        "k_vector_reads": shape.copies * steps})
    if shape.allowed is not None:
        full, _ = _edge_moe_cost(shape, w * groups * shape.sk, w * shape.sq * shape.sk, cost)
        plan.detail.update({"tiles_total": shape.copies * w * groups * shape.sk,
                            "masked_tiles_skipped": shape.copies * (w * groups * shape.sk - steps),
                            "cycles_saved": full.compute_cycles - fused.compute_cycles})
    return _finish(plan, shape, c_qk)


def _edge_moe_cost(shape: _Shape, steps: int, visits: int, cost: CostFn) -> tuple[Cost, VectorWork]:
    """The lanes' fused cost for ``steps`` issued steps (per batch and head, summed over the W windows) and its
    online softmax over ``visits`` (query, key) visits."""
    bh = shape.b * shape.heads
    sm = VectorWork(kind="softmax", elements=shape.copies * (visits + shape.sink_visits), rows=bh * shape.sq,
                    approx=_online(shape.softmax), bits=shape.bits)
    cycles = 2 * shape.copies * steps
    cap = shape.cap_work(sm.elements)
    vector = cost(sm).compute_cycles + (cost(cap).compute_cycles if cap is not None else 0)
    return Cost(unit="gemm", compute_cycles=max(cycles, vector), tiles=max(1, bh)), sm


def _price_flash(shape: _Shape, tiles: tuple[int, int], cost: CostFn) -> LayerPlan:
    """Flash tiles (``tile_q`` x ``tile_k``, module docstring): QK^T and A.V tile by tile on the array, the online
    softmax and the output rescale on the vector lanes, overlapped. Fully masked tiles are not issued."""
    plan, c_qk_std = _layer(shape, cost)
    tq, tk = tiles
    nq, nk = math.ceil(shape.sq / tq), math.ceil(shape.sk / tk)
    w = shape.windows
    per_head, elements = w * nq * nk, w * shape.sq * shape.sk  # summed over the W windows
    if shape.allowed is not None:
        per_head, elements = flash_active_tiles(shape.allowed, tq, tk)
    fused, works, drain = _flash_cost(shape, tiles, per_head, elements, cost)
    kv_passes = 1 if nk == 1 else nq  # K and V of a head stay on chip when one key tile holds them
    # K/V tiles are streamed once per Q tile that issues them (all of them once when one key tile holds a head)
    kv_bytes = shape.k_bytes + shape.v_bytes + shape.mask_bytes
    streamed = kv_bytes if nk == 1 else -(-kv_bytes * per_head // (nk * w))
    bytes_in = shape.q_bytes + streamed
    plan.tasks = [priced_task(TaskSpec(shape.name, bytes_in, shape.out_bytes, shape.deps), fused)]
    plan.works = works
    plan.onchip_bytes = max(plan.onchip_bytes, fused.onchip_bytes)
    plan.detail.update({"algorithm": "flash", "score_bytes_offchip": 0, "tile_q": tq, "tile_k": tk, "q_tiles": nq,
                        "k_tiles": nk, "kv_passes": kv_passes})
    if drain is not None:  # the arrays' readout, as far as it lengthens the layer beyond the vector work
        plan.detail["drain_cycles"] = drain
    if shape.allowed is not None:
        full, _, _ = _flash_cost(shape, tiles, w * nq * nk, w * shape.sq * shape.sk, cost)
        plan.detail.update({"tiles_total": shape.copies * w * nq * nk,
                            "masked_tiles_skipped": shape.copies * (w * nq * nk - per_head),
                            "cycles_saved": full.compute_cycles - fused.compute_cycles})
    return _finish(plan, shape, c_qk_std)


def _flash_cost(shape: _Shape, tiles: tuple[int, int], per_head: int, elements: int,
                cost: CostFn) -> tuple[Cost, list[Any], int | None]:
    """The fused cost of ``per_head`` issued tiles (per batch and head, summed over the W windows) holding
    ``elements`` (query, key) pairs, its work items and the readout cycles that lengthen it (None when the array
    has no readout)."""
    tq, tk = tiles
    batch = shape.copies * per_head
    rows = shape.b * shape.heads * shape.sq
    sm = VectorWork(kind="softmax", elements=shape.copies * (elements + shape.sink_visits), rows=rows,
                    approx=_online(shape.softmax), bits=shape.bits)
    qk = GemmWork(m=tq, n=tk, k=shape.dh, batch=batch, in_bits=shape.bits, w_bits=shape.bits, weights_static=False)
    av = GemmWork(m=tq, n=shape.dv, k=tk, batch=batch, in_bits=shape.bits, w_bits=shape.bits, weights_static=False)
    mul = VectorWork(kind="mul", elements=batch * tq * shape.dv, bits=32)
    c_sm, c_qk, c_av, rescale = cost(sm), cost(qk), cost(av), cost(mul)
    cap = shape.cap_work(sm.elements)
    vector = c_sm.compute_cycles + rescale.compute_cycles + (cost(cap).compute_cycles if cap is not None else 0)
    fused = Cost(unit=c_qk.unit, compute_cycles=max(c_qk.compute_cycles + c_av.compute_cycles, vector), tiles=batch,
                 onchip_bytes=c_qk.onchip_bytes + c_av.onchip_bytes)
    drain = sum(int(c.detail.get("drain_cycles", 0)) for c in (c_qk, c_av))
    works: list[Any] = [qk, av, sm, mul] + ([cap] if cap is not None else [])
    if not drain:
        return fused, works, None
    return fused, works, fused.compute_cycles - max(c_qk.compute_cycles + c_av.compute_cycles - drain,
                                                                vector)


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
