"""Simulation speed of the systolic GEMM array on Icarus and Verilator, Verilator's build time, and the system top
level's resources after Yosys ``synth_xilinx`` next to the resource model's.

Run ``python benchmarks/bench_rtl.py [--rows 4 --cols 4 --size 64] [--synth-only]``; ``main`` prints one line per
simulator and the synthesis figures, and returns them; called without arguments (``make bench``) it then prints
``rtl_system_table.py``'s table of the system top level's cycles against the performance model per bert_tiny GEMM,
and ``rtl_whole_models.py``'s for vit_tiny, bert_tiny and gpt2_tiny whole. Each simulator
runs the cocotb testbench used by the tests (``tests/rtl_tb/tb_systolic.py``: Python drives and samples the ports
every cycle) on a random int8 ``size x size x size`` GEMM, in a scratch build folder so the build is timed from scratch.
Simulated cycles per second = testbench-measured cycles / wall time of the simulation run
(simulator start-up and the Python interpreter included, so short runs understate the rate).
"""

from __future__ import annotations

import argparse
import random
import sys
import tempfile
import time
from pathlib import Path

if __package__ in (None, ""):  # run as a script from a checkout
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from hw.rtl.emit import canonical_params  # noqa: E402
from hw.rtl.sim import SIMULATORS, run_testbench  # noqa: E402
from hw.rtl.systolic import predicted_cycles  # noqa: E402

TB_DIR = Path(__file__).resolve().parents[1] / "tests" / "rtl_tb"


def bench(rows: int = 4, cols: int = 4, size: int = 64, sims: tuple[str, ...] = SIMULATORS) -> dict[str, dict]:
    """Per simulator: build seconds, run seconds, simulated cycles and cycles per second."""
    params = canonical_params("systolic_gemm", {"rows": rows, "cols": cols, "in_bits": 8})
    rng = random.Random(0)
    a = [[rng.randint(-128, 127) for _ in range(size)] for _ in range(size)]
    b = [[rng.randint(-128, 127) for _ in range(size)] for _ in range(size)]
    job = {"params": params, "cases": [{"a": a, "b": b}]}
    figures = {}
    with tempfile.TemporaryDirectory() as scratch:
        for sim in sims:
            start = time.perf_counter()
            run = run_testbench("systolic_gemm", params, sim, "tb_systolic", TB_DIR, job, build_root=scratch)
            total = time.perf_counter() - start
            cycles = run.result["cases"][0]["cycles"]
            assert cycles == predicted_cycles(size, size, size, rows, cols)
            figures[sim] = {
                "build_s": run.build_s,
                "run_s": run.run_s,
                "total_s": total,
                "cycles": cycles,
                "cycles_per_s": cycles / run.run_s,
            }
    return figures


SYSTEM_TARGET = {"gemm.rows": "4", "gemm.cols": "4", "vector.lanes": "4", "dma.channels": "1",
                 "buffers.act_kb": "0.25", "buffers.weight_kb": "0.25", "buffers.out_kb": "0.25"}
"""The small configuration synthesized: a 4x4 array, one requant lane per column, one AXI port, 128 scratchpad and
16 accumulator rows. Small because the scratchpad and accumulator have several write ports (docs/RTL.md), which
no block RAM offers, so Yosys builds them from flip-flops and multiplexers: their size sets the synthesis time."""


def bench_system_synth(overrides: dict[str, str] | None = None) -> dict[str, dict]:
    """``synth_xilinx`` (UltraScale+) of ``cds1_system`` sized from fpga-u280 with ``overrides``, and the resource
    model's estimate of the same target with lanes holding only the requant unit (all the top level has):
    ``{"yosys": {resource: count}, "model": {resource: {component: count}}, "seconds": s}``."""
    from hw.models.resources import estimate
    from hw.rtl.synth import synthesize_system
    from hw.rtl.system import SystemConfig
    from hw.targets.loader import load_target

    target = load_target("fpga-u280", overrides or SYSTEM_TARGET)
    config = SystemConfig.from_target(target, trace_depth=16)
    report = synthesize_system(config)
    yosys = {"lut": report.luts, "ff": report.ffs, "dsp": report.dsps, "bram18": report.bram18, "uram": report.urams}
    return {"yosys": yosys, "model": estimate(target, lane_units=["requant"]),  # type: ignore[arg-type]
            "config": {"tag": config.tag()}, "seconds": {"yosys_s": report.seconds}}


def _print_system(figures: dict[str, dict]) -> None:
    model = figures["model"]
    print(f"cds1_system {figures['config']['tag']}: Yosys synth_xilinx (xcup) vs the resource model "
          f"(hw/models/resources.py; {figures['seconds']['yosys_s']:.0f} s of Yosys, 0 = cached)")
    for resource, count in figures["yosys"].items():
        parts = model.get(resource, {})
        shown = ", ".join(f"{k} {v:,.0f}" for k, v in parts.items() if v)
        line = f"  {resource:6s} yosys {count:8,d}   model {sum(parts.values()):10,.0f}"
        print(line + (f"  ({shown})" if shown else ""))


def main(argv: list[str] | None = None) -> dict[str, dict]:
    """Parse ``argv``, run :func:`bench`, print one line per simulator, return the figures."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=4)
    parser.add_argument("--cols", type=int, default=4)
    parser.add_argument("--size", type=int, default=64, help="M = N = K of the GEMM")
    parser.add_argument("--sim", choices=SIMULATORS, action="append", help="default: both")
    parser.add_argument("--synth-only", action="store_true", help="only the system top level's synthesis")
    args = parser.parse_args(argv)
    if args.synth_only:
        system = bench_system_synth()
        _print_system(system)
        return {"system": system}
    figures = bench(args.rows, args.cols, args.size, tuple(args.sim or SIMULATORS))
    for sim, f in figures.items():
        print(
            f"{sim:9s} {args.rows}x{args.cols} array, {args.size}^3 int8 GEMM: {f['cycles']} cycles in "
            f"{f['run_s']:.2f} s = {f['cycles_per_s']:,.0f} cycles/s; build {f['build_s']:.1f} s"
        )
    figures["system"] = bench_system_synth()
    _print_system(figures["system"])
    if not (sys.argv[1:] if argv is None else argv):  # `make bench`: also the RTL-vs-model tables
        import rtl_system_table
        import rtl_whole_models

        rtl_system_table.main([])
        rtl_whole_models.main([])
    return figures


if __name__ == "__main__":
    main()
