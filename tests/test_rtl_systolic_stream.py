"""hw.rtl.systolic_stream: the output-stationary array whose folds stream, bit-exact against a torch int64 matmul
and cycle-exact against its own ``predicted_cycles`` under Icarus and Verilator (one cocotb run per simulator,
array shape and operand width, many GEMMs per run); its timing model against the plain array's."""

from __future__ import annotations

import pytest
from rtl_kernel_checks import SIMS, check_gemm_kernel
from test_rtl_systolic import _gemm_cases

from hw.errors import InputError
from hw.perf.systolic import fold_overlap_cycles, systolic_cycles
from hw.rtl import emit, kernels
from hw.rtl import systolic as plain
from hw.rtl.systolic_stream import SystolicGemmStream, predicted_cycles

SHAPES = [(2, 2), (4, 4), (3, 5), (5, 3)]


def _stream_cases(rows: int, cols: int, bits: int, seed: int) -> list[dict]:
    """The plain array's cases, and folds shorter than the array (k < rows: each waits for the readout), many
    folds of k = rows (no wait), and a stressed run with a short k."""
    import random

    rng = random.Random(seed + 1)
    lo, hi = -(1 << (bits - 1)), (1 << (bits - 1)) - 1

    def rand(r: int, c: int) -> list[list[int]]:
        return [[rng.randint(lo, hi) for _ in range(c)] for _ in range(r)]

    m, n = 3 * rows - 1, 2 * cols + 1
    return _gemm_cases(rows, cols, bits, seed) + [
        {"name": "short_folds", "a": rand(m, max(1, rows - 1)), "b": rand(max(1, rows - 1), n)},
        {"name": "folds_of_rows", "a": rand(m, rows), "b": rand(rows, n)},
        {"name": "long_folds", "a": rand(m, 2 * rows + 3), "b": rand(2 * rows + 3, n)},
        {"name": "short_folds_stalled", "a": rand(m, 1), "b": rand(1, n), "gap_prob": 0.2, "stall_prob": 0.5,
         "seed": seed},
    ]


@pytest.mark.rtl
@pytest.mark.slow
@pytest.mark.parametrize("bits", [8, 4])
@pytest.mark.parametrize("shape", SHAPES, ids=lambda s: f"{s[0]}x{s[1]}")
@pytest.mark.parametrize("simulator", SIMS)
def test_streaming_array_is_exact_and_takes_predicted_cycles(simulator, shape, bits):
    rows, cols = shape
    cases = _stream_cases(rows, cols, bits, seed=rows * 100 + cols * 10 + bits)
    check_gemm_kernel("systolic_gemm_stream", "tb_systolic", simulator, rows, cols, bits, cases, predicted_cycles)


@pytest.mark.parametrize(
    ("m", "n", "k", "rows", "cols", "cycles"),
    [
        (1, 1, 1, 1, 1, 1),  # as the plain array: accept, MAC, hand over one edge later
        (2, 3, 4, 2, 3, 7),  # one fold: 4 + 2 + 3 - 2
        (5, 7, 3, 2, 3, 8 * 3 + 3 + 2 + 3 - 2),  # 9 folds, each after the first adds k = 3 >= rows
        (5, 7, 1, 4, 3, 5 * 4 + 1 + 4 + 3 - 2),  # 6 folds of k = 1 < rows: each waits for 4 result rows
        (256, 256, 256, 32, 32, 63 * 256 + 256 + 62),
    ],
)
def test_predicted_cycles_pays_the_skew_once(m, n, k, rows, cols, cycles):
    assert predicted_cycles(m, n, k, rows, cols) == cycles == fold_overlap_cycles(m, n, k, rows, cols) + 1
    # One fold is the plain array's count less its readout; more folds never cost more than the plain array.
    if -(-m // rows) * -(-n // cols) == 1:
        assert predicted_cycles(m, n, k, rows, cols) == systolic_cycles(m, n, k, rows, cols, "os") + 1
    assert predicted_cycles(m, n, k, rows, cols) <= plain.predicted_cycles(m, n, k, rows, cols)


def test_registry_and_bad_input():
    assert kernels.kernel_class("systolic_gemm_stream") is SystolicGemmStream
    assert "os" in kernels.array_kernels() and kernels.array_kernels()["os"] == "systolic_gemm"  # still the default
    assert kernels.invocation_cycles("systolic_gemm_stream", {"rows": 4, "cols": 4}, {"m": 8, "n": 4, "k": 8}) == \
        8 + 8 + 4 + 4 - 2
    with pytest.raises(InputError, match="^systolic_gemm_stream: GEMM size n must be a positive integer, got 0$"):
        predicted_cycles(4, 0, 4, 2, 2)
    with pytest.raises(InputError, match=r"^systolic_gemm_stream: parameter rows=0 is out of range"):
        emit.build_kernel("systolic_gemm_stream", {"rows": 0})
