"""hw.models.gpu: the roofline baseline and TDP energy."""

from __future__ import annotations

import math

import pytest

from hw.models import GpuModel, build_model
from hw.perf.workload import GemmWork, MoveWork, VectorWork
from hw.targets import load_target


def model(name: str = "gpu-a100", **overrides: str) -> GpuModel:
    m = build_model(load_target(name, overrides))
    assert isinstance(m, GpuModel)
    return m


def test_peaks() -> None:
    m = model()
    assert m.units() == {"gpu": 1}
    assert m.peak_macs_per_cycle() == pytest.approx(624e12 / 2 / 1.41e9)
    assert m.macs_per_cycle(16) == pytest.approx(312e12 / 2 / 1.41e9)
    assert m.offchip_bytes_per_cycle() == pytest.approx(1555e9 * 0.8 / 1.41e9)


def test_compute_bound_gemm() -> None:
    m = model()
    cost = m.cost(GemmWork(1024, 1024, 1024))
    compute = 2**30 / (624e12 / 2 / 1.41e9 * 0.7)
    assert cost.detail["bound"] == "compute"
    assert cost.compute_cycles == math.ceil(compute + 3 * 1410)  # + 3 us launch at 1410 MHz


def test_memory_bound_ops() -> None:
    m = model(**{"gpu.launch_us": "0"})
    gemv = m.cost(GemmWork(1, 4096, 4096))
    assert gemv.detail["bound"] == "memory"
    assert gemv.compute_cycles == math.ceil((4096 + 4096 * 4096 + 4096) / (1555e9 * 0.8 / 1.41e9))
    assert gemv.tiles == 64  # 16.8 MB streams through the scheduler in 64 tiles, overlapping its transfers
    assert m.cost(VectorWork("add", 1000)).tiles == 1
    assert m.cost(VectorWork("softmax", 10**6)).compute_cycles == math.ceil(2e6 / (1555e9 * 0.8 / 1.41e9))
    assert m.cost(MoveWork("transpose", 10**6)).compute_cycles == math.ceil(2e6 / (1555e9 * 0.8 / 1.41e9))


def test_fp16_uses_the_fp16_peak() -> None:
    m = model(**{"gpu.launch_us": "0"})
    fp16 = m.cost(GemmWork(4096, 4096, 4096, in_bits=16, w_bits=16))
    assert fp16.compute_cycles == math.ceil(4096**3 / (312e12 / 2 / 1.41e9 * 0.7))


def test_energy_is_tdp_times_time() -> None:
    e = model().energy({8: 10**12}, 10**9, 10**9, 1_410_000)  # 1 ms; counts do not matter
    assert e == pytest.approx({"static": 50.0, "dynamic": 350.0})
    assert sum(e.values()) == pytest.approx(400.0)
