"""Calibration-time fits that choose quantization parameters; the integer datapath they feed is unchanged.

* :func:`smooth_scales`: SmoothQuant's migration of activation outliers into the weights (Xiao et al., 2023,
  mit-han-lab/smoothquant ``smoothquant/smooth.py``: s_c = max|X_c|^alpha / max|W_c|^(1 - alpha)), with alpha
  searched per GEMM input on the calibration rows by the GEMM output's squared error after int8 x int-b
  quantization. The chosen per-channel steps are applied by the quantize pass's per-channel requant (RepQ-ViT's
  reparameterization in requant form) and folded into the weights' rows, so alpha = 1 is RepQ-ViT's per-channel
  activation scale and "per tensor" is no migration at all.
* :func:`observe_range`: the range an activation's per-tensor integer grid covers, from its calibration values:
  ``minmax`` (max |x|), ``percentile`` (a percentile of |x|), ``mse`` (the clip that minimises the mean squared
  quantization error, searched on a grid of fractions of max |x|) and ``entropy`` (TensorRT's KL-divergence
  threshold on a 2048-bin histogram of |x|).
* :func:`gelu_correction`: the affine map (gain, offset) that best fits an integer GELU's output to the exact GELU on
  the calibration inputs (least squares). ShiftGELU's sigmoid comes out of floors (log2 e as 1.4375, a linear 2^-f,
  and a quotient floor((2^31 - 1) / sum) of only 4 to 5 bits), so its error is mostly systematic: about 3% low for
  x > 1 (0.026 rms on N(-1, 1.5) inputs, 0.013 after the fit). The gain moves into the output's scale and the
  offset into the next GEMM's bias (Nagel et al., 2019, "Data-Free Quantization", bias correction), so the integer
  kernel, its RTL and the datapath are unchanged.
* :func:`gptq_quantize`: GPTQ (Frantar et al., 2023, IST-DASLab/gptq ``gptq.py``) rounding of a weight matrix,
  column by column with the inverse-Hessian error feedback, H = 2 X^T X from the calibration rows, per output
  channel scales (the datapath's) or per group of input rows.

Why hand-written: onnxruntime.quantization's calibrators (MinMax, Percentile, Entropy, Distribution) work on an
ONNX graph they augment and run themselves, one range per ONNX tensor; the ranges needed here belong to values of
the compiled IR (integer kernel outputs, requant inputs) that have no ONNX tensor, and the searches (alpha, GPTQ)
need the GEMM's weights next to its inputs. The histogram-entropy threshold follows onnxruntime's
``HistogramCalibrater`` / TensorRT's algorithm.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from compiler.frontend.precision import mask_threshold

__all__ = ["ALPHAS", "ENTROPY_BINS", "ENTROPY_STRIDE", "MAX_COLUMNS", "OBSERVERS", "Candidate", "SmoothChoice",
           "gelu_correction", "gptq_quantize",
           "observe_range", "quantize_weight", "smooth_scales"]

#: The coarse alpha grid searched per GEMM input (0 moves nothing, 1 moves every activation outlier into the
#: weights); the best is then refined by +-0.1.
ALPHAS = (0.0, 0.25, 0.5, 0.75, 1.0)
OBSERVERS = ("minmax", "percentile", "mse", "entropy")
#: The alpha search scores the GEMM output on at most this many (evenly spaced) output columns: the cost of a
#: candidate is rows x C x MAX_COLUMNS MACs whatever the layer's width.
MAX_COLUMNS = 256


def _qmax(bits: int) -> int:
    return (1 << (bits - 1)) - 1


def quantize_weight(w: np.ndarray, bits: int, group: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Round-to-nearest symmetric codes of ``w`` [K, N] and their scales: per output channel ([N]) or, with
    ``group`` > 0, per group of ``group`` input rows and output channel ([ceil(K / group), N])."""
    k = w.shape[0]
    if group <= 0 or group >= k:
        # max|w| per column without an |w| copy: max(max w, -min w) is the same number (NaN and -0 included)
        s = np.maximum(np.maximum(w.max(axis=0), -w.min(axis=0)), 1e-12) / _qmax(bits)
        codes = w / s  # rounded and clipped in place: a 768 x 3072 float64 weight is 19 MB a copy
        np.round(codes, out=codes)
        return np.clip(codes, -_qmax(bits) - 1, _qmax(bits), out=codes), s
    groups = -(-k // group)
    s = np.stack([np.maximum(np.abs(w[g * group:(g + 1) * group]).max(axis=0), 1e-12) for g in range(groups)])
    s = s / _qmax(bits)
    full = np.repeat(s, group, axis=0)[:k]
    codes = w / full
    np.round(codes, out=codes)
    return np.clip(codes, -_qmax(bits) - 1, _qmax(bits), out=codes), s


@dataclass(frozen=True)
class SmoothChoice:
    """The per-channel activation steps (real units per int8 step) one GEMM input gets, and why."""

    scale: np.ndarray | None
    """[C] steps, or None: keep the per-tensor step (no migration won)."""
    alpha: float | None
    """The alpha chosen (None: per tensor)."""
    family: str | None
    """The candidate rule chosen: ``smoothquant`` or ``interpolate`` (None: per tensor)."""
    error: float
    """The GEMM output's squared error relative to each row's, averaged over the calibration rows."""


def _gemm_error(x: np.ndarray, w: np.ndarray, ref: np.ndarray, step: np.ndarray, w_bits: int, group: int = 0) -> float:
    """Mean over rows of the row's relative squared error: every token counts the same, so the few rows with
    massive activations (BERT's [CLS], padding) do not decide alone."""
    xq = np.clip(np.round(x / step), -128, 127)
    wq, sw = quantize_weight(w * step[:, None], w_bits, group)
    if 0 < group < w.shape[0]:
        wq = wq * np.repeat(sw, group, axis=0)[: w.shape[0]]
        sw = np.ones(1)
    err = ref - (xq @ wq) * sw
    return float(((err * err).sum(axis=1) / np.maximum((ref * ref).sum(axis=1), 1e-30)).mean())


#: A candidate: (family, alpha). ``smoothquant``: s_c = m_c^alpha / max|W_c|^(1 - alpha) (SmoothQuant's rule);
#: ``interpolate``: s_c = m_c^alpha * max_c(m)^(1 - alpha), from per tensor (alpha 0) to RepQ-ViT's per-channel
#: maxima (alpha 1) without looking at the weights.
Candidate = tuple[str, float]


def _steps(m: np.ndarray, wmax: np.ndarray, cand: Candidate | None) -> np.ndarray:
    """int8 steps per channel for channel maxima ``m``: per tensor (``cand`` None) or the candidate's rule."""
    if cand is None:
        return np.full(m.shape, m.max() / 127)
    family, alpha = cand
    s = m**alpha / wmax ** (1 - alpha) if family == "smoothquant" else m**alpha * m.max() ** (1 - alpha)
    return s * float((m / s).max()) / 127


def smooth_scales(samples: list[np.ndarray], w: np.ndarray, w_bits: int,
                  alphas: tuple[float, ...] = ALPHAS, group: int = 0) -> SmoothChoice:
    """The best per-channel int8 steps for a GEMM input seen as ``samples`` (one [rows, C] array per calibration
    sample) feeding weights ``w`` [C, N].

    Candidates: one per-tensor step, and for every alpha SmoothQuant's s_c = m_c^alpha / max|W_c|^(1 - alpha) and the
    weight-blind s_c = m_c^alpha * max(m)^(1 - alpha), each scaled so the largest channel fills the int8 grid. Each
    is scored by two-fold cross-validation over the samples (ranges from the even samples, error on the odd ones, and
    the reverse): a channel quiet on the calibration data
    and loud on other data is clipped hard by a tight per-channel step (measured on MiniLM: up to 48x its calibrated
    max after GELU), which the error on the data the ranges came from cannot see. The steps returned use every
    sample's maxima. ``group`` > 0: the weights are scored with one step per ``group`` input rows (--weight-group).
    """
    w = np.asarray(w, np.float32)
    wmax = np.maximum(np.abs(w).max(axis=1).astype(np.float64), 1e-8)
    if w.shape[1] > MAX_COLUMNS:  # weights quantize per output column: a subset of columns scores exactly as much
        w = w[:, np.linspace(0, w.shape[1] - 1, MAX_COLUMNS).astype(np.int64)]
    folds = [np.concatenate(samples[i::2]).astype(np.float32) for i in range(min(2, len(samples)))]
    pairs = [(folds[0], folds[-1])] if len(folds) == 1 else [(folds[0], folds[1]), (folds[1], folds[0])]
    refs = [b @ w for _, b in pairs]
    maxima = [np.maximum(np.abs(a).max(axis=0).astype(np.float64), 1e-8) for a, _ in pairs]

    def score(cand: Candidate | None) -> tuple[float, Candidate | None]:
        return float(np.mean([_gemm_error(b, w, ref, _steps(m, wmax, cand).astype(np.float32), w_bits, group)
                              for (_, b), ref, m in zip(pairs, refs, maxima)])), cand

    best = min((score(c) for c in (None, *((f, a) for f in ("interpolate", "smoothquant") for a in alphas))),
               key=lambda t: t[0])
    if best[1] is not None and len(alphas) > 1:
        family, alpha = best[1]
        near = [round(alpha + d, 2) for d in (-0.1, 0.1) if 0.0 <= alpha + d <= 1.0]
        best = min([best, *(score((family, a)) for a in near)], key=lambda t: t[0])
    err, cand = best
    if cand is None:
        return SmoothChoice(None, None, None, err)
    m = np.maximum(np.abs(np.concatenate(folds)).max(axis=0).astype(np.float64), 1e-8)
    return SmoothChoice(_steps(m, wmax, cand), cand[1], cand[0], err)


#: At most this many calibration rows are run through the integer GELU to fit :func:`gelu_correction`.
GELU_FIT_ROWS = 64


def gelu_correction(kernel: Callable[[np.ndarray, float], tuple[np.ndarray, float]], rows: np.ndarray, bits: int,
                    scale: float) -> tuple[float, float]:
    """(gain, offset) with gain * y + offset closest in squared error to GELU(x) over the calibration ``rows``
    ([R, C] real GELU inputs), y the integer ``kernel``'s real output on ``x`` quantized to its ``bits``-bit grid of
    step ``scale``; (1, 0) when the kernel is exact enough that the fit gains under 1% of its error."""
    rows = np.asarray(rows, np.float64)
    if len(rows) > GELU_FIT_ROWS:  # whole rows: a row-max stabilizer sees the rows it will see
        rows = rows[np.linspace(0, len(rows) - 1, GELU_FIT_ROWS).astype(np.int64)]
    q = np.clip(np.round(rows / scale), -(1 << (bits - 1)), (1 << (bits - 1)) - 1).astype(np.int64)
    y_int, y_scale = kernel(q, scale)
    y = (y_int * y_scale).reshape(-1)
    xr = (q * scale).reshape(-1)
    ref = 0.5 * xr * (1.0 + _erf(xr / np.sqrt(2.0)))
    a = np.stack([y, np.ones_like(y)], axis=1)
    (gain, offset), *_ = np.linalg.lstsq(a, ref, rcond=None)
    before = float(((y - ref) ** 2).sum())
    after = float(((gain * y + offset - ref) ** 2).sum())
    if not np.isfinite(gain) or gain <= 0 or after > 0.99 * before:
        return 1.0, 0.0
    return float(gain), float(offset)


def _erf(x: np.ndarray) -> np.ndarray:
    import torch

    return torch.special.erf(torch.from_numpy(np.ascontiguousarray(x))).numpy()


def observe_range(values: np.ndarray, observer: str, bits: int = 8, percentile: float = 99.99) -> float:
    """The magnitude a symmetric ``bits``-bit per-tensor grid should cover for these calibration ``values``."""
    a = np.abs(np.asarray(values, np.float64).reshape(-1))
    a = a[np.isfinite(a) & (a < mask_threshold(np.asarray(values).dtype))]
    if not a.size:
        return 0.0
    top = float(a.max())
    if observer == "minmax" or top == 0:
        return top
    if observer == "percentile":
        return float(np.percentile(a, percentile))
    if observer == "mse":
        qmax = _qmax(bits)
        best, best_err = top, np.inf
        for frac in np.linspace(0.3, 1.0, 36):
            c = top * frac
            step = c / qmax
            err = float(((np.clip(np.round(a / step), -qmax - 1, qmax) * step - a) ** 2).sum())
            if err < best_err:
                best, best_err = c, err
        return best
    if observer == "entropy":
        return _entropy_threshold(a, bits)
    raise ValueError(f"unknown observer {observer!r} (valid: {', '.join(OBSERVERS)})")


#: Histogram bins of the entropy observer, and the stride of the candidate thresholds it scores (in bins).
ENTROPY_BINS = 2048
ENTROPY_STRIDE = 8


def _entropy_threshold(a: np.ndarray, bits: int, bins: int = ENTROPY_BINS) -> float:
    """TensorRT's KL threshold (onnxruntime ``HistogramCalibrater`` entropy): the clip whose 2^(bits-1)-level
    quantized histogram is closest in KL divergence to the reference histogram clipped there.

    Every candidate threshold i (one per :data:`ENTROPY_STRIDE` bins) at once, from prefix sums: the i kept bins
    split into L = 2^(bits-1) chunks as ``np.array_split`` does (the first i mod L one bin longer); the reference p
    is the histogram with the tail folded into bin i - 1, the candidate q spreads each chunk's mass evenly over its
    non-empty bins, so with T the total and Z_i the kept mass
    KL_i = sum_j p_j log p_j - sum_c P_c log(m_c / (n_c Z_i)), P_c the reference mass of chunk c, m_c and n_c its
    histogram mass and non-empty bins (bin i - 1 apart where the tail lands on an empty bin: q = 0 there, floored at
    1e-12 as in the per-bin form). A [candidates, L] computation instead of a Python loop over thresholds and chunks
    (0.3 s per call; calibration calls it once per value and sample: over 180 s on MiniLM)."""
    hist, edges = np.histogram(a, bins=bins, range=(0.0, float(a.max())))
    hist = hist.astype(np.float64)
    levels = 1 << (bits - 1)
    cands = np.arange(levels, bins + 1, max(1, bins * ENTROPY_STRIDE // ENTROPY_BINS))
    size, extra = cands[:, None] // levels, cands[:, None] % levels
    c = np.arange(levels + 1)[None, :]
    bounds = c * size + np.minimum(c, extra)  # [candidates, L + 1]: each chunk's first bin, then i
    below = np.concatenate([[0.0], np.cumsum(hist)])
    nonzero = np.concatenate([[0.0], np.cumsum(hist > 0)])
    total = below[-1]
    with np.errstate(divide="ignore", invalid="ignore"):
        plogp = np.concatenate([[0.0], np.cumsum(np.where(hist > 0, hist * np.log(hist / total), 0.0))])
        mass = np.diff(below[bounds], axis=1)
        spread = mass / np.maximum(np.diff(nonzero[bounds], axis=1), 1)
        kept = below[cands][:, None]
        p_last = (total - below[cands - 1]) / total  # bin i - 1 with the tail folded in
        ref_mass = mass.copy()
        ref_mass[:, -1] -= hist[cands - 1]  # bin i - 1 is in the last chunk; its reference mass is p_last
        cross = np.where(ref_mass > 0, ref_mass / total * np.log(spread / kept), 0.0).sum(axis=1)
        q_last = np.where(hist[cands - 1] > 0, spread[:, -1] / kept[:, 0], 0.0)
        cross += np.where(p_last > 0, p_last * np.log(np.maximum(q_last, 1e-12)), 0.0)
        self_term = plogp[cands - 1] / total + np.where(p_last > 0, p_last * np.log(p_last), 0.0)
    return float(edges[cands[int(np.argmin(self_term - cross))]])


def _upper_cholesky_of_inverse(h: np.ndarray) -> np.ndarray:
    """U, upper triangular, with H^-1 = U^T U (GPTQ's: row i holds the error feedback of row i onto rows > i).

    Without forming H^-1: with J the reversal, J H J = L L^T gives H^-1 = (J L^-1 J)^T (J L^-1 J) and J L^-1 J is
    upper triangular with a positive diagonal, so it is U. One Cholesky and one triangular solve (with one thread
    on a busy 2-core machine, 1 s for a 1536 x 1536 H, where inv + cholesky with a thread pool took 9 s)."""
    import torch  # only GPTQ needs torch (its Cholesky); importing the recipes must not load it

    flipped = torch.from_numpy(np.ascontiguousarray(h[::-1, ::-1]))
    low = torch.linalg.cholesky(flipped)
    inv = torch.linalg.solve_triangular(low, torch.eye(len(h), dtype=torch.float64), upper=False)
    return np.ascontiguousarray(inv.numpy()[::-1, ::-1])


def gptq_quantize(w: np.ndarray, x: np.ndarray, bits: int, group: int = 0, damp: float = 0.01,
                  block: int = 128, group_step: Callable[[np.ndarray], np.ndarray] | None = None,
                  act_order: bool = False) -> tuple[np.ndarray, np.ndarray]:
    """GPTQ codes and scales of ``w`` [K, N] given calibration inputs ``x`` [rows, K]: the same layout as
    :func:`quantize_weight` (per output channel, or per ``group`` input rows), but each input row's rounding error
    is compensated on the rows not yet quantized, weighted by the inverse Hessian of the layer's squared error.

    ``group_step``: a group's rows [g, N] (as the errors fed back so far left them) -> its steps [N] (default: max
    |w| over the grid; compiler/quant_groups.py ``snap``: the clip that rounds them best, on the two-level grid).
    ``act_order``: quantize the input rows in decreasing order of H's diagonal (GPTQ's ``--act-order``: the rows
    the output depends on most are rounded first, while every later row can still absorb their error); groups
    then keep their contiguous rows and take their steps from the unrounded weight up front (GPTQ's
    ``--static-groups``), so the stored layout is unchanged. Callers on a busy machine should run it with one BLAS
    thread (the quantize pass does: compiler/simulate/_threads.py)."""
    w = np.asarray(w, np.float64).copy()
    k, n = w.shape
    xx = np.asarray(x, np.float64)
    h = 2.0 * xx.T @ xx
    dead = np.diag(h) == 0
    h[dead, dead] = 1.0
    w[dead] = 0.0
    h[np.diag_indices(k)] += damp * float(np.mean(np.diag(h)))
    qmax = _qmax(bits)
    grouped = 0 < group < k
    static = None
    if act_order:
        perm = np.argsort(-np.diag(h), kind="stable")
        if grouped:
            static = np.stack([group_step(w[g0:g0 + group]) if group_step is not None
                               else np.maximum(np.abs(w[g0:g0 + group]).max(axis=0), 1e-12) / qmax
                               for g0 in range(0, k, group)])
        w, h = w[perm], h[perm][:, perm]
    hinv = _upper_cholesky_of_inverse(h)
    if static is not None:
        scales = static
    elif grouped:
        block = group * max(1, block // group)  # a group never straddles two blocks
        scales = np.zeros((-(-k // group), n))
    else:
        _, scales = quantize_weight(w, bits)
    q = np.zeros_like(w)
    for b0 in range(0, k, block):
        b1 = min(b0 + block, k)
        wb = w[b0:b1].copy()
        err = np.zeros_like(wb)
        hb = hinv[b0:b1, b0:b1]
        for j in range(b1 - b0):
            i = b0 + j
            if static is not None:
                s = scales[perm[i] // group]
            elif grouped:
                if i % group == 0:  # a new group: its scale from the rows it spans, as the errors left them
                    rows = wb[j:j + group]
                    scales[i // group] = (group_step(rows) if group_step is not None
                                          else np.maximum(np.abs(rows).max(axis=0), 1e-12) / qmax)
                s = scales[i // group]
            else:
                s = scales
            qi = np.clip(np.round(wb[j] / s), -qmax - 1, qmax)
            q[i] = qi
            e = (wb[j] - qi * s) / hb[j, j]
            wb[j:] -= np.outer(hb[j, j:], e)
            err[j] = e
        w[b1:] -= hinv[b0:b1, b1:].T @ err
    if act_order:
        q[perm] = q.copy()
    return q, scales
