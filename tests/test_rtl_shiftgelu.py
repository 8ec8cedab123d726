"""hw.rtl.shiftgelu: bit-exact with compiler.numerics.shiftgelu, cycles equal to predicted_cycles.

Both forms: the published row-max unit (``per_element=0``, ``stabilizer="row"``) and the streaming
per-element unit (``per_element=1``, ``stabilizer="element"``). One cocotb run per (simulator, form, row
length, widths) streams rows at several scales (x0 from -1 to the x0_bits=16 limit: the exponentials' right
shift k from 0 to 12), constant rows, rows at the input's extremes, all-negative
rows (row form: e^(-max) saturates), rows with a large positive max (e^(-max) tiny), and one case with
random input gaps and output stalls (data only).
"""

from __future__ import annotations

import functools
import random
import re

import pytest
import torch
from rtl_kernel_checks import SIMS, check_row_kernel, random_row, run_kernel, scaled_row_cases

from compiler.numerics import shiftgelu
from hw.errors import InputError
from hw.rtl import emit
from hw.rtl.shiftgelu import ELEMENT_LATENCY, LATENCY, predicted_cycles, x0_for_scale, y_bits

PARAMS = [
    {"n": 4, "in_bits": 8, "out_bits": 8},
    {"n": 9, "in_bits": 16, "out_bits": 16},
    {"n": 24, "in_bits": 32, "out_bits": 8},
]
SCALES = [0.05, 0.011, 1e-4, 1.0, 1 / (1.702 * 65535.0)]
FORMS = {"row": 0, "element": 1}
"""stabilizer of compiler.numerics.shiftgelu -> the kernel's per_element."""


def _cases(n: int, in_bits: int, seed: int) -> list[dict]:
    rng = random.Random(seed)
    lo, hi = -(1 << (in_bits - 1)), (1 << (in_bits - 1)) - 1
    named = {
        "random": [random_row(rng, n, in_bits) for _ in range(2)],
        "constant": [[0] * n, [3] * n, [lo] * n, [hi] * n],
        "extremes": [[lo if j % 2 else hi for j in range(n)]],
        "all_negative": [[-rng.randint(1, -lo) for _ in range(n)]],
        "small_values": [[rng.randint(-40, 40) for _ in range(n)]],
    }
    stream = {"scale": 0.05, "rows": [random_row(rng, n, in_bits) for _ in range(3)], "seed": seed}
    return scaled_row_cases(named, SCALES, stream, lambda scale: {"x0": x0_for_scale(scale)})

@pytest.mark.rtl
@pytest.mark.slow
@pytest.mark.parametrize("params", PARAMS, ids=lambda p: f"n{p['n']}-in{p['in_bits']}-out{p['out_bits']}")
@pytest.mark.parametrize("form", FORMS)
@pytest.mark.parametrize("simulator", SIMS)
def test_shiftgelu_is_exact_and_takes_predicted_cycles(simulator, form, params, request):
    per_element = FORMS[form]
    cases = _cases(params["n"], params["in_bits"], seed=params["n"] * 5 + params["out_bits"] + per_element)
    check_row_kernel("shiftgelu", {**params, "per_element": per_element}, simulator, cases, request.node.nodeid,
                     functools.partial(shiftgelu, stabilizer=form),
                     functools.partial(predicted_cycles, per_element=per_element))


# --- model and parameter checks (no simulator) --------------------------------------------------------


@pytest.mark.parametrize(("n", "rows", "cycles"), [(1, 1, 11), (4, 1, 17), (4, 3, 33), (3072, 197, 2 * 3072 * 197 + 9)])
def test_predicted_cycles_is_two_walks_plus_the_pipeline(n, rows, cycles):
    assert LATENCY == 10
    assert predicted_cycles(n, rows) == predicted_cycles(n, rows, per_element=0) == cycles


@pytest.mark.parametrize(("n", "rows", "cycles"), [(1, 1, 4), (4, 1, 7), (4, 3, 15), (3072, 197, 3072 * 197 + 3)])
def test_predicted_cycles_per_element_is_one_walk_plus_a_shorter_pipeline(n, rows, cycles):
    assert ELEMENT_LATENCY == 4  # issue register, 2 divider stages (8 quotient bits), output register
    assert predicted_cycles(n, rows, per_element=1) == cycles


def test_per_element_form_has_no_row_memory():
    assert re.search(r"reg \[7:0\] row \[15:0\];", emit.verilog_text("shiftgelu", {"n": 16}))
    text = emit.verilog_text("shiftgelu", {"n": 16, "per_element": 1})
    assert not re.search(r"reg .*\[\d+:0\];", text)  # no memory of any kind


def test_output_width_is_the_sigmoid_width_at_every_x0():
    # e <= shift_exp(0) >> k <= 2**27, so sig < 2**(b-1) and y = x * sig fits in_bits + b - 1 bits, at x0_bits=16
    # too (published, k = 0: e < 2**39 there and y would need in_bits + 15 bits).
    assert y_bits(8, 8, 16) == y_bits(8, 8, 8) == 8 + 7
    assert y_bits(16, 16, 16) == 16 + 15


def test_x0_for_scale_folds_1_702_like_the_numerics():
    assert x0_for_scale(0.05) == -12  # floor(-1 / 0.0851)
    with pytest.raises(InputError, match=re.escape("shiftgelu: scale 3e-06 (times 1.702) gives x0 = -195849, beyond x0_bits=16")):
        x0_for_scale(3e-6)


@pytest.mark.parametrize(
    ("params", "message"),
    [
        ({"n": 5000}, "shiftgelu: parameter n=5000 is out of range (must be >= 1 and <= 4096)"),
        ({"in_bits": 33}, "shiftgelu: parameter in_bits=33 is out of range (must be >= 2 and <= 32)"),
        ({"out_bits": 12}, "shiftgelu: parameter out_bits=12 is not supported (one of 8, 16)"),
        ({"per_element": 2}, "shiftgelu: parameter per_element=2 is not supported (one of 0, 1)"),
    ],
)
def test_bad_parameters_are_input_errors(params, message, tmp_path):
    with pytest.raises(InputError, match=f"^{re.escape(message)}$"):
        emit.emit_kernel("shiftgelu", params, tmp_path)
    assert not list(tmp_path.iterdir())


@pytest.mark.rtl
@pytest.mark.slow
@pytest.mark.parametrize("form", FORMS)
def test_one_element_rows_on_icarus(form, request):
    rows = [[5], [-7], [0]]
    case = {"name": "n1", "config": {"x0": x0_for_scale(0.1)}, "beats": [{"x": r[0]} for r in rows], "n_out": 3}
    (got,) = run_kernel("shiftgelu", {"n": 1, "per_element": FORMS[form]}, "icarus", [case], request.node.nodeid)
    expected = shiftgelu(torch.tensor(rows), 0.1, 8, stabilizer=form)[0].flatten().tolist()
    assert [o["y"] for o in got["outputs"]] == expected
    assert [o["last"] for o in got["outputs"]] == [1, 1, 1]
    assert got["cycles"] == predicted_cycles(1, 3, FORMS[form])


def test_element_form_differs_from_the_row_form_where_a_row_holds_a_large_value():
    """The oracles the two forms are checked against are really different (a row with an outlier)."""
    rows = torch.tensor([[120, 1, -3, 0]])
    row, _ = shiftgelu(rows, 0.05, 8, stabilizer="row")
    element, _ = shiftgelu(rows, 0.05, 8, stabilizer="element")
    assert row[0, 0] == element[0, 0] and row[0, 1:].tolist() != element[0, 1:].tolist()
