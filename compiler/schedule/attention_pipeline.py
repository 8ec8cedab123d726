"""The standard attention order kept on chip: QK^T, softmax and A.V pipelined tile by tile across heads.

What the hardware does (a target with a systolic array and operand buffers: FPGA, ASIC, NPU). The score matrix of
one *tile* (``tile_q`` query rows of ``heads_per_tile`` heads) never leaves the chip:

1. the array computes the tile's scores S = Q K^T (``tile_q`` x Sk per head, ``acc_bits`` each) into the output
   buffer;
2. the vector lanes run the full-row softmax (the same exact or approximated softmax as the three-step order, not an
   online one: every row sees all Sk keys at once) and write the probabilities (``in_bits``) into the activation
   buffer;
3. the array computes the tile's A.V (``tile_q`` x dv per head) from them and the head's V.

Tiles go head group by head group (all row blocks of a group, then the next group), so a group's K and V are loaded
once and stay while its row blocks pass; the next group's K and V load behind them (double-buffered). The array
issues its GEMMs software-pipelined one tile apart, ``QK_0, QK_1, AV_0, QK_2, AV_1, ..., AV_{n-1}``, so the softmax of
tile t runs on the vector lanes while the array computes QK^T of tile t+1 and A.V of tile t-1: the vector work hides
behind the array's (or the other way round), and only the first QK^T and the last softmax and A.V are exposed.

Buffers (each a double buffer: one half is written while the other is read, so each half holds one tile's):

* activation buffer half: the tile's Q (``tile_q x dh``) and probabilities (``tile_q x Sk``), ``in_bits`` each;
* weight buffer half: the group's K and V (``Sk x (dh + dv)``), ``in_bits``;
* output buffer half: the tile's scores (``tile_q x Sk``) and A.V accumulators (``tile_q x dv``), ``acc_bits``.

Hence QK^T of tile t+2 waits for the softmax of tile t (it reuses that score half) and the softmax of tile t+2 for
A.V of tile t (probability half): :func:`pipeline_cycles` enforces both. A target whose halves hold no tile of even
one array fold of rows keeps the three-step order through off-chip memory (``compiler/schedule/attention.py``).

Timing is the target model's own, per tile: each QK^T and A.V is one invocation of the array (the model's cycles,
readout included, with the per-GEMM mapping search), each softmax one call of the vector lanes over the tile's rows.
With sub-arrays (``gemm.partitions = P``) a tile of P heads (heads in parallel, one per sub-array) is one candidate,
a tile of every head another: the model deals its heads or its folds to the sub-arrays (or, on a ganged NPU, its
arrays), whichever ends first. The tile shape (``tile_q`` among the
sequence length and multiples of the array's rows; ``heads_per_tile`` 1 or P) is the one whose pipeline ends first,
found by simulating each candidate (a few dozen events per layer).

Dataflow: QK^T and A.V run on the target's one array with its dataflow (the FPGA's RTL is an output- or a weight-
stationary array per design, not per layer), so output- versus weight-stationary is the design's choice
(``gemm.dataflow``); per tile shape the mapping search picks the orientation (on 8 x 64 sub-arrays QK^T goes
transposed, the keys on the 8 rows and a 128-query tile on the 64 columns, exactly two folds wide).

The layer is one scheduler task on the array's unit (a task holds one unit): the vector lanes' share is inside its
cycles, and the scheduler does not see them busy, as for ``flash`` and ``edge-moe``. In an encoder nothing else is
ready for the lanes while attention runs (its inputs come from the array, its output feeds the next GEMM); a graph
with independent vector work beside attention would be priced optimistically by up to the pipeline's
``vector_cycles``.

Assumptions the RTL must meet (docs/ARCHITECTURE.md, "Attention on chip"): the array runs QK^T and A.V with either
operand from the buffers (K^T and V are right operands, Q and the probabilities left ones); the vector lanes read
scores from the output buffer and write probabilities into the activation buffer while the array works on another
half; a tile's invocations are issued back to back without returning to the host.
"""

from __future__ import annotations

import weakref
from collections.abc import Sequence
from dataclasses import dataclass, replace
from typing import Any

from hw.models.base import AcceleratorModel, Cost
from hw.perf.workload import GemmWork, VectorWork
from hw.targets.schema import Target

__all__ = ["TileShape", "PipelineResult", "pipeline_cycles", "tile_candidates", "tile_fits", "plan_tiles",
           "onchip_target"]


@dataclass(frozen=True)
class TileShape:
    """One tile: ``rows`` query rows of ``heads`` heads (the last row block or head group may be smaller)."""

    rows: int
    heads: int


@dataclass(frozen=True)
class PipelineResult:
    """A simulated pipeline: its makespan and the busy cycles of the array and the vector lanes (cycles)."""

    cycles: int
    array_cycles: int
    vector_cycles: int


