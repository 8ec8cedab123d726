"""Calibration results kept in process, keyed by content, so a second int8 compile of a model skips its float runs.

Calibration (compiler/calibrate.py) runs the float model through the functional simulator once per sample: on
ViT-Base about 2 s of the int8 compile's 4-5 s. What it produces depends only on what this module hashes into the
key, so a repeated compile (a benchmark's warm run, a sweep's design points, which change the target but not the
model) gets the same numbers back without simulating:

* the module being calibrated, printed in MLIR's generic form (its ops, attributes, shapes: everything before
  ``quantize`` - frontend, canonicalize, the numerics choices - shows up there);
* every weight in the store: name, dtype, shape and bytes;
* the input names and the calibration samples (name, dtype, shape and bytes: user data or the synthetic samples);
* the calibration options (statistic, observer, which values keep rows and how many);
* the code: the sources of the ``compiler`` package and the versions of Python, NumPy, torch and xDSL.

The key is SHA-256 over those (about 0.2 s of CPU for ViT-Base's 344 MB of weights, against about 2 s of
simulation). The cache follows the mapping search's (``compiler.schedule.mapping.search``, a ``functools``
LRU cache): it lives in the process, ``cache_clear()`` empties it and ``cache_info()`` counts it. Entries are
bounded by bytes (:data:`MAX_BYTES`, least recently used first out): an entry keeps the GEMM / GELU input rows
that the recipes fit on (ViT-Base int8 I-ViT: about 77 MB).

Values are stored by their position in the module (:func:`value_order`), not as ``SSAValue`` objects, since each
compile builds its own module. Stored arrays are private read-only copies and every lookup hands out fresh dicts
and writable copies, so a caller that edits what it got (the quantizer adds entries) never changes the cache.
"""

from __future__ import annotations

import hashlib
import json
import platform
import sys
import threading
from collections import OrderedDict
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from functools import cache
from io import StringIO
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np
from xdsl.dialects.builtin import ModuleOp
from xdsl.ir import SSAValue
from xdsl.printer import Printer

__all__ = ["MAX_BYTES", "CacheInfo", "Calibration", "CalibrationCache", "CALIBRATIONS", "calibration_key",
           "code_version", "value_order"]

#: At most this many bytes of arrays (ranges' channel maxima and kept rows) stay cached, all entries together: a few
#: models' worth (ViT-Base int8 I-ViT about 77 MB; SmoothQuant or GPTQ keep every GEMM input's rows, more).
MAX_BYTES = 512 << 20

#: Bump when what an entry holds, or how the key is made, changes.
_FORMAT = b"codesign-calibration-1"


@dataclass
class Calibration:
    """What calibration found for one module, by value.

    ``ranges``: max|x| (or the chosen statistic, a real magnitude) per float value; ``ranges8``: the int8
    observer's range per value (empty with the ``minmax`` observer); ``channels``: max|x| per channel (last axis,
    float64); ``rows``: per value that keeps them, each sample's rows (float32, already thinned to what the fits
    use).
    """

    ranges: dict[SSAValue, float]
    ranges8: dict[SSAValue, float]
    channels: dict[SSAValue, np.ndarray]
    rows: dict[SSAValue, list[np.ndarray]]


class CacheInfo(NamedTuple):
    """Counts since the last ``cache_clear``, like ``functools``' (``bytes``: the arrays held now)."""

    hits: int
    misses: int
    currsize: int
    bytes: int


@dataclass(frozen=True)
class _Entry:
    """A :class:`Calibration` by value position (see :func:`value_order`), arrays read-only."""

    ranges: tuple[tuple[int, float], ...]  # (value position, the number as calibration returned it)
    ranges8: tuple[tuple[int, float], ...]
    channels: tuple[tuple[int, np.ndarray], ...]
    rows: tuple[tuple[int, tuple[np.ndarray, ...]], ...]
    nbytes: int


def value_order(module: ModuleOp) -> list[SSAValue]:
    """Every SSA value of ``module`` in a fixed order (each block's arguments, then each op's results, in walk
    order): equal modules number their values alike."""
    out: list[SSAValue] = []
    for op in module.walk():
        for region in op.regions:
            for block in region.blocks:
                out.extend(block.args)
        out.extend(op.results)
    return out


@cache
def code_version() -> str:
    """SHA-256 of the ``compiler`` package's sources and the versions its numbers depend on (computed once per
    process: sources edited in a running process are not seen, as with any imported module)."""
    import torch
    import xdsl

    h = hashlib.sha256()
    root = Path(__file__).resolve().parent
    for path in sorted(root.rglob("*.py")):
        h.update(str(path.relative_to(root)).encode() + b"\0" + path.read_bytes() + b"\0")
    versions = (sys.version, platform.machine(), np.__version__, torch.__version__,
                getattr(xdsl, "__version__", "?"))
    h.update(repr(versions).encode())
    return h.hexdigest()


