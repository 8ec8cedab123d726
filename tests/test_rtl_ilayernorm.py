"""hw.rtl.ilayernorm: bit-exact with compiler.numerics.ilayernorm, cycles equal to predicted_cycles.

With ``rms=1`` the unit is RMSNorm (the mean taken as 0), checked against the oracle's ``rms=True``.
The per-channel integer bias the unit adds is taken from the oracle itself: ilayernorm with the real
beta minus ilayernorm with beta = 0. One cocotb run per (simulator, channels, input width) streams
random rows, constant rows (var = 0: Newton ends at 64), nearly constant rows (Newton not converged),
rows at the input's extremes (the widest variance), all-negative rows, mean ties (round half to even)
and one case with random input gaps and output stalls (data only).
"""

from __future__ import annotations

import random
import re

import pytest
import torch
from rtl_kernel_checks import SIMS, assert_cycles, kernel_waves, run_kernel, with_waves_on_failure

from compiler.numerics import ilayernorm
from hw.errors import InputError
from hw.rtl import emit
from hw.rtl.ilayernorm import predicted_cycles, var_bits, y_bits

PARAMS = [
    {"c": 4, "in_bits": 8},
    {"c": 12, "in_bits": 16},
    {"c": 33, "in_bits": 8},
    {"c": 12, "in_bits": 16, "eps": 1},  # the compiled unit: the model's epsilon on its port
    {"c": 12, "in_bits": 16, "eps": 1, "rms": 1},  # RMSNorm (T5, LLaMA): the mean taken as 0
]


def _bias_int(c: int, gamma: torch.Tensor, beta: torch.Tensor) -> list[int]:
    probe = torch.zeros(1, c, dtype=torch.int64)
    with_bias, _ = ilayernorm(probe, 1.0, gamma, beta)
    without, _ = ilayernorm(probe, 1.0, gamma, torch.zeros(c, dtype=torch.float64))
    return (with_bias - without)[0].tolist()


