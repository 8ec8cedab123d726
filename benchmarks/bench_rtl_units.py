"""Simulation speed of the non-GEMM RTL kernels (shiftmax, shiftgelu in both forms, ilayernorm, online_softmax,
topk_router).

Run ``python benchmarks/bench_rtl_units.py [--sim icarus] [--kernel shiftmax]``; ``main`` prints one line per
(unit, simulator) and returns the figures (``shiftgelu`` is the per-element form, ``shiftgelu-row`` the row-max one;
``--kernel shiftgelu`` runs both). Each kernel runs the cocotb testbench the tests use
(``tests/rtl_tb/tb_<kernel>.py``, Python drives and samples the ports every cycle) on ViT-sized rows with random
inputs, in a scratch build folder so builds are timed from scratch (ccache, when present, still shares
Verilator's runtime objects). Outputs are checked against ``compiler.numerics`` and the measured cycles
against ``predicted_cycles``; cycles per second = measured cycles / wall time of the simulation run.
"""

from __future__ import annotations

import argparse
import math
import random
import sys
import tempfile
from pathlib import Path

if __package__ in (None, ""):  # run as a script from a checkout
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np  # noqa: E402
import torch  # noqa: E402

from compiler.numerics import dyadic, ilayernorm, online_softmax, shiftgelu, shiftmax  # noqa: E402
from compiler.numerics.router import route  # noqa: E402
from hw.rtl.emit import canonical_params  # noqa: E402
from hw.rtl.kernels import invocation_cycles  # noqa: E402
from hw.rtl.shiftgelu import x0_for_scale as gelu_x0  # noqa: E402
from hw.rtl.shiftmax import x0_for_scale  # noqa: E402
from hw.rtl.sim import SIMULATORS, run_testbench  # noqa: E402

TB_DIR = Path(__file__).resolve().parents[1] / "tests" / "rtl_tb"


def _rows(rng: random.Random, rows: int, n: int, bits: int) -> list[list[int]]:
    lo, hi = -(1 << (bits - 1)), (1 << (bits - 1)) - 1
    return [[rng.randint(lo, hi) >> rng.randint(0, 4) for _ in range(n)] for _ in range(rows)]


def _workloads(rng: random.Random) -> dict[str, tuple[str, dict, dict, dict, list]]:
    """unit -> (kernel, params, job case, invocation work, expected outputs)."""
    out = {}
    x = _rows(rng, 4, 197, 20)  # ViT-Base attention rows (197 tokens), scores of about 20 bits
    y, _ = shiftmax(torch.tensor(x), 3e-4, 16)
    out["shiftmax"] = ({"n": 197, "in_bits": 32, "out_bits": 16},
                       {"config": {"x0": x0_for_scale(3e-4)}, "beats": [{"x": v} for r in x for v in r]},
                       {"rows": 4}, y.flatten().tolist())
    x = _rows(rng, 2, 768, 8)
    for unit, stabilizer in (("shiftgelu", "element"), ("shiftgelu-row", "row")):
        y, _ = shiftgelu(torch.tensor(x), 0.05, 8, stabilizer=stabilizer)
        out[unit] = ({"n": 768, "in_bits": 8, "out_bits": 8, "per_element": int(stabilizer == "element")},
                     {"config": {"x0": gelu_x0(0.05)}, "beats": [{"x": v} for r in x for v in r]},
                     {"rows": 2}, y.flatten().tolist())
    x = _rows(rng, 2, 192, 16)
    gamma, beta = torch.full((192,), 0.5, dtype=torch.float64), torch.full((192,), 0.1, dtype=torch.float64)
    y, _ = ilayernorm(torch.tensor(x), 0.01, gamma, beta)
    y0, _ = ilayernorm(torch.tensor(x), 0.01, gamma, torch.zeros(192, dtype=torch.float64))
    out["ilayernorm"] = ({"c": 192, "in_bits": 16},
                         {"bias": (y - y0)[0].tolist(), "beats": [{"x": v} for r in x for v in r]},
                         {"rows": 2}, y.flatten().tolist())
    x = _rows(rng, 4, 197, 20)
    y, _ = online_softmax(torch.tensor(x), 3e-4, 16)
    m_c, e_c = dyadic(3e-4 * math.log2(math.e) * 256)
    out["online_softmax"] = ({"n": 197, "in_bits": 32, "out_bits": 16},
                             {"config": {"m_c": m_c, "e_c": e_c}, "beats": [{"x": v} for r in x for v in r + r]},
                             {"rows": 4}, y.flatten().tolist())
    x = _rows(rng, 129, 16, 16)  # M3ViT: 129 tokens, 16 experts, top-2
    experts = route(np.array(x, dtype=np.float64), 2, "task").experts.tolist()
    out["topk_router"] = ({"experts": 16, "k": 2, "in_bits": 16},
                          {"beats": [{"logit": v} for r in x for v in r]}, {"tokens": 129}, experts)
    return {unit: (unit.removesuffix("-row"), *entry) for unit, entry in out.items()}


def bench(kernels: tuple[str, ...] | None = None, sims: tuple[str, ...] = SIMULATORS) -> dict[str, dict]:
    """Per ``unit/sim``: build seconds, run seconds, simulated cycles and cycles per second."""
    figures = {}
    workloads = _workloads(random.Random(0))
    with tempfile.TemporaryDirectory() as scratch:
        for unit, (kernel, params, case, work, expected) in workloads.items():
            if kernels and kernel not in kernels and unit not in kernels:
                continue
            full = canonical_params(kernel, params)
            case = {**case, "n_out": len(expected)}
            for sim in sims:
                run = run_testbench(kernel, full, sim, f"tb_{kernel}", TB_DIR, {"params": full, "cases": [case]},
                                    build_root=scratch)
                got = run.result["cases"][0]
                values = [o["index"] if kernel == "topk_router" else o["y"] for o in got["outputs"]]
                assert values == expected, f"{unit} on {sim}: outputs differ from compiler.numerics"
                assert got["cycles"] == invocation_cycles(kernel, full, work), f"{unit} on {sim}: cycles"
                figures[f"{unit}/{sim}"] = {"build_s": run.build_s, "run_s": run.run_s, "cycles": got["cycles"],
                                              "cycles_per_s": got["cycles"] / run.run_s}
    return figures


def main(argv: list[str] | None = None) -> dict[str, dict]:
    """Parse ``argv``, run :func:`bench`, print one line per (kernel, simulator), return the figures."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sim", choices=SIMULATORS, action="append", help="default: both")
    parser.add_argument("--kernel", action="append", help="a kernel or unit name (default: all)")
    args = parser.parse_args(argv)
    figures = bench(tuple(args.kernel or ()), tuple(args.sim or SIMULATORS))
    for name, f in figures.items():
        print(f"{name:26s} {f['cycles']:7d} cycles in {f['run_s']:6.2f} s = {f['cycles_per_s']:9,.0f} cycles/s; "
              f"build {f['build_s']:5.1f} s")
    return figures


if __name__ == "__main__":
    main()
