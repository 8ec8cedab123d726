"""Per-group weight scales (``--weight-group 32|64|128``): the format, its integer datapath and its fits.

A static GEMM weight W [K, N] is cut along K into G = ceil(K / g) groups of ``g`` input rows; each (group, output
channel) gets its own step. Int4 weights need it: one step per output channel is set by the channel's largest
weight over all K rows, and 4 bits leave the rest a handful of levels (MiniLM w4a8, per channel: 0.93 cosine).

**The format (two-level scales, as QLoRA's double quantization and llama.cpp's k-quants).** The real step of
group g, channel n is ``s_n * q[g, n]``: ``s_n`` (float, per output channel) is the step the rest of the datapath
already has, ``q[g, n]`` an unsigned ``b``-bit integer (1 .. 2^b - 1, ``b`` = :func:`group_scale_bits`, 8 unless
K is very long). W ~ codes[k, n] * q[k // g, n] * s_n with int-``w_bits`` codes.

**The integer datapath (exact, what the simulator computes and compiler.numerics.group_gemm defines).** For an
int8 input x [M, K] (per-tensor step s_x, or per-channel steps already folded into W's rows) and bias int32::

    p[m, g, n]  = sum_{k in group g} x[m, k] * codes[k, n]      int8 x int4 MACs in the array, |p| < 2^(7+3+log2 g)
    acc[m, n]   = bias[n] + sum_g p[m, g, n] * q[g, n]          one multiply-add per group per output (requant path)
    real[m, n]  = acc[m, n] * s_x * s_n                         the GEMM's usual per-channel requant follows

``acc`` is an int32 accumulator: ``b`` is chosen so that K * 2^(in_bits-1) * 2^(w_bits-1) * (2^b - 1) < 2^31 (no
partial sum can overflow whatever the data). The hardware models cost the group rescale as requant-path work
(B * M * N * G multiply-adds) and the G * N ``b``-bit multipliers as weight bytes (compiler/schedule/lower.py).

**Fits.** :func:`split_scales` turns float group steps [G, N] into (q, s_n) with q = ceil(step / s_n) (never a
smaller step than asked: no code clips that did not clip before); :func:`quantize_grouped` rounds to nearest;
GPTQ (compiler/quant_recipes.py ``gptq_quantize``) takes :func:`snap` as its ``group_step`` so each group's step is
chosen as its rows are reached (the errors fed back move them) and is already on the two-level grid.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np

from compiler.quant_recipes import gptq_quantize

__all__ = ["CLIP_GRID", "DAMP", "GROUP_ATTR", "GROUP_SCALE_SUFFIX", "GROUP_SIZES", "MAX_ROWS_GROUPED",
           "SCALE_BITS_ATTR", "GroupedWeight", "clip_steps", "fit_grouped", "group_matmul", "group_scale_bits",
           "groups_of", "quantize_grouped", "snap", "split_scales"]

#: GPTQ's dampening on groups (fraction of H's mean diagonal). MiniLM w4a8, SmoothQuant, group 32, 20 unlike
#: sentences: 0.01 / 0.1 / 0.3 measured 0.974 / 0.979 / 0.981 (input_ids only); 0.3 / 1.0: 0.977 / 0.978 (mask).
#: With the padding rows left out of calibration (the mask's fits see only real rows): 0.3 / 1.0 / 3.0 measured
#: 0.9780 / 0.9790 / 0.9781 (mask) and 0.3 / 1.0 0.9812 / 0.9808 (input_ids only): flat, so 0.3 stays.
DAMP = 0.3
#: Calibration rows per GEMM input kept for grouped GPTQ (the quantize pass keeps 512 otherwise): every row helps
#: (MiniLM, mask, 640 rows: 0.9768 against 0.9748 thinned to 512).
MAX_ROWS_GROUPED = 2048
#: GPTQ on groups quantizes rows in decreasing Hessian-diagonal order (static groups; quant_recipes.gptq_quantize).
ACT_ORDER = True
#: The group sizes ``--weight-group`` accepts (input rows per scale).
GROUP_SIZES = (32, 64, 128)
#: GemmOp attribute: the group size (rows of K per scale); absent = one scale per output channel.
GROUP_ATTR = "weight_group"
#: GemmOp attribute: the width of the unsigned group multipliers q (bits).
SCALE_BITS_ATTR = "group_scale_bits"
#: WeightStore suffix of the group multipliers q [G, N] under the weight's name.
GROUP_SCALE_SUFFIX = ".gscale"
_MAX_SCALE_BITS = 8


def _qmax(bits: int) -> int:
    return (1 << (bits - 1)) - 1


def groups_of(k: int, group: int) -> int:
    """Groups along K (the last one may be short)."""
    return -(-k // group)


def group_scale_bits(k: int, w_bits: int, in_bits: int = 8) -> int:
    """Width of the group multipliers q (at most 8 bits) that keeps every int32 accumulator exact for K inputs:
    K * 2^(in_bits-1) * 2^(w_bits-1) * (2^b - 1) < 2^31. 0 when not even b = 1 fits (K too long for int32)."""
    worst = k * (1 << (in_bits - 1)) * (1 << (w_bits - 1))
    for b in range(_MAX_SCALE_BITS, 0, -1):
        if worst * ((1 << b) - 1) < 2**31:
            return b
    return 0


def split_scales(step: np.ndarray, scale_bits: int) -> tuple[np.ndarray, np.ndarray]:
    """(q [G, N] int, s_n [N]) with s_n * q >= ``step`` [G, N]: s_n = max_g step / (2^b - 1), q = ceil(step / s_n)
    in [1, 2^b - 1]. The largest group of each channel gets exactly its step; smaller ones round up (<= one s_n)."""
    top = (1 << scale_bits) - 1
    s_n = np.maximum(np.asarray(step, np.float64).max(axis=0), 1e-12) / top
    q = np.clip(np.ceil(np.asarray(step, np.float64) / s_n * (1 - 1e-12)), 1, top)
    return q.astype(np.int64), s_n


#: Fractions of the covering group step tried by :func:`clip_steps` (1.0 first: ties keep no clipping).
CLIP_GRID = tuple(1.0 - 0.025 * i for i in range(17))


def clip_steps(rows: np.ndarray, bits: int, s_n: np.ndarray, scale_bits: int) -> np.ndarray:
    """The two-level steps s_n * q [N] of one group's ``rows`` [g, N] that round them best: every q from the one
    that covers max |w| down to 0.6 of it (:data:`CLIP_GRID`), scored by sum |w - Q(w)|^2.4 per channel (the
    ``mse`` grid of GPTQ's quantizer, IST-DASLab/gptq ``quant.py``: clipping a few large weights buys finer steps
    for the rest)."""
    rows = np.asarray(rows, np.float64)
    top, qmax = (1 << scale_bits) - 1, _qmax(bits)
    full = np.clip(np.ceil(np.maximum(np.abs(rows).max(axis=0), 1e-12) / qmax / s_n * (1 - 1e-12)), 1, top)
    best_q, best_err = full, np.full(full.shape, np.inf)
    for frac in CLIP_GRID:
        q = np.maximum(np.round(full * frac), 1)
        step = q * s_n
        err = (np.abs(rows - np.clip(np.round(rows / step), -qmax - 1, qmax) * step) ** 2.4).sum(axis=0)
        better = err < best_err
        best_q, best_err = np.where(better, q, best_q), np.where(better, err, best_err)
    return best_q * s_n



def snap(s_n: np.ndarray, scale_bits: int, bits: int) -> Callable[[np.ndarray], np.ndarray]:
    """For GPTQ: a group's rows [g, N] -> its two-level steps s_n * q (:func:`clip_steps`; q capped at 2^b - 1: a
    group that grew past the channel's largest initial step clips, as per-channel GPTQ does)."""

    def fit(rows: np.ndarray) -> np.ndarray:
        return clip_steps(rows, bits, s_n, scale_bits)

    return fit


