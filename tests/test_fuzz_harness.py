"""The fuzz oracle itself (tests/fuzz/harness.py): it must see each kind of broken promise in a finished run."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from tests.fuzz.harness import _changes, _snapshot, judge
from tests.fuzz_inputs import Case, write_files

pytestmark = pytest.mark.fuzz

CASE = Case("unit", ("compile", "in/model.onnx"), "unit", lambda: {"in/model.onnx": b"x", "in/l": "->../sentinel.txt"})
TB = ('Traceback (most recent call last):\n  File "/r/codesign/cli.py", line 9, in main\n'
      '  File "/v/site-packages/onnx/numpy_helper.py", line 3, in to_array\nValueError: cannot reshape\n')


def kinds(answer: dict, stderr: str = "") -> list[str]:
    return [f.kind for f in judge(CASE, {"rss_before_kb": 0, "peak_rss_kb": 0, **answer}, "", stderr)]


def test_a_clean_exit_and_a_one_line_refusal_pass() -> None:
    assert kinds({"rc": 0}, "some warning\n") == []
    assert kinds({"rc": 2}, "codesign: error: in/model.onnx: not ONNX\n") == []


def test_refusals_must_be_one_line_with_the_prefix() -> None:
    assert kinds({"rc": 2}, "codesign: error: a\nsecond line\n") == ["stderr"]
    assert kinds({"rc": 2}, "error: a\n") == ["stderr"]
    assert kinds({"rc": 2}, "") == ["stderr"]


def test_escapes_and_other_exit_codes_fail_grouped_by_where_they_were_raised(tmp_path: Path) -> None:
    [escape] = judge(CASE, {"rc": None, "exc": TB, "exc_type": "ValueError", "memory": False}, "", "")
    assert escape.kind == "traceback" and escape.signature == "ValueError at codesign/cli.py:main " \
        "(raised in numpy_helper.py:to_array)"
    written = tmp_path / "crash.txt"
    written.write_text(TB)
    [bug] = judge(CASE, {"rc": 3}, "", f"codesign: internal error (a bug); traceback in {written}\n")
    assert bug.kind == "traceback" and "codesign/cli.py:main" in bug.signature
    assert kinds({"rc": 1}, "codesign: error: x\n") == ["exit-code"]
    assert kinds({"rc": 0}, TB) == ["traceback"]


def test_memory_hangs_crashes_and_orphans_fail() -> None:
    assert kinds({"rc": None, "exc": TB, "exc_type": "MemoryError", "memory": True}) == ["memory"]
    assert kinds({"rc": 0, "memory": False, "peak_rss_kb": 10 * 2**20}) == ["memory"]
    assert kinds({"rc": None, "died": "hang (signal 9)"}) == ["hang"]
    assert kinds({"rc": None, "died": "crash (signal 11)"}) == ["crash"]
    assert kinds({"rc": 0, "children": ["123 python -c x"]}) == ["orphan"]


def test_writes_outside_the_outputs_are_seen_through_planted_links(tmp_path: Path) -> None:
    write_files(CASE, tmp_path)
    before = _snapshot(tmp_path, CASE.outputs)
    (tmp_path / "out" / "r.json").write_text("{}")  # the requested output: allowed
    assert _changes(CASE, before, _snapshot(tmp_path, CASE.outputs)) == []
    (tmp_path / "in" / "l").write_text("through the link")  # lands in sentinel.txt
    [wrote] = _changes(CASE, before, _snapshot(tmp_path, CASE.outputs))
    assert wrote.kind == "write-outside" and "sentinel.txt" in wrote.detail
    (tmp_path / "stray.db").write_text("")
    assert "stray.db" in _changes(CASE, before, _snapshot(tmp_path, CASE.outputs))[0].detail


def test_a_case_is_hung_by_the_cpu_it_used_not_by_the_wall_clock() -> None:
    """A worker past its first deadline that has used little CPU (a busy machine) gets the CPU seconds it has left;
    one that used its whole bound, or waited HANG_WALL_FACTOR bounds without using it (blocked), is hung."""
    from types import SimpleNamespace

    from tests.fuzz.harness import CASE_TIMEOUT, HANG_WALL_FACTOR, WorkerPool, _cpu_seconds

    me = _cpu_seconds(os.getpid())
    assert me is not None and me > 0
    worker = SimpleNamespace(proc=SimpleNamespace(pid=os.getpid()))
    slow = WorkerPool._cpu_left(worker, 0.0, me, CASE_TIMEOUT)  # type: ignore[arg-type]
    assert CASE_TIMEOUT - 1 <= slow <= CASE_TIMEOUT
    assert WorkerPool._cpu_left(worker, 0.0, me - CASE_TIMEOUT, CASE_TIMEOUT) == 0.0  # type: ignore[arg-type]
    blocked = WorkerPool._cpu_left(worker, 0.0, me, HANG_WALL_FACTOR * CASE_TIMEOUT)  # type: ignore[arg-type]
    assert blocked == 0.0