def _hash_arrays(h: Any, arrays: Iterable[tuple[str, np.ndarray]]) -> bool:
    """Feed name, dtype, shape and bytes of each array to ``h``; False for one whose bytes mean nothing (objects)."""
    for name, value in arrays:
        a = np.asarray(value)
        if a.dtype.hasobject:
            return False
        h.update(f"{name}\0{a.dtype.str}\0{a.shape}\0".encode())
        h.update(np.ascontiguousarray(a).reshape(-1).view(np.uint8))
    return True


def calibration_key(module: ModuleOp, weights: Mapping[str, np.ndarray], names: list[str],
                    samples: Mapping[str, np.ndarray], options: Mapping[str, Any]) -> str | None:
    """The cache key (hex SHA-256, module docstring) of calibrating ``module`` with ``weights`` on ``samples``
    (inputs ``names``) under ``options`` (JSON-able), or None when something cannot be hashed by content."""
    h = hashlib.sha256(_FORMAT)
    h.update(code_version().encode())
    text = StringIO()
    Printer(stream=text, print_generic_format=True).print_op(module)
    h.update(text.getvalue().encode())
    h.update(json.dumps({"names": list(names), "options": dict(options)}, sort_keys=True).encode())
    if not _hash_arrays(h, ((f"w:{k}", weights[k]) for k in sorted(weights))):
        return None
    if not _hash_arrays(h, ((f"x:{k}", samples[k]) for k in sorted(samples))):
        return None
    return h.hexdigest()


def _frozen(a: np.ndarray) -> np.ndarray:
    """A read-only copy of ``a`` (what the cache keeps)."""
    out = np.array(a, copy=True)
    out.setflags(write=False)
    return out


class CalibrationCache:
    """Calibrations by key (:func:`calibration_key`), least recently used dropped beyond ``max_bytes``; safe to
    share between threads (a sweep's workers may compile in threads)."""

    def __init__(self, max_bytes: int = MAX_BYTES):
        self.max_bytes = max_bytes
        self._entries: OrderedDict[str, _Entry] = OrderedDict()
        self._hits = self._misses = 0
        self._lock = threading.Lock()

    def get(self, key: str, module: ModuleOp) -> Calibration | None:
        """The calibration stored under ``key`` with its values mapped onto ``module``'s (fresh dicts, writable
        copies), or None (a miss)."""
        values = value_order(module)
        with self._lock:
            entry = self._entries.get(key)
            if entry is None or any(i >= len(values) for table in (entry.ranges, entry.ranges8, entry.channels,
                                                                    entry.rows) for i, _ in table):
                self._misses += 1
                return None
            self._entries.move_to_end(key)
            self._hits += 1
        return Calibration(ranges={values[i]: m for i, m in entry.ranges},
                           ranges8={values[i]: m for i, m in entry.ranges8},
                           channels={values[i]: a.copy() for i, a in entry.channels},
                           rows={values[i]: [r.copy() for r in rs] for i, rs in entry.rows})

    def put(self, key: str, module: ModuleOp, found: Calibration) -> bool:
        """Store ``found`` (values of ``module``) under ``key``; False, storing nothing, when it names a value that
        is not ``module``'s or holds more than ``max_bytes``."""
        index = {v: i for i, v in enumerate(value_order(module))}
        tables = (found.ranges, found.ranges8, found.channels, found.rows)
        if any(v not in index for table in tables for v in table):
            return False
        channels = tuple((index[v], _frozen(a)) for v, a in found.channels.items())
        rows = tuple((index[v], tuple(_frozen(r) for r in rs)) for v, rs in found.rows.items())
        nbytes = sum(a.nbytes for _, a in channels) + sum(r.nbytes for _, rs in rows for r in rs)
        if nbytes > self.max_bytes:
            return False
        # the numbers as they came (a Python float or a NumPy scalar: the quantizer's arithmetic stays the same)
        entry = _Entry(ranges=tuple((index[v], m) for v, m in found.ranges.items()),
                       ranges8=tuple((index[v], m) for v, m in found.ranges8.items()),
                       channels=channels, rows=rows, nbytes=nbytes)
        with self._lock:
            self._entries.pop(key, None)
            self._entries[key] = entry
            while sum(e.nbytes for e in self._entries.values()) > self.max_bytes:
                self._entries.popitem(last=False)
        return True

    def cache_clear(self) -> None:
        """Drop every entry and reset the counts."""
        with self._lock:
            self._entries.clear()
            self._hits = self._misses = 0

    def cache_info(self) -> CacheInfo:
        """Hits and misses since the last clear, entries and array bytes held now."""
        with self._lock:
            return CacheInfo(self._hits, self._misses, len(self._entries),
                             sum(e.nbytes for e in self._entries.values()))


#: The process's calibration cache (``quantize`` reads and fills it).
CALIBRATIONS = CalibrationCache()
