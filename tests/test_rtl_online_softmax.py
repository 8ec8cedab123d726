"""hw.rtl.online_softmax: bit-exact with compiler.numerics.online_softmax, cycles equal to predicted_cycles.

The dyadic multiplier comes from compiler.numerics.dyadic (the unit takes it on configuration ports).
One cocotb run per (simulator, row length, widths) streams random rows at several scales, constant
rows, rows at the input's extremes (u clamps to int32), increasing rows (a new max, hence a rescale,
at every score), decreasing rows, rows whose max jumps by 32 or more halvings (the running sum shifts
out entirely), all-negative rows, and one case with random input gaps and output stalls (data only).
"""

from __future__ import annotations

import math
import random
import re

import pytest
import torch
from rtl_kernel_checks import SIMS, check_row_kernel, random_row, run_kernel, scaled_row_cases

from compiler.numerics import dyadic, online_softmax
from hw.errors import InputError
from hw.rtl import emit
from hw.rtl.online_softmax import check_multiplier, predicted_cycles

PARAMS = [
    {"n": 4, "in_bits": 32, "out_bits": 8},
    {"n": 11, "in_bits": 16, "out_bits": 16},
    {"n": 40, "in_bits": 32, "out_bits": 16},
]
SCALES = [0.02, 3e-4, 1.0, 2e-7]


def multiplier(scale: float) -> tuple[int, int]:
    """The unit's (m_c, e_c) for scores of real value ``x * scale``, as compiler.numerics.base2 derives it."""
    return dyadic(scale * math.log2(math.e) * 256)


def _cases(n: int, in_bits: int, seed: int) -> list[dict]:
    rng = random.Random(seed)
    lo, hi = -(1 << (in_bits - 1)), (1 << (in_bits - 1)) - 1
    step = max(1, hi // (4 * n))
    named = {
        "random": [random_row(rng, n, in_bits) for _ in range(2)],
        "constant": [[0] * n, [lo] * n, [hi] * n],
        "extremes": [[lo if j % 2 else hi for j in range(n)]],
        "increasing": [[lo + j * step for j in range(n)]],
        "decreasing": [[hi - j * step for j in range(n)]],
        "max_jumps": [[lo] * (n - 1) + [hi], [-(1 << (in_bits - 2))] * (n // 2) + [hi] * (n - n // 2)],
        "all_negative": [[-rng.randint(1, -lo) for _ in range(n)]],
    }
    stream = {"scale": 3e-4, "rows": [random_row(rng, n, in_bits) for _ in range(2)], "seed": seed}

    def config(scale: float) -> dict[str, int]:
        m_c, e_c = multiplier(scale)
        return {"m_c": m_c, "e_c": e_c}

    # Each row twice: pass 1 (statistics) then pass 2 (normalize).
    return scaled_row_cases(named, SCALES, stream, config, passes=2)

@pytest.mark.rtl
@pytest.mark.slow
@pytest.mark.parametrize("params", PARAMS, ids=lambda p: f"n{p['n']}-in{p['in_bits']}-out{p['out_bits']}")
@pytest.mark.parametrize("simulator", SIMS)
def test_online_softmax_is_exact_and_takes_predicted_cycles(simulator, params, request):
    cases = _cases(params["n"], params["in_bits"], seed=params["n"] * 11 + params["out_bits"])
    check_row_kernel("online_softmax", params, simulator, cases, request.node.nodeid, online_softmax, predicted_cycles)


# --- model and parameter checks (no simulator) --------------------------------------------------------


@pytest.mark.parametrize(("n", "rows", "cycles"), [(1, 1, 19), (4, 1, 25), (4, 3, 75), (197, 197 * 12, 197 * 12 * 411)])
def test_predicted_cycles_is_two_passes_plus_the_divider(n, rows, cycles):
    assert predicted_cycles(n, rows) == cycles


def test_the_rtl_exp2_table_is_the_numerics_table():
    from compiler.numerics import EXP2_LUT
    from hw.rtl._arith import EXP2_FRAC_BITS
    from hw.rtl._arith import EXP2_LUT as RTL_LUT

    assert RTL_LUT == EXP2_LUT and EXP2_FRAC_BITS == 8


def test_multiplier_range_is_checked():
    check_multiplier(*multiplier(3e-4))
    with pytest.raises(InputError, match=re.escape("online_softmax: shift e_c=0 is out of range [1, 62]")):
        check_multiplier(2**30, 0)
    with pytest.raises(InputError, match=re.escape("online_softmax: multiplier m_c=4294967295 is out of range")):
        check_multiplier(2**32 - 1, 30)


@pytest.mark.parametrize(
    ("params", "message"),
    [
        ({"n": 0}, "online_softmax: parameter n=0 is out of range (must be >= 1 and <= 4096)"),
        ({"out_bits": 32}, "online_softmax: parameter out_bits=32 is not supported (one of 8, 16)"),
    ],
)
def test_bad_parameters_are_input_errors(params, message, tmp_path):
    with pytest.raises(InputError, match=f"^{re.escape(message)}$"):
        emit.emit_kernel("online_softmax", params, tmp_path)
    assert not list(tmp_path.iterdir())


@pytest.mark.rtl
@pytest.mark.slow
def test_one_score_rows_on_icarus(request):
    rows = [[5], [-7], [0]]
    m_c, e_c = multiplier(0.1)
    case = {"name": "n1", "config": {"m_c": m_c, "e_c": e_c}, "beats": [{"x": r[0]} for r in rows for _ in "12"],
            "n_out": 3}
    (got,) = run_kernel("online_softmax", {"n": 1}, "icarus", [case], request.node.nodeid)
    assert [o["y"] for o in got["outputs"]] == online_softmax(torch.tensor(rows), 0.1, 8)[0].flatten().tolist()
    assert got["cycles"] == predicted_cycles(1, 3)