class GroupedWeight:
    """Int codes [K, N], group multipliers q [G, N], channel steps s_n [N] of one weight, and its group size."""

    def __init__(self, codes: np.ndarray, q: np.ndarray, s_n: np.ndarray, group: int, scale_bits: int) -> None:
        self.codes, self.q, self.s_n, self.group, self.scale_bits = codes, q, s_n, group, scale_bits

    def real(self) -> np.ndarray:
        """The weight the codes stand for, W~ [K, N] (float64)."""
        k = self.codes.shape[0]
        return self.codes * np.repeat(self.q, self.group, axis=0)[:k] * self.s_n

    def step(self) -> np.ndarray:
        """The real step of every group and channel [G, N]."""
        return self.q * self.s_n


def quantize_grouped(w: np.ndarray, bits: int, group: int, scale_bits: int | None = None) -> GroupedWeight:
    """Round-to-nearest codes of ``w`` [K, N] with two-level per-group steps (module docstring)."""
    w = np.asarray(w, np.float64)
    k = w.shape[0]
    b = group_scale_bits(k, bits) if scale_bits is None else scale_bits
    g = groups_of(k, group)
    padded = np.zeros((g * group, w.shape[1]))
    padded[:k] = np.abs(w)
    want = np.maximum(padded.reshape(g, group, -1).max(axis=1), 1e-12) / _qmax(bits)
    q, s_n = split_scales(want, b)
    full = np.repeat(q, group, axis=0)[:k] * s_n
    codes = np.clip(np.round(w / full), -_qmax(bits) - 1, _qmax(bits))
    return GroupedWeight(codes, q, s_n, group, b)


