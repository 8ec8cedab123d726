"""codesign.sweep.files: a sweep's output folder is written atomically, never through a symlink; a run that fails
leaves nothing that refuses the next one; OS errors (read-only folder, full disk) are one line naming the path."""

from __future__ import annotations

import errno
import json
import os
import resource
import subprocess
import sys
from pathlib import Path

import pytest

from codesign.cli import main
from codesign.sweep.files import check_out_dir, strict_json, write_atomic
from hw.errors import InputError

ROOT = Path(__file__).resolve().parents[1]
TINY = ROOT / "examples" / "models" / "vit_tiny.onnx"
SPEC = f"""\
models: [{TINY}]
target: fpga-zcu102
space:
  gemm.rows: [8, 32]
  gemm.cols: [8, 32]
objectives: {{latency_ms: min, energy_mj: min}}
"""
OUTPUTS = ("results.csv", "pareto.csv", "pareto.png", "report.html")


def _sweep(tmp_path: Path, capsys, *extra: str, spec: str = SPEC, out: str = "out") -> tuple[int, str]:
    """Run ``codesign sweep`` in this process; (exit status, stderr)."""
    (tmp_path / "sweep.yaml").write_text(spec)
    status = main(["sweep", str(tmp_path / "sweep.yaml"), "--out", str(tmp_path / out), "--workers", "0", "-q",
                   *extra])
    return status, capsys.readouterr().err


def _one_line(err: str) -> str:
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("codesign: error: "), err
    return lines[0].removeprefix("codesign: error: ")


def _files(folder: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in folder.iterdir() if p.is_file() and not p.is_symlink()}


# --- write_atomic and strict_json ---------------------------------------------------------------------------------


def test_write_atomic_replaces_and_keeps_the_mode(tmp_path):
    path = tmp_path / "a.csv"
    write_atomic(path, "one\n")
    os.chmod(path, 0o640)
    write_atomic(path, b"two\n")
    assert path.read_text() == "two\n" and (path.stat().st_mode & 0o777) == 0o640
    assert [p.name for p in tmp_path.iterdir()] == ["a.csv"]  # no temporary file left


def test_write_atomic_refuses_a_symlink_and_leaves_its_target_alone(tmp_path):
    victim = tmp_path / "victim.txt"
    victim.write_text("precious")
    (tmp_path / "out").mkdir()
    link = tmp_path / "out" / "results.csv"
    link.symlink_to(victim)
    with pytest.raises(InputError) as info:
        write_atomic(link, "overwritten")
    assert str(info.value).startswith(f"{link}: is a symlink;")
    assert victim.read_text() == "precious" and link.is_symlink()


def test_full_disk_is_one_line_naming_the_file_and_keeps_the_old_one(tmp_path, monkeypatch):
    path = tmp_path / "report.html"
    path.write_text("old")

    def full(fd: int) -> None:
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(os, "fsync", full)
    with pytest.raises(InputError) as info:
        write_atomic(path, "new")
    assert str(info.value) == f"{path}: cannot write: No space left on device"
    assert path.read_text() == "old" and [p.name for p in tmp_path.iterdir()] == ["report.html"]


def test_strict_json_writes_no_nan():
    text = strict_json({"a": float("nan"), "b": [1.5, float("inf")], "c": {"d": -float("inf")}})
    assert text == '{"a": null, "b": [1.5, null], "c": {"d": null}}'
    assert json.loads(text, parse_constant=lambda c: pytest.fail(f"non-standard JSON constant {c}"))


def test_a_folder_left_with_only_a_lock_and_temporary_files_counts_as_empty(tmp_path):
    (tmp_path / ".lock").touch()
    (tmp_path / ".sweep.json.k3j2x.tmp").write_text("{")
    assert check_out_dir(tmp_path, "0" * 16) is False
    (tmp_path / "notes.txt").touch()
    with pytest.raises(InputError, match="folder is not empty and holds no sweep"):
        check_out_dir(tmp_path, "0" * 16)


# --- Through `codesign sweep` -------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", [".lock", "results.csv", "report.html", "study.db", "sweep.json"])
def test_resume_refuses_a_planted_symlink_and_writes_nothing_through_it(tmp_path, capsys, name):
    status, _ = _sweep(tmp_path, capsys)
    assert status == 0
    out = tmp_path / "out"
    victim = tmp_path / "victim"
    victim.write_bytes(b"precious")
    (out / name).unlink()
    (out / name).symlink_to(victim)
    before = _files(out)
    status, err = _sweep(tmp_path, capsys)
    assert status == 2 and _one_line(err).startswith(f"{out / name}: is a symlink;")
    assert victim.read_bytes() == b"precious" and (out / name).is_symlink() and _files(out) == before


