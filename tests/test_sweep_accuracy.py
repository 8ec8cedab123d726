"""codesign.sweep.accuracy: sweeps with `inputs:` carry exactly the accuracy `codesign compile --inputs` reports,
measured once per (model, compile choices), stored, and not measured again on resume."""

from __future__ import annotations

import csv
import sqlite3
from pathlib import Path
from typing import Any

import pytest

from codesign.api import compile
from codesign.sweep import accuracy as sweep_accuracy
from codesign.sweep import runner
from codesign.sweep.evaluate import clear_caches
from codesign.sweep.metrics import accuracy_metrics, metrics_from_report
from codesign.sweep.outputs import write_outputs
from codesign.sweep.runner import finalize, run_sweep
from codesign.sweep.spec import parse_sweep
from codesign.sweep.store import Store

ROOT = Path(__file__).resolve().parents[1]
TINY = ROOT / "examples" / "models" / "vit_tiny.onnx"
DATA = ROOT / "examples" / "data" / "vit_tiny_images.npz"

SPEC = f"""\
models: [{TINY}]
target: fpga-u280
space:
  gemm.rows: [8, 16]
  compile.softmax: [exact, shiftmax]
  compile.attention: [standard, edge-moe]
objectives: {{latency_ms: min, energy_mj: min}}
constraints: ["fits", "accuracy.cosine >= 0.99"]
inputs: {DATA}
"""


@pytest.fixture
def measured(monkeypatch):
    """Every accuracy measurement the runner asks for, in order (per-process caches cleared first)."""
    clear_caches()
    calls: list[sweep_accuracy.AccuracyRequest] = []

    def counting(request):
        calls.append(request)
        return sweep_accuracy.measure_accuracy(request)

    monkeypatch.setattr(runner, "measure_accuracy", counting)
    yield calls
    clear_caches()


def _rows(out: Path) -> list[dict[str, str]]:
    with (out / "results.csv").open() as fh:
        return list(csv.DictReader(fh))


def _run(tmp_path: Path, text: str = SPEC):
    sweep = parse_sweep(text, "s.yaml")
    out = tmp_path / "out"
    outcome = run_sweep(sweep, out, workers=0)
    write_outputs(sweep, outcome.rows, out)
    return sweep, outcome, out


def test_points_carry_what_compile_with_inputs_reports_measured_once_per_choices(tmp_path, measured):
    sweep, outcome, _ = _run(tmp_path)
    assert outcome.computed == 8
    # One measurement per (softmax, attention), each on the base target whatever point asked first.
    assert sorted(r.choices for r in measured) == sorted(
        (("attention", a), ("softmax", s)) for s in ("exact", "shiftmax") for a in ("standard", "edge-moe"))
    assert {(r.target, r.overrides, r.inputs) for r in measured} == {("fpga-u280", (), str(DATA))}
    assert outcome.accuracy_measured == 4 and outcome.accuracy_reused == 0
    for entry in outcome.rows.values():
        params, result = entry["params"], entry["result"]
        choices = {"softmax": params["compile.softmax"], "attention": params["compile.attention"]}
        report = compile(TINY, "fpga-u280", overrides={"gemm.rows": params["gemm.rows"]}, inputs=str(DATA),
                         **choices).report
        assert report is not None
        # Every metric, hardware and accuracy, as `codesign compile --inputs` reports it for this point.
        assert result["metrics"] == metrics_from_report(report), params
        assert set(accuracy_metrics(report["accuracy"])) == {"accuracy.cosine", "accuracy.cosine_min",
                                                             "accuracy.max_abs_err", "accuracy.top1"}
        cosine = report["accuracy"]["outputs"]["logits"]["cosine_mean"]
        assert result["feasible"] == (cosine >= 0.99), (params, cosine)
        if not result["feasible"]:
            assert result["reason"] == f"accuracy.cosine = {cosine:.6g}, needs >= 0.99"


