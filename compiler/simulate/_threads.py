"""Run the simulator single-threaded (private).

The simulator issues thousands of small products and element-wise kernels per sample. Thread pools (OpenBLAS under
NumPy, torch's intra-op pool) gain nothing on them and, on a machine with few cores and other work running, waking
them costs 10-30x the arithmetic (measured: MiniLM int8, 0.6 s -> 15 s per 16 samples). Both pools go to one thread
for the duration of a run and come back after.
"""

from __future__ import annotations

import ctypes
import glob
import os
from collections.abc import Iterator
from contextlib import contextmanager

import numpy as np
import torch

__all__ = ["single_threaded"]


def _openblas() -> tuple[object, object] | None:
    libdir = os.path.join(os.path.dirname(os.path.dirname(np.__file__)), "numpy.libs")
    for path in glob.glob(os.path.join(libdir, "libscipy_openblas*.so")):
        try:
            lib = ctypes.CDLL(path)
            return lib.scipy_openblas_set_num_threads64_, lib.scipy_openblas_get_num_threads64_
        except (OSError, AttributeError):
            continue
    return None


_BLAS = _openblas()


@contextmanager
def single_threaded() -> Iterator[None]:
    """OpenBLAS (when NumPy bundles it) and torch at one thread inside the block."""
    torch_threads = torch.get_num_threads()
    blas_threads = int(_BLAS[1]()) if _BLAS else None  # type: ignore[operator]
    torch.set_num_threads(1)
    if _BLAS:
        _BLAS[0](1)  # type: ignore[operator]
    try:
        yield
    finally:
        torch.set_num_threads(torch_threads)
        if _BLAS and blas_threads:
            _BLAS[0](blas_threads)  # type: ignore[operator]
