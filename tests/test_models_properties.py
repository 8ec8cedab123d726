"""Properties every model keeps: GEMM cost is monotone in m, n, k and never beats the machine's peak."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from hw.models import AcceleratorModel, Cost, build_model
from hw.perf.workload import GemmWork
from hw.targets import bundled_targets, load_target

MODELS = {name: build_model(load_target(name)) for name in bundled_targets()}
MODELS["fpga-u280-ws"] = build_model(load_target("fpga-u280", {"gemm.dataflow": "ws", "gemm.cols": "32"}))
MODELS["fpga-u280-is"] = build_model(load_target("fpga-u280", {"gemm.dataflow": "is", "gemm.rows": "8"}))
MODELS["npu-xdna-independent"] = build_model(load_target("npu-xdna", {"mode": "independent"}))

dims = st.integers(min_value=1, max_value=700)


@pytest.mark.parametrize("name", sorted(MODELS))
def test_models_follow_the_protocol(name: str) -> None:
    m = MODELS[name]
    assert isinstance(m, AcceleratorModel)
    assert isinstance(m.cost(GemmWork(8, 8, 8)), Cost)
    assert m.cost(GemmWork(8, 8, 8)).unit in m.units()
    m.check_fits()


@pytest.mark.parametrize("name", sorted(MODELS))
@settings(max_examples=60, deadline=None)
@given(m=dims, n=dims, k=dims, batch=st.integers(1, 4), axis=st.sampled_from("mnk"), step=st.integers(1, 300))
def test_gemm_cost_monotone_and_above_ideal(name: str, m: int, n: int, k: int, batch: int, axis: str,
                                            step: int) -> None:
    model = MODELS[name]
    work = GemmWork(m, n, k, batch=batch)
    cost = model.cost(work).compute_cycles
    assert cost >= work.macs / model.peak_macs_per_cycle() * (1 - 1e-9)
    dims = {"m": m, "n": n, "k": k}
    dims[axis] += step
    bigger = GemmWork(dims["m"], dims["n"], dims["k"], batch=batch)
    assert model.cost(bigger).compute_cycles >= cost


@pytest.mark.parametrize("name", sorted(MODELS))
@settings(max_examples=30, deadline=None)
@given(macs=st.integers(0, 10**12), onchip=st.integers(0, 10**10), offchip=st.integers(0, 10**10),
       cycles=st.integers(0, 10**10))
def test_energy_components_are_non_negative_and_grow(name: str, macs: int, onchip: int, offchip: int,
                                                     cycles: int) -> None:
    model = MODELS[name]
    e = model.energy({8: macs}, onchip, offchip, cycles)
    assert all(v >= 0 for v in e.values())
    more = model.energy({8: macs + 1}, onchip + 1, offchip + 1, cycles + 1)
    assert sum(more.values()) >= sum(e.values())