def test_a_bad_storage_url_leaves_nothing_and_the_next_run_works(tmp_path, capsys):
    status, err = _sweep(tmp_path, capsys, "--storage", "nosuchdb://host/db")
    assert status == 2 and _one_line(err).startswith("--storage nosuchdb://host/db: ")
    assert not (tmp_path / "out").exists()
    missing = tmp_path / "no" / "such" / "dir" / "s.db"
    status, err = _sweep(tmp_path, capsys, "--storage", f"sqlite:///{missing}")
    assert status == 2 and _one_line(err).startswith(f"--storage sqlite:///{missing}: ")
    assert not (tmp_path / "out").exists()
    (tmp_path / "out").mkdir()  # an empty folder given by the user stays, empty
    status, err = _sweep(tmp_path, capsys, "--storage", "nosuchdb://host/db")
    assert status == 2 and list((tmp_path / "out").iterdir()) == []
    status, _ = _sweep(tmp_path, capsys)
    assert status == 0 and {*OUTPUTS, "study.db", "sweep.json"} <= {p.name for p in (tmp_path / "out").iterdir()}


def test_a_read_only_output_folder_is_one_line_naming_it(tmp_path, capsys, monkeypatch):
    if os.geteuid() == 0:  # root writes anywhere: make the folder refuse the way a read-only one does
        from codesign.sweep import files

        def refuse(path: Path, *args, **kwargs):
            raise PermissionError(errno.EACCES, os.strerror(errno.EACCES), str(path))

        monkeypatch.setattr(files.os, "open", refuse)
    (tmp_path / "ro").mkdir()
    os.chmod(tmp_path / "ro", 0o555)
    try:
        status, err = _sweep(tmp_path, capsys, out="ro")
    finally:
        os.chmod(tmp_path / "ro", 0o755)
    assert status == 2 and _one_line(err) == f"{tmp_path / 'ro' / '.lock'}: cannot create the lock file: " \
                                             "Permission denied"
    assert list((tmp_path / "ro").iterdir()) == []


def _sweep_with_file_size_limit(tmp_path: Path, limit_bytes: int) -> subprocess.CompletedProcess:
    """``codesign sweep`` in a child process that may write no file beyond ``limit_bytes``: every larger write fails
    for real (EFBIG), the way writes fail on a full disk."""
    def limit() -> None:
        resource.setrlimit(resource.RLIMIT_FSIZE, (limit_bytes, limit_bytes))

    return subprocess.run([sys.executable, "-m", "codesign", "sweep", str(tmp_path / "sweep.yaml"), "--out",
                           str(tmp_path / "out"), "--workers", "0", "-q"], cwd=ROOT, capture_output=True, text=True,
                          preexec_fn=limit, check=False)


@pytest.mark.slow
def test_an_output_too_large_to_write_is_one_line_and_leaves_the_old_file(tmp_path, capsys):
    status, _ = _sweep(tmp_path, capsys)
    assert status == 0
    out = tmp_path / "out"
    before = _files(out)
    assert len(before["report.html"]) > 64 * 1024 > len(before["study.db"])
    done = _sweep_with_file_size_limit(tmp_path, 64 * 1024)  # the store fits, the report does not
    assert done.returncode == 2 and _one_line(done.stderr) == f"{out / 'report.html'}: cannot write: File too large"
    assert _files(out)["report.html"] == before["report.html"]
    assert not [p.name for p in out.iterdir() if p.name.endswith(".tmp")]


@pytest.mark.slow
def test_a_store_that_cannot_grow_stops_the_run_with_one_line_and_the_run_resumes(tmp_path, capsys):
    (tmp_path / "sweep.yaml").write_text(SPEC.replace("[8, 32]", "[4, 8, 16, 32, 64, 128]"))
    done = _sweep_with_file_size_limit(tmp_path, 64 * 1024)
    out = tmp_path / "out"
    assert done.returncode == 2
    assert _one_line(done.stderr).startswith(f"{out / 'study.db'}: cannot store points: "), done.stderr
    status = main(["sweep", str(tmp_path / "sweep.yaml"), "--out", str(out), "--workers", "0", "-q"])
    assert status == 0
    assert len((out / "results.csv").read_text().splitlines()) == 1 + 36


def test_abandon_removes_what_the_run_made_and_nothing_else(tmp_path):
    from codesign.sweep.files import LOCK, MARKER, OutFolder

    fresh = tmp_path / "fresh"
    folder = OutFolder(fresh, {"spec_hash": "abc"})
    assert (fresh / MARKER).is_file() and (fresh / LOCK).exists()
    folder.abandon()
    assert not fresh.exists()  # the run made the folder: it is gone again
    kept = tmp_path / "kept"
    kept.mkdir()
    (kept / LOCK).write_text("")  # left by an earlier run: not this run's to remove
    folder = OutFolder(kept, {"spec_hash": "abc"})
    folder.abandon()
    assert sorted(p.name for p in kept.iterdir()) == [LOCK]
