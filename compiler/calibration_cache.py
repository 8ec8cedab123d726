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

The key is XXH3-128 over those (compiler/content_hash.py: about 0.02 s of CPU for ViT-Base's 344 MB of weights,
against about 2 s of simulation). The cache follows the mapping search's (``compiler.schedule.mapping.search``, a
``functools`` LRU cache): it lives in the process, ``cache_clear()`` empties it and ``cache_info()`` counts it.
Entries are bounded by bytes (:data:`MAX_BYTES`, least recently used first out, compiler/bytes_lru.py): an entry
keeps the GEMM / GELU input rows that the recipes fit on (ViT-Base int8 I-ViT: about 77 MB).

Values are stored by their position in the module (:func:`value_order`), not as ``SSAValue`` objects, since each
compile builds its own module. Stored arrays are private read-only copies and every lookup hands out fresh dicts
and writable copies, so a caller that edits what it got (the quantizer adds entries) never changes the cache.
"""

from __future__ import annotations

import json
import platform
import sys
from collections.abc import Mapping
from dataclasses import dataclass
from functools import cache
from io import StringIO
from pathlib import Path
from typing import Any

import numpy as np
from xdsl.dialects.builtin import ModuleOp
from xdsl.ir import SSAValue
from xdsl.printer import Printer

from compiler.bytes_lru import BytesLRU, CacheInfo
from compiler.content_hash import feed_arrays, hasher

__all__ = ["MAX_BYTES", "CacheInfo", "Calibration", "CalibrationCache", "CALIBRATIONS", "calibration_key",
           "code_version", "frozen", "value_order"]

#: At most this many bytes of arrays (ranges' channel maxima and kept rows) stay cached, all entries together: a few
#: models' worth (ViT-Base int8 I-ViT about 77 MB; SmoothQuant or GPTQ keep every GEMM input's rows, more).
MAX_BYTES = 512 << 20

#: Bump when what an entry holds, or how the key is made, changes.
_FORMAT = b"codesign-calibration-2"


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
    """XXH3-128 of the ``compiler`` package's sources and the versions its numbers depend on (computed once per
    process: sources edited in a running process are not seen, as with any imported module)."""
    import torch
    import xdsl

    h = hasher(b"codesign-code")
    root = Path(__file__).resolve().parent
    for path in sorted(root.rglob("*.py")):
        h.update(str(path.relative_to(root)).encode() + b"\0" + path.read_bytes() + b"\0")
    versions = (sys.version, platform.machine(), np.__version__, torch.__version__,
                getattr(xdsl, "__version__", "?"))
    h.update(repr(versions).encode())
    return h.hexdigest()


def calibration_key(module: ModuleOp, weights: Mapping[str, np.ndarray], names: list[str],
                    samples: Mapping[str, np.ndarray], options: Mapping[str, Any]) -> str | None:
    """The cache key (hex XXH3-128, module docstring) of calibrating ``module`` with ``weights`` on ``samples``
    (inputs ``names``) under ``options`` (JSON-able), or None when something cannot be hashed by content."""
    h = hasher(_FORMAT)
    h.update(code_version().encode())
    text = StringIO()
    Printer(stream=text, print_generic_format=True).print_op(module)
    h.update(text.getvalue().encode())
    h.update(json.dumps({"names": list(names), "options": dict(options)}, sort_keys=True).encode())
    if not feed_arrays(h, ((f"w:{k}", weights[k]) for k in sorted(weights))):
        return None
    if not feed_arrays(h, ((f"x:{k}", samples[k]) for k in sorted(samples))):
        return None
    return h.hexdigest()


def frozen(a: np.ndarray) -> np.ndarray:
    """A read-only copy of ``a`` (what the caches keep)."""
    out = np.array(a, copy=True)
    out.setflags(write=False)
    return out


class CalibrationCache:
    """Calibrations by key (:func:`calibration_key`), least recently used dropped beyond ``max_bytes``; safe to
    share between threads (a sweep's workers may compile in threads)."""

    def __init__(self, max_bytes: int = MAX_BYTES):
        self._store: BytesLRU[_Entry] = BytesLRU(max_bytes)

    @property
    def max_bytes(self) -> int:
        return self._store.max_bytes

    def get(self, key: str, module: ModuleOp) -> Calibration | None:
        """The calibration stored under ``key`` with its values mapped onto ``module``'s (fresh dicts, writable
        copies), or None (a miss)."""
        values = value_order(module)
        entry = self._store.get(key, lambda e: all(i < len(values) for table in (e.ranges, e.ranges8, e.channels,
                                                                                  e.rows) for i, _ in table))
        if entry is None:
            return None
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
        channels = tuple((index[v], frozen(a)) for v, a in found.channels.items())
        rows = tuple((index[v], tuple(frozen(r) for r in rs)) for v, rs in found.rows.items())
        nbytes = sum(a.nbytes for _, a in channels) + sum(r.nbytes for _, rs in rows for r in rs)
        # the numbers as they came (a Python float or a NumPy scalar: the quantizer's arithmetic stays the same)
        entry = _Entry(ranges=tuple((index[v], m) for v, m in found.ranges.items()),
                       ranges8=tuple((index[v], m) for v, m in found.ranges8.items()),
                       channels=channels, rows=rows, nbytes=nbytes)
        return self._store.put(key, entry, nbytes)

    def cache_clear(self) -> None:
        """Drop every entry and reset the counts."""
        self._store.cache_clear()

    def cache_info(self) -> CacheInfo:
        """Hits and misses since the last clear, entries and array bytes held now."""
        return self._store.cache_info()


#: The process's calibration cache (``quantize`` reads and fills it).
CALIBRATIONS = CalibrationCache()