def group_matmul(x: np.ndarray, codes: np.ndarray, q: np.ndarray, group: int,
                 matmul: Callable[[np.ndarray, np.ndarray, Any], np.ndarray] | None = None,
                 cache: dict[str, Any] | None = None) -> np.ndarray:
    """The grouped integer product (int64): sum over groups of (x[..., group rows] @ codes[group rows]) * q[group].

    ``matmul``: the exact integer product used per group (default: int64 ``@``); ``cache``: a dict living as long
    as ``codes`` (the simulator's memo), holding the per-group slices' own caches."""
    k = codes.shape[0]
    mm = matmul or (lambda a, b, _cache: a.astype(np.int64) @ b.astype(np.int64))
    acc: np.ndarray | None = None
    for gi, k0 in enumerate(range(0, k, group)):
        k1 = min(k0 + group, k)
        sub = cache.setdefault(f"g{gi}", {}) if cache is not None else None
        part = np.asarray(mm(x[..., k0:k1], codes[k0:k1], sub), np.int64) * np.asarray(q[gi], np.int64)
        acc = part if acc is None else acc + part
    assert acc is not None
    return acc


def fit_grouped(w: np.ndarray, bits: int, group: int, x: np.ndarray | None = None,
                damp: float = DAMP, in_bits: int = 8) -> GroupedWeight | None:
    """``w`` [K, N] with per-group steps: round to nearest, or GPTQ on calibration inputs ``x`` [rows, K] (in the
    units of the integer input codes). None when K is too long for any group multiplier to keep int32 exact with
    ``in_bits``-bit input codes (9: a per-token GEMM's unsigned 0..255).

    GPTQ's groups get their steps on the two-level grid as it reaches them; s_n comes from the unrounded weight's
    largest group per channel (the errors fed back can grow a group past it: its codes then clip, as GPTQ's do
    with one step per channel)."""
    b = group_scale_bits(w.shape[0], bits, in_bits)
    if b == 0:
        return None
    near = quantize_grouped(w, bits, group, b)
    if x is None:
        return near
    codes, steps = gptq_quantize(w, x, bits, group=group, damp=damp, group_step=snap(near.s_n, b, bits),
                                 act_order=ACT_ORDER)
    q = np.rint(steps / near.s_n).astype(np.int64)
    return GroupedWeight(codes, q, near.s_n, group, b)
