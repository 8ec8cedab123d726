"""hw.models.asic: area and energy that follow the design, per-operand SRAM traffic, node scaling, bad YAMLs, and the
SCALE-Sim v3 ViT-base study (Raj et al., arXiv 2504.15377) reproduced as far as honest figures allow (docs/ASIC.md)."""

from __future__ import annotations

from pathlib import Path

import pytest

from hw.errors import InputError
from hw.models import AsicModel, SiliconModel, build_model
from hw.models.asic import sram_pj_per_64b, sram_traffic
from hw.models.base import gemm_onchip_bytes
from hw.perf.systolic import fold_counts
from hw.perf.workload import GemmWork, VectorWork
from hw.targets import load_target
from hw.targets.technology import area_factor, energy_factor

ROOT = Path(__file__).resolve().parents[1]


def asic(**overrides: object) -> AsicModel:
    model = build_model(load_target("asic-systolic", {k.replace("__", "."): str(v) for k, v in overrides.items()}))
    assert isinstance(model, AsicModel) and isinstance(model, SiliconModel)
    return model


def vit_base_gemms(tokens: int = 197, d: int = 768, heads: int = 12, mlp: int = 3072,
                   layers: int = 12) -> list[GemmWork]:
    """ViT-Base's GEMMs from its shapes (no weights): patch embedding, per layer Q, K, V, output projection, the two
    attention products per head and the MLP, and the classifier."""
    dh = d // heads
    layer = [GemmWork(tokens, d, d)] * 4 + [GemmWork(tokens, tokens, dh, batch=heads),
                                            GemmWork(tokens, dh, tokens, batch=heads),
                                            GemmWork(tokens, mlp, d), GemmWork(tokens, d, mlp)]
    return [GemmWork(tokens - 1, d, d)] + layer * layers + [GemmWork(1, 1000, d)]


# --- area -------------------------------------------------------------------------------------------------------------


def test_area_scales_with_array_and_sram() -> None:
    small, big = asic(gemm__rows=32, gemm__cols=32), asic(gemm__rows=128, gemm__cols=128)
    a, b = small.area_breakdown_mm2(), big.area_breakdown_mm2()
    assert b["pe_array"] == pytest.approx(16 * a["pe_array"])
    assert b["sram_act"] == a["sram_act"] and b["vector"] == a["vector"]
    more_sram = asic(buffers__weight_kb=1024).area_breakdown_mm2()
    assert more_sram["sram_weight"] == pytest.approx(2 * asic().area_breakdown_mm2()["sram_weight"])
    # One int8 PE at 45 nm (Aladdin plug-in, 1 ns): 8-bit multiplier 6350 x (8/32)^2 + 32-bit adder 278 + 48 register
    # bits x 5.98 um^2.
    assert small.pe_um2() == pytest.approx(6350 / 16 + 278 + 48 * 5.98)
    assert small.area_mm2() == pytest.approx(sum(a.values()))


def test_node_scaling_follows_stillmaker() -> None:
    assert area_factor(45) == 1.0 and energy_factor(45, 0.9) == pytest.approx(1.0)
    assert area_factor(7) == pytest.approx(0.059)  # Stillmaker & Baas area factor 45 nm -> 7 nm
    assert area_factor(32) > area_factor(28) > area_factor(20)  # 28 nm interpolated between its neighbours
    at = {node: asic(technology__node_nm=node, technology__vdd=vdd) for node, vdd in ((45, 0.9), (28, 0.9), (7, 0.7))}
    assert at[45].area_mm2() > at[28].area_mm2() > at[7].area_mm2()
    assert at[45].mac_pj() > at[28].mac_pj() > at[7].mac_pj()
    assert at[45].mac_pj() == pytest.approx(12.68 / 16 + 0.21)  # Aladdin: 8x8 multiply (quadratic) + 32-bit add
    assert at[7].mac_pj() == pytest.approx((12.68 / 16 + 0.21) * energy_factor(7, 0.7))


# --- SRAM -------------------------------------------------------------------------------------------------------------


def test_sram_energy_reproduces_horowitz_and_grows_with_the_bank() -> None:
    table = {8.0: 10.0, 32.0: 20.0, 1024.0: 100.0}
    assert [sram_pj_per_64b(table, kb) for kb in (8, 32, 1024)] == pytest.approx([10, 20, 100])
    sizes = [2, 8, 16, 32, 256, 1024, 4096]
    energies = [sram_pj_per_64b(table, kb) for kb in sizes]
    assert energies == sorted(energies)
    assert sram_pj_per_64b({32.0: 20.0}, 128) == pytest.approx(40.0)  # one entry: square-root growth
    assert asic().sram_pj_per_byte() == pytest.approx(20.0 / 8)  # 32 KiB banks, 64-bit words


