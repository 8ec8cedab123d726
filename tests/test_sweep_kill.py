"""A sweep SIGKILLed at random moments and restarted ends with exactly the grid's points, each stored once."""

from __future__ import annotations

import csv
import itertools
import os
import random
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
TINY = ROOT / "examples" / "models" / "vit_tiny.onnx"
pytestmark = [pytest.mark.slow]

ROWS, COLS, CLOCKS = [4, 8, 16, 32, 64, 128], [4, 8, 16, 32, 64, 128], [150, 200, 250, 300, 350]
SPEC = f"""\
models: [{TINY}]
target: fpga-u280
space:
  gemm.rows: {ROWS}
  gemm.cols: {COLS}
  clock_mhz: {CLOCKS}
  gemm.dataflow: [os, ws, is]
objectives: {{latency_ms: min, energy_mj: min}}
constraints: [fits]
"""


def _stored(out: Path) -> int:
    try:
        with sqlite3.connect(out / "study.db", timeout=30) as db:
            return db.execute("select count(*) from sweep_points where status='done'").fetchone()[0]
    except sqlite3.Error:
        return 0


def test_sigkill_and_restart_loses_and_repeats_nothing(tmp_path):
    spec = tmp_path / "sweep.yaml"
    spec.write_text(SPEC)
    out = tmp_path / "out"
    command = [sys.executable, "-m", "codesign", "sweep", str(spec), "--out", str(out), "--workers", "1", "-q"]
    rng = random.Random(1234)
    total = len(ROWS) * len(COLS) * len(CLOCKS) * 3
    kills_mid_run = 0
    for _ in range(12):
        proc = subprocess.Popen(command, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        # Wait until the run is storing points, then kill it at a random moment.
        start_count = _stored(out)
        deadline = time.monotonic() + 60
        while proc.poll() is None and _stored(out) == start_count and time.monotonic() < deadline:
            time.sleep(0.05)
        time.sleep(rng.uniform(0.0, 0.15))
        if proc.poll() is not None:
            break
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait()
        proc.stderr.close()
        if 0 < _stored(out) < total:
            kills_mid_run += 1
    else:
        pytest.fail("the sweep never finished")
    assert proc.returncode == 0, proc.stderr.read().decode()
    proc.stderr.close()
    if _stored(out) < total:  # the loop ended on a run that finished: nothing to add
        pytest.fail("finished with points missing")
    assert kills_mid_run >= 1
    with (out / "results.csv").open() as fh:
        rows = list(csv.DictReader(fh))
    keys = [r["key"] for r in rows]
    assert len(keys) == total == len(set(keys))
    grid = {(str(r), str(c), str(k), d) for r, c, k, d in itertools.product(ROWS, COLS, CLOCKS, ["os", "ws", "is"])}
    assert {(r["gemm.rows"], r["gemm.cols"], r["clock_mhz"], r["gemm.dataflow"]) for r in rows} == grid
    # Each point was committed exactly once: completion numbers are 1..N with no gap or repeat.
    with sqlite3.connect(out / "study.db") as db:
        seqs = sorted(s for (s,) in db.execute("select seq from sweep_points"))
    assert seqs == list(range(1, total + 1))