def onchip_target(cost: Any) -> Target | None:
    """The target whose datapath runs the pipeline, behind a ``CostFn`` (a memoising costing's ``model``,
    ``compiler.schedule.plan.price``, or a bound ``model.cost``); None when there is none, or when the model has
    several independent GEMM units (an NPU's ``mode: independent`` arrays): there the three steps stay separate
    tasks, so that QK^T of one attention may start on one array while another still computes V."""
    model = getattr(cost, "model", None) or getattr(cost, "__self__", None)
    if not isinstance(model, AcceleratorModel) or model.units().get("gemm", 0) != 1:
        return None
    return model.target


def tile_fits(rows: int, heads: int, sk: int, dh: int, dv: int, in_bits: int, acc_bits: int,
              caps: tuple[float, float, float]) -> bool:
    """Whether one tile's operands fit the buffer halves ``caps`` (bytes: activation, weight, output; module
    docstring)."""
    in_b, acc_b = in_bits / 8, acc_bits / 8
    act = heads * rows * (dh + sk) * in_b
    weight = heads * sk * (dh + dv) * in_b
    out = heads * rows * (sk + dv) * acc_b
    return act <= caps[0] and weight <= caps[1] and out <= caps[2]


def tile_candidates(sq: int, heads: int, fold_rows: int, partitions: int) -> list[tuple[int, int]]:
    """(tile_q, heads_per_tile) pairs worth simulating: the whole sequence and power-of-two multiples of the array's
    rows below it; one head, one per sub-array, or every head (a model that spreads a batch of products over
    several arrays, as a ganged NPU does, runs them in parallel)."""
    rows = [sq]
    t = fold_rows
    while t < sq:
        rows.append(t)
        t *= 2
    groups = sorted({1, min(partitions, heads), heads})
    return [(r, g) for r in rows for g in groups]


def _tiles(b: int, heads: int, sq: int, tq: int, g: int) -> list[TileShape]:
    """Every tile in issue order: batch item, head group, row block."""
    out: list[TileShape] = []
    for _ in range(b):
        for h0 in range(0, heads, g):
            hg = min(g, heads - h0)
            for r0 in range(0, sq, tq):
                out.append(TileShape(min(tq, sq - r0), hg))
    return out


def pipeline_cycles(stages: Sequence[tuple[int, int, int]], units: tuple[str, str, str]) -> PipelineResult:
    """Makespan of tiles whose (QK^T, softmax, A.V) take ``stages[t]`` cycles on ``units`` (array, vector, array
    unit names; equal names share one unit), issued in the software-pipelined order of the module docstring with
    two score and two probability buffer halves. Each unit runs its operations in issue order."""
    n = len(stages)
    free = dict.fromkeys(units, 0)
    qk_end, sm_end, av_end = [0] * n, [0] * n, [0] * n

    def qk(t: int) -> None:  # its score half is free once the softmax two tiles back has read it
        start = max(free[units[0]], sm_end[t - 2] if t >= 2 else 0)
        qk_end[t] = free[units[0]] = start + stages[t][0]

    def sm(t: int) -> None:  # its scores, and its probability half once A.V two tiles back has read it
        start = max(free[units[1]], qk_end[t], av_end[t - 2] if t >= 2 else 0)
        sm_end[t] = free[units[1]] = start + stages[t][1]

    def av(t: int) -> None:
        start = max(free[units[2]], sm_end[t])
        av_end[t] = free[units[2]] = start + stages[t][2]

    if n:
        qk(0)
    for t in range(1, n):
        qk(t)
        sm(t - 1)
        av(t - 1)
    if n:
        sm(n - 1)
        av(n - 1)
    array = sum(q + a for q, _, a in stages)
    vector = sum(m for _, m, _ in stages)
    if units[1] == units[0]:
        array, vector = array + vector, 0
    return PipelineResult(max(free.values()), array, vector)


@dataclass(frozen=True)
class _Priced:
    """The priced pipeline of one tile shape choice."""

    tile_q: int
    heads_per_tile: int
    tiles: list[TileShape]
    result: PipelineResult
    costs: dict[TileShape, tuple[Cost, Cost, Cost]]
    drain: int


_MEMO: weakref.WeakKeyDictionary[Any, dict[tuple[Any, ...], _Priced | None]] = weakref.WeakKeyDictionary()
"""Chosen pipelines per pricing (a ``price`` call's costing, or a model): the layers of a model share their shapes,
and a sweep re-prices a plan per design point, so each distinct attention shape is planned once per pricing."""


def softcap_work(elements: int, bits: int) -> VectorWork:
    """The soft-capping tanh over ``elements`` scores, priced as lower.py prices a standalone Tanh: a
    transcendental, one polynomial evaluation per element like erf-GELU. Its 1/c folds into the score scale; its c
    multiplies the tanh's result inside that polynomial's last step."""
    return VectorWork(kind="gelu", elements=elements, approx="exact", bits=bits)


