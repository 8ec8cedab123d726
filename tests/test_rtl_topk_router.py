"""hw.rtl.topk_router: the experts of compiler.numerics.router.route (stable sort: ties to the lower
index) and their logits, cycles equal to predicted_cycles.

One cocotb run per (simulator, experts, k, width) streams random tokens, all-equal tokens, ties for
first and for second place, duplicates of the minimum and maximum logit, descending and ascending
tokens, and one case with random input gaps and output stalls (data only).
"""

from __future__ import annotations

import random
import re

import numpy as np
import pytest
from rtl_kernel_checks import SIMS, assert_cycles, kernel_waves, run_kernel, with_waves_on_failure

from compiler.numerics.router import route
from hw.errors import InputError
from hw.rtl import emit
from hw.rtl.topk_router import predicted_cycles

PARAMS = [
    {"experts": 5, "k": 3, "in_bits": 8},
    {"experts": 8, "k": 2, "in_bits": 16},
    {"experts": 16, "k": 2, "in_bits": 32},
]


def _cases(e: int, in_bits: int, seed: int) -> list[dict]:
    rng = random.Random(seed)
    lo, hi = -(1 << (in_bits - 1)), (1 << (in_bits - 1)) - 1

    def rand() -> list[int]:
        return [rng.randint(lo, hi) >> rng.randint(0, in_bits - 2) for _ in range(e)]

    tie_first = [rng.randint(lo, 0) for _ in range(e)]
    tie_first[1] = tie_first[e - 1] = hi
    tie_second = [3] * e
    tie_second[e // 2] = 9
    tokens = {
        "random": [rand() for _ in range(6)],
        "all_equal": [[0] * e, [lo] * e, [hi] * e],
        "ties": [tie_first, tie_second, [rng.choice([-1, 0, 1]) for _ in range(e)]],
        "extremes": [[lo if j % 2 else hi for j in range(e)], [hi if j % 3 else lo for j in range(e)]],
        "ordered": [list(range(e)), list(range(e, 0, -1))],
    }
    cases = [{"name": name, "tokens": rows} for name, rows in tokens.items()]
    cases.append({"name": "gaps_and_stalls", "tokens": [rand() for _ in range(4)], "gap_prob": 0.3,
                  "stall_prob": 0.4, "seed": seed})
    for case in cases:
        case["beats"] = [{"logit": v} for token in case["tokens"] for v in token]
        case["n_out"] = len(case["tokens"])
    return cases


@pytest.mark.rtl
@pytest.mark.slow
@pytest.mark.parametrize("params", PARAMS, ids=lambda p: f"e{p['experts']}-k{p['k']}-in{p['in_bits']}")
@pytest.mark.parametrize("simulator", SIMS)
def test_topk_router_matches_route_and_takes_predicted_cycles(simulator, params, request):
    e, k = params["experts"], params["k"]
    cases = _cases(e, params["in_bits"], seed=e * 13 + k)

    def check(results: list[dict]) -> None:
        for case, got in zip(cases, results):
            logits = np.array(case["tokens"], dtype=np.float64)
            experts = route(logits, k, "task").experts.tolist()
            assert [o["index"] for o in got["outputs"]] == experts, case["name"]
            scores = [[case["tokens"][t][j] for j in row] for t, row in enumerate(experts)]
            assert [o["score"] for o in got["outputs"]] == scores, case["name"]
            assert_cycles(case, got, predicted_cycles(e, len(case["tokens"])))

    with_waves_on_failure(lambda: run_kernel("topk_router", params, simulator, cases, request.node.nodeid),
                          lambda: kernel_waves("topk_router", params, simulator, cases), check)


# --- model and parameter checks (no simulator) --------------------------------------------------------


def test_predicted_cycles_is_one_edge_per_logit():
    assert predicted_cycles(16, 1) == 16
    assert predicted_cycles(16, 129) == 16 * 129


@pytest.mark.parametrize(
    ("params", "message"),
    [
        ({"experts": 1}, "topk_router: parameter experts=1 is out of range (must be >= 2 and <= 256)"),
        ({"experts": 4, "k": 5}, "topk_router: parameter k=5 exceeds experts=4"),
        ({"k": 0}, "topk_router: parameter k=0 is out of range (must be >= 1 and <= 8)"),
    ],
)
def test_bad_parameters_are_input_errors(params, message, tmp_path):
    with pytest.raises(InputError, match=f"^{re.escape(message)}$"):
        emit.emit_kernel("topk_router", params, tmp_path)
    assert not list(tmp_path.iterdir())


@pytest.mark.rtl
@pytest.mark.slow
def test_codesign_vcd_writes_waveforms_for_the_requested_test(monkeypatch, request):
    from hw.rtl import sim

    params = emit.canonical_params("topk_router", {"experts": 4, "k": 2, "in_bits": 8})
    monkeypatch.setenv("CODESIGN_VCD", "writes_waveforms")
    cases = [{"name": "one", "beats": [{"logit": v} for v in (1, 3, 3, 0)], "n_out": 1}]
    got = run_kernel("topk_router", params, "icarus", cases, request.node.nodeid)
    assert got[0]["outputs"] == [{"index": [1, 2], "score": [3, 3]}]
    vcd = sim.sim_build_dir("topk_router", params, "icarus", waves=True) / "waves.vcd"
    assert "$enddefinitions" in vcd.read_text()
    monkeypatch.setenv("CODESIGN_VCD", "some_other_test")
    from rtl_kernel_checks import waves_requested

    assert not waves_requested(request.node.nodeid) and waves_requested("x") is False
    monkeypatch.setenv("CODESIGN_VCD", "1")
    assert waves_requested(request.node.nodeid)


@pytest.mark.rtl
@pytest.mark.slow
def test_two_experts_top_two_on_icarus(request):
    case = {"name": "e2", "beats": [{"logit": v} for v in (4, 4, 1, 9)], "n_out": 2}
    (got,) = run_kernel("topk_router", {"experts": 2, "k": 2}, "icarus", [case], request.node.nodeid)
    assert [o["index"] for o in got["outputs"]] == [[0, 1], [1, 0]]
    assert got["cycles"] == predicted_cycles(2, 2)