def test_resume_takes_accuracy_from_the_store(tmp_path, measured):
    sweep, first, out = _run(tmp_path, SPEC.replace("  compile.attention: [standard, edge-moe]\n", ""))
    assert first.computed == 4 and len(measured) == 2 == len(first.accuracy)
    before = {r["key"]: {k: v for k, v in r.items() if k.startswith("accuracy.")} for r in _rows(out)}
    # A run killed half-way: some points never stored, this process's caches gone.
    with sqlite3.connect(out / "study.db") as db:
        db.execute("delete from sweep_points where seq > 1")
    clear_caches()
    measured.clear()
    again = run_sweep(sweep, out, workers=0)
    write_outputs(sweep, again.rows, out)
    assert again.computed == 3 and measured == []
    assert again.accuracy_measured == 0 and again.accuracy_reused == 2 and again.accuracy == first.accuracy
    assert {r["key"]: {k: v for k, v in r.items() if k.startswith("accuracy.")} for r in _rows(out)} == before


def test_a_measurement_is_the_accuracy_section_of_compile_with_inputs():
    clear_caches()
    # Quantized and not; the second and third reuse the first's ONNX Runtime reference outputs.
    sets: list[dict[str, Any]] = [{}, {"softmax": "shiftmax", "attention": "edge-moe"},
                                  {"quant": "int8", "gelu": "shiftgelu"}]
    for choices in sets:
        request = sweep_accuracy.AccuracyRequest(key="k", model=str(TINY), target="fpga-u280", inputs=str(DATA),
                                                 overrides=(("gemm.rows", "16"),),
                                                 choices=tuple(sorted(choices.items())))
        got = sweep_accuracy.measure_accuracy(request)
        expected = compile(TINY, "fpga-u280", overrides={"gemm.rows": "16"}, inputs=str(DATA), **choices).report
        assert got["error"] is None and got["section"] == expected["accuracy"], choices
        assert got["metrics"] == accuracy_metrics(expected["accuracy"])
        assert sweep_accuracy.measure_accuracy(request)["seconds"] == 0.0  # this process has it now
    clear_caches()


def test_one_measurement_serves_every_hardware_point(tmp_path, measured):
    text = SPEC.replace("  compile.softmax: [exact, shiftmax]\n  compile.attention: [standard, edge-moe]\n",
                        "  gemm.cols: [8, 16]\n  clock_mhz: [200, 300]\n")
    sweep, outcome, out = _run(tmp_path, text)
    assert outcome.computed == 8 and len(measured) == 1
    expected = accuracy_metrics(compile(TINY, "fpga-u280", inputs=str(DATA)).report["accuracy"])
    for row in _rows(out):
        assert {k: float(v) for k, v in row.items() if k.startswith("accuracy.")} == expected
    with sqlite3.connect(out / "study.db") as db:
        assert db.execute("select count(*) from sweep_accuracy").fetchone()[0] == 1


def test_a_failed_measurement_makes_points_infeasible_only_when_accuracy_is_asked_for():
    sweep = parse_sweep(SPEC, "s.yaml")
    row = {"key": "k", "metrics": {"latency_ms": 1.0, "energy_mj": 1.0}, "fits": True, "fit_excess": 0.0,
           "fit_message": None, "error": None, "tier": "plan", "seconds": 0.0}
    failed = {"key": "a", "metrics": {}, "section": None, "error": "simulate: no kernel for op X", "seconds": 0.1}
    result = finalize(sweep, row, failed)
    assert not result["feasible"] and result["accuracy_error"] == "simulate: no kernel for op X"
    assert result["reason"] == "accuracy not measured: simulate: no kernel for op X; accuracy.cosine not reported"
    plain = parse_sweep(SPEC.replace(', "accuracy.cosine >= 0.99"', ""), "s.yaml")
    assert finalize(plain, row, failed)["feasible"]


def test_store_keeps_the_first_measurement(tmp_path):
    store = Store(f"sqlite:///{tmp_path / 'db.sqlite'}", "h", "{}")
    store.put_accuracy("k", {"metrics": {"accuracy.cosine": 0.5}})
    store.put_accuracy("k", {"metrics": {"accuracy.cosine": 0.9}})
    assert store.accuracy() == store.accuracy(["k"]) == {"k": {"metrics": {"accuracy.cosine": 0.5}}}
    assert store.accuracy(["other"]) == {}
    store.close()
