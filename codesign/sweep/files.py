"""The output folder of a sweep: checked before anything is written, locked for a run, written atomically, never
through a symlink.

Why so careful: an output folder outlives runs and can be shared, so a file planted in it (a symlink named
``.lock`` or ``results.csv`` pointing elsewhere) must not make a sweep write outside ``--out``; and a sweep can be
killed at any instant, so a reader must never see half a file and a run that dies must not leave the folder in a
state that refuses the next one. Every file is written to a fresh temporary file in the same folder (created with
O_EXCL | O_NOFOLLOW by ``codesign._io``) and renamed into place; a destination that is a symlink is refused.
OS errors (read-only folder, full disk) become one-line ``InputError`` messages naming the path.
"""

from __future__ import annotations

import errno
import fcntl
import json
import os
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from pathlib import Path
from typing import Any

from codesign._io import finite_json, write_bytes_atomic
from hw.errors import InputError

__all__ = ["check_out_dir", "OutFolder", "write_atomic", "refuse_symlink", "strict_json", "os_errors",
           "MARKER", "LOCK", "DB_FILES"]

MARKER = "sweep.json"  # which sweep the folder holds (spec hash)
LOCK = ".lock"  # flock()ed by the running sweep; its presence alone means nothing
DB_FILES = ("study.db", "study.db-wal", "study.db-shm", "study.db-journal")  # SQLite's own files
_TMP_SUFFIX = ".tmp"  # temporary files are ".<name>.<random>.tmp"


def refuse_symlink(path: Path) -> None:
    """Raise ``InputError`` when ``path`` is a symlink (dangling or not)."""
    if path.is_symlink():
        raise InputError(f"{path}: is a symlink; a sweep never reads or writes through one in its output folder "
                         "(remove it or use another --out)")


@contextmanager
def os_errors(path: Path, doing: str = "cannot write") -> Iterator[None]:
    """Turn an ``OSError`` inside the block into a one-line ``InputError`` naming ``path``."""
    try:
        yield
    except OSError as err:
        reason = err.strerror or str(err)
        raise InputError(f"{path}: {doing}: {reason}") from None


def write_atomic(path: Path, data: str | bytes) -> None:
    """Write ``data`` to ``path`` atomically (``codesign._io``: a temporary file in the same folder, then a rename).

    A symlink at ``path`` is refused (``InputError``): a sweep never writes through one in its output folder. An
    ``OSError`` (read-only folder, full disk) becomes an ``InputError`` naming ``path``, which stays untouched."""
    refuse_symlink(path)
    with os_errors(path):
        write_bytes_atomic(path, data.encode() if isinstance(data, str) else data)


def strict_json(value: Any, **kwargs: Any) -> str:
    """``json.dumps`` that always writes standard JSON: non-finite floats (NaN, inf) become null, which the reports
    already treat as "not reported" (``metrics.py`` and ``search.objective_values`` skip non-finite values)."""
    return json.dumps(finite_json(value), allow_nan=False, **kwargs)


def check_out_dir(out: Path, spec_hash: str) -> bool:
    """Check, without writing, that ``out`` may take the sweep ``spec_hash``; True when it already holds it.

    A folder holding only a lock file and temporary files (left by a run killed before it registered its sweep)
    counts as empty."""
    if out.exists() and not out.is_dir():
        raise InputError(f"--out {out}: is a file, not a folder")
    marker = out / MARKER
    if marker.exists() or marker.is_symlink():
        refuse_symlink(marker)
        try:
            held = json.loads(marker.read_text())
        except (OSError, ValueError):
            raise InputError(f"--out {out}: {MARKER} is unreadable; use another folder") from None
        if not isinstance(held, dict) or held.get("spec_hash") != spec_hash:
            held = held if isinstance(held, dict) else {}
            raise InputError(f"--out {out}: holds another sweep ({held.get('source', '?')}, spec hash "
                             f"{held.get('spec_hash')}; this one is {spec_hash}); use another --out")
        return True
    if out.exists():
        with os_errors(out, "cannot read the folder"):
            names = [p.name for p in out.iterdir()]
        if any(not _leftover(name) for name in names):
            raise InputError(f"--out {out}: folder is not empty and holds no sweep; use a new or empty folder")
    return False


def _leftover(name: str) -> bool:
    return name == LOCK or (name.startswith(".") and name.endswith(_TMP_SUFFIX))


class OutFolder:
    """The output folder, held by this run: created if needed, locked, and (for a new sweep) registered.

    ``abandon()`` undoes a run that failed before any point was stored: it removes what this run created (its
    lock file, the sweep marker, the SQLite files and the folder itself when this run made it), so the next run
    into the folder starts as if this one had never happened."""

    def __init__(self, out: Path, marker: dict[str, Any] | None) -> None:
        """Create and lock ``out``; with ``marker`` (a new sweep) write ``sweep.json``. Raises ``InputError``."""
        self.out = out
        self.made_dir = not out.exists()
        self.made: list[Path] = []
        self.fd: int | None = None
        try:
            with os_errors(out, "cannot create the output folder"):
                out.mkdir(parents=True, exist_ok=True)
            self._lock()
            for name in DB_FILES:
                refuse_symlink(out / name)  # SQLite would follow it
            if marker is not None:
                self.made += [out / n for n in (MARKER, *DB_FILES)]
                write_atomic(out / MARKER, strict_json(marker, indent=2) + "\n")
        except BaseException:
            self.abandon()
            raise

    def _lock(self) -> None:
        path = self.out / LOCK
        existed = path.exists() or path.is_symlink()
        flags = os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC | os.O_NONBLOCK  # never truncate, never follow
        try:
            self.fd = os.open(path, flags, 0o644)
        except OSError as err:
            if err.errno == errno.ELOOP:
                refuse_symlink(path)
            raise InputError(f"{path}: cannot create the lock file: {err.strerror}") from None
        if not existed:
            self.made.append(path)
        try:
            fcntl.flock(self.fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            os.close(self.fd)
            self.fd = None
            raise InputError(f"--out {self.out}: another sweep is running in this folder") from None

    def release(self) -> None:
        """Unlock (the lock file stays: removing it would let two runs lock different files)."""
        if self.fd is not None:
            os.close(self.fd)  # closing drops the flock
            self.fd = None

    def abandon(self) -> None:
        """Release the lock and remove what this run created (see the class doc)."""
        for path in self.made:
            with suppress(FileNotFoundError):
                path.unlink()  # a symlink is removed, never followed
        self.made = []
        self.release()
        if self.made_dir:
            try:
                self.out.rmdir()  # only when empty: never takes anything that is not ours
            except OSError:
                pass
