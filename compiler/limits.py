"""How much memory this process may use, and refusing work whose size estimate exceeds it *before* allocating.

A 1 KB ONNX file can declare a 4 GiB ConstantOfShape, ``--shape input_ids=1x1000000000`` a terabyte of synthetic
calibration data, an .npz header a petabyte array. NumPy would try, and either raise ArrayMemoryError from deep
inside or, worse, succeed and push the machine into swap. Every place that materialises something sized by user
input estimates the bytes first (Python ints: no overflow) and calls :func:`check_memory`, which refuses with the
estimate and the budget in one line.

The budget is the memory the machine can give us now: the smallest of the kernel's ``MemAvailable``
(/proc/meminfo; physical memory from ``os.sysconf`` where there is no /proc), the room left under a cgroup v2
``memory.max`` (containers, CI runners) and the address-space rlimit (``ulimit -v``).
"""

from __future__ import annotations

import math
import os
import resource
from collections.abc import Iterable
from pathlib import Path

import numpy as np

from hw.errors import InputError

__all__ = ["available_memory_bytes", "check_memory", "check_tensor", "format_bytes", "format_shape",
           "tensor_bytes"]


def _meminfo_available() -> int | None:
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) * 1024  # the kernel writes kB (KiB)
    except (OSError, ValueError, IndexError):
        return None
    return None


def _physical() -> int | None:
    try:
        return int(os.sysconf("SC_PHYS_PAGES")) * int(os.sysconf("SC_PAGE_SIZE"))
    except (ValueError, OSError, AttributeError):
        return None


def _cgroup_room() -> int | None:
    """Bytes left under this process's cgroup v2 memory.max, None when unlimited or not readable."""
    try:
        rel = next(line.split("::", 1)[1] for line in Path("/proc/self/cgroup").read_text().splitlines()
                   if line.startswith("0::"))
        base = Path("/sys/fs/cgroup") / rel.strip().lstrip("/")
        limit = (base / "memory.max").read_text().strip()
        if limit == "max":
            return None
        return max(0, int(limit) - int((base / "memory.current").read_text().strip()))
    except (OSError, ValueError, StopIteration, IndexError):
        return None


def _rlimit_room() -> int | None:
    """Address space left under ``ulimit -v`` (the limit minus this process's VmSize)."""
    soft, _ = resource.getrlimit(resource.RLIMIT_AS)
    if soft == resource.RLIM_INFINITY:
        return None
    used = 0
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmSize:"):
                used = int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    return max(0, int(soft) - used)


def available_memory_bytes() -> int:
    """Bytes this process can still allocate without swapping or being killed (see the module docstring)."""
    found = [v for v in (_meminfo_available() or _physical(), _cgroup_room(), _rlimit_room()) if v is not None]
    return min(found) if found else 1 << 62  # nothing to read: do not pretend to know a limit


def format_bytes(n: float) -> str:
    """``4.0 GiB``: binary units, one decimal."""
    value = float(n)
    for unit in ("B", "KiB", "MiB", "GiB", "TiB", "PiB"):
        if abs(value) < 1024 or unit == "PiB":
            return f"{int(value)} B" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1024
    raise AssertionError("unreachable")


def format_shape(shape: Iterable[int]) -> str:
    """``32768x32768`` (``scalar`` for rank 0)."""
    dims = [str(int(d)) for d in shape]
    return "x".join(dims) if dims else "scalar"


def tensor_bytes(shape: Iterable[int], dtype: np.dtype | type | str) -> int:
    """Bytes of a dense tensor of ``shape`` (Python ints: a 10^10 x 10^10 estimate does not overflow)."""
    return math.prod(int(d) for d in shape) * np.dtype(dtype).itemsize


def check_memory(what: str, need: int) -> None:
    """Refuse (InputError naming ``what``) when ``need`` bytes exceed what the machine can give us now."""
    have = available_memory_bytes()
    if need > have:
        raise InputError(f"{what} needs {format_bytes(need)}, more than the {format_bytes(have)} of memory "
                         "available; refused before allocating")


def check_tensor(what: str, shape: Iterable[int], dtype: np.dtype | type | str) -> None:
    """:func:`check_memory` for one dense tensor; also refuses negative dims (``what`` names the producer)."""
    dims = [int(d) for d in shape]
    if any(d < 0 for d in dims):
        raise InputError(f"{what}: negative dimension in shape {format_shape(dims)}")
    check_memory(f"{what}: a {format_shape(dims)} {np.dtype(dtype).name} tensor", tensor_bytes(dims, dtype))
