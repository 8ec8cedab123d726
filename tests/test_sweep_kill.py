"""A sweep SIGKILLed after its k-th stored point (several k) and restarted ends with exactly the grid's points, each
stored once; no process of a killed run (fork server, workers, resource tracker) outlives it.

Kill points are chosen by state, never by time: the test takes SQLite's write lock, counts the stored points, and
kills while still holding the lock, so no point can be committed between the count and the kill. Every wait below
waits for a state (points stored, processes gone); the suite's pytest-timeout is the only limit.
"""

from __future__ import annotations

import csv
import itertools
import os
import signal
import sqlite3
import subprocess
import sys
import time
from contextlib import closing
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
TINY = ROOT / "examples" / "models" / "vit_tiny.onnx"
pytestmark = [pytest.mark.slow]

ROWS, COLS, CLOCKS = [4, 8, 16, 32, 64, 128], [4, 8, 16, 32, 64, 128], [150, 200, 250, 300, 350]
TOTAL = len(ROWS) * len(COLS) * len(CLOCKS) * 3
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
# (kill after this many stored points, kill the whole process group or only the sweep process). Killing only the
# sweep is the hard case: its workers and fork server must notice on their own.
KILLS = [(TOTAL // 6, False), (TOTAL // 3, True), (TOTAL // 2, False)]
_PAUSE_S = 0.02  # between two looks at the store: lets the sweep work; never a limit


def _alive_in_session(sid: int) -> list[str]:
    """Command lines of the live (not zombie) processes of session ``sid``: the sweep and everything it started."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            fields = (entry / "stat").read_bytes().rsplit(b")", 1)[1].split()
            cmdline = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
        except OSError:  # exited while we looked
            continue
        if int(fields[3]) == sid and fields[0] != b"Z":
            found.append(f"{entry.name}: {cmdline[:120]}")
    return found


def _wait_until_gone(sid: int) -> None:
    while _alive_in_session(sid):
        time.sleep(_PAUSE_S)


def _kill_after(proc: subprocess.Popen, db: Path, k: int, whole_group: bool) -> int:
    """Wait until ``k`` points are stored, then SIGKILL the sweep (or its whole group); returns how many points
    were stored at the kill. The count and the kill happen under SQLite's write lock: nothing commits in between."""
    while True:
        if proc.poll() is not None:
            pytest.fail(f"the sweep exited ({proc.returncode}) before {k} points were stored: "
                        f"{proc.stderr.read().decode()}")
        if db.exists():
            with closing(sqlite3.connect(f"file:{db}?mode=rw", uri=True, timeout=600, isolation_level=None)) as conn:
                conn.execute("BEGIN IMMEDIATE")
                try:
                    stored = conn.execute("select count(*) from sweep_points where status='done'").fetchone()[0]
                except sqlite3.OperationalError:  # the tables are not there yet
                    stored = 0
                if stored >= k:
                    assert len(_alive_in_session(proc.pid)) >= 4, "sweep, fork server, workers, resource tracker"
                    (os.killpg if whole_group else os.kill)(proc.pid, signal.SIGKILL)
                    proc.wait()
                    conn.execute("ROLLBACK")
                    return stored
                conn.execute("ROLLBACK")
        time.sleep(_PAUSE_S)


def test_sigkill_after_kth_point_and_restart_loses_and_repeats_nothing(tmp_path):
    spec = tmp_path / "sweep.yaml"
    spec.write_text(SPEC)
    out = tmp_path / "out"
    command = [sys.executable, "-m", "codesign", "sweep", str(spec), "--out", str(out), "--workers", "2", "-q"]
    at_kill = []
    for k, whole_group in KILLS:
        proc = subprocess.Popen(command, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                                start_new_session=True)
        with proc:
            at_kill.append(_kill_after(proc, out / "study.db", k, whole_group))
        _wait_until_gone(proc.pid)  # returns only once the workers, fork server and resource tracker are gone
    assert all(k <= n < TOTAL for (k, _), n in zip(KILLS, at_kill, strict=True)), at_kill
    proc = subprocess.Popen(command, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                            start_new_session=True)
    with proc:
        _, err = proc.communicate()
    assert proc.returncode == 0, err.decode()
    _wait_until_gone(proc.pid)

    with (out / "results.csv").open() as fh:
        rows = list(csv.DictReader(fh))
    keys = [r["key"] for r in rows]
    assert len(keys) == TOTAL == len(set(keys))
    grid = {(str(r), str(c), str(k), d) for r, c, k, d in itertools.product(ROWS, COLS, CLOCKS, ["os", "ws", "is"])}
    assert {(r["gemm.rows"], r["gemm.cols"], r["clock_mhz"], r["gemm.dataflow"]) for r in rows} == grid
    # Each point was committed exactly once: completion numbers are 1..N with no gap or repeat.
    with closing(sqlite3.connect(out / "study.db")) as db:
        seqs = sorted(s for (s,) in db.execute("select seq from sweep_points"))
    assert seqs == list(range(1, TOTAL + 1))
