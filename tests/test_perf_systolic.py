"""hw.perf.systolic: the closed form against hand-computed cases, and against SCALE-Sim v3 itself.

The slow tests run SCALE-Sim 3.0.0 (its own venv, it needs numpy < 2.4) through
``tests/scalesim_oracle.py`` once for all shapes and demand exact equality of "Total Cycles".
"""

from __future__ import annotations

import json
import random
import subprocess
import timeit
from pathlib import Path

import pytest

from hw.errors import InputError
from hw.perf.systolic import DATAFLOWS, fold_counts, fold_cycles, systolic_cycles, utilization

ROOT = Path(__file__).resolve().parent.parent
ORACLE = ROOT / "tests" / "scalesim_oracle.py"
SCALESIM_PY = ROOT / ".venv-scalesim" / "bin" / "python"


# --- the formula, by hand ------------------------------------------------------------------------

# (m, n, k, rows, cols, dataflow) -> cycles, each worked out from folds x per-fold - 1.
HAND_CASES = [
    # os: ceil(m/R) ceil(n/C) (k + R + C - 2) - 1
    ((8, 8, 8, 4, 4, "os"), 2 * 2 * (8 + 4 + 4 - 2) - 1),  # 55, divides exactly
    ((5, 7, 3, 4, 4, "os"), 2 * 2 * (3 + 4 + 4 - 2) - 1),  # 35, partial folds cost full folds
    ((1, 1, 1, 2, 2, "os"), 1 * 1 * (1 + 2 + 2 - 2) - 1),  # 2
    ((1, 1, 1, 1, 1, "os"), 1 * 1 * (1 + 1 + 1 - 2) - 1),  # 0; SCALE-Sim divides by it and crashes
    # ws: ceil(k/R) ceil(n/C) (m + 2R + C - 2) - 1
    ((5, 7, 3, 3, 5, "ws"), 1 * 2 * (5 + 6 + 5 - 2) - 1),  # 27
    ((10, 8, 8, 4, 8, "ws"), 2 * 1 * (10 + 8 + 8 - 2) - 1),  # 47
    ((10, 8, 8, 8, 4, "ws"), 1 * 2 * (10 + 16 + 4 - 2) - 1),  # 55: 8x4 is not 4x8
    # is: ceil(k/R) ceil(m/C) (n + 2R + C - 2) - 1
    ((1, 1, 1, 2, 2, "is"), 1 * 1 * (1 + 4 + 2 - 2) - 1),  # 4
    ((8, 10, 8, 4, 8, "is"), 2 * 1 * (10 + 8 + 8 - 2) - 1),  # 47
    ((8, 10, 8, 8, 4, "is"), 1 * 2 * (10 + 16 + 4 - 2) - 1),  # 55
]


@pytest.mark.parametrize(("case", "cycles"), HAND_CASES, ids=lambda v: str(v))
def test_hand_computed(case, cycles):
    assert systolic_cycles(*case) == cycles


def test_reference_peer_numbers():
    # SCALE-Sim v3 32x32, 64 KB SRAMs, CALC, as measured with scalesim==3.0.0 (docs/SOURCES.md [18]).
    assert systolic_cycles(256, 256, 256, 32, 32, "os") == 20_351
    assert systolic_cycles(256, 256, 256, 32, 32, "ws") == 22_399
    assert systolic_cycles(197, 2304, 768, 32, 32, "os") == 418_319
    assert systolic_cycles(197, 2304, 768, 32, 32, "ws") == 502_847


def test_fold_counts_and_fold_cycles():
    assert fold_counts(5, 7, 3, 4, 4, "os") == (2, 2)
    assert fold_counts(5, 7, 3, 3, 5, "ws") == (1, 2)
    assert fold_counts(5, 7, 9, 3, 5, "is") == (3, 1)
    assert fold_cycles(5, 7, 3, 4, 4, "os") == 3 + 4 + 4 - 2
    assert fold_cycles(5, 7, 3, 3, 5, "ws") == 5 + 6 + 5 - 2
    assert fold_cycles(5, 7, 9, 3, 5, "is") == 7 + 6 + 5 - 2
    for case, cycles in HAND_CASES:
        row_folds, col_folds = fold_counts(*case)
        assert row_folds * col_folds * fold_cycles(*case) - 1 == cycles


def test_utilization():
    assert utilization(8, 8, 8, 4, 4, "os") == 1.0
    assert utilization(5, 7, 3, 4, 4, "os") == 35 / 64  # m*n over 4 folds of 16 PEs
    assert utilization(5, 7, 3, 3, 5, "ws") == 21 / 30  # k*n over 2 folds of 15 PEs
    assert utilization(5, 7, 9, 3, 5, "is") == 45 / 45
    assert utilization(1, 1, 1, 2, 2, "is") == 0.25


def test_accepts_numpy_style_integers():
    np = pytest.importorskip("numpy")
    assert systolic_cycles(np.int64(8), 8, 8, np.int32(4), 4, "os") == 55
    assert type(systolic_cycles(np.int64(8), 8, 8, 4, 4, "os")) is int


