"""SCALE-Sim v3's ViT-base findings on the paper's own workload scope: the GEMMs of its topology alone.

The paper (Raj et al., arXiv 2504.15377) simulated scalesim-project/scale-sim-v3
``topologies/ispass25_models/vit_b.csv``: one encoder block's five GEMMs, nothing else. Here they are int8 GEMMs
priced and scheduled on ``asic-systolic`` at 32x32, 64x64 and 128x128 with the compile's own functions (layer
pricing, mapping search, scheduler, the report's energy): each reads its operands from DRAM and writes its int8
output back, one after another, as SCALE-Sim runs layers. Printed, never asserted: docs/ASIC.md quotes the figures
and tests/test_models_asic.py pins their verdicts.

    python benchmarks/bench_asic_scope.py [--objective latency|energy|edp] [--set key=value ...]
"""

from __future__ import annotations

import argparse
from functools import partial

from compiler.schedule.lower import price_layer  # the layer pricing a compile uses
from compiler.schedule.plan import Plan, PlannedLayer, TaskSpec, schedule_plan
from hw.models import build_model
from hw.models.run_energy import run_energy_mj, total_mj
from hw.perf.workload import GemmWork
from hw.targets import load_target

VIT_B = (("L0", 196, 192, 768), ("L1", 196, 1176, 64), ("L2", 196, 64, 1176), ("L3", 196, 3072, 768),
         ("L4", 196, 768, 3072))
"""scale-sim-v3 ``topologies/ispass25_models/vit_b.csv`` (Layer, M, N, K)."""

SIZES = (32, 64, 128)


def gemm_only(overrides: dict[str, str] | None = None, objective: str | None = None,
              shapes: tuple[tuple[str, int, int, int], ...] = VIT_B) -> dict[int, dict[str, float]]:
    """Per square array size: ``latency_ms``, ``energy_mj``, ``edp`` (mJ x ms) and the energy breakdown (mJ) of
    ``shapes`` run in order on ``asic-systolic`` with ``overrides``, GEMMs mapped for ``objective`` (None: the
    target's)."""
    layers, prev = [], ()
    for name, m, n, k in shapes:
        spec = TaskSpec(name, m * k + k * n, m * n, prev, rows=m)
        layers.append(PlannedLayer(name, (name,), partial(price_layer, spec, "gemm", GemmWork(m, n, k), (), k * n)))
        prev = (name,)
    out = {}
    for size in SIZES:
        model = build_model(load_target("asic-systolic", {**(overrides or {}), "gemm.rows": str(size),
                                                          "gemm.cols": str(size)}))
        plans, sched = schedule_plan(Plan(tuple(layers)), model, "search", objective)
        cycles = int(sched.makespan)
        offchip = sum(p.bytes_offchip for p in plans)
        breakdown = run_energy_mj(model, [w for p in plans for w in p.works], {}, 0, offchip, cycles)
        ms = cycles / (model.target.clock_mhz * 1e3)
        out[size] = {"latency_ms": ms, "energy_mj": total_mj(breakdown), "edp": total_mj(breakdown) * ms,
                     **{f"energy.{k}": v for k, v in breakdown.items()}}
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--objective", choices=("latency", "energy", "edp"), default=None)
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE")
    args = parser.parse_args()
    figures = gemm_only(dict(s.split("=", 1) for s in args.set), args.objective)
    print("array     latency_us  energy_uJ   EdP (mJ x ms)  dram_uJ  pe_idle_uJ  pe_registers_uJ")
    for size, f in figures.items():
        print(f"{size:>3}x{size:<3}  {f['latency_ms'] * 1e3:10.2f}  {f['energy_mj'] * 1e3:9.1f}  "
              f"{f['edp']:13.4f}  {f['energy.dram'] * 1e3:7.1f}  {f['energy.pe_idle'] * 1e3:10.1f}  "
              f"{f['energy.pe_registers'] * 1e3:15.1f}")
    t, e = figures[32]["latency_ms"] / figures[128]["latency_ms"], figures[128]["energy_mj"] / figures[32]["energy_mj"]
    best = min(figures, key=lambda s: figures[s]["edp"])
    print(f"128x128 faster than 32x32: {t:.2f}x (paper 6.53x); 32x32 more energy-efficient: {e:.2f}x (paper 2.86x); "
          f"best EdP: {best}x{best} (paper 64x64)")


if __name__ == "__main__":
    main()
