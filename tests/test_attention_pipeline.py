"""The standard attention order on chip (compiler/schedule/attention_pipeline.py): the software pipeline's timing,
the buffers a tile needs, heads in parallel on sub-arrays, and where the three-step off-chip order stays."""

from __future__ import annotations

import random
from typing import TypedDict

import pytest

from compiler.schedule.attention_pipeline import (
    _tile_costs,
    _tiles,
    onchip_target,
    pipeline_cycles,
    plan_tiles,
    tile_candidates,
    tile_fits,
)
from hw.models import build_model
from hw.perf.workload import GemmWork, VectorWork
from hw.targets import load_target

UNITS = ("gemm", "vector", "gemm")
class Shape(TypedDict):
    """plan_tiles' attention shape: batch, heads, query and key rows, head dims, operand bits, softmax choice."""
    b: int
    heads: int
    sq: int
    sk: int
    dh: int
    dv: int
    bits: int
    softmax: str


VIT_BASE: Shape = {"b": 1, "heads": 12, "sq": 197, "sk": 197, "dh": 64, "dv": 64, "bits": 8, "softmax": "shiftmax"}
VIT_TINY: Shape = {**VIT_BASE, "heads": 4, "sq": 17, "sk": 17, "dh": 16, "dv": 16}


def test_array_bound_pipeline_hides_the_softmax() -> None:
    # QK0 0-10, QK1 10-20, SM0 10-15, AV0 20-30, QK2 30-40, SM1 20-25, AV1 40-50, SM2 40-45, AV2 50-60.
    result = pipeline_cycles([(10, 5, 10)] * 3, UNITS)
    assert (result.cycles, result.array_cycles, result.vector_cycles) == (60, 60, 15)


def test_vector_bound_pipeline_exposes_only_the_first_product_and_the_last() -> None:
    # The lanes run softmax back to back from the end of QK0 (2) on; A.V of the last tile follows its softmax.
    result = pipeline_cycles([(2, 10, 2)] * 3, UNITS)
    assert result.cycles == 2 + 3 * 10 + 2


def test_one_unit_for_everything_is_serial() -> None:
    assert pipeline_cycles([(10, 5, 10)] * 3, ("u", "u", "u")).cycles == 3 * 25
    assert pipeline_cycles([], UNITS).cycles == 0


def test_pipeline_lies_between_the_busiest_unit_and_the_serial_sum() -> None:
    rng = random.Random(7)
    for _ in range(200):
        stages = [(rng.randint(1, 50), rng.randint(1, 50), rng.randint(1, 50)) for _ in range(rng.randint(1, 9))]
        result = pipeline_cycles(stages, UNITS)
        assert max(result.array_cycles, result.vector_cycles) <= result.cycles <= sum(map(sum, stages))
        assert result.array_cycles == sum(q + a for q, _, a in stages)


def test_tile_buffers_are_counted() -> None:
    # Q (197 x 64) and probabilities (197 x 197) int8 = 51,417 B; K and V 197 x 128 = 25,216 B; scores and A.V
    # accumulators 197 x 261 int32 = 205,668 B.
    caps = (51_417.0, 25_216.0, 205_668.0)
    assert tile_fits(197, 1, 197, 64, 64, 8, 32, caps)
    for shrunk in range(3):
        small = tuple(c - 1 if i == shrunk else c for i, c in enumerate(caps))
        assert not tile_fits(197, 1, 197, 64, 64, 8, 32, small)  # type: ignore[arg-type]
    assert not tile_fits(197, 2, 197, 64, 64, 8, 32, caps)


def test_candidates_are_the_sequence_and_multiples_of_the_array_rows() -> None:
    assert tile_candidates(197, 12, 64, 8) == [(197, 1), (197, 8), (197, 12), (64, 1), (64, 8), (64, 12),
                                               (128, 1), (128, 8), (128, 12)]
    assert tile_candidates(17, 4, 64, 1) == [(17, 1), (17, 4)]


def _serial(model, shape: Shape) -> int:
    """The three steps one after another over every head (the off-chip order's compute)."""
    batch = shape["heads"]
    qk = GemmWork(m=shape["sq"], n=shape["sk"], k=shape["dh"], batch=batch, weights_static=False)
    av = GemmWork(m=shape["sq"], n=shape["dv"], k=shape["sk"], batch=batch, weights_static=False)
    sm = VectorWork(kind="softmax", elements=batch * shape["sq"] * shape["sk"], rows=batch * shape["sq"],
                    approx=shape["softmax"], bits=8)
    return sum(model.cost(w).compute_cycles for w in (qk, av, sm))