@pytest.mark.parametrize(
    ("args", "message"),
    [
        ((0, 1, 1, 4, 4, "os"), "systolic_cycles: m must be a positive integer, got 0"),
        ((1, -3, 1, 4, 4, "os"), "systolic_cycles: n must be a positive integer, got -3"),
        ((1, 1, 2.0, 4, 4, "os"), "systolic_cycles: k must be a positive integer, got 2.0"),
        ((1, 1, 1, True, 4, "os"), "systolic_cycles: rows must be a positive integer, got True"),
        ((1, 1, 1, 4, "4", "os"), "systolic_cycles: cols must be a positive integer, got '4'"),
        ((1, 1, 1, 4, 4, "OS"),
         "systolic_cycles: dataflow must be one of 'os', 'ws', 'is', got 'OS'"),
        ((1, 1, 1, 4, 4, None),
         "systolic_cycles: dataflow must be one of 'os', 'ws', 'is', got None"),
    ],
)
def test_error_messages(args, message):
    with pytest.raises(InputError) as info:
        systolic_cycles(*args)
    assert str(info.value) == message


def test_error_names_the_function():
    with pytest.raises(InputError, match=r"^fold_counts: rows must be a positive integer, got 0$"):
        fold_counts(1, 1, 1, 0, 4, "ws")
    with pytest.raises(InputError, match=r"^utilization: dataflow must be one of"):
        utilization(1, 1, 1, 4, 4, "rs")


def test_microseconds_per_call():
    calls = 20_000
    seconds = timeit.timeit(lambda: systolic_cycles(197, 2304, 768, 32, 32, "ws"), number=calls)
    assert seconds / calls < 50e-6  # typically ~1 us; loose for a loaded 2-core machine


# --- against SCALE-Sim v3 ------------------------------------------------------------------------

ARRAYS = [(2, 2), (4, 4), (8, 8), (16, 16), (4, 8), (8, 4), (3, 5), (5, 3), (2, 16), (16, 2),
          (7, 3), (1, 8), (8, 1)]


def _random_shapes(seed: int = 20_240_917, per_dataflow: int = 80) -> list[tuple]:
    """Seeded shapes: dims 1..64 with a bias to 1 and to sizes that do not divide the array."""
    rng = random.Random(seed)
    cases = []
    for dataflow in DATAFLOWS:
        for _ in range(per_dataflow):
            rows, cols = rng.choice(ARRAYS)
            dims = [1 if rng.random() < 0.15 else rng.randint(1, 64) for _ in range(3)]
            cases.append((*dims, rows, cols, dataflow))
    return cases


def _edge_shapes() -> list[tuple]:
    cases = [case for case, _ in HAND_CASES]
    for dataflow in DATAFLOWS:
        for rows, cols in [(4, 8), (8, 4), (3, 5)]:
            cases += [
                (1, 1, 1, rows, cols, dataflow),
                (1, 17, 9, rows, cols, dataflow),
                (17, 1, 9, rows, cols, dataflow),
                (17, 9, 1, rows, cols, dataflow),
                (4 * rows, 4 * cols, 2 * rows, rows, cols, dataflow),  # every size divides
                (4 * rows + 1, 4 * cols + 1, 2 * rows + 1, rows, cols, dataflow),  # one over
                (rows * cols, rows * cols, rows * cols, rows, cols, dataflow),
            ]
    # A single PE, kept small (SCALE-Sim walks it line by line). Not (1, 1, 1, 1, 1, "os"): that
    # layer lasts one line, its "Total Cycles" is 0 and SCALE-Sim dies dividing by it.
    cases += [(1, 1, 2, 1, 1, "os"), (1, 1, 1, 1, 1, "ws"), (1, 1, 1, 1, 1, "is")]
    cases += [(3, 5, 7, 1, 1, dataflow) for dataflow in DATAFLOWS]
    # Big enough for the 64 KB ofmap SRAM to fill and drain mid-layer (still no stalls).
    cases.append((256, 256, 1, 4, 4, "os"))
    return cases


ORACLE_CASES = _random_shapes() + [c for c in _edge_shapes() if c != (1, 1, 1, 1, 1, "os")]


@pytest.fixture(scope="module")
def scalesim_results() -> dict[tuple, dict]:
    if not SCALESIM_PY.exists():
        pytest.fail(f"SCALE-Sim oracle venv missing ({SCALESIM_PY}): run `make .venv-scalesim/.installed`")
    proc = subprocess.run([str(SCALESIM_PY), str(ORACLE), "-"], input=json.dumps(ORACLE_CASES),
                          capture_output=True, text=True, timeout=600, cwd=ROOT)
    if proc.returncode != 0:
        pytest.fail(f"{ORACLE.name} exited with {proc.returncode}:\n{proc.stderr[-3000:]}")
    results = json.loads(proc.stdout)
    assert len(results) == len(ORACLE_CASES)
    return dict(zip(ORACLE_CASES, results))


@pytest.mark.slow
def test_oracle_case_count():
    assert len(set(ORACLE_CASES)) >= 250
    assert {case[5] for case in ORACLE_CASES} == set(DATAFLOWS)
    assert any(case[3] != case[4] for case in ORACLE_CASES)


@pytest.mark.slow
@pytest.mark.parametrize("dataflow", DATAFLOWS)
def test_cycles_equal_scalesim(scalesim_results, dataflow):
    checked = 0
    mismatches = []
    for case, got in scalesim_results.items():
        if case[5] != dataflow:
            continue
        checked += 1
        ours = systolic_cycles(*case)
        if got["cycles"] != ours or got["stall_cycles"] != 0:
            mismatches.append(f"{case}: scalesim {got['cycles']} (stalls {got['stall_cycles']}), ours {ours}")
    assert checked >= 80
    assert not mismatches, "\n".join(mismatches)


@pytest.mark.slow
def test_utilization_equals_scalesim_mapping_efficiency(scalesim_results):
    for case, got in scalesim_results.items():
        # SCALE-Sim averages per-fold floats; the closed form can differ in the last bits.
        assert utilization(*case) == pytest.approx(got["mapping_efficiency"], rel=1e-12, abs=0), case
