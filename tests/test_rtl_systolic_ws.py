"""hw.rtl.systolic_ws: the weight-stationary GEMM array, its host-side order and its exact timing.

One cocotb simulation per (simulator, array shape, operand width) runs many GEMMs, so a build is
paid once. Every product is compared bit-exactly with a torch int64 matmul, and every cycle count
(operands always offered, results always taken) must EQUAL ``predicted_cycles``, which is
SCALE-Sim's weight-stationary count plus one handover edge; one run with random input gaps and
output stalls checks the data only.
"""

from __future__ import annotations

import random
import re

import pytest
from amaranth.hdl import Fragment
from rtl_kernel_checks import SIMS, TB_DIR, check_gemm_kernel, int_matmul_reference

from hw.errors import InputError
from hw.perf.systolic import systolic_cycles
from hw.rtl import emit, sim, systolic_ws
from hw.rtl.systolic_ws import SystolicGemmWs, predicted_cycles

SHAPES = [(2, 2), (3, 5), (4, 4)]
BITS = [8, 4]


def _gemm_cases(rows: int, cols: int, bits: int, seed: int) -> list[dict]:
    """Named GEMMs for one array: shapes that do and do not divide the array, extremes, zeros."""
    rng = random.Random(seed)
    lo, hi = -(1 << (bits - 1)), (1 << (bits - 1)) - 1

    def rand(r: int, c: int) -> list[list[int]]:
        return [[rng.randint(lo, hi) for _ in range(c)] for _ in range(r)]

    def full(r: int, c: int, v: int) -> list[list[int]]:
        return [[v] * c for _ in range(r)]

    k, n = 2 * rows + 1, cols + 2  # neither divides the array: 3 row folds x 2 column folds
    cases = [
        {"name": "random_ragged", "a": rand(5, k), "b": rand(k, n)},
        {"name": "random_exact_fit", "a": rand(4, rows), "b": rand(rows, cols)},
        {"name": "one_by_one", "a": rand(1, 1), "b": rand(1, 1)},
        {"name": "m_is_one", "a": rand(1, k), "b": rand(k, n)},
        {"name": "k_is_one", "a": rand(3, 1), "b": rand(1, n)},
        {"name": "min_times_min", "a": full(3, k, lo), "b": full(k, cols, lo)},
        {"name": "min_times_max", "a": full(2, rows, lo), "b": full(rows, cols + 1, hi)},
        {"name": "zeros", "a": full(3, k, 0), "b": rand(k, 3)},
        {"name": "alternating_extremes", "a": [[lo if (i + kk) % 2 else hi for kk in range(k)] for i in range(4)],
         "b": [[hi if (kk * j) % 3 else lo for j in range(n)] for kk in range(k)]},
    ]
    stressed = {"name": "gaps_and_stalls", "a": rand(6, k), "b": rand(k, n), "gap_prob": 0.3, "stall_prob": 0.4}
    return cases + [dict(stressed, seed=seed)]


@pytest.mark.rtl
@pytest.mark.slow
@pytest.mark.parametrize("bits", BITS)
@pytest.mark.parametrize("shape", SHAPES, ids=lambda s: f"{s[0]}x{s[1]}")
@pytest.mark.parametrize("simulator", SIMS)
def test_systolic_gemm_ws_is_exact_and_takes_predicted_cycles(simulator, shape, bits):
    rows, cols = shape
    cases = _gemm_cases(rows, cols, bits, seed=rows * 100 + cols * 10 + bits)
    check_gemm_kernel("systolic_gemm_ws", "tb_systolic_ws", simulator, rows, cols, bits, cases, predicted_cycles)


# --- model and parameter checks (no simulator) --------------------------------------------------------


@pytest.mark.parametrize(
    ("m", "n", "k", "rows", "cols", "cycles"),
    [
        (1, 1, 1, 1, 1, 2),  # load, activate (MAC on accept), hand over one edge later
        (4, 3, 2, 2, 3, 1 * 1 * (4 + 4 + 3 - 2) - 1 + 1),
        (5, 7, 5, 2, 3, 3 * 3 * (5 + 4 + 3 - 2) - 1 + 1),
        (256, 256, 256, 32, 32, 64 * (256 + 64 + 30) - 1 + 1),
    ],
)
def test_predicted_cycles_is_scalesim_ws_plus_handover(m, n, k, rows, cols, cycles):
    assert predicted_cycles(m, n, k, rows, cols) == cycles
    assert predicted_cycles(m, n, k, rows, cols) == systolic_cycles(m, n, k, rows, cols, "ws") + 1


def test_predicted_cycles_rejects_bad_sizes():
    with pytest.raises(InputError, match="^systolic_gemm_ws: GEMM size m must be a positive integer, got 0$"):
        predicted_cycles(0, 4, 4, 2, 2)


