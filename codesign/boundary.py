"""What the CLI's error boundary (``codesign.cli.main``) says about an exception that is not an ``InputError``.

Two kinds, told apart by where the exception comes from:

* the user's input or environment: an ``OSError`` (a read-only folder, a full disk, a path that is a folder), a
  ``MemoryError``, or an error raised by a library while reading what the user gave (onnx, protobuf, yaml, xDSL,
  onnxruntime, numpy, zipfile). One line naming the file, exit status 2 - the user can fix it.
* everything else is a bug in codesign: one line saying so and where the full traceback was saved (under
  ``$XDG_CACHE_HOME/codesign``, else the temp folder), exit status 3 - so a bug never looks like bad input, and the
  user never sees a raw traceback.
"""

from __future__ import annotations

import os
import platform
import sys
import tempfile
import time
import traceback
from collections.abc import Sequence
from pathlib import Path

__all__ = ["describe_environment_error", "report_bug", "crash_dir", "one_line"]

#: Packages whose exceptions, reaching the boundary, come from reading the user's files.
_INPUT_LIBRARIES = ("onnx", "google.protobuf", "yaml", "xdsl", "onnxruntime", "numpy", "zipfile")

_MAX_MESSAGE = 300  # characters of an exception's text quoted on the one line


def one_line(err: BaseException) -> str:
    """The exception's text on one line: its first and last non-empty lines (xDSL puts the location first and the
    reason last), shortened to a few hundred characters; the type name when it has no text."""
    lines = [ln.strip() for ln in str(err).strip().splitlines() if ln.strip()]
    text = " ".join(lines[:1] + lines[-1:]) if len(lines) > 1 else (lines[0] if lines else type(err).__name__)
    return text if len(text) <= _MAX_MESSAGE else text[: _MAX_MESSAGE - 3] + "..."


def describe_environment_error(err: BaseException, culprit: str | None) -> str | None:
    """One line for an exception caused by the input or the environment, naming the file; None for a bug.

    ``culprit`` is the command's main input (model, .mlir file, sweep spec), named when the exception names no file.
    """
    if isinstance(err, OSError):
        names = [str(n) for n in (err.filename, err.filename2) if n is not None]
        where = " -> ".join(names) or culprit or "codesign"
        return f"{where}: {err.strerror or one_line(err)}"
    if isinstance(err, MemoryError):
        return f"{culprit or 'codesign'}: out of memory"
    if isinstance(err, UnicodeError):
        return f"{culprit or 'input'}: not valid text ({one_line(err)})"
    module = type(err).__module__ or ""
    if any(module == lib or module.startswith(lib + ".") for lib in _INPUT_LIBRARIES):
        return f"{culprit or 'input'}: {one_line(err)}"
    return None


def crash_dir() -> Path:
    """Where tracebacks of bugs are saved: ``$XDG_CACHE_HOME/codesign`` (default ``~/.cache/codesign``)."""
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "codesign"


def report_bug(err: BaseException, argv: Sequence[str]) -> str:
    """Save the full traceback of ``err`` and return the one line to print (without the ``codesign:`` prefix)."""
    text = (f"codesign {' '.join(argv)}\npython {sys.version.split()[0]} on {platform.platform()}\n"
            f"time {time.strftime('%Y-%m-%dT%H:%M:%S%z')}\n\n" + "".join(traceback.format_exception(err)))
    saved = _save(text)
    where = f"the full traceback is in {saved}" if saved else "the traceback could not be saved"
    return (f"internal error: {type(err).__name__}: {one_line(err)} - this is a bug in codesign, not in your input; "
            f"{where} (please include it in a bug report)")


def _save(text: str) -> str | None:
    """Write ``text`` to a new file in :func:`crash_dir` (else the temp folder); its path, or None if neither works."""
    from codesign._io import write_text_atomic

    name = f"crash-{time.strftime('%Y%m%d-%H%M%S')}-{os.getpid()}.txt"
    try:
        folder = crash_dir()
        folder.mkdir(parents=True, exist_ok=True, mode=0o700)
        return str(write_text_atomic(folder / name, text))
    except OSError:
        pass
    try:
        fd, path = tempfile.mkstemp(prefix="codesign-crash-", suffix=".txt")
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            fh.write(text)
        return path
    except OSError:
        return None
