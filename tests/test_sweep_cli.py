"""`codesign sweep` end to end through codesign.cli.main: outputs, Pareto, resume, and bad input."""

from __future__ import annotations

import csv
import json
import sqlite3
from pathlib import Path

import pytest

from codesign.cli import main
from codesign.sweep.metrics import dominates

ROOT = Path(__file__).resolve().parents[1]
TINY = ROOT / "examples" / "models" / "vit_tiny.onnx"

SPEC = f"""\
models: [{TINY}]
target: fpga-zcu102
space:
  gemm.rows: [8, 32, 128]
  gemm.cols: [8, 32, 128]
  clock_mhz: {{min: 200, max: 300, step: 100}}
objectives: {{latency_ms: min, energy_mj: min, dsp: min}}
constraints: ["fits", "latency_ms <= 3"]
"""


def _read(path: Path) -> list[dict[str, str]]:
    with path.open() as fh:
        return list(csv.DictReader(fh))


def _run(tmp_path: Path, spec: str, *extra: str, name: str = "out") -> tuple[int, Path]:
    sweep = tmp_path / "sweep.yaml"
    sweep.write_text(spec)
    out = tmp_path / name
    return main(["sweep", str(sweep), "--out", str(out), "--workers", "0", "-q", *extra]), out


def test_grid_writes_every_output_and_an_exact_pareto(tmp_path):
    status, out = _run(tmp_path, SPEC)
    assert status == 0
    assert {p.name for p in out.iterdir()} >= {"results.csv", "pareto.csv", "pareto.png", "report.html",
                                                "study.db", "sweep.json"}
    rows = _read(out / "results.csv")
    assert len(rows) == 18 and len({r["key"] for r in rows}) == 18
    infeasible = [r for r in rows if r["feasible"] == "False"]
    assert any("does not fit" in r["reason"] for r in infeasible)  # 128x128 does not fit a ZCU102
    # The front, recomputed from results.csv alone.
    names = ["latency_ms", "energy_mj", "dsp"]
    feasible = [r for r in rows if r["feasible"] == "True"]
    vectors = {r["key"]: [float(r[n]) for n in names] for r in feasible}
    expected = {k for k, v in vectors.items() if not any(dominates(w, v, [1, 1, 1]) for w in vectors.values())}
    assert {r["key"] for r in _read(out / "pareto.csv")} == expected and expected
    html = (out / "report.html").read_text()
    assert html.count("data:image/png;base64,") == 2 and "<script" not in html


def test_rerun_resumes_without_recomputing(tmp_path, capsys):
    status, out = _run(tmp_path, SPEC)
    assert status == 0
    before = (out / "results.csv").read_text()
    sweep = tmp_path / "sweep.yaml"
    assert main(["sweep", str(sweep), "--out", str(out), "--workers", "0"]) == 0
    assert "0 points computed now" in capsys.readouterr().out
    assert (out / "results.csv").read_text() == before
    with sqlite3.connect(out / "study.db") as db:
        seqs = sorted(s for (s,) in db.execute("select seq from sweep_points"))
    assert seqs == list(range(1, 19))


def test_budgeted_samplers_respect_the_budget_and_constraints(tmp_path):
    for strategy in ("random", "nsga2", "tpe"):
        spec = SPEC.replace("step: 100}", "step: 25}") + f"strategy: {strategy}\nbudget: 12\nseed: 3\n"
        status, out = _run(tmp_path, spec, name=strategy)
        assert status == 0
        rows = _read(out / "results.csv")
        assert len(rows) == 12 and len({r["key"] for r in rows}) == 12, strategy


def test_target_axis(tmp_path):
    spec = f"""\
models: [{TINY}]
space:
  target: [optical-4f, npu-xdna, gpu-a100]
  clock_mhz: [500, 1000]
objectives: {{latency_ms: min, energy_mj: min}}
"""
    status, out = _run(tmp_path, spec)
    assert status == 0
    rows = _read(out / "results.csv")
    assert sorted((r["target"], r["clock_mhz"]) for r in rows) == sorted(
        (t, c) for t in ("optical-4f", "npu-xdna", "gpu-a100") for c in ("500", "1000"))


