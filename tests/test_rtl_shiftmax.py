"""hw.rtl.shiftmax: bit-exact with compiler.numerics.shiftmax, cycles equal to predicted_cycles.

One cocotb run per (simulator, row length, widths) streams rows at several scales (down to the
x0 = -(2**16 - 1) limit, where the exponential sum clamps at 2**31 - 1), constant rows, rows at the
input's extremes, all-negative rows, and one case with random input gaps and output stalls (data only).
"""

from __future__ import annotations

import random
import re

import pytest
import torch
from rtl_kernel_checks import SIMS, check_row_kernel, random_row, run_kernel, scaled_row_cases

from compiler.numerics import shiftmax
from hw.errors import InputError
from hw.rtl import emit
from hw.rtl.shiftmax import predicted_cycles, x0_for_scale

PARAMS = [
    {"n": 4, "in_bits": 16, "out_bits": 8},
    {"n": 13, "in_bits": 8, "out_bits": 16},
    {"n": 32, "in_bits": 32, "out_bits": 8},
]
SCALES = [0.02, 3e-4, 1.0, 1 / 65535.0]  # the last gives x0 = -65535, the widest x0_bits=16 allows


def _cases(n: int, in_bits: int, seed: int) -> list[dict]:
    rng = random.Random(seed)
    lo, hi = -(1 << (in_bits - 1)), (1 << (in_bits - 1)) - 1
    named = {
        "random": [random_row(rng, n, in_bits) for _ in range(3)],
        "constant": [[7] * n, [lo] * n, [hi] * n],
        "extremes": [[lo if j % 2 else hi for j in range(n)], [lo] * (n - 1) + [hi]],
        "all_negative": [[-rng.randint(1, -lo) for _ in range(n)], [-1 - j for j in range(n)]],
    }
    stream = {"scale": 0.01, "rows": [random_row(rng, n, in_bits) for _ in range(3)], "seed": seed}
    return scaled_row_cases(named, SCALES, stream, lambda scale: {"x0": x0_for_scale(scale)})

@pytest.mark.rtl
@pytest.mark.slow
@pytest.mark.parametrize("params", PARAMS, ids=lambda p: f"n{p['n']}-in{p['in_bits']}-out{p['out_bits']}")
@pytest.mark.parametrize("simulator", SIMS)
def test_shiftmax_is_exact_and_takes_predicted_cycles(simulator, params, request):
    cases = _cases(params["n"], params["in_bits"], seed=params["n"] * 7 + params["out_bits"])
    check_row_kernel("shiftmax", params, simulator, cases, request.node.nodeid, shiftmax, predicted_cycles)


# --- model and parameter checks (no simulator) --------------------------------------------------------


@pytest.mark.parametrize(("n", "rows", "cycles"), [(1, 1, 18), (4, 1, 27), (4, 3, 3 * 28 - 1), (197, 12, 12 * 607 - 1)])
def test_predicted_cycles_is_three_walks_plus_the_divider(n, rows, cycles):
    assert predicted_cycles(n, rows) == cycles


def test_x0_for_scale_matches_the_numerics_and_refuses_tiny_scales():
    assert x0_for_scale(0.02) == -50 and x0_for_scale(1.0) == -1 and x0_for_scale(3.0) == -1
    with pytest.raises(InputError, match=re.escape("shiftmax: scale 1e-05 gives x0 = -100000, beyond x0_bits=16 (|x0| must be < 2**16)")):
        x0_for_scale(1e-5)


@pytest.mark.parametrize(
    ("params", "message"),
    [
        ({"n": 0}, "shiftmax: parameter n=0 is out of range (must be >= 1 and <= 4096)"),
        ({"out_bits": 4}, "shiftmax: parameter out_bits=4 is not supported (one of 8, 16)"),
        ({"x0_bits": 17}, "shiftmax: parameter x0_bits=17 is out of range (must be >= 1 and <= 16)"),
        ({"rows": 2}, "shiftmax: unknown parameter 'rows' (known: n, in_bits, out_bits, x0_bits)"),
    ],
)
def test_bad_parameters_are_input_errors(params, message, tmp_path):
    with pytest.raises(InputError, match=f"^{re.escape(message)}$"):
        emit.emit_kernel("shiftmax", params, tmp_path)
    assert not list(tmp_path.iterdir())


def test_emitted_verilog_has_the_documented_ports(tmp_path):
    text = emit.emit_kernel("shiftmax", {"n": 8, "in_bits": 16, "out_bits": 16}, tmp_path).read_text()
    for port in ("input [16:0] x0", "input [15:0] inputs__payload", "output [16:0] outputs__payload",
                 "output outputs__valid", "input outputs__ready", "output inputs__ready"):
        assert port in text


@pytest.mark.rtl
@pytest.mark.slow
def test_one_element_rows_on_icarus(request):
    rows = [[5], [-7], [0]]
    case = {"name": "n1", "config": {"x0": x0_for_scale(0.1)}, "beats": [{"x": r[0]} for r in rows], "n_out": 3}
    (got,) = run_kernel("shiftmax", {"n": 1}, "icarus", [case], request.node.nodeid)
    assert [o["y"] for o in got["outputs"]] == shiftmax(torch.tensor(rows), 0.1, 8)[0].flatten().tolist()
    assert got["cycles"] == predicted_cycles(1, 3)
