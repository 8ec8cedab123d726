"""The integer codes and steps of one static GEMM weight, as the quantize pass stores them.

One entry point, :func:`fit_weight`, for both activation granularities (compiler/quant_rewrite.py's per-tensor GEMMs
and compiler/quant_activation.py's per-token ones), so ``--weight-group`` and ``--weight-rounding`` mean the same on
either path:

* ``group`` > 0 and a 2-D weight longer than one group: two-level per-group steps (compiler/quant_groups.py), round
  to nearest or GPTQ on the group grid; None from the group fit (K too long for an exact int32 accumulator) falls
  back to one step per output channel;
* a grouped convolution's batched [G, K, N] weight: per convolution group and output channel, [G, 1, N];
* otherwise one step per output channel, GPTQ (compiler/quant_recipes.py) when calibration rows are given.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from compiler.quant_format import GPTQ_DAMP
from compiler.quant_groups import GROUP_ATTR, SCALE_BITS_ATTR, fit_grouped
from compiler.quant_recipes import gptq_quantize, quantize_weight
from compiler.simulate._threads import single_threaded

__all__ = ["WeightFit", "fit_weight"]


def _qmax(bits: int) -> int:
    return (1 << (bits - 1)) - 1


@dataclass(frozen=True)
class WeightFit:
    """A static weight's integer form: real W ~ codes * q[k // group] * scale (q = 1 without groups)."""

    codes: np.ndarray
    """[K, N] (or [G, K, N]) integer codes of ``bits`` bits."""
    scale: np.ndarray
    """Real step per output channel [N] ([G, 1, N] for a grouped convolution)."""
    tag: str
    """What the stored name says about the fit: ``""`` (nearest, per channel), ``gptq`` or ``g<group>``."""
    group: int = 0
    """Input rows per group multiplier (0: none)."""
    q: np.ndarray | None = None
    """[ceil(K / group), N] unsigned group multipliers."""
    scale_bits: int = 0
    """Width of ``q`` (bits)."""
    gptq: bool = False
    """Whether GPTQ chose the codes."""

    def attributes(self) -> dict[str, int]:
        """The GemmOp attributes a grouped weight needs (none without groups)."""
        return {GROUP_ATTR: self.group, SCALE_BITS_ATTR: self.scale_bits} if self.q is not None else {}

    def integer(self) -> np.ndarray:
        """The integer weight the datapath multiplies by in effect, codes * q[k // group] (int64): what a per-token
        GEMM's static ``offset * colsum(W)`` and its accumulator bound are taken over."""
        codes = np.asarray(self.codes, np.int64)
        if self.q is None:
            return codes
        return codes * np.repeat(np.asarray(self.q, np.int64), self.group, axis=0)[: codes.shape[0]]


def fit_weight(w: np.ndarray, bits: int, group: int = 0, x_rows: np.ndarray | None = None,
               in_bits: int = 8) -> WeightFit:
    """``w`` [K, N] (or batched [..., K, N]) as integer codes of ``bits`` bits (module docstring).

    ``x_rows``: calibration inputs [rows, K] in the units of the GEMM's integer input codes, for GPTQ (None: round
    to nearest). ``in_bits``: the widest input code the array multiplies (9 for a per-token GEMM's unsigned
    0..255 codes), which bounds the group multipliers' width."""
    w = np.asarray(w, np.float64)
    if group and w.ndim == 2 and w.shape[0] > group:
        with single_threaded():  # GPTQ's factorizations: a BLAS thread pool on 2 busy cores costs 5x
            fit = fit_grouped(w, bits, group, x_rows, in_bits=in_bits)
        if fit is not None:
            return WeightFit(fit.codes, fit.s_n, f"g{group}", group, fit.q, fit.scale_bits, x_rows is not None)
    if w.ndim >= 3:  # batched [..., K, N] (experts, a constant operand of a batched product): per batch and column
        s_w = np.maximum(np.abs(w).max(axis=-2, keepdims=True), 1e-12) / _qmax(bits)
        return WeightFit(np.clip(np.round(w / s_w), -_qmax(bits) - 1, _qmax(bits)), s_w, "")
    if x_rows is not None:
        with single_threaded():
            codes, s_w = gptq_quantize(w, x_rows, bits, damp=GPTQ_DAMP)
        return WeightFit(codes, s_w, "gptq", gptq=True)
    codes, s_w = quantize_weight(w, bits)
    return WeightFit(codes, s_w, "")
