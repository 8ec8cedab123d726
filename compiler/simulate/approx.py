"""Nonlinearities by the names ``--softmax`` / ``--gelu`` / ``--layernorm`` take, on integer or float data.

Integer data (a quantized model) goes straight into the integer kernel, with the scale the compiler's formats give
it. Float data (``--quant none`` with an approximation) has no hardware format yet, so each approximate unit is
modelled with its input quantized per call, per tensor, to the width the published design feeds it: 8 bits for
GELU (I-ViT's ShiftGELU input; its sigmoid degrades on finer grids), 16 bits for softmax scores and LayerNorm
inputs; the result is dequantized back to float. ``exact`` on float data is plain float32 (what ONNX Runtime does).

Float64 "exact" kernels on integer grids call the oracle (:mod:`compiler.numerics.exact`): they are float
semantics, and calling the same code is the only way to round identically.
"""

from __future__ import annotations

import math

import numpy as np
import torch

from compiler.frontend.precision import MASKED
from compiler.numerics import exact as _exact
from compiler.numerics.ilayernorm import eps_units
from compiler.numerics.log2q import log2q_dequantize, log2q_quantize
from compiler.simulate import intkernels as K

__all__ = ["IBERT_GELU_MIN_STEP", "IBERT_MAX_STEP", "IBERT_MIN_STEP", "SHIFTMAX_BALANCE", "ibert_grid",
           "layernorm_shifts",
           "shiftmax_min_step", "shiftmax_grid", "softmax_int", "gelu_int", "layernorm_int", "softmax_float",
           "gelu_float", "layernorm_float", "gelu_input_format", "gelu_reference", "with_sink_column",
           "LOG2Q_GRID_BITS", "SHIFTGELU_STABILIZER"]

#: GELU names that are I-ViT's ShiftGELU, and the stabilizer each uses (compiler.numerics.shiftgelu).
SHIFTGELU_STABILIZER = {"shiftgelu": "element", "shiftgelu-row": "row"}

#: ShiftGELU's input grid is refined until x0 = floor(-1 / (1.702 S)) <= -SHIFTGELU_X0 (see gelu_input_format).
SHIFTGELU_X0 = 11

#: log2q probabilities are decoded onto this many fraction bits for the integer A.V product.
LOG2Q_GRID_BITS = 15


