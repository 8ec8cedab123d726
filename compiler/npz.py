"""The one reader of user-given ``.npz`` archives (``--inputs``, ``--calibrate``, ``route-moe{inputs=...}``).

``np.load`` trusts the file: a pickled (object) array is unpickled when allowed and a ``ValueError`` deep in a pass
when not, a .npy or a truncated zip given as .npz surfaces as ``TypeError`` / ``BadZipFile``, and a 60-byte member
whose header declares a petabyte array is allocated before the data runs out. Here every member's .npy header is
read first (shape, dtype, order: no data), object dtypes are refused (no unpickling, ever), the declared bytes must
be present in the member and fit in memory (all members together), and only then are the arrays read. Every
failure is one ``InputError`` line naming the file and the member.
"""

from __future__ import annotations

import math
import os
import zipfile
import zlib
from pathlib import Path
from typing import Any

import numpy as np

from compiler.limits import check_memory, format_bytes, format_shape
from hw.errors import InputError, first_line

__all__ = ["read_npz", "sample_feeds"]

_NPY_MAGIC = b"\x93NUMPY"
#: Errors reading a member can raise: zip structure, CRC, deflate stream, .npy header and short data.
_READ_ERRORS = (ValueError, OSError, EOFError, zipfile.BadZipFile, zlib.error, NotImplementedError, RuntimeError,
                SyntaxError)


def _header(fh) -> tuple[tuple[int, ...], np.dtype]:
    """(shape, dtype) from a .npy stream's header, reading no data."""
    major, _ = np.lib.format.read_magic(fh)
    # Version 3 differs from 2 only in the header's text encoding (UTF-8 field names of structured dtypes).
    read = np.lib.format.read_array_header_1_0 if major == 1 else np.lib.format.read_array_header_2_0
    shape, _, dtype = read(fh)
    return tuple(int(d) for d in shape), np.dtype(dtype)


def read_npz(path: str | os.PathLike[str], where: str | None = None) -> dict[str, np.ndarray]:
    """The arrays of the .npz at ``path`` keyed by member name (``.npy`` dropped); ``where`` prefixes messages
    (default: the path), e.g. ``--inputs data.npz``."""
    p = Path(path)
    where = where or str(p)
    if not p.exists():
        raise InputError(f"{where}: no such file")
    if not p.is_file():
        raise InputError(f"{where}: not a regular file, expected an .npz archive")
    with open(p, "rb") as fh:
        start = fh.read(len(_NPY_MAGIC))
    if start == _NPY_MAGIC:
        raise InputError(f"{where}: is a single .npy array, not an .npz archive; save the arrays with "
                         "np.savez(path, input_name=array, ...)")
    try:
        archive = zipfile.ZipFile(p)
    except _READ_ERRORS as err:
        raise InputError(f"{where}: not an .npz archive ({first_line(err)})") from None
    with archive:
        members: list[tuple[str, zipfile.ZipInfo]] = []
        total = 0
        for info in archive.infolist():
            if info.is_dir():
                continue
            name = info.filename
            if not name.endswith(".npy"):
                raise InputError(f"{where}: member '{name}' is not a .npy array")
            try:
                with archive.open(info) as fh:
                    shape, dtype = _header(fh)
            except _READ_ERRORS as err:
                raise InputError(f"{where}: member '{name}': not a valid .npy header ({first_line(err)})") from None
            if dtype.hasobject:
                raise InputError(f"{where}: member '{name}' holds Python objects (dtype {dtype}); loading it would "
                                 "unpickle code from the file, refused: save numeric arrays")
            if any(d < 0 for d in shape):
                raise InputError(f"{where}: member '{name}' declares a negative dimension ({format_shape(shape)})")
            nbytes = math.prod(shape) * dtype.itemsize
            if nbytes > info.file_size:
                raise InputError(f"{where}: member '{name}' declares a {format_shape(shape)} {dtype} array "
                                 f"({format_bytes(nbytes)}) but holds only {info.file_size} bytes (truncated?)")
            total += nbytes
            members.append((name, info))
        check_memory(f"{where}: loading its arrays ({len(members)} members)", total)
        out: dict[str, np.ndarray] = {}
        for name, info in members:
            try:
                with archive.open(info) as fh:
                    out[name[:-len(".npy")]] = np.lib.format.read_array(fh, allow_pickle=False)
            except _READ_ERRORS as err:
                raise InputError(f"{where}: member '{name}': cannot read it ({first_line(err)})") from None
    return out


def sample_feeds(samples: dict[str, np.ndarray] | Any, i: int) -> dict[str, np.ndarray]:
    """Sample ``i`` of stacked ``--inputs`` arrays ([samples, *input shape] each), every value an array: indexing a
    scalar input's [samples] array gives a NumPy scalar, which onnxruntime refuses as a feed."""
    return {k: np.asarray(v[i]) for k, v in samples.items()}