def _cases(c: int, in_bits: int, seed: int, eps: int = 0) -> list[dict]:
    """With ``eps``, every case sets the ``eps`` port: 0, a small epsilon (the Newton start dominates), one near a
    random row's variance, and the port's largest value (2^var_bits - 1: the sum one bit wider than the variance)."""
    rng = random.Random(seed)
    lo, hi = -(1 << (in_bits - 1)), (1 << (in_bits - 1)) - 1

    def rand_row() -> list[int]:
        return [rng.randint(lo, hi) >> rng.randint(0, in_bits - 2) for _ in range(c)]

    # Even c: 1, 2, 1, 2 ... has mean 1.5, which rounds to 2, and its negation to -2 (ties to even).
    # With odd c no mean is a tie; the row is then one more skewed row.
    tie = [1, 2] * (c // 2) + [1] * (c % 2) if c % 2 == 0 else [0] * (c - 1) + [c // 2 * 2 + 1]
    named = {
        "random": [rand_row() for _ in range(3)],
        "constant": [[0] * c, [lo] * c, [hi] * c],
        "nearly_constant": [[5 + (j % 2) for j in range(c)], [lo + (j % 3 == 0) for j in range(c)]],
        "extremes": [[lo if j % 2 else hi for j in range(c)], [hi] * (c - 1) + [lo]],
        "all_negative": [[-rng.randint(1, -lo) for _ in range(c)]],
        "mean_ties": [tie, [-v for v in tie]],
    }
    cases = []
    for trial in range(2):
        gamma = torch.tensor([rng.uniform(0.25, 2.0) * rng.choice([-1, 1]) for _ in range(c)], dtype=torch.float64)
        beta = torch.tensor([rng.uniform(-1.0, 1.0) for _ in range(c)], dtype=torch.float64)
        if trial == 1:
            beta = torch.zeros(c, dtype=torch.float64)
        for name, rows in named.items():
            cases.append({"name": f"{name}#{trial}", "rows": rows, "gamma": gamma, "beta": beta})
    cases.append({"name": "gaps_and_stalls", "rows": [rand_row() for _ in range(2)], "gamma": gamma, "beta": beta,
                  "gap_prob": 0.3, "stall_prob": 0.4, "seed": seed})
    top = (1 << var_bits(c, in_bits)) - 1
    for i, case in enumerate(cases):
        case["eps"] = [0, 9, c * (1 << (2 * in_bits - 6)), top][i % 4] if eps else 0
        if eps:
            case["config"] = {"eps": case["eps"]}
        case["bias"] = _bias_int(c, case["gamma"], case["beta"])
        case["beats"] = [{"x": v} for row in case["rows"] for v in row]
        case["n_out"] = len(case["rows"]) * c
    return cases


@pytest.mark.rtl
@pytest.mark.slow
@pytest.mark.parametrize("params", PARAMS, ids=lambda p: f"c{p['c']}-in{p['in_bits']}" + ("-eps" if p.get("eps") else "")
                         + ("-rms" if p.get("rms") else ""))
@pytest.mark.parametrize("simulator", SIMS)
def test_ilayernorm_is_exact_and_takes_predicted_cycles(simulator, params, request):
    c, in_bits, eps, rms = params["c"], params["in_bits"], params.get("eps", 0), bool(params.get("rms", 0))
    cases = _cases(c, in_bits, seed=c * 3 + in_bits, eps=eps)
    job = [{k: v for k, v in case.items() if k not in ("gamma", "beta", "eps")} for case in cases]

    def check(results: list[dict]) -> None:
        for case, got in zip(cases, results):
            expected, _ = ilayernorm(torch.tensor(case["rows"], dtype=torch.int64), 0.05, case["gamma"], case["beta"],
                                     case["eps"], rms)
            assert [o["y"] for o in got["outputs"]] == expected.flatten().tolist(), case["name"]
            assert [o["last"] for o in got["outputs"]] == [int(j % c == c - 1) for j in range(case["n_out"])]
            assert_cycles(case, got, predicted_cycles(c, in_bits, len(case["rows"]), eps))

    with_waves_on_failure(lambda: run_kernel("ilayernorm", params, simulator, job, request.node.nodeid),
                          lambda: kernel_waves("ilayernorm", params, simulator, job), check)


# --- model and parameter checks (no simulator) --------------------------------------------------------


@pytest.mark.parametrize(
    ("c", "in_bits", "rows", "cycles"),
    [
        (1, 8, 1, 3 + 8 + 10 * 16 + 31 - 1),  # var <= 255**2: 16 bits
        (4, 8, 2, 2 * (12 + 8 + 10 * 18 + 31) - 1),
        (768, 16, 197, 197 * (3 * 768 + 16 + 10 * 42 + 31) - 1),  # ViT-Base LayerNorm on a 16-bit residual
    ],
)
def test_predicted_cycles_counts_walks_and_divisions(c, in_bits, rows, cycles):
    assert predicted_cycles(c, in_bits, rows) == cycles
    # with the eps port each of the 10 Newton divisions takes one quotient bit more
    assert predicted_cycles(c, in_bits, rows, eps=1) == cycles + 10 * rows


def test_variance_and_output_widths():
    assert var_bits(768, 16) == (768 * 65535**2).bit_length() == 42
    assert y_bits(8, 32) == 40  # (x - mean) * f >> 1 reaches 2**38, plus the bias


@pytest.mark.parametrize(
    ("params", "message"),
    [
        ({"c": 0}, "ilayernorm: parameter c=0 is out of range (must be >= 1 and <= 4096)"),
        ({"in_bits": 25}, "ilayernorm: parameter in_bits=25 is out of range (must be >= 2 and <= 24)"),
        ({"n": 4}, "ilayernorm: unknown parameter 'n' (known: c, in_bits, bias_bits, eps, rms)"),
        ({"eps": 2}, "ilayernorm: parameter eps=2 is not supported (one of 0, 1)"),
    ],
)
def test_bad_parameters_are_input_errors(params, message, tmp_path):
    with pytest.raises(InputError, match=f"^{re.escape(message)}$"):
        emit.emit_kernel("ilayernorm", params, tmp_path)
    assert not list(tmp_path.iterdir())


@pytest.mark.rtl
@pytest.mark.slow
def test_one_channel_rows_on_icarus(request):
    rows = [[5], [-7], [0]]
    gamma, beta = torch.tensor([1.5], dtype=torch.float64), torch.tensor([0.25], dtype=torch.float64)
    case = {"name": "c1", "bias": _bias_int(1, gamma, beta), "beats": [{"x": r[0]} for r in rows], "n_out": 3}
    (got,) = run_kernel("ilayernorm", {"c": 1}, "icarus", [case], request.node.nodeid)
    expected, _ = ilayernorm(torch.tensor(rows), 0.1, gamma, beta)
    assert [o["y"] for o in got["outputs"]] == expected.flatten().tolist()
    assert got["cycles"] == predicted_cycles(1, 8, 3)