@pytest.mark.parametrize(
    ("params", "message"),
    [
        ({"rows": 0}, "systolic_gemm_ws: parameter rows=0 is out of range (must be >= 1 and <= 256)"),
        ({"cols": 300}, "systolic_gemm_ws: parameter cols=300 is out of range (must be >= 1 and <= 256)"),
        ({"in_bits": 6}, "systolic_gemm_ws: parameter in_bits=6 is not supported (one of 4, 8)"),
        ({"rows": 2.5}, "systolic_gemm_ws: parameter rows must be an integer, got 2.5"),
        ({"acc_bits": 12}, "systolic_gemm_ws: parameter acc_bits=12 is too narrow for in_bits=8 (needs >= 16)"),
        ({"depth": 2}, "systolic_gemm_ws: unknown parameter 'depth' (known: rows, cols, in_bits, acc_bits)"),
    ],
)
def test_bad_parameters_are_input_errors_naming_the_parameter(params, message, tmp_path):
    with pytest.raises(InputError, match=f"^{re.escape(message)}$"):
        emit.emit_kernel("systolic_gemm_ws", params, tmp_path)
    assert not list(tmp_path.iterdir())  # nothing was emitted
    with pytest.raises(InputError, match=f"^{re.escape(message)}$"):
        sim.run_testbench("systolic_gemm_ws", params, "icarus", "tb_systolic_ws", TB_DIR, {}, build_root=tmp_path)
    assert not list(tmp_path.iterdir())  # no tool ran


def test_registry_builds_the_component():
    gemm = emit.build_kernel("systolic_gemm_ws", {"rows": 3, "cols": 5, "in_bits": 4})
    assert isinstance(gemm, SystolicGemmWs)
    Fragment.get(gemm, None)  # elaborates (and so "uses") it
    assert gemm.params == {"rows": 3, "cols": 5, "in_bits": 4, "acc_bits": 32}


def test_host_packing_matches_the_amaranth_layout():
    layout = systolic_ws.operand_layout(3, 2, 4)
    word = systolic_ws.pack_operands([-8, 7, -1], [5, -3], True, False, 4)
    value = layout.const({"a": [-8, 7, -1], "w": [5, -3], "load": 1, "last": 0}).as_value().value
    assert word == value
    word = systolic_ws.pack_operands([1, 2, 3], [0, 0], False, True, 4)
    assert word == layout.const({"a": [1, 2, 3], "w": [0, 0], "load": 0, "last": 1}).as_value().value


def test_operand_beats_follow_scalesim_fold_order_and_assembly_sums_row_folds():
    a = [[1, 2, 3], [4, 5, 6]]  # m=2, k=3
    b = [[7, 8, 9], [10, 11, 12], [13, 14, 15]]  # k=3, n=3
    assert systolic_ws.fold_origins(3, 3, 2, 2) == [(0, 0), (2, 0), (0, 2), (2, 2)]
    beats = list(systolic_ws.operand_beats(a, b, 2, 2))
    assert len(beats) == 4 * (2 + 2)  # 4 folds x (rows load beats + m activations)
    assert beats[0] == ([0, 0], [10, 11], True, False)  # bottom tile row first
    assert beats[1] == ([0, 0], [7, 8], True, False)
    assert beats[2] == ([1, 2], [0, 0], False, False) and beats[3] == ([4, 5], [0, 0], False, True)
    assert beats[4] == ([0, 0], [0, 0], True, False)  # k = 3 is past the edge
    assert beats[-1] == ([6, 0], [0, 0], False, True)
    # A fake array that computes each fold's partial product must reassemble to A @ B.
    rows_out = []
    for k0, n0 in systolic_ws.fold_origins(3, 3, 2, 2):
        for mm in range(2):
            rows_out.append([
                sum(a[mm][kk] * b[kk][n0 + j] for kk in range(k0, min(k0 + 2, 3))) if n0 + j < 3 else 0
                for j in range(2)
            ])
    assert systolic_ws.assemble_results(rows_out, 2, 3, 3, 2, 2) == int_matmul_reference(a, b)


def test_manifest_knows_the_timing_model():
    from hw.rtl.kernels import cycles_formula, example_work, invocation_cycles

    params = emit.canonical_params("systolic_gemm_ws", {"rows": 3, "cols": 5})
    assert invocation_cycles("systolic_gemm_ws", params, {"m": 7, "n": 11, "k": 8}) == predicted_cycles(7, 11, 8, 3, 5)
    assert example_work("systolic_gemm_ws", params) == {"m": 3, "n": 5, "k": 3}
    assert cycles_formula("systolic_gemm_ws", params) == "ceil(k/rows) * ceil(n/cols) * (m + 2 * rows + cols - 2) - 1 + 1"
