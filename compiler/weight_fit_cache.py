"""Static weights' integer fits kept in process, keyed by content, so a repeated int8 compile skips re-fitting them.

Fitting a static GEMM weight (compiler/quant_weights.py ``fit_weight``: widening to float64 with the input's
per-channel steps folded into its rows, the per-channel or per-group steps, rounding, GPTQ) costs ViT-Base's 74
weights about 0.4 s of the int8 compile, the same every time the model is compiled again with other targets or
hardware options (a benchmark's warm run, a sweep's design points, ``codesign fit``'s candidates). What a fit gives
depends only on what :func:`fit_key` hashes: the weight as stored (name-free: two GEMMs sharing a weight share the
fit), the input's per-row steps, GPTQ's calibration rows, the bit widths and group, and the ``compiler`` sources
(``calibration_cache.code_version``). The cache follows the calibration cache (compiler/calibration_cache.py):
in process, bounded by bytes, ``WEIGHT_FITS.cache_clear()`` empties it.

Codes are kept in the narrowest integer type that holds them (int8 for up to 8 bits: ViT-Base's are 86 MB, a
float64 copy would be 688 MB) and read-only; every lookup, hit or miss, hands out the same form, with writable
copies of the steps and group multipliers, so the first compile and a repeated one store the same weights.
"""

from __future__ import annotations

from dataclasses import replace

import numpy as np

from compiler.bytes_lru import BytesLRU
from compiler.calibration_cache import code_version, frozen
from compiler.content_hash import feed_arrays, hasher
from compiler.quant_weights import WeightFit, fit_weight

__all__ = ["MAX_BYTES", "WEIGHT_FITS", "fit_key", "fit_static_weight"]

#: At most this many bytes of codes and steps stay cached (ViT-Base int8: about 87 MB).
MAX_BYTES = 512 << 20

#: Bump when what an entry holds, or how the key is made, changes.
_FORMAT = b"codesign-weight-fit-1"

#: The process's weight-fit cache (``quantize``'s static weights read and fill it).
WEIGHT_FITS: BytesLRU[WeightFit] = BytesLRU(MAX_BYTES)


def fit_key(w: np.ndarray, row_scale: np.ndarray | None, bits: int, group: int, x_rows: np.ndarray | None,
            in_bits: int) -> str | None:
    """The cache key (hex XXH3-128) of fitting ``w`` under these arguments (:func:`fit_static_weight`), or None
    when an array cannot be hashed by content."""
    h = hasher(_FORMAT)
    h.update(f"{code_version()}\0{bits}\0{group}\0{in_bits}\0".encode())
    if not feed_arrays(h, (("w", w), ("row_scale", row_scale), ("x_rows", x_rows))):
        return None
    return h.hexdigest()


def _compact(fit: WeightFit, bits: int) -> WeightFit:
    """``fit`` as the cache keeps it: codes in the narrowest integer type for ``bits``, every array read-only."""
    dtype = np.int8 if bits <= 8 else np.int16 if bits <= 16 else np.int32
    return replace(fit, codes=frozen(np.asarray(fit.codes).astype(dtype)), scale=frozen(np.asarray(fit.scale)),
                   q=None if fit.q is None else frozen(fit.q))


def fit_static_weight(w: np.ndarray, row_scale: np.ndarray | None, bits: int, group: int,
                      x_rows: np.ndarray | None, in_bits: int) -> WeightFit:
    """``fit_weight`` of the static weight ``w`` [K, N] (as stored, float32) with its rows multiplied by
    ``row_scale`` [K] (the input's per-channel steps; None: per-tensor input), widened to float64 in the same
    product; from the cache when fitted before. Codes narrow and read-only (module docstring); ``scale`` and ``q``
    are the caller's own copies."""
    key = fit_key(w, row_scale, bits, group, x_rows, in_bits)
    fit = WEIGHT_FITS.get(key) if key is not None else None
    if fit is None:
        if row_scale is None:
            wide = np.asarray(w, dtype=np.float64)
        else:  # widened and scaled in one pass (the same float64 product as widening first)
            wide = np.multiply(w, np.asarray(row_scale)[:, None], dtype=np.float64)
        fit = _compact(fit_weight(wide, bits, group, x_rows, in_bits), bits)
        if key is not None:
            nbytes = fit.codes.nbytes + fit.scale.nbytes + (0 if fit.q is None else fit.q.nbytes)
            WEIGHT_FITS.put(key, fit, nbytes)
    return replace(fit, scale=np.array(fit.scale), q=None if fit.q is None else np.array(fit.q))
