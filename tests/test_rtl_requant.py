"""hw.rtl.requant: bit-exact with compiler.numerics.requantize, cycles equal to predicted_cycles.

One cocotb run per (simulator, lanes, out_bits) streams several beat sequences: dyadic pairs from
random scales, every combination of extreme accumulators, multipliers and shifts (both signs,
shifts past 64), exact rounding ties, and one run with random input gaps and output stalls
(data checked only).
"""

from __future__ import annotations

import itertools
import random
import re

import pytest
import torch
from rtl_kernel_checks import TB_DIR, with_waves_on_failure

from compiler.numerics import dyadic, requantize
from hw.errors import InputError
from hw.rtl import emit, requant, sim
from hw.rtl.requant import predicted_cycles

ACC_EDGES = [-(2**31), -(2**31) + 1, -1, 0, 1, 2**31 - 1, 3, -3, 12345, -12345]
M_EDGES = [0, 1, 2**30, 2**31 - 1, 2**31]
E_EDGES = [-128, -40, -3, -1, 0, 1, 2, 30, 31, 32, 45, 62, 63, 64, 65, 127]


def _beats(values: list[tuple[int, int, int]], lanes: int) -> dict:
    """Split (acc, m, e) triples into beats of ``lanes`` (padding the last beat with zeros)."""
    values = values + [(0, 0, 0)] * (-len(values) % lanes)
    rows = [values[i : i + lanes] for i in range(0, len(values), lanes)]
    return {
        "acc": [[v[0] for v in row] for row in rows],
        "m": [[v[1] for v in row] for row in rows],
        "e": [[v[2] for v in row] for row in rows],
    }


def _requant_cases(lanes: int, seed: int) -> list[dict]:
    rng = random.Random(seed)
    realistic = []
    for _ in range(12 * lanes):
        m, e = dyadic(rng.choice([rng.uniform(1e-6, 1e-2), rng.uniform(1e-2, 4.0), 2.0 ** -rng.randint(1, 40)]))
        realistic.append((rng.randint(-(2**31), 2**31 - 1) >> rng.randint(0, 24), m, e))
    extremes = list(itertools.product(ACC_EDGES, M_EDGES, E_EDGES))
    # Ties: acc * 2^30 / 2^(30+s) = acc / 2^s; odd multiples of 2^(s-1) land exactly halfway.
    ties = [(k * (1 << (s - 1)), 2**30, 30 + s) for s in (1, 2, 5) for k in range(-9, 10, 2)]
    stressed = [
        (rng.randint(-(2**31), 2**31 - 1), rng.choice(M_EDGES[1:]), rng.randint(0, 70)) for _ in range(8 * lanes)
    ]
    return [
        dict(_beats(realistic, lanes), name="dyadic_from_random_scales"),
        dict(_beats(extremes, lanes), name="extreme_acc_m_e"),
        dict(_beats(ties, lanes), name="round_half_even_ties"),
        dict(_beats([(7, 2**30, 31)], lanes), name="single_beat"),
        dict(_beats(stressed, lanes), name="gaps_and_stalls", gap_prob=0.3, stall_prob=0.4, seed=seed),
    ]


RTL_PARAMS = [
    ("icarus", 4, 8),
    ("icarus", 3, 4),
    ("icarus", 2, 16),
    ("verilator", 4, 8),
    ("verilator", 3, 4),
]


@pytest.mark.rtl
@pytest.mark.slow
@pytest.mark.parametrize(("simulator", "lanes", "out_bits"), RTL_PARAMS)
def test_requant_matches_numerics_and_predicted_cycles(simulator, lanes, out_bits):
    params = emit.canonical_params("requant", {"lanes": lanes, "out_bits": out_bits})
    cases = _requant_cases(lanes, seed=lanes * 10 + out_bits)
    job = {"params": params, "cases": cases}

    def run(waves: bool):
        return sim.run_testbench("requant", params, simulator, "tb_requant", TB_DIR, job, waves=waves)

    def check(results: list[dict]) -> None:
        for case, got in zip(cases, results, strict=True):
            expected = requantize(torch.tensor(case["acc"]), torch.tensor(case["m"]), torch.tensor(case["e"]), out_bits)
            mismatches = [
                (case["acc"][t][i], case["m"][t][i], case["e"][t][i], int(expected[t][i]), got["y"][t][i])
                for t in range(len(case["acc"]))
                for i in range(lanes)
                if got["y"][t][i] != int(expected[t][i])
            ]
            assert not mismatches, f"{case['name']}: (acc, m, e, expected, got) {mismatches[:5]}"
            assert got["last_flags_ok"], case["name"]
            beats = len(case["acc"])
            if "gap_prob" in case:
                assert got["cycles"] > predicted_cycles(beats), case["name"]
            else:
                assert got["cycles"] == predicted_cycles(beats), case["name"]

    with_waves_on_failure(lambda: run(False).result["cases"], lambda: run(True).waves, check)


def test_predicted_cycles_is_beats_plus_pipeline_latency():
    assert requant.LATENCY == 2
    assert predicted_cycles(1) == 2
    assert predicted_cycles(50) == 51
    with pytest.raises(InputError, match="^requant: beats must be a positive integer, got 0$"):
        predicted_cycles(0)


@pytest.mark.parametrize(
    ("params", "message"),
    [
        ({"out_bits": 6}, "requant: parameter out_bits=6 is not supported (one of 4, 8, 16, 32)"),
        ({"lanes": 0}, "requant: parameter lanes=0 is out of range (must be >= 1 and <= 256)"),
        ({"acc_bits": 48}, "requant: parameter acc_bits=48 is out of range (must be >= 2 and <= 32)"),
        ({"shift_bits": 6}, "requant: unknown parameter 'shift_bits' (known: lanes, acc_bits, out_bits)"),
    ],
)
def test_bad_parameters_are_input_errors(params, message, tmp_path):
    with pytest.raises(InputError, match=f"^{re.escape(message)}$"):
        emit.emit_kernel("requant", params, tmp_path)
    if set(params) <= set(requant.Requant.PARAMS):
        with pytest.raises(InputError, match=f"^{re.escape(message)}$"):
            requant.Requant(**{"lanes": 4, **params})


def test_host_packing_matches_the_amaranth_layouts():
    layout = requant.input_layout(2, 32)
    word = requant.pack_inputs([-(2**31), 5], [2**31, 7], [-128, 64], True, 32)
    assert word == layout.const({"acc": [-(2**31), 5], "m": [2**31, 7], "e": [-128, 64], "last": 1}).as_value().value
    out = requant.output_layout(3, 4).const({"y": [-8, 7, -1], "last": 0}).as_value().value
    assert requant.unpack_outputs(out, 3, 4) == ([-8, 7, -1], False)