def plan_tiles(b: int, heads: int, sq: int, sk: int, dh: int, dv: int, bits: int, softmax: str, cost: Any,
               target: Target | None, softcap: bool = False, sinks: bool = False) -> _Priced | None:
    """The tile shape whose pipeline ends first on ``target`` (priced with ``cost``), or None when the target has
    no systolic array or no tile of one array fold of rows fits its buffers. Candidates are simulated in the order
    of their lower bound (the busier unit's cycles), and none whose bound cannot beat the best found. ``softcap``:
    the lanes run the soft-capping tanh over each tile's scores before its softmax (`softcap_work`). ``sinks``:
    each softmax row holds one more element, its head's sink logit (`_tile_costs`)."""
    if target is None:
        return None
    owner = cost if hasattr(cost, "model") else getattr(cost, "__self__", None)
    key = (b, heads, sq, sk, dh, dv, bits, softmax, softcap, sinks)
    try:
        memo = _MEMO.setdefault(owner, {}) if owner is not None else None
    except TypeError:  # an owner that takes no weak reference
        memo = None
    if memo is not None and key in memo:
        return memo[key]
    found = _plan_tiles(b, heads, sq, sk, dh, dv, bits, softmax, cost, target, softcap, sinks)
    if memo is not None:
        memo[key] = found
    return found


def _plan_tiles(b: int, heads: int, sq: int, sk: int, dh: int, dv: int, bits: int, softmax: str, cost: Any,
                target: Target, softcap: bool, sinks: bool = False) -> _Priced | None:
    array = target.systolic_array()
    rows, parts = getattr(array, "rows", None), getattr(array, "partitions", 1)
    if not isinstance(rows, int):
        return None
    parts = parts if isinstance(parts, int) and parts > 0 else 1
    caps = target.attention_buffers()
    acc_bits = GemmWork(m=1, n=1, k=1).acc_bits
    bounded: list[tuple[int, int, int, dict[TileShape, tuple[Cost, Cost, Cost]]]] = []
    for tq, g in tile_candidates(sq, heads, rows, parts):
        if not tile_fits(tq, g, sk, dh, dv, bits, acc_bits, caps):
            continue
        counts = _tile_counts(b, heads, sq, tq, g)
        costs = {shape: _tile_costs(shape, sk, dh, dv, bits, softmax, cost, softcap, sinks) for shape in counts}
        array_busy = sum(n * (costs[s][0].compute_cycles + costs[s][2].compute_cycles) for s, n in counts.items())
        vector_busy = sum(n * costs[s][1].compute_cycles for s, n in counts.items())
        same = next(iter(costs.values()))[0].unit == next(iter(costs.values()))[1].unit
        bounded.append((array_busy + vector_busy if same else max(array_busy, vector_busy), tq, g, costs))
    best: _Priced | None = None
    for bound, tq, g, costs in sorted(bounded, key=lambda c: c[:3]):
        if best is not None and bound >= best.result.cycles:
            break
        tiles = _tiles(b, heads, sq, tq, g)
        units = tuple(c.unit for c in costs[tiles[0]])
        stages = [tuple(c.compute_cycles for c in costs[s]) for s in tiles]
        result = pipeline_cycles(stages, units)  # type: ignore[arg-type]
        if best is None or result.cycles < best.result.cycles:
            bare = [(q - _drain(costs[s][0]), m, a - _drain(costs[s][2])) for s, (q, m, a) in zip(tiles, stages)]
            drain = result.cycles - pipeline_cycles(bare, units).cycles  # type: ignore[arg-type]
            best = _Priced(tq, g, tiles, result, costs, drain)
    return best


def _tile_counts(b: int, heads: int, sq: int, tq: int, g: int) -> dict[TileShape, int]:
    """How many tiles of each shape :func:`_tiles` issues."""
    counts: dict[TileShape, int] = {}
    for group, groups in ((g, heads // g), (heads % g, 1)):
        for block, blocks in ((tq, sq // tq), (sq % tq, 1)):
            if group and groups and block and blocks:
                shape = TileShape(block, group)
                counts[shape] = counts.get(shape, 0) + b * groups * blocks
    return counts


def _drain(c: Cost) -> int:
    return int(c.detail.get("drain_cycles", 0))


def _tile_costs(shape: TileShape, sk: int, dh: int, dv: int, bits: int, softmax: str,
                cost: Any, softcap: bool = False, sinks: bool = False) -> tuple[Cost, Cost, Cost]:
    """(QK^T, softmax, A.V) costs of one tile: ``shape.heads`` products of each as one array invocation each.
    With ``sinks`` each softmax row normalises Sk + 1 elements (the head's sink logit joins the row; its
    probability is dropped, so A.V still reads Sk)."""
    qk = GemmWork(m=shape.rows, n=sk, k=dh, batch=shape.heads, in_bits=bits, w_bits=bits, weights_static=False)
    av = GemmWork(m=shape.rows, n=dv, k=sk, batch=shape.heads, in_bits=bits, w_bits=bits, weights_static=False)
    sm = VectorWork(kind="softmax", elements=shape.heads * shape.rows * (sk + sinks), rows=shape.heads * shape.rows,
                    approx=softmax, bits=bits)
    c_sm = cost(sm)
    if softcap:  # the tanh runs on the lanes' pass over the tile's scores, before the softmax
        c_cap = cost(softcap_work(sm.elements, bits))
        c_sm = replace(c_sm, compute_cycles=c_sm.compute_cycles + c_cap.compute_cycles,
                       onchip_bytes=c_sm.onchip_bytes + c_cap.onchip_bytes)
    return cost(qk), c_sm, cost(av)
