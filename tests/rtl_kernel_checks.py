"""Helpers shared by the RTL tests of the row-wise kernels (shiftmax, shiftgelu, ilayernorm,
online_softmax, topk_router): one cocotb run per (simulator, parameter set) streams many cases, and
each case's outputs and cycle count come back for the test to compare.

Waveforms: set ``CODESIGN_VCD`` to a substring of a test's id (``CODESIGN_VCD=shiftmax-icarus-n4``) or
to ``1`` for every RTL test; that run then builds with tracing on (``build/rtl_sim/<...>_waves/``) and
its VCD path is printed (``pytest -s`` shows it): ``dump.vcd`` for Verilator, ``waves.vcd`` for Icarus.
"""

from __future__ import annotations

import os
import random
from collections.abc import Callable
from pathlib import Path
from typing import Any

from hw.rtl import emit, sim

TB_DIR = Path(__file__).parent / "rtl_tb"
SIMS = ["icarus", "verilator"]
WAVES_ENV = "CODESIGN_VCD"


def waves_requested(node_id: str) -> bool:
    """Whether ``$CODESIGN_VCD`` asks for waveforms of the test ``node_id``."""
    wanted = os.environ.get(WAVES_ENV, "")
    return bool(wanted) and (wanted in ("1", "all") or wanted in node_id)


def run_kernel(kernel: str, params: dict, simulator: str, cases: list[dict], node_id: str = "",
               waves: bool | None = None) -> list[dict]:
    """Run ``tests/rtl_tb/tb_<kernel>.py`` on ``cases``; returns one ``{"outputs", "cycles"}`` per case.

    ``waves`` forces tracing on; by default it follows ``--vcd`` / ``$CODESIGN_VCD``.
    """
    full = emit.canonical_params(kernel, params)
    waves = waves_requested(node_id) if waves is None else waves
    run = sim.run_testbench(kernel, full, simulator, f"tb_{kernel}", TB_DIR, {"params": full, "cases": cases},
                            waves=waves)
    if waves:
        print(f"\n{node_id}: waveforms in {run.waves}")
    results = run.result["cases"]
    assert len(results) == len(cases)
    return results


def assert_cycles(case: dict, got: dict, predicted: int) -> None:
    """Measured cycles equal ``predicted`` (cases with input gaps or output stalls only take longer)."""
    if case.get("gap_prob") or case.get("stall_prob"):
        assert got["cycles"] > predicted, case["name"]
    else:
        assert got["cycles"] == predicted, f"{case['name']}: measured {got['cycles']}, predicted {predicted}"


def random_row(rng: random.Random, n: int, in_bits: int) -> list[int]:
    """``n`` signed ``in_bits`` values, each shifted right by a random amount (every magnitude appears)."""
    lo, hi = -(1 << (in_bits - 1)), (1 << (in_bits - 1)) - 1
    return [rng.randint(lo, hi) >> rng.randint(0, in_bits - 2) for _ in range(n)]


def scaled_row_cases(named: dict[str, list[list[int]]], scales: list[float], stream: dict[str, Any],
                     config: Callable[[float], dict[str, int]], passes: int = 1) -> list[dict]:
    """Cases of a row kernel configured from a scale: every ``named`` set of rows at every scale, then ``stream``
    (``scale``, ``rows``, ``seed``) with random input gaps and output stalls. Each case gets ``config(scale)``,
    its beats (every row ``passes`` times in a row: a two-pass unit reads it twice) and ``n_out``."""
    cases = [{"name": f"{name}@{scale:g}", "scale": scale, "rows": rows}
             for scale in scales for name, rows in named.items()]
    cases.append({"name": "gaps_and_stalls", "scale": stream["scale"], "rows": stream["rows"],
                  "gap_prob": 0.3, "stall_prob": 0.4, "seed": stream["seed"]})
    for case in cases:
        case["config"] = config(case["scale"])
        case["beats"] = [{"x": v} for row in case["rows"] for v in row * passes]
        case["n_out"] = sum(len(row) for row in case["rows"])
    return cases


def int_matmul_reference(a: list[list[int]], b: list[list[int]]) -> list[list[int]]:
    """The exact integer product ``a @ b`` (torch int64), the GEMM kernels' oracle."""
    import torch

    return (torch.tensor(a, dtype=torch.int64) @ torch.tensor(b, dtype=torch.int64)).tolist()


def check_gemm_kernel(kernel: str, testbench: str, simulator: str, rows: int, cols: int, bits: int,
                      cases: list[dict], predicted) -> None:
    """Run a GEMM array's cocotb testbench (module ``testbench`` in tests/rtl_tb) on ``cases`` and check every product bit for bit
    and every cycle count against ``predicted(m, n, k, rows, cols)``: equal for plain streams, above it for
    cases with random input gaps / output stalls (those check data only)."""
    params = emit.canonical_params(kernel, {"rows": rows, "cols": cols, "in_bits": bits})
    job = {"params": params, "cases": cases}

    def run(waves: bool):
        return sim.run_testbench(kernel, params, simulator, testbench, TB_DIR, job, waves=waves)

    def check(results: list[dict]) -> None:
        assert len(results) == len(cases)
        for case, got in zip(cases, results):
            m, k, n = len(case["a"]), len(case["b"]), len(case["b"][0])
            assert got["c"] == int_matmul_reference(case["a"], case["b"]), case["name"]
            assert got["last_flags_ok"], case["name"]
            assert_cycles(case, got, predicted(m, n, k, rows, cols))

    with_waves_on_failure(lambda: run(False).result["cases"], lambda: run(True).waves, check)


def check_row_kernel(kernel: str, params: dict, simulator: str, cases: list[dict], node_id: str, reference,
                     predicted) -> None:
    """Run a row-wise kernel on ``cases`` and check each output bit for bit against
    ``reference(rows_int64, scale, out_bits) -> (y, scale)`` from compiler.numerics, the ``last`` flag on every
    row's final element, and the cycles against ``predicted(n, rows)``."""
    import torch

    n, out_bits = params["n"], params["out_bits"]

    def check(results: list[dict]) -> None:
        for case, got in zip(cases, results):
            expected, _ = reference(torch.tensor(case["rows"], dtype=torch.int64), case["scale"], out_bits)
            assert [o["y"] for o in got["outputs"]] == expected.flatten().tolist(), case["name"]
            assert [o["last"] for o in got["outputs"]] == [int(j % n == n - 1) for j in range(case["n_out"])]
            assert_cycles(case, got, predicted(n, len(case["rows"])))

    with_waves_on_failure(lambda: run_kernel(kernel, params, simulator, cases, node_id),
                          lambda: kernel_waves(kernel, params, simulator, cases), check)


def kernel_waves(kernel: str, params: dict, simulator: str, cases: list[dict]) -> Path | None:
    """Run ``tb_<kernel>`` on ``cases`` again with tracing on; the VCD's path."""
    full = emit.canonical_params(kernel, params)
    return sim.run_testbench(kernel, full, simulator, f"tb_{kernel}", TB_DIR, {"params": full, "cases": cases},
                             waves=True).waves


def with_waves_on_failure(run, run_with_waves, check) -> None:
    """``check(run())``; when it fails, run the same job again with tracing on and name the VCD in the failure,
    so a failing RTL test always leaves its waveforms behind (``--vcd`` asks for them up front)."""
    results = run()
    try:
        check(results)
    except AssertionError as failure:
        raise AssertionError(f"{failure}\nwaveforms of this run: {run_with_waves()}") from failure
