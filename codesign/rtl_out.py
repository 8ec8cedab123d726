"""The output folder of ``codesign rtl``: created, empty, or one a previous run marked; written through a staging
folder so no half-written file is ever in it and a planted symlink is replaced rather than followed (codesign/
rtl_cli.py's docstring says why)."""

from __future__ import annotations

import json
import os
import shutil
import stat
import tempfile
from collections.abc import Callable
from pathlib import Path

from hw.errors import InputError

__all__ = ["write_staged"]

_STAGING = ".codesign-rtl-staging-"


def write_staged(out: str | Path, write: Callable[[Path], dict]) -> dict:
    """Call ``write(staging)`` on a private folder inside ``out`` (checked as :func:`write_into` says; ``write``
    leaves the ``.codesign-rtl`` marker and ``manifest.json`` there), then move its files into place. Returns the
    manifest ``write`` returned."""
    from hw.rtl.manifest import MARKER

    folder, created = _open_out(out)
    try:
        staging = Path(tempfile.mkdtemp(prefix=_STAGING, dir=folder))
    except OSError as err:
        raise InputError(f"--out {out}: cannot write into the folder: {err.strerror or err}") from None
    try:
        manifest = write(staging)
        _remove_previous(folder)
        names = [p.name for p in staging.iterdir()]
        for name in sorted(names, key=lambda n: (n != MARKER, n == "manifest.json", n)):
            os.replace(staging / name, folder / name)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        if created and not any(folder.iterdir()):
            folder.rmdir()
        raise
    staging.rmdir()
    return manifest


def _open_out(out: str | Path) -> tuple[Path, bool]:
    """The output folder (created if missing) and whether it was created; ``InputError`` unless it is new, empty or
    marked by a previous ``codesign rtl`` with a regular marker file. Leftover staging folders of a killed run go."""
    from hw.rtl.manifest import MARKER

    folder = Path(out)
    if folder.exists() and not folder.is_dir():
        raise InputError(f"--out {out}: is a file, not a folder")
    if not folder.exists():
        try:
            folder.mkdir(parents=True)
        except OSError as err:
            raise InputError(f"--out {out}: cannot create the folder: {err.strerror or err}") from None
        return folder, True
    entries = list(folder.iterdir())
    if entries:
        try:
            mode = os.lstat(folder / MARKER).st_mode
        except FileNotFoundError:
            raise InputError(f"--out {out}: folder is not empty and was not written by `codesign rtl` (no {MARKER} "
                             "marker); choose a new or empty folder") from None
        if not stat.S_ISREG(mode):
            what = "a symbolic link" if stat.S_ISLNK(mode) else "not a regular file"
            raise InputError(f"--out {out}: its {MARKER} marker is {what}, not the file `codesign rtl` writes; "
                             "refusing to write into this folder")
    for entry in entries:
        if entry.name.startswith(_STAGING) and stat.S_ISDIR(os.lstat(entry).st_mode):
            shutil.rmtree(entry, ignore_errors=True)
    return folder, False


def _remove_previous(folder: Path) -> None:
    """Remove the Verilog and config files the folder's previous manifest listed, so no stale kernel lingers. Only
    plain names with those suffixes, inside the folder; a link is removed, never followed."""
    old = folder / "manifest.json"
    try:
        if not stat.S_ISREG(os.lstat(old).st_mode):
            return
        previous = json.loads(old.read_text(encoding="utf-8"))
        listed = [k.get("verilog", "") for k in previous.get("kernels", [])] + [previous.get("config_file") or ""]
        listed += [str(name) for name in (previous.get("files") or {}).values()]  # a --system design's files
    except (OSError, ValueError, AttributeError, TypeError):  # missing, unreadable or not ours: nothing listed
        return
    for name in listed:
        stale = folder / Path(str(name)).name
        if name and stale.suffix in (".v", ".npz", ".bin", ".lst"):
            try:
                os.unlink(stale)
            except FileNotFoundError:
                pass