def _t(x: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(np.ascontiguousarray(x))


def with_sink_column(x: np.ndarray, sinks: np.ndarray) -> np.ndarray:
    """``x`` with one more last-axis column holding ``sinks`` (broadcast to ``x.shape[:-1] + (1,)``: one attention
    sink per row, per head for [B, H, Sq, Sk] scores and sinks shaped [H, 1, 1])."""
    column = np.broadcast_to(np.asarray(sinks).astype(x.dtype), x.shape[:-1] + (1,))
    return np.concatenate([x, column], axis=-1)


def softmax_int(name: str, x: np.ndarray, scale: float, bits: int,
                sinks: np.ndarray | None = None) -> tuple[np.ndarray, float]:
    """Softmax ``name`` of integer scores ``x`` (real x * scale) along the last axis: (p_int, p_scale).

    ``log2q`` quantizes the exact probabilities to ``bits``-bit log-sqrt2 codes (RepQ-ViT) and decodes them onto a
    2^-15 grid, the fixed-point form a shift-add A.V datapath consumes. ``sinks`` (real logits, broadcast over each
    row as in `with_sink_column`): attention sinks, rounded onto the scores' grid as one more column of each row,
    which the unit normalises with the others; the sink's probability is dropped from the result.
    """
    if sinks is not None:
        with np.errstate(over="ignore", invalid="ignore"):
            grid = np.clip(np.round(np.asarray(sinks, np.float64) / scale), -(2.0**31), 2.0**31 - 1)
        p, ps = softmax_int(name, with_sink_column(x, grid.astype(np.int64)), scale, bits)
        return p[..., :-1], ps
    if name == "shiftmax":
        x, scale = shiftmax_grid(x, scale)
        return K.shiftmax(x, scale, bits)
    if name == "base2":
        return K.base2_softmax(x, scale, bits)
    if name == "online":
        return K.online_softmax(x, scale, bits)
    if name == "ibert":
        x, scale = ibert_grid(x, scale)
        return K.ibert_softmax(x, scale, bits)
    if name == "exact":
        y, s = _exact.softmax_exact(_t(x), scale, bits)
        return y.numpy(), s
    if name == "log2q":
        p = torch.softmax(_t(x).to(torch.float64) * scale, dim=-1)
        codes, _ = log2q_quantize(p, bits, delta=1.0)
        real = log2q_dequantize(codes, 1.0, bits).numpy()
        return np.round(real * 2.0**LOG2Q_GRID_BITS).astype(np.int64), 2.0**-LOG2Q_GRID_BITS
    raise ValueError(f"no integer softmax '{name}'")


#: Shiftmax's score grid for an n-key row is no finer than sqrt(n / 2^SHIFTMAX_BALANCE) (shiftmax_grid says why).
SHIFTMAX_BALANCE = 21


def shiftmax_min_step(n: int) -> float:
    """The finest score step Shiftmax is given for rows of ``n`` keys (``shiftmax_grid``'s rule)."""
    return max(2.0**-8, float(np.sqrt(n / 2.0**SHIFTMAX_BALANCE)), n / 65536.0)


def shiftmax_grid(x: np.ndarray, scale: float) -> tuple[np.ndarray, float]:
    """Coarsen scores by an arithmetic right shift to a grid where Shiftmax's two roundings are both small.

    Shiftmax (compiler/numerics/shiftmax.py) rounds twice. Its exponentials are floors on the score grid S, each
    off by up to a relative S. Its row sum of e_i (each up to 2^15 / S) is normalised by the quotient
    q = floor((2^31 - 1) / sum), about 2^16 S / n for a flat n-key row, which drops up to 1 / q of the row's mass,
    about n / (2^16 S). A finer grid shrinks the first error and grows the second (below S = n / 2^16 the sum
    saturates outright); their sum is least near S = sqrt(n / 2^16), and peaked rows, whose sum is dominated by a
    few keys, favour finer grids. The grid is therefore no finer than

        max(2^-8, sqrt(n / 2^21), n / 2^16)

    reached by x >> k with the smallest such k (a coarser grid is kept). Measured L1 error of a row against the
    float softmax, rows of N(0, sigma) scores, n from 16 to 4096, sigma 0.3 / 1 / 3, three starting grids: mean
    0.066 under the previous rule max(n, 256) / 2^16 and 0.053 under this one; on ViT's 197-key rows 0.148 / 0.038
    / 0.024 before and 0.059 / 0.021 / 0.026 after (the flat rows' sums were 15% low: q of 1-3). A finer constant
    (2^19) has a lower mean error (0.046) but costs peaked rows, and the pretrained MiniLM's per-token cosine
    (0.9939 at 2^21, identical to the previous rule; 0.9937 at 2^19); int8 ViT-Base's output cosine is 0.9967 before
    and 0.9985 after. The 2^-8 floor keeps q at 8 bits or more on short rows (1-16 keys: windowed and separable
    attention). Exact integer arithmetic (a floor shift the compiler computes: the RTL takes x >> k), so RTL and
    simulator agree.
    """
    need = shiftmax_min_step(x.shape[-1] if x.ndim else 1)
    if scale >= need:
        return x, scale
    k = int(np.ceil(np.log2(need / scale)))
    return np.right_shift(x.astype(np.int64), k), scale * 2.0**k


#: I-BERT's i-exp is defined for score steps in (IBERT_MIN_STEP, 1]: below, its constant c = floor(2.79 / S^2) passes
#: 2^32 and the exponentials overflow int64 (compiler/numerics/ibert.py).
IBERT_MIN_STEP = 2.9e-5


#: The finest 16-bit input step I-BERT's i-GELU keeps within 32 bits: its "1" on the erf grid is about
#: 1 / (S'^2 x 0.2888 x 2^14) with S' = S / 1.4142, and |x (erf + 1)| < 2^15 x 2 |1| stays below 2^31 while
#: S' > sqrt(2^16 / (2^31 x 0.2888 x 2^14)) (compiler/numerics/ibert.py's constants).
#: The finest input step ShiftGELU's exponentials take: x0 = floor(-1 / (1.702 S)) must stay above -2^29, where
#: the int64 products of shift_exp stop being exact (compiler/simulate/intkernels.py `_shift_x0`).
SHIFTGELU_MIN_STEP = 1.0 / (1.702 * ((1 << 29) - 2))
IBERT_GELU_MIN_STEP = math.sqrt(2.0**16 / (2.0**31 * 0.2888 * 2.0**14)) * 1.4142


#: The coarsest score step I-BERT's i-exp is accurate on: its range reduction uses x0 = floor(-0.6931 / S), so a
#: coarse step misplaces ln 2. Max error against the float softmax, 8-bit output, N(0, 3) scores: 0.004 at 2^-12
#: and 2^-10, 0.006 at 2^-8, 0.013 at 2^-6, 0.056 at 2^-4, 0.28 at 1 (int8 MiniLM's steps: 2e-4 to 6e-4).
IBERT_MAX_STEP = 2.0**-10


def ibert_grid(x: np.ndarray, scale: float) -> tuple[np.ndarray, float]:
    """Scores moved onto a grid I-BERT's i-exp is defined and accurate on, with the smallest shift k: a step finer
    than IBERT_MIN_STEP (scores spanning less than about 0.06 at 11 bits: small or random weights) coarsened by
    x >> k, one coarser than IBERT_MAX_STEP refined by x << k (exact). The scores' real values are kept to within
    the new step, far finer than the softmax's 8-bit output resolves."""
    if scale <= IBERT_MIN_STEP:
        k = int(np.floor(np.log2(IBERT_MIN_STEP / scale))) + 1
        return np.right_shift(x.astype(np.int64), k), scale * 2.0**k
    if scale > IBERT_MAX_STEP:
        k = int(np.ceil(np.log2(scale / IBERT_MAX_STEP)))
        return np.left_shift(x.astype(np.int64), k), scale / 2.0**k
    return x, scale


def gelu_reference(x: np.ndarray, approx: str) -> np.ndarray:
    """Float GELU as ONNX computes it: erf form, the exporter's tanh form for ``approx == 'tanh'``, the model's
    x * sigmoid(1.702 x) for ``approx == 'sigmoid'`` (written with tanh: no overflow of exp(-1.702 x))."""
    if approx == "tanh":
        return 0.5 * x * (1 + np.tanh(np.sqrt(2 / np.pi) * (x + 0.044715 * x**3)))
    if approx == "sigmoid":
        return 0.5 * x * (1 + np.tanh(0.851 * x))
    return 0.5 * x * (1 + torch.special.erf(_t(x / np.sqrt(2).astype(x.dtype))).numpy())


def gelu_int(name: str, x: np.ndarray, scale: float) -> tuple[np.ndarray, float]:
    """GELU ``name`` of integer ``x`` (real x * scale): (y_int, y_scale). 8-bit grids as I-ViT's IntGELU."""
    if name in SHIFTGELU_STABILIZER:
        return K.shiftgelu(x, scale, 8, SHIFTGELU_STABILIZER[name])
    if name == "ibert":
        return K.ibert_gelu(x, scale)
    if name == "lut":
        return K.lut_gelu(x, scale)
    if name in ("exact", "tanh", "sigmoid"):
        if name == "exact":
            y, s = _exact.gelu_exact(_t(x), scale, 8)
            return y.numpy(), s
        out_scale = scale * 2.0**-7
        return np.round(gelu_reference(x.astype(np.float64) * scale, name) / out_scale).astype(np.int64), out_scale
    raise ValueError(f"no integer GELU '{name}'")


def layernorm_int(name: str, x: np.ndarray, scale: float, gamma: np.ndarray, beta: np.ndarray | None,
                  eps: float, *, in_bits: int, rms: bool = False) -> tuple[np.ndarray, np.ndarray]:
    """LayerNorm ``name`` of integer ``x`` over the last axis: (y_int, per-channel scale sqrt(C)/2^30 * gamma).
    ``in_bits``: the width of ``x``'s grid, which bounds I-LayerNorm's epsilon in variance units
    (``compiler.numerics.ilayernorm.eps_units``).

    A channel whose weight is 0 outputs its bias whatever ``x`` is (a QDQ model's int8 LayerNorm weight rounds small
    weights to 0): it is computed on a unit weight's grid, its value the kernel's output on a zero row (the bias
    term alone), since the grid step, proportional to the weight, cannot be 0. A channel whose weight is negative
    (trained norms have some) is computed on |weight|'s grid with its bias negated and its codes negated after: the
    same real values on a positive step, which every requantizer downstream needs. ``rms``: RMSNorm (the mean taken
    as 0; I-LayerNorm's steps otherwise, ``ilayernorm`` only)."""
    beta = np.zeros_like(gamma) if beta is None else beta
    zero = np.asarray(gamma) == 0
    if zero.any():
        unit = np.where(zero, 1.0, gamma)
        y, ys = layernorm_int(name, x, scale, unit, beta, eps, in_bits=in_bits, rms=rms)
        bias, _ = layernorm_int(name, np.zeros((1, np.shape(x)[-1]), np.int64), 1.0, unit, beta, eps,
                                in_bits=in_bits, rms=rms)
        return np.where(zero, bias.reshape(-1), y), ys
    negative = np.asarray(gamma) < 0
    if negative.any():  # on |gamma|'s grid with the bias negated, then the codes negated: the same real values
        y, ys = layernorm_int(name, x, scale, np.abs(gamma), np.where(negative, -beta, beta), eps, in_bits=in_bits,
                              rms=rms)
        return np.where(negative, -y, y), ys
    if name == "ilayernorm":
        y, ys = K.ilayernorm(x, scale, gamma, beta, eps_units(np.shape(x)[-1], eps, scale, in_bits), rms)
    elif rms:
        raise ValueError(f"no integer RMSNorm '{name}'")
    elif name == "exact":
        yt, st = _exact.layernorm_exact(_t(x), scale, _t(gamma.astype(np.float64)), _t(beta.astype(np.float64)),
                                        eps)
        y, ys = yt.numpy(), st.numpy()
    else:
        raise ValueError(f"no integer LayerNorm '{name}'")
    shift = layernorm_shifts(gamma, beta)
    if shift.any():  # channels whose bias would take the codes past 31 bits: a coarser grid there
        y, ys = np.right_shift(y, shift), ys * np.exp2(shift)
    return y, ys


def layernorm_shifts(gamma: np.ndarray, beta: np.ndarray | None) -> np.ndarray:
    """Per channel, the right shift k that keeps an integer LayerNorm's output codes within 31 bits: the normalized
    term is below 2^30 on the grid sqrt(C) / 2^30 * |gamma| (|x - mean| / std <= sqrt(C - 1)), the bias term is
    beta over that step, past 2^30 where |beta / gamma| > sqrt(C) (a small weight under a large bias, as trained
    norms have in some channels; a requantizer reads at most 32 bits). Such a channel's codes are shifted right by
    k, its step made 2^k times coarser: the same real values within one new step, still ~30 bits of resolution. 0
    elsewhere."""
    g = np.abs(np.asarray(gamma, dtype=np.float64))
    if beta is None:
        return np.zeros(g.shape, dtype=np.int64)
    step = math.sqrt(g.shape[-1]) / 2**30 * np.where(g == 0, 1.0, g)
    need = (2.0**30 + np.abs(np.asarray(beta, dtype=np.float64)) / step) / (2.0**31 - 1)
    return np.maximum(0, np.ceil(np.log2(np.maximum(need, 1.0)))).astype(np.int64)




def _dynamic(x: np.ndarray, bits: int, ref: np.ndarray | None = None) -> tuple[np.ndarray, float]:
    """``x`` on a symmetric per-tensor grid sized by max|ref| (``ref`` defaults to ``x``), clipped to int32."""
    ref = x if ref is None else ref
    amax = float(np.abs(ref).max()) if ref.size else 0.0
    scale = max(amax, 1e-30) / ((1 << (bits - 1)) - 1)
    with np.errstate(over="ignore", invalid="ignore"):
        q = np.clip(np.round(x.astype(np.float64) / scale), -(2.0**31), 2.0**31 - 1)
    return q.astype(np.int64), scale


def softmax_float(name: str, scores: np.ndarray, bias: np.ndarray | None, bits: int,
                  sinks: np.ndarray | None = None) -> np.ndarray:
    """Softmax ``name`` of float ``scores + bias`` (bias: additive mask); the grid is sized by ``scores`` alone,
    without the "minus infinity" entries (|x| >= MASKED: a mask added before the softmax, as a Softmax outside a
    recognised attention reads it). Sized by them, the grid's step would be 1e34 and every score the same code.
    ``sinks``: attention sinks, one more column of each row (`with_sink_column`, unmasked, on the same grid, which
    they size too) whose probability is dropped from the result."""
    if sinks is not None:
        scores = with_sink_column(scores, sinks)
        bias = None if bias is None else with_sink_column(np.asarray(bias), np.zeros((), bias.dtype))
        return softmax_float(name, scores, bias, bits)[..., :-1]
    x = scores if bias is None else scores + bias
    if name == "exact":
        x = x - x.max(axis=-1, keepdims=True)
        e = np.exp(x)
        return e / e.sum(axis=-1, keepdims=True)
    with np.errstate(invalid="ignore"):
        kept = np.abs(scores) < MASKED
    q, s = _dynamic(x, 16, scores if kept.all() else scores[kept])
    p, ps = softmax_int(name, q, s, bits)
    return (p * ps).astype(scores.dtype)


def gelu_input_format(name: str, amax: float) -> tuple[int, float]:
    """(container bits, scale) of the integer GELU unit's input for real values up to ``amax``.

    ShiftGELU: I-ViT's int8 grid (amax / 127) unless its x0 = floor(-1 / (1.702 S)) is above -SHIFTGELU_X0;
    then the step that makes x0 = -SHIFTGELU_X0, in an int16 container. ShiftGELU's error depends on x0 more
    than on the range: the exponent's
    fraction is (x mod x0) / x0 and log2(e) x is x + (x >> 1) - (x >> 4) with floors, so a coarse grid (|x0|
    small: MiniLM's FFN range of +-25 on I-ViT's int8 grid gives x0 = -3) puts every exponential off by up to
    a third of a binade, while a fine one (|x0| large) leaves the division floor((2^31 - 1) / sum) only about
    256 / |x0| levels. Over N(0, 1.5) inputs the rms error of x * sigmoid is lowest, about 0.045, for x0
    from -9 to -13 (0.077 at -3, 0.06 at -16, 0.08 at -25); I-ViT's own ViT/DeiT ranges of +-6 to +-10 at
    8 bits land in that basin. A grid finer than I-ViT's is never made coarser (on MiniLM that measured worse
    than keeping int8: its narrow last-layer ranges are not N(0, 1.5)).
    Others: 16 bits (I-BERT's i-GELU drops 14 bits of its polynomial, so it needs a fine grid; I-BERT feeds it
    the 32-bit accumulator), for I-BERT no finer than IBERT_GELU_MIN_STEP (a narrower range, from small weights,
    would take its output past 32 bits); ShiftGELU no finer than SHIFTGELU_MIN_STEP (a GELU fed values under
    about 1e-7, a gate multiplied by near-zero weights, whose codes then round to 0).
    """
    amax = max(float(amax), 1e-8)
    if name == "ibert":
        return 16, max(amax / 32767, IBERT_GELU_MIN_STEP)
    if name not in SHIFTGELU_STABILIZER:
        return 16, amax / 32767
    scale = amax / 127
    if math.floor(-1.0 / (1.702 * scale)) <= -SHIFTGELU_X0:
        return 8, max(scale, SHIFTGELU_MIN_STEP)
    return 16, max(1.0 / (1.702 * (SHIFTGELU_X0 - 0.5)), amax / 32767)


def gelu_float(name: str, x: np.ndarray) -> np.ndarray:
    """GELU ``name`` on float ``x``: float32 for exact / tanh, else via the per-tensor grid ``gelu_input_format``
    sizes."""
    if name in ("exact", "tanh", "sigmoid"):
        return gelu_reference(x, name).astype(x.dtype)
    amax = float(np.abs(x).max()) if x.size else 0.0
    bits, s = gelu_input_format(name, amax)
    y, ys = gelu_int(name, K.quantize(x, s, bits), s)
    return (y * ys).astype(x.dtype)


def layernorm_float(name: str, x: np.ndarray, gamma: np.ndarray, beta: np.ndarray | None, eps: float,
                    rms: bool = False) -> np.ndarray:
    """LayerNorm ``name`` on float ``x`` over the last axis: float32 for exact, else via a 16-bit grid. ``rms``:
    RMSNorm (``ilayernorm`` only; its exact form is the kernel's own float code)."""
    if name == "exact":
        mean = x.mean(axis=-1, keepdims=True)
        d = x - mean
        var = (d * d).mean(axis=-1, keepdims=True)
        y = d / np.sqrt(var + np.float32(eps)) * gamma
        return (y + beta if beta is not None else y).astype(x.dtype)
    q, s = _dynamic(x, 16)
    y, ys = layernorm_int(name, q, s, gamma, beta, eps, in_bits=16, rms=rms)
    return (y * ys).astype(x.dtype)
