"""A least-recently-used map bounded by the bytes its values hold, shared between threads (private).

The compiler's in-process result caches (compiler/calibration_cache.py, compiler/weight_fit_cache.py) hold arrays
whose sizes vary by orders of magnitude between models, so they are bounded by bytes, not by entries as
``functools.lru_cache`` is; like it they count hits and misses and empty with ``cache_clear()``.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Callable
from typing import Generic, NamedTuple, TypeVar

__all__ = ["BytesLRU", "CacheInfo"]

V = TypeVar("V")


class CacheInfo(NamedTuple):
    """Counts since the last ``cache_clear``, like ``functools``' (``bytes``: the arrays held now)."""

    hits: int
    misses: int
    currsize: int
    bytes: int


class BytesLRU(Generic[V]):
    """Values by string key with their sizes; the least recently used go first beyond ``max_bytes``."""

    def __init__(self, max_bytes: int):
        self.max_bytes = max_bytes
        self._entries: OrderedDict[str, tuple[V, int]] = OrderedDict()
        self._held = 0
        self._hits = self._misses = 0
        self._lock = threading.Lock()

    def get(self, key: str, usable: Callable[[V], bool] | None = None) -> V | None:
        """The value stored under ``key`` (now the most recently used), or None, counted as a miss; a stored value
        that ``usable`` rejects is a miss too."""
        with self._lock:
            got = self._entries.get(key)
            if got is None or (usable is not None and not usable(got[0])):
                self._misses += 1
                return None
            self._entries.move_to_end(key)
            self._hits += 1
            return got[0]

    def put(self, key: str, value: V, nbytes: int) -> bool:
        """Store ``value`` (holding ``nbytes``) under ``key``; False, storing nothing, when it alone exceeds
        ``max_bytes``."""
        if nbytes > self.max_bytes:
            return False
        with self._lock:
            old = self._entries.pop(key, None)
            if old is not None:
                self._held -= old[1]
            self._entries[key] = (value, nbytes)
            self._held += nbytes
            while self._held > self.max_bytes:
                _, (_, dropped) = self._entries.popitem(last=False)
                self._held -= dropped
        return True

    def cache_clear(self) -> None:
        """Drop every entry and reset the counts."""
        with self._lock:
            self._entries.clear()
            self._held = 0
            self._hits = self._misses = 0

    def cache_info(self) -> CacheInfo:
        """Hits and misses since the last clear, entries and bytes held now."""
        with self._lock:
            return CacheInfo(self._hits, self._misses, len(self._entries), self._held)
