"""codesign._io: outputs appear whole or not at all, never through a planted symlink, and JSON is strict."""

from __future__ import annotations

import errno
import json
import math
import os
from pathlib import Path

import numpy as np
import pytest

import codesign._io as io_mod
from codesign._io import atomic_output, finite_json, json_text, write_json_atomic, write_text_atomic


def _leftovers(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir() if p.name.endswith(".tmp"))


def test_writes_and_replaces_whole_files(tmp_path):
    path = tmp_path / "r.json"
    write_text_atomic(path, "first")
    write_text_atomic(path, "second")
    assert path.read_text() == "second"
    assert _leftovers(tmp_path) == []


def test_a_symlink_at_the_destination_is_replaced_not_followed(tmp_path):
    victim = tmp_path / "victim.txt"
    victim.write_text("precious")
    out = tmp_path / "out"
    out.mkdir()
    (out / "r.json").symlink_to(victim)
    write_json_atomic(out / "r.json", {"a": 1})
    assert victim.read_text() == "precious"
    assert not (out / "r.json").is_symlink()
    assert json.loads((out / "r.json").read_text()) == {"a": 1}


def test_the_temporary_file_is_never_opened_through_a_link(tmp_path, monkeypatch):
    """A link planted where the temporary file goes makes the write fail (O_EXCL | O_NOFOLLOW), naming the output."""
    victim = tmp_path / "victim.txt"
    victim.write_text("precious")
    monkeypatch.setattr(io_mod.secrets, "token_hex", lambda n: "fixed")
    (tmp_path / ".r.json.fixed.tmp").symlink_to(victim)
    with pytest.raises(FileExistsError) as info:
        write_text_atomic(tmp_path / "r.json", "x")
    assert info.value.filename == str(tmp_path / "r.json")
    assert victim.read_text() == "precious" and not (tmp_path / "r.json").exists()


def test_a_failure_midway_keeps_the_previous_file_and_leaves_no_temporary(tmp_path):
    path = tmp_path / "out.npz"
    write_text_atomic(path, "old")
    with pytest.raises(RuntimeError), atomic_output(path) as fh:
        fh.write(b"half")
        raise RuntimeError("killed")
    assert path.read_text() == "old"
    assert _leftovers(tmp_path) == []


def test_a_full_disk_is_an_oserror_naming_the_output():
    # /dev/full is a character device: written in place (like /dev/stdout), and every write fails with ENOSPC.
    with pytest.raises(OSError) as info:
        write_text_atomic("/dev/full", "x" * 100_000)
    assert info.value.errno == errno.ENOSPC and info.value.filename == "/dev/full"


def test_a_read_only_folder_is_a_permission_error_naming_the_output(tmp_path, monkeypatch):
    folder = tmp_path / "ro"
    folder.mkdir()
    real_open = os.open

    def refusing(path, flags, mode=0o777, **kw):  # what a read-only folder does, also for root
        if Path(path).parent == folder and flags & os.O_CREAT:
            raise PermissionError(errno.EACCES, "Permission denied", str(path))
        return real_open(path, flags, mode, **kw)

    monkeypatch.setattr(os, "open", refusing)
    with pytest.raises(PermissionError) as info:
        write_text_atomic(folder / "r.json", "x")
    assert info.value.filename == str(folder / "r.json")


def test_npz_through_atomic_output_round_trips(tmp_path):
    path = tmp_path / "o.npz"
    with atomic_output(path) as fh:
        np.savez(fh, y=np.arange(6).reshape(2, 3))
    with np.load(path) as data:
        assert data["y"].tolist() == [[0, 1, 2], [3, 4, 5]]


def test_json_is_strict_non_finite_numbers_become_null():
    value = {"a": math.nan, "b": [math.inf, -math.inf, 1.5], "c": np.float32("nan"), "d": np.float64(2.0),
             "e": np.int64(3), "f": (1, "x")}
    assert finite_json(value) == {"a": None, "b": [None, None, 1.5], "c": None, "d": 2.0, "e": 3, "f": [1, "x"]}
    text = json_text(value)
    assert "NaN" not in text and "Infinity" not in text
    assert json.loads(text)["b"] == [None, None, 1.5]


def test_devices_and_standard_streams_are_written_in_place_not_replaced():
    import stat

    write_text_atomic("/dev/null", "discarded")
    assert stat.S_ISCHR(os.lstat("/dev/null").st_mode)
    assert io_mod._is_stream(Path("/dev/stdout")) and io_mod._is_stream(Path("/dev/null"))
