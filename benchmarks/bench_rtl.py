"""Simulation speed of the systolic GEMM array on Icarus and Verilator, and Verilator's build time.

Run ``python benchmarks/bench_rtl.py [--rows 4 --cols 4 --size 64]``; ``main`` prints one line per
simulator and returns the figures; called without arguments (``make bench``) it then prints
``rtl_system_table.py``'s table of the system top level's cycles against the performance model. Each simulator
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


def main(argv: list[str] | None = None) -> dict[str, dict]:
    """Parse ``argv``, run :func:`bench`, print one line per simulator, return the figures."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=4)
    parser.add_argument("--cols", type=int, default=4)
    parser.add_argument("--size", type=int, default=64, help="M = N = K of the GEMM")
    parser.add_argument("--sim", choices=SIMULATORS, action="append", help="default: both")
    args = parser.parse_args(argv)
    figures = bench(args.rows, args.cols, args.size, tuple(args.sim or SIMULATORS))
    for sim, f in figures.items():
        print(
            f"{sim:9s} {args.rows}x{args.cols} array, {args.size}^3 int8 GEMM: {f['cycles']} cycles in "
            f"{f['run_s']:.2f} s = {f['cycles_per_s']:,.0f} cycles/s; build {f['build_s']:.1f} s"
        )
    if not (sys.argv[1:] if argv is None else argv):  # `make bench`: also rtl_system_table.py's RTL-vs-model table
        import rtl_system_table

        rtl_system_table.main([])
    return figures


if __name__ == "__main__":
    main()