@pytest.mark.parametrize("dataflow", ["os", "ws", "is"])
def test_sram_traffic_follows_the_folds(dataflow: str) -> None:
    work = GemmWork(197, 768, 3072, batch=2)
    rows, cols = 32, 64
    t = sram_traffic(work, rows, cols, dataflow)
    a, b, o = 197 * 3072, 3072 * 768, 197 * 768 * 4
    assert t["act"][1] == 2 * a and t["weight"][1] == 2 * b  # each operand written into its buffer once
    if dataflow == "os":
        assert t["act"][0] == 2 * a * fold_counts(197, 768, 3072, rows, cols, "os")[1]
        assert t["weight"][0] == 2 * b * fold_counts(197, 768, 3072, rows, cols, "os")[0]
        assert t["out"] == (2 * o, 2 * o)
    else:
        assert t["out"][1] == 2 * o * -(-3072 // rows)  # partial sums written once per reduction fold
    # The streamed reads plus the accumulator writes are the buffer traffic every other model prices.
    assert t["act"][0] + t["weight"][0] + t["out"][1] + (t["out"][0] if dataflow != "os" else 0) == \
        gemm_onchip_bytes(work, rows, cols, dataflow)


# --- energy -----------------------------------------------------------------------------------------------------------


def test_energy_components_follow_the_idle_pe_choice() -> None:
    works = [GemmWork(197, 197, 64, batch=12), VectorWork(kind="softmax", elements=12 * 197 * 197, rows=12 * 197)]
    cycles = 2_000_000
    parts = {mode: asic(gemm__idle_pe=mode).work_energy(works, 10**6, cycles) for mode in ("toggle", "clocked",
                                                                                             "gated")}
    assert parts["toggle"]["pe_idle"] > 0 and parts["clocked"]["pe_idle"] == 0 == parts["gated"]["pe_idle"]
    assert parts["clocked"]["pe_registers"] > parts["gated"]["pe_registers"] > 0
    totals = {mode: sum(p.values()) for mode, p in parts.items()}
    assert totals["toggle"] > totals["clocked"] > totals["gated"]
    model = asic()
    e = parts["toggle"]
    assert e["dram"] == pytest.approx(10**6 * 31.2 * 1e-9)  # HBM2 3.9 pJ/bit, node-independent
    assert e["leakage"] == pytest.approx(model.leakage_w() * cycles / 1e9 * 1e3)
    assert e["vector"] > 0 and all(v >= 0 for v in e.values())
    # Leakage grows with the die and the run, not with the work done.
    assert asic(buffers__act_kb=1024).work_energy(works, 0, cycles)["leakage"] > e["leakage"]


def test_vit_base_gemm_shapes_cost_more_energy_on_bigger_arrays() -> None:
    """ViT-Base's GEMMs alone (SCALE-Sim's view of a network): the 128x128 array is ~10.7x faster by SCALE-Sim's
    own cycle count, and with every PE switching every cycle its energy per inference is the highest."""
    works = vit_base_gemms()
    result = {}
    for size in (32, 64, 128):
        model = asic(gemm__rows=size, gemm__cols=size)
        cycles = sum(model.cost(w).compute_cycles for w in works)
        result[size] = (cycles, sum(model.work_energy(works, 0, cycles).values()))
    assert result[32][0] / result[128][0] == pytest.approx(10.70, abs=0.01)
    assert result[32][1] < result[64][1] < result[128][1]


# --- bad input --------------------------------------------------------------------------------------------------------

GOOD = (ROOT / "hw" / "targets" / "asic-systolic.yaml").read_text()


def error_for(tmp_path: Path, *edits: tuple[str, str]) -> str:
    text = GOOD
    for old, new in edits:
        assert old in text
        text = text.replace(old, new, 1)
    path = tmp_path / "bad.yaml"
    path.write_text(text)
    with pytest.raises(InputError) as info:
        load_target(str(path))
    message = str(info.value)
    assert "\n" not in message and message.startswith(f"{path}:")
    return message


def test_negative_area_coefficient_names_its_key(tmp_path: Path) -> None:
    message = error_for(tmp_path, ("mult8_um2: 396.875", "mult8_um2: -396.875"))
    assert message.endswith("area.mult8_um2: must be > 0, got -396.875")


def test_unknown_node_names_its_key(tmp_path: Path) -> None:
    message = error_for(tmp_path, ("node_nm: 45", "node_nm: 12"))
    assert "technology.node_nm: 12 is not a node with published scaling figures (known: 130, 90, 65, 45, 32, 28, " \
        "20, 16, 14, 10, 7)" in message


def test_inconsistent_sram_sizes_name_their_keys(tmp_path: Path) -> None:
    message = error_for(tmp_path, ("act_kb: 256", "act_kb: 100"))
    assert "buffers: act_kb 100 KiB is not a whole number of bank_kb 32 KiB banks" in message
    message = error_for(tmp_path, ("rows: 64", "rows: 128"), ("cols: 64", "cols: 128"),
                        ("out_kb: 128", "out_kb: 64"))
    assert "buffers: out_kb 64 KiB cannot hold one fold of 128x128 32-bit accumulators in each half" in message
    assert "raise buffers.out_kb" in message
    fold = r"^asic-systolic.yaml:\d+: buffers: out_kb 128 KiB cannot hold one fold of 256x256"
    with pytest.raises(InputError, match=fold):
        load_target("asic-systolic", {"gemm.rows": "256", "gemm.cols": "256"})


@pytest.mark.parametrize(("edits", "culprit"), [
    ([("mult8_um2: 396.875", "mult8_um2: -1")], "area.mult8_um2: must be > 0, got -1"),
    ([("node_nm: 45", "node_nm: 12")], "technology.node_nm: 12 is not a node with published scaling figures"),
    ([("weight_kb: 512", "weight_kb: 500")], "buffers: weight_kb 500 KiB is not a whole number of bank_kb 32 KiB"),
    ([("out_kb: 128", "out_kb: 16"), ("bank_kb: 32", "bank_kb: 16")],
     "buffers: out_kb 16 KiB cannot hold one fold of 64x64 32-bit accumulators in each half"),
])
def test_bad_asic_yaml_is_one_line_and_exit_2_from_the_cli(tmp_path: Path, models_dir: Path, capsys,
                                                           edits: list[tuple[str, str]], culprit: str) -> None:
    """What a user sees: ``codesign compile --target bad.yaml`` prints one line naming file, line and key path."""
    from codesign.cli import main

    text = GOOD
    for old, new in edits:
        assert old in text
        text = text.replace(old, new, 1)
    path = tmp_path / "bad.yaml"
    path.write_text(text)
    code = main(["compile", str(models_dir / "vit_tiny.onnx"), "--target", str(path), "-q"])
    err = capsys.readouterr().err
    assert code == 2 and err.count("\n") == 1 and "Traceback" not in err, err
    assert err.startswith(f"codesign: error: {path}:") and culprit in err


# --- the SCALE-Sim v3 study -------------------------------------------------------------------------------------------


@pytest.mark.slow
def test_vit_base_sweep_against_scale_sim_v3(tmp_path: Path, models_dir: Path, monkeypatch) -> None:
    """``codesign sweep examples/sweeps/vit_base_asic.yaml``: int8 ViT-Base, output stationary, square arrays, GEMMs
    mapped for EdP (the ASIC's ``gemm.mapping_objective``).

    Finding 1 (128x128 6.53x faster than 32x32, +/- 10%) is reproduced (6.62x); finding 2 (32x32 2.86x more
    energy-efficient, +/- 30%, energy per inference) only in direction (1.80x). Finding 3 (64x64 best EdP) is not:
    128x128 has the best EdP. docs/ASIC.md shows why no energy model whose terms grow at most like hardware x time
    can give findings 1 and 3 together with these cycle counts: EdP(64) < EdP(128) needs E(128) / E(64) > T(64) /
    T(128), while the array's PE-cycle terms grow by at most 4 T(128) / T(64)."""
    from codesign.sweep.runner import run_sweep
    from codesign.sweep.spec import load_sweep

    monkeypatch.chdir(ROOT)
    sweep = load_sweep(ROOT / "examples" / "sweeps" / "vit_base_asic.yaml")
    outcome = run_sweep(sweep, tmp_path / "out", workers=0)
    rows = {(r["params"]["gemm.rows"], r["params"]["gemm.cols"]): r["result"]["metrics"]
            for r in outcome.rows.values()}
    square = {size: rows[(size, size)] for size in (32, 64, 128)}
    latency = {size: m["latency_ms"] for size, m in square.items()}
    energy = {size: m["energy_mj"] for size, m in square.items()}
    assert latency[32] / latency[128] == pytest.approx(6.53, rel=0.10)  # finding 1
    # finding 2: the direction holds, not the size (2.86x +/- 30%). Mapped for latency, 32x32 re-reads weights it
    # could keep (1.49x); mapped for EdP it re-reads half as many bytes (1.80x), and still falls short.
    assert 1.7 < energy[128] / energy[32] < 2.86 * 0.7
    edp = {size: m["edp"] for size, m in square.items()}
    assert edp[128] < edp[64] < edp[32]  # finding 3 not reproduced: the paper has 64x64 best
    # Why: 64x64 would win only if energy grew faster from 64x64 to 128x128 than latency falls; the array terms
    # (PEs x cycles) grow by 4 x T(128) / T(64) at most, and the rest (DRAM, SRAM, useful MACs) stays or falls.
    time_ratio, energy_ratio = latency[64] / latency[128], energy[128] / energy[64]
    assert energy_ratio < 4 / time_ratio < time_ratio
    assert square[128]["area_mm2"] > square[64]["area_mm2"] > square[32]["area_mm2"] > 0


def test_gemm_only_scope_of_the_paper_does_not_reproduce_its_findings() -> None:
    """The paper's own workload scope (its topology's GEMMs alone, int8 operands off chip and back, one after
    another as SCALE-Sim runs layers; benchmarks/bench_asic_scope.py) on the same target: 128x128 runs
    compute-bound on HBM2, so it is 11x faster than 32x32 (the paper's 6.53x needs memory stalls) and pays for its
    PE-cycles: none of the three findings comes out (docs/ASIC.md, "The paper's GEMM-only scope")."""
    import sys

    sys.path.insert(0, str(ROOT / "benchmarks"))  # not `benchmarks.`: a site-packages package has that name
    from bench_asic_scope import gemm_only

    figures = gemm_only()
    latency = {size: f["latency_ms"] for size, f in figures.items()}
    energy = {size: f["energy_mj"] for size, f in figures.items()}
    assert latency[32] / latency[128] > 6.53 * 1.1  # finding 1 missed: compute-bound, near SCALE-Sim's 11.43x
    assert 1.0 < energy[128] / energy[32] < 2.86 * 0.7  # finding 2 in direction only
    edp = {size: f["edp"] for size, f in figures.items()}
    assert min(edp, key=edp.__getitem__) == 128  # finding 3 missed
    assert latency[64] / latency[128] > 2  # why: EdP(64) < EdP(128) would need T(64) / T(128) < 2 (docs/ASIC.md)


# --- the report and the sweep metrics ---------------------------------------------------------------------------------


@pytest.mark.slow
def test_report_has_area_and_edp(models_dir: Path) -> None:
    from codesign.api import compile as compile_model
    from codesign.sweep.metrics import metrics_from_report, parse_constraint

    report = compile_model(str(models_dir / "vit_tiny.onnx"), target="asic-systolic", quant="int8").report
    assert report is not None
    model = asic()
    assert report["area_mm2"] == pytest.approx(model.area_mm2())
    assert report["area_breakdown_mm2"] == pytest.approx(model.area_breakdown_mm2())
    assert report["edp"] == pytest.approx(report["energy_mj"] * report["latency_ms"])
    assert set(report["energy_breakdown_mj"]) == {"mac", "pe_idle", "pe_registers", "sram_act", "sram_weight",
                                                  "sram_out", "vector", "dram", "leakage", "static"}
    metrics = metrics_from_report(report)
    assert metrics["edp"] == report["edp"] and metrics["area_mm2"] == report["area_mm2"]
    assert metrics["area.pe_array"] == report["area_breakdown_mm2"]["pe_array"]
    assert parse_constraint("area_mm2 <= 20").violation(metrics, True, 0.0) == (0.0, None)
    assert parse_constraint("edp < 0").violation(metrics, True, 0.0)[1] == f"edp = {report['edp']:.6g}, needs < 0"
    fpga = compile_model(str(models_dir / "vit_tiny.onnx"), target="fpga-u280", quant="int8").report
    assert fpga is not None and "area_mm2" not in fpga and fpga["edp"] == pytest.approx(fpga["energy_mj"] * fpga["latency_ms"])
