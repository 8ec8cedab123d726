"""Content keys for the compiler's in-process caches: XXH3-128 over what a result depends on.

The caches (compiler/calibration_cache.py, compiler/weight_fit_cache.py) key a result by the bytes it was computed
from: weights, samples, a module's text, options, the code. ViT-Base carries 344 MB of weights, which SHA-256 reads
in about 0.24 s of one core and XXH3-128 (Yann Collet's xxHash, https://github.com/Cyan4973/xxHash; the `xxhash`
PyPI package binds it) in about 0.02 s. The key guards against accidental equality only: a cache entry is what this
process computed itself, nothing outside the process can plant one, so a cryptographic hash buys nothing here; at 128
bits the chance that two different inputs share a key is about n^2 / 2^129 for n entries.
"""

from __future__ import annotations

from collections.abc import Iterable

import numpy as np
import xxhash

__all__ = ["Hasher", "feed_arrays", "hasher"]

Hasher = xxhash.xxh3_128


def hasher(tag: bytes) -> xxhash.xxh3_128:
    """A fresh XXH3-128 state that starts with ``tag`` (a cache's format name and version: keys of different caches,
    or of one cache's old and new layouts, never meet)."""
    h = xxhash.xxh3_128()
    h.update(tag + b"\0")
    return h


def feed_arrays(h: xxhash.xxh3_128, arrays: Iterable[tuple[str, np.ndarray | None]]) -> bool:
    """Feed name, dtype, shape and bytes of each array to ``h`` (None: its name and a marker); False for an array
    whose bytes mean nothing (objects), which cannot be keyed by content."""
    for name, value in arrays:
        if value is None:
            h.update(f"{name}\0none\0".encode())
            continue
        a = np.asarray(value)
        if a.dtype.hasobject:
            return False
        h.update(f"{name}\0{a.dtype.str}\0{a.shape}\0".encode())
        h.update(np.ascontiguousarray(a).reshape(-1).view(np.uint8).data)
    return True
