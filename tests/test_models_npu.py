"""hw.models.npu: ganged and independent MAC arrays, vector lanes, bandwidth."""

from __future__ import annotations

import pytest

from hw.models import NpuModel, build_model
from hw.perf.workload import GemmWork, VectorWork
from hw.targets import load_target


def model(name: str = "npu-xdna", **overrides: str) -> NpuModel:
    m = build_model(load_target(name, overrides))
    assert isinstance(m, NpuModel)
    return m


def test_units_follow_mode() -> None:
    assert model().units() == {"gemm": 1, "vector": 1, "dma": 1}
    assert model(mode="independent").units() == {"gemm": 16, "vector": 16, "dma": 1}
    assert model("npu-hexagon", mode="independent").units() == {"gemm": 2, "vector": 4, "dma": 1}


def test_peak_and_bandwidth() -> None:
    assert model().peak_macs_per_cycle() == 16 * 16 * 16
    # LPDDR5 102.4 GB/s at 1.25 GHz = 81.9 B/cycle, but 4 shim DMAs x 128 bit move 64.
    assert model().offchip_bytes_per_cycle() == 64
    assert model("npu-hexagon").offchip_bytes_per_cycle() == 67e9 / 1.4e9


def test_ganged_gemm_takes_the_fastest_split() -> None:
    # 16 arrays of 16x16, OS. Whole GEMM on one array: (4 x 16 folds) x (64 + 30) - 1 = 6,015.
    # Split n over 16 arrays: 64 x 16 per array -> 4 folds x 94 - 1 = 375. Split m: 4 x 256 -> 16 x 94 - 1 = 1,503.
    ganged = model().cost(GemmWork(64, 256, 64))
    assert (ganged.unit, ganged.compute_cycles, ganged.detail["split"]) == ("gemm", 375, "n")
    single = model(mode="independent").cost(GemmWork(64, 256, 64))
    assert (single.compute_cycles, single.detail["split"]) == (6_015, "none")
    # 32 heads of 16x16x16: split the batch, 2 per array, each one fold of 16 + 16 + 16 - 2 - 1 = 45 cycles.
    heads = model().cost(GemmWork(16, 16, 16, batch=32))
    assert (heads.compute_cycles, heads.detail["split"]) == (2 * 45, "batch")


def test_ganged_vector_uses_all_lanes() -> None:
    # 16 vector units x 64 lanes = 1,024 lanes: ceil(10,000 / 1,024) = 10 groups x 1 cycle.
    assert model().cost(VectorWork("add", 10_000)).compute_cycles == 10
    assert model(mode="independent").cost(VectorWork("add", 10_000)).compute_cycles == 157


def test_fixed_silicon_has_no_resource_budget() -> None:
    m = model()
    assert m.resources() == {}
    m.check_fits()
    e = m.energy({8: 10**9}, 0, 10**6, 1_250_000)  # 1 ms
    assert e == pytest.approx({"mac": 0.12, "onchip": 0.0, "offchip": 0.04, "static": 0.5})