def _bad(tmp_path, capsys, spec: str, *extra: str, out_name: str = "out") -> str:
    status, _ = _run(tmp_path, spec, *extra, name=out_name)
    err = capsys.readouterr().err
    assert status == 2
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("codesign: error: ")
    return lines[0].removeprefix("codesign: error: ")


def test_bad_input_is_one_line_exit_2_and_writes_nothing(tmp_path, capsys):
    assert _bad(tmp_path, capsys, SPEC.replace("gemm.cols", "gemm.colz")).startswith(
        f"{tmp_path / 'sweep.yaml'}:5: space.gemm.colz: unknown key 'gemm.colz' (did you mean gemm.cols?)")
    assert "is not a report field" in _bad(tmp_path, capsys, SPEC.replace("dsp: min", "area: min"))
    empty = SPEC.split("space:")[0] + "space: {}\nobjectives: {latency_ms: min}\n"
    assert _bad(tmp_path, capsys, empty).endswith("space: must not be empty")
    assert not (tmp_path / "out").exists()


def test_accuracy_without_inputs_is_exit_2_before_anything_runs(tmp_path, capsys):
    message = _bad(tmp_path, capsys, SPEC.replace('"latency_ms <= 3"', '"accuracy.cosine >= 0.99"'))
    assert message == (f"{tmp_path / 'sweep.yaml'}:8: constraints[1]: accuracy.cosine needs samples to run: add "
                       "'inputs: <file>.npz' to the sweep (arrays keyed by model input name, leading sample axis, "
                       "as for codesign compile --inputs)")
    assert not (tmp_path / "out").exists()


def test_inputs_add_accuracy_columns_and_a_summary_line(tmp_path, capsys):
    data = ROOT / "examples" / "data" / "vit_tiny_images.npz"
    spec = SPEC.replace('"latency_ms <= 3"', '"accuracy.cosine >= 0.99"') + f"inputs: {data}\n"
    status, out = _run(tmp_path, spec.replace("[8, 32, 128]", "[8, 32]"))
    assert status == 0
    rows = _read(out / "results.csv")
    assert len(rows) == 8 and len({r["accuracy.cosine"] for r in rows}) == 1
    assert {"accuracy.cosine", "accuracy.cosine_min", "accuracy.max_abs_err", "accuracy.top1"} <= set(rows[0])
    assert main(["sweep", str(tmp_path / "sweep.yaml"), "--out", str(out), "--workers", "0"]) == 0
    assert "accuracy on vit_tiny_images.npz: 1 (model, compile choices) measured, 0 of them now (0.0 s)" in \
        capsys.readouterr().out


@pytest.mark.slow
def test_unreachable_scheduler(tmp_path, capsys):
    message = _bad(tmp_path, capsys, SPEC, "--scheduler", "tcp://127.0.0.1:9")
    assert message.startswith("--scheduler tcp://127.0.0.1:9: cannot connect")
    assert not (tmp_path / "out").exists()


def test_out_folder_holding_another_sweep_is_refused(tmp_path, capsys):
    status, out = _run(tmp_path, SPEC)
    assert status == 0
    before = {p.name: p.read_bytes() for p in out.iterdir() if p.is_file()}
    message = _bad(tmp_path, capsys, SPEC.replace("[8, 32, 128]", "[8, 16]", 1))
    held = json.loads(before["sweep.json"])["spec_hash"]
    assert message.startswith(f"--out {out}: holds another sweep (") and held in message
    assert {p.name: p.read_bytes() for p in out.iterdir() if p.is_file()} == before
    (tmp_path / "other").mkdir()
    (tmp_path / "other" / "notes.txt").write_text("mine")
    assert "folder is not empty and holds no sweep" in _bad(tmp_path, capsys, SPEC, out_name="other")