# Measured 2026-12-04 (the model's own mapping, no search). Folds streamed (gemm.fold_overlap, the bundled U280):
# 30,270 cycles on one 64x64 array, 29,681 on 8 sub-arrays of 8x64, within 4% of the vector lanes' 29,112 / 29,088
# busy cycles (softmax now bounds attention); the serial order takes 47,226 and 43,272. Folds not overlapped:
# 54,568 and 35,264 against 75,954 and 56,346.
@pytest.mark.parametrize("partitions,overlap,bound", [(1, True, 0.65), (8, True, 0.70), (1, False, 0.72),
                                                      (8, False, 0.63)])
def test_vit_base_attention_beats_the_serial_order_on_the_u280(partitions: int, overlap: bool, bound: float) -> None:
    model = build_model(load_target("fpga-u280", {"gemm.partitions": str(partitions),
                                                  "gemm.fold_overlap": str(overlap).lower()}))
    tiled = plan_tiles(**VIT_BASE, cost=model.cost, target=onchip_target(model.cost))
    assert tiled is not None
    assert max(tiled.result.array_cycles, tiled.result.vector_cycles) <= tiled.result.cycles
    serial = _serial(model, VIT_BASE)
    assert tiled.result.cycles < bound * serial
    if overlap:
        assert tiled.result.cycles < 1.05 * tiled.result.vector_cycles
    assert tiled.tiles and sum(t.rows * t.heads for t in tiled.tiles) == 197 * 12


def test_heads_in_parallel_when_the_model_spreads_a_batch_over_arrays() -> None:
    # A ganged NPU spreads a batch of products over its 16 arrays: for ViT-Tiny's 17 x 17 scores of 4 heads, a
    # tile of all heads runs them at once (ViT-Base's 197 rows split over the arrays as well one head at a time).
    model = build_model(load_target("npu-xdna"))
    tiled = plan_tiles(**VIT_TINY, cost=model.cost, target=onchip_target(model.cost))
    assert tiled is not None and tiled.heads_per_tile == 4


def test_no_pipeline_without_an_array_buffers_for_a_tile_or_with_independent_arrays() -> None:
    gpu = build_model(load_target("gpu-a100"))
    assert onchip_target(gpu.cost) is None
    assert plan_tiles(**VIT_BASE, cost=gpu.cost, target=onchip_target(gpu.cost)) is None
    tiny = build_model(load_target("fpga-u280", {"buffers.out_kb": "16"}))
    assert plan_tiles(**VIT_BASE, cost=tiny.cost, target=onchip_target(tiny.cost)) is None
    independent = build_model(load_target("npu-xdna", {"mode": "independent"}))
    assert onchip_target(independent.cost) is None


@pytest.mark.parametrize("target,overrides", [("fpga-u280", {}), ("fpga-u280", {"gemm.partitions": "8"}),
                                              ("fpga-u280", {"gemm.rows": "8", "gemm.cols": "8"}),
                                              ("npu-xdna", {}), ("asic-systolic", {})])
def test_pruned_search_finds_the_fastest_candidate(target: str, overrides: dict[str, str]) -> None:
    # Candidates whose lower bound (the busier unit) cannot beat the best are not simulated: the choice must still
    # be the fastest of all candidates that fit.
    model = build_model(load_target(target, overrides))
    t = onchip_target(model.cost)
    assert t is not None
    shapes: list[Shape] = [VIT_BASE, {**VIT_BASE, "sq": 128, "sk": 128}, VIT_TINY]
    for shape in shapes:
        tiled = plan_tiles(**shape, cost=model.cost, target=t)
        array = t.systolic_array()
        assert array is not None
        every = []
        for tq, g in tile_candidates(shape["sq"], shape["heads"], array.rows, getattr(array, "partitions", 1)):
            if not tile_fits(tq, g, shape["sk"], shape["dh"], shape["dv"], 8, 32, t.attention_buffers()):
                continue
            tiles = _tiles(shape["b"], shape["heads"], shape["sq"], tq, g)
            costs = {s: _tile_costs(s, shape["sk"], shape["dh"], shape["dv"], 8, shape["softmax"], model.cost)
                     for s in set(tiles)}
            stages = [tuple(c.compute_cycles for c in costs[s]) for s in tiles]
            every.append(pipeline_cycles(stages, tuple(c.unit for c in costs[tiles[0]])).cycles)  # type: ignore[arg-type]
        if not every:  # no tile fits (the ASIC's buffers and ViT-Base's 197 keys): the off-chip order
            assert tiled is None
            continue
        assert tiled is not None and tiled.result.cycles == min(every)
        assert plan_tiles(**shape, cost=model.cost, target=t) is tiled  # planned once per model and shape
