"""Safe output files: every file codesign writes for a user appears whole or not at all, and never through a link.

A file is written to a fresh temporary file beside its destination (``O_CREAT | O_EXCL | O_NOFOLLOW``, so the open
can neither follow a planted symlink nor reuse someone else's file), flushed to disk, then renamed over the
destination with ``os.replace``. A rename replaces a symlink at the destination instead of writing through it, so a
link planted in an output folder cannot redirect a write elsewhere; and a full disk or a killed process leaves the
previous file (or none), never half a report. Same folder because a rename is atomic only within one file system.

JSON is strict: a number that is not finite (NaN, inf) is written as ``null`` - a number in a report is computed,
or it is absent - and ``allow_nan=False`` makes any that slipped through an error instead of invalid JSON.

A device or pipe is written in place, as the user asked: a character device or FIFO named directly (``/dev/null``, a
named pipe), or a link in ``/dev``, ``/dev/fd`` or ``/proc/self/fd`` (``--json /dev/stdout``) - renaming a file over
``/dev/stdout`` would be wrong, and atomicity means nothing for a stream. A link anywhere else is replaced, not
followed.

Errors are ``OSError`` naming the destination path (not the temporary one), so the CLI can say which output failed.
"""

from __future__ import annotations

import json
import math
import os
import secrets
import stat
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import IO, Any

__all__ = ["atomic_output", "write_bytes_atomic", "write_text_atomic", "write_json_atomic", "json_text",
           "finite_json"]

_NOFOLLOW = getattr(os, "O_NOFOLLOW", 0)
_CLOEXEC = getattr(os, "O_CLOEXEC", 0)
_BINARY = getattr(os, "O_BINARY", 0)


def _renamed(err: OSError, path: Path) -> OSError:
    """``err`` with the destination as its filename (``OSError(errno, ...)`` keeps the subclass, e.g.
    PermissionError)."""
    if err.errno is None:
        return err
    return OSError(err.errno, err.strerror, str(path))


@contextmanager
def atomic_output(path: str | os.PathLike[str]) -> Iterator[IO[bytes]]:
    """A binary file handle whose contents replace ``path`` when the block ends without an exception.

    On an exception the temporary file is removed and ``path`` is untouched.
    """
    dest = Path(path)
    if _is_stream(dest):
        try:
            with open(dest, "wb") as stream:
                yield stream
        except OSError as err:
            raise _renamed(err, dest) from None
        return
    tmp = dest.with_name(f".{dest.name}.{secrets.token_hex(6)}.tmp")
    try:
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | _NOFOLLOW | _CLOEXEC | _BINARY, 0o666)
    except OSError as err:
        raise _renamed(err, dest) from None
    done = False
    try:
        kept = _kept_mode(dest)
        if kept is not None:  # a rewritten file keeps its permissions (a new one gets open()'s 0666 less umask)
            os.fchmod(fd, kept)
        with os.fdopen(fd, "wb") as fh:
            yield fh
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, dest)
        done = True
    except OSError as err:
        raise _renamed(err, dest) from None
    finally:
        if not done:
            try:
                os.unlink(tmp)
            except FileNotFoundError:
                pass


_STREAM_FOLDERS = ("/dev", "/dev/fd", "/proc/self/fd")


def _kept_mode(dest: Path) -> int | None:
    """The permission bits of an existing regular file at ``dest`` (None for none, or a link: it is replaced)."""
    try:
        st = os.lstat(dest)
    except OSError:
        return None
    return stat.S_IMODE(st.st_mode) if stat.S_ISREG(st.st_mode) else None


def _is_stream(dest: Path) -> bool:
    """True for a device or pipe the user named: a character device or FIFO itself, or a link in /dev, /dev/fd or
    /proc/self/fd (the standard streams, whatever they point to)."""
    try:
        mode = os.lstat(dest).st_mode
    except OSError:
        return False
    if stat.S_ISCHR(mode) or stat.S_ISFIFO(mode):
        return True
    return stat.S_ISLNK(mode) and os.path.dirname(os.path.abspath(dest)) in _STREAM_FOLDERS


def write_bytes_atomic(path: str | os.PathLike[str], data: bytes) -> Path:
    """Replace ``path`` with ``data`` atomically; returns the path."""
    with atomic_output(path) as fh:
        fh.write(data)
    return Path(path)


def write_text_atomic(path: str | os.PathLike[str], text: str) -> Path:
    """Replace ``path`` with ``text`` (UTF-8) atomically; returns the path."""
    return write_bytes_atomic(path, text.encode("utf-8"))


def finite_json(value: Any) -> Any:
    """``value`` with every non-finite float (NaN, inf; numpy's too) replaced by ``None``; containers copied."""
    if isinstance(value, float):  # numpy.float64 is a float
        return value if math.isfinite(value) else None
    if isinstance(value, Mapping):
        return {k: finite_json(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [finite_json(v) for v in value]
    try:
        import numpy as np
    except ModuleNotFoundError:  # pragma: no cover - numpy is a dependency
        return value
    if isinstance(value, np.floating):
        return float(value) if np.isfinite(value) else None
    if isinstance(value, np.integer):
        return int(value)
    return value


def json_text(value: Any, indent: int | None = None) -> str:
    """Strict JSON text of ``value``: non-finite numbers become ``null``; never NaN or Infinity."""
    return json.dumps(finite_json(value), indent=indent, allow_nan=False)


def write_json_atomic(path: str | os.PathLike[str], value: Any, indent: int | None = 2) -> Path:
    """Replace ``path`` with strict JSON of ``value`` (and a final newline) atomically; returns the path."""
    return write_text_atomic(path, json_text(value, indent) + "\n")
