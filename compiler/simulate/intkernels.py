"""NumPy int64 versions of the integer kernels in :mod:`compiler.numerics` (the PyTorch oracle).

The functional simulator runs these, not the oracle: they are a second, independent implementation (numpy, no
torch), and tests/test_simulate_kernels.py checks they are bit-exact to the oracle on thousands of random and edge
cases. Each function documents nothing new: the arithmetic is the oracle's, written down in its module docstring
(cited per function). All integer inputs are int64 arrays; every floor is a shift or ``np.floor_divide``.

Range checks are the oracle's where a violation would silently give a different answer (int64 overflow);
elsewhere the simulator trusts the compiler, which chose the scales.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from compiler.numerics.base2 import EXP2_LUT
from compiler.numerics.lut_gelu import GELU_DELTA_LUT
from compiler.numerics.quant import dyadic
from compiler.numerics.shiftgelu import SHIFTGELU_N, e_shift

__all__ = [
    "round_shift",
    "quantize",
    "requantize",
    "requantize_add",
    "shift_exp",
    "shiftmax",
    "shiftmax_x0",
    "shiftgelu",
    "shiftgelu_x0",
    "ilayernorm",
    "ilayernorm_core",
    "ibert_softmax",
    "ibert_gelu",
    "base2_softmax",
    "online_softmax",
    "online_softmax_me",
    "lut_gelu",
    "per_token_gemm",
    "topk",
]

I64 = np.int64
_SAT = 1 << 60  # saturation magnitude of left shifts (compiler.numerics._intops.INT64_SAT)
_SUM_MAX = (1 << 31) - 1
_EXP2 = np.array(EXP2_LUT, dtype=I64)
_GELU_LUT = np.array(GELU_DELTA_LUT, dtype=I64)


def _i64(x: np.ndarray) -> np.ndarray:
    return np.asarray(x, dtype=I64)


def _check32(x: np.ndarray, name: str) -> None:
    if x.size and int(np.abs(x).max()) >= 1 << 32:
        raise ValueError(f"{name} must satisfy |{name}| < 2**32, got max {int(np.abs(x).max())}")


def sat_shl(v: np.ndarray, k: np.ndarray | int) -> np.ndarray:
    """v * 2^k for k >= 0, saturating at +-2^60 (oracle: ``_intops.sat_shl``)."""
    k = np.clip(np.asarray(k, dtype=I64), 0, 61)
    lim = np.right_shift(I64(_SAT), k)
    a = np.abs(v)
    # Past lim the exact product exceeds 2^60; shifting only the small ones keeps int64 from wrapping.
    shifted = np.left_shift(np.where(a > lim, 0, v), k)
    return np.where(a > lim, np.sign(v) * _SAT, shifted)


def round_shift(p: np.ndarray, e: np.ndarray | int) -> np.ndarray:
    """round_half_even(p / 2^e) for int64 p and integer e of any sign (oracle: ``_intops.round_shift``)."""
    if isinstance(e, (int, np.integer)) and 1 <= int(e) <= 62:
        e = int(e)
        q = np.right_shift(p, e)
        rem = p - np.left_shift(q, e)
        half = 1 << (e - 1)
        return q + ((rem > half) | ((rem == half) & ((q & 1) == 1)))
    e = np.asarray(e, dtype=I64)
    if e.size and 1 <= int(e.min()) and int(e.max()) <= 62:
        # Per-channel shifts all in the plain range (the common case): the scalar formula, broadcast.
        q = np.right_shift(p, e)
        rem = p - np.left_shift(q, e)
        half = np.left_shift(I64(1), e - 1)
        return q + ((rem > half) | ((rem == half) & ((q & 1) == 1)))
    p, e = np.broadcast_arrays(p, e)
    ep = np.clip(e, 1, 62)
    q = np.right_shift(p, ep)
    rem = p - np.left_shift(q, ep)
    half = np.left_shift(I64(1), ep - 1)
    rounded = q + ((rem > half) | ((rem == half) & ((q & 1) == 1)))
    big = np.where(p > (1 << 62), 1, np.where(p < -(1 << 62), -1, 0)).astype(I64)
    big = np.where(e == 63, big, 0)
    left = sat_shl(p, -e)
    return np.where(e <= 0, left, np.where(e <= 62, rounded, big))


def quantize(x: np.ndarray, scale: float | np.ndarray, bits: int) -> np.ndarray:
    """clamp(round_half_even(x / scale)) to signed ``bits`` (oracle: ``quant.quantize``; scale broadcasts)."""
    lo, hi = -(1 << (bits - 1)), (1 << (bits - 1)) - 1
    return np.clip(np.round(np.asarray(x, dtype=np.float64) / scale), lo, hi).astype(I64)


def _scaled(acc: np.ndarray, m: np.ndarray | int, e: np.ndarray | int) -> np.ndarray:
    amax = max(int(acc.max()), -int(acc.min())) if acc.size else 0
    if amax >= 1 << 32:
        raise ValueError(f"acc must satisfy |acc| < 2**32, got max {amax}")
    m = np.asarray(m, dtype=I64)
    e_arr = np.asarray(e, dtype=I64)
    if not (m.size and e_arr.size):
        return round_shift(acc * m, e)
    bound = amax * int(np.abs(m).max())  # bounds |acc * m|
    e_lo, e_hi = int(e_arr.min()), int(e_arr.max())
    if bound < 1 << 53 and 0 <= e_lo and e_hi <= 1000:
        # |acc * m| < 2^53 and 0 <= e <= 1000: acc * (m * 2^-e) is that exact product scaled by a power of two
        # (no overflow, no subnormal), so float64 holds it exactly and rint (round half to even) rounds it as
        # round_shift does, in fewer passes than int64 shifts.
        step = m.astype(np.float64) * np.exp2(-e_arr.astype(np.float64))
        y = acc.astype(np.float64)
        y *= step
        return np.rint(y, out=y).astype(I64)
    p = acc * m
    if bound < 1 << 62 and 1 <= e_lo and e_hi <= 61:
        # round_half_even(p / 2^e) = (p + 2^(e-1) - 1 + bit0(floor(p / 2^e))) >> e: a remainder below half stays
        # below 2^e, one above half carries, an exact half carries only onto an odd quotient. |p| < 2^62 keeps
        # the sum inside int64. Half the passes of round_shift's general form.
        bit = np.right_shift(p, e_arr)
        bit &= 1
        p += np.left_shift(I64(1), e_arr - 1) - 1
        p += bit
        return np.right_shift(p, e_arr, out=p)
    return round_shift(p, e)


def requantize(acc: np.ndarray, m: np.ndarray | int, e: np.ndarray | int, out_bits: int) -> np.ndarray:
    """clamp(round_half_even(acc * m / 2^e)) to signed ``out_bits`` (oracle: ``quant.requantize``).

    ``m`` and ``e`` broadcast against ``acc`` (per channel: shape (C,) along the last axis).
    """
    lo, hi = -(1 << (out_bits - 1)), (1 << (out_bits - 1)) - 1
    y = _scaled(_i64(acc), m, e)
    return np.clip(y, lo, hi, out=y)


def requantize_add(acc: np.ndarray, m: np.ndarray | int, e: np.ndarray | int, ident: np.ndarray,
                   m_id: np.ndarray | int, e_id: np.ndarray | int, out_bits: int) -> np.ndarray:
    """I-ViT's residual QuantAct: both branches rounded on their own, summed, clamped (``quant.requantize_add``)."""
    lo, hi = -(1 << (out_bits - 1)), (1 << (out_bits - 1)) - 1
    return np.clip(_scaled(_i64(acc), m, e) + _scaled(_i64(ident), m_id, e_id), lo, hi)


def _shift_x0(scale: float) -> int:
    """ShiftExp's x0 = floor(-1 / scale), refused below -2^29 (beyond it int64 products are no longer exact)."""
    x0 = math.floor(-1.0 / scale)
    if x0 <= -(1 << 29):
        raise ValueError(f"scale {scale!r} is too small for shift_exp: floor(-1/scale) must exceed -2**29")
    return x0


def shift_exp(x: np.ndarray, scale: float, n: int) -> np.ndarray:
    """I-ViT ``int_exp_shift`` (oracle: ``shiftmax.shift_exp``): e * scale / 2^n ~= exp(x * scale)."""
    return _shift_exp_x0(x, _shift_x0(scale), n)


def _shift_exp_x0(x: np.ndarray, x0: int, n: int) -> np.ndarray:
    """:func:`shift_exp` given its integer constant ``x0 = floor(-1 / scale)`` (what a unit's register holds)."""
    x = x + np.right_shift(x, 1) - np.right_shift(x, 4)
    x = np.maximum(x, n * x0)
    q = np.floor_divide(x, x0)
    r = x - x0 * q
    return np.right_shift(sat_shl(r - 2 * x0, n - q), 1)


def _shift_exp_nonpositive(x: np.ndarray, x0: int, n: int) -> np.ndarray:
    """:func:`shift_exp` for x <= 0 (given x0): the shift n - q lies in [0, n], so nothing can saturate."""
    x = x + np.right_shift(x, 1) - np.right_shift(x, 4)
    x = np.maximum(x, n * x0)
    # 0 <= x / x0 <= n: a float64 quotient is within n * 2^-53 of the true one, and a non-integer true quotient
    # is at least 1 / |x0| > 2^-29 from the next integer, so this floor is exact (and several times faster than
    # an int64 floor_divide).
    q = np.floor(x / float(x0)).astype(I64)
    r = x - x0 * q
    return np.right_shift(np.left_shift(r - 2 * x0, n - q), 1)


def _element_sigmoid(x: np.ndarray, x0: int, out_bits: int) -> np.ndarray:
    """ShiftGELU's sigmoid with m = max(x, 0): one exponent is e^0 = (|x0| << 23) >> k, the other e^(-|x|) >> k
    (k = e_shift(x0), the oracle's)."""
    k = e_shift(x0)
    t = np.right_shift(_shift_exp_nonpositive(-np.abs(x), x0, SHIFTGELU_N), k)
    one = (I64(-x0) << SHIFTGELU_N) >> k
    e = np.where(x >= 0, one, t)
    total = np.minimum(t + one, _SUM_MAX)
    # 2^23 <= total < 2^31 (e^0 >= 2^23 at k = 0, > 2^26 otherwise): the float64 quotient errs by under
    # 2^-22 / total, less than a non-integer quotient's distance 1 / total to the next integer, so the floor is
    # exact.
    return np.right_shift(e * np.floor(_SUM_MAX / total).astype(I64), 32 - out_bits)


def shiftmax(x: np.ndarray, scale: float, out_bits: int = 8) -> tuple[np.ndarray, float]:
    """I-ViT Shiftmax over the last axis (oracle: ``shiftmax.shiftmax``): (y, 2^-(b-1))."""
    return shiftmax_x0(x, _shift_x0(scale), out_bits), 2.0 ** -(out_bits - 1)


def shiftmax_x0(x: np.ndarray, x0: int, out_bits: int = 8) -> np.ndarray:
    """:func:`shiftmax`'s integers given ``x0 = floor(-1 / scale)``: what the machine's ``VEC shiftmax`` runs with
    the ``x0`` its configuration register holds (compiler/backend/machine.py)."""
    x = _i64(x)
    e = _shift_exp_x0(x - x.max(axis=-1, keepdims=True), x0, 15)
    total = np.minimum(e.sum(axis=-1, keepdims=True), _SUM_MAX)
    return np.right_shift(e * np.floor_divide(_SUM_MAX, total), 32 - out_bits)


def shiftgelu(x: np.ndarray, scale: float, out_bits: int = 8, stabilizer: str = "row") -> tuple[np.ndarray, float]:
    """I-ViT ShiftGELU (oracle: ``shiftgelu.shiftgelu``): (x * sigma, scale * 2^-(b-1)); m per row or element."""
    x = _i64(x)
    _check32(x, "x_int")
    s_sig = scale * 1.702
    if stabilizer == "row":
        k = e_shift(_shift_x0(s_sig))
        row_max = x.max(axis=-1, keepdims=True)
        e = np.right_shift(shift_exp(x - row_max, s_sig, SHIFTGELU_N), k)
        e_max = np.right_shift(shift_exp(-row_max, s_sig, SHIFTGELU_N), k)
    else:
        return shiftgelu_x0(x, _shift_x0(s_sig), out_bits), scale * 2.0 ** -(out_bits - 1)
    total = np.minimum(e + e_max, _SUM_MAX)
    sig = np.right_shift(e * np.floor_divide(_SUM_MAX, total), 32 - out_bits)
    return x * sig, scale * 2.0 ** -(out_bits - 1)


def shiftgelu_x0(x: np.ndarray, x0: int, out_bits: int = 8) -> np.ndarray:
    """The per-element ShiftGELU (``stabilizer="element"``) given ``x0 = floor(-1 / (1.702 scale))``: what the
    machine's ``VEC shiftgelu`` runs with its configuration register's ``x0``."""
    x = _i64(x)
    lo, hi = (int(x.min()), int(x.max())) if x.size else (0, 0)
    if hi - lo < 1 << 16 and x.size > 4 * (hi - lo + 1):
        # Elementwise: evaluate each distinct input once and look the rest up (bit-identical, ~5x fewer passes).
        sig = _element_sigmoid(np.arange(lo, hi + 1, dtype=I64), x0, out_bits)[x - lo]
    else:
        sig = _element_sigmoid(x, x0, out_bits)
    return x * sig


def _round_half_even_div(a: np.ndarray, d: int) -> np.ndarray:
    q = np.floor_divide(a, d)
    twice = 2 * (a - q * d)
    return q + ((twice > d) | ((twice == d) & ((q & 1) == 1)))


def ilayernorm(x: np.ndarray, scale: float, weight: np.ndarray, bias: np.ndarray,
               eps_int: int = 0, rms: bool = False) -> tuple[np.ndarray, np.ndarray]:
    """I-ViT I-LayerNorm over the last axis with the epsilon ``eps_int`` in variance units (oracle:
    ``ilayernorm.ilayernorm``; ``eps_units`` gives ``eps_int``): (y, sqrt(C)/2^30 * gamma). ``rms``: RMSNorm, the
    mean taken as 0."""
    c = np.shape(x)[-1]
    gamma = np.asarray(weight, dtype=np.float64)
    beta = np.asarray(bias, dtype=np.float64)
    step = math.sqrt(c) / 2**30
    return ilayernorm_core(x, eps_int, rms) + np.floor((beta / gamma) / step).astype(I64), step * gamma


def ilayernorm_core(x: np.ndarray, eps_int: int = 0, rms: bool = False) -> np.ndarray:
    """:func:`ilayernorm` before its per-channel integer bias (zero on a zero row, so the bias is the kernel's
    output there): what the machine's ``VEC ilayernorm`` computes before adding the bias words of its ``aux`` row.
    ``rms``: the mean taken as 0 (RMSNorm)."""
    x = _i64(x)
    c = x.shape[-1]
    y = x if rms else x - _round_half_even_div(x.sum(axis=-1, keepdims=True), c)
    ymax = int(np.abs(y).max()) if y.size else 0
    if float(ymax) ** 2 * c >= 2.0**62:
        raise ValueError(f"ilayernorm input too wide: C * max|x - mean|^2 = {c} * {ymax}^2 overflows int64")
    if not 0 <= eps_int < 1 << 62:
        raise ValueError(f"ilayernorm: eps_int must be in [0, 2^62), got {eps_int}")
    var = (y * y).sum(axis=-1, keepdims=True) + np.int64(eps_int)
    k = np.full_like(var, 1 << 16)
    for _ in range(10):  # I-ViT's fixed 10 Newton steps (constant hardware latency)
        k = np.floor_divide(k + np.floor_divide(var, k), 2)
    return np.right_shift(y * np.floor_divide(_SUM_MAX, k), 1)


# I-BERT literals, written exactly as compiler.numerics.ibert does so every derived float is the same.
_X0, _EXP_A, _EXP_B, _EXP_C = -0.6931, 0.35815147, 0.96963238 / 0.35815147, 1.0 / 0.35815147
_ERF_A, _ERF_B, _ERF_C, _SQRT2 = -0.2888, -1.769, 1.0 / -0.2888, 1.4142


def ibert_softmax(x: np.ndarray, scale: float, out_bits: int = 8) -> tuple[np.ndarray, float]:
    """I-BERT softmax (oracle: ``ibert.ibert_softmax``): i-exp, 16-bit requant, 2^32 / sum; scale 2^-b."""
    x = _i64(x)
    s = float(scale)
    if not 2.9e-5 < s <= 1.0:
        raise ValueError(f"scale {s!r} is out of range for I-BERT i-exp (needs 2.9e-5 < scale <= 1)")
    x0 = math.floor(_X0 / s)
    b_int = math.floor(_EXP_B / s)
    c_int = math.floor(_EXP_C / s**2)
    d = np.maximum(x - x.max(axis=-1, keepdims=True), 30 * x0)
    q = np.floor_divide(d, x0)
    r = d - x0 * q
    z = np.maximum(r * (r + b_int) + c_int, 0)
    m_int, e = dyadic(32767 / (c_int * 2**30))
    e16 = np.clip(round_shift(z * m_int, e - (30 - q)), -(1 << 15), (1 << 15) - 1)
    total = e16.sum(axis=-1, keepdims=True)
    return np.right_shift(e16 * np.floor_divide(1 << 32, total), 32 - out_bits), 2.0**-out_bits


def ibert_gelu(x: np.ndarray, scale: float) -> tuple[np.ndarray, float]:
    """I-BERT i-GELU (oracle: ``ibert.ibert_gelu``), returned with a positive scale."""
    x = _i64(x)
    _check32(x, "x_int")
    sp = scale / _SQRT2
    b_int = math.floor(_ERF_B / sp)
    c_int = math.floor(_ERF_C / sp**2)
    clipped = np.minimum(np.abs(x), -b_int)
    poly = np.sign(x) * ((clipped + b_int) ** 2 + c_int)
    erf_scale = sp**2 * _ERF_A * 2**14
    y = x * (np.right_shift(poly, 14) + math.floor(1.0 / erf_scale))
    return -y, -(scale * erf_scale / 2)


def _to_log2(x: np.ndarray, scale: float) -> np.ndarray:
    _check32(x, "x_int")
    m_c, e_c = dyadic(scale * math.log2(math.e) * (1 << 8))
    return requantize(x, m_c, e_c, 32)


def _exp2_q15(u: np.ndarray, m: np.ndarray) -> np.ndarray:
    d = u - np.left_shift(m, 8)
    k = -np.right_shift(d, 8)
    f = d & 255
    i, t = np.right_shift(f, 4), f & 15
    lo, hi = _EXP2[i], _EXP2[i + 1]
    return np.right_shift(lo + np.right_shift((hi - lo) * t, 4), np.minimum(k, 20))


def _normalize(e: np.ndarray, s: np.ndarray, out_bits: int) -> np.ndarray:
    return np.right_shift(e * np.floor_divide(_SUM_MAX, np.minimum(s, _SUM_MAX)), 32 - out_bits)


def base2_softmax(x: np.ndarray, scale: float, out_bits: int = 8) -> tuple[np.ndarray, float]:
    """Softermax-style base-2 softmax (oracle: ``base2.base2_softmax``): (y, 2^-(b-1))."""
    u = _to_log2(_i64(x), scale)
    m = (-np.right_shift(-u, 8)).max(axis=-1, keepdims=True)
    e = _exp2_q15(u, m)
    return _normalize(e, e.sum(axis=-1, keepdims=True), out_bits), 2.0 ** -(out_bits - 1)


def online_softmax(x: np.ndarray, scale: float, out_bits: int = 8) -> tuple[np.ndarray, float]:
    """Single-pass base-2 softmax (oracle: ``online_softmax.online_softmax``): (y, 2^-(b-1))."""
    m_c, e_c = dyadic(scale * math.log2(math.e) * (1 << 8))
    return online_softmax_me(x, m_c, e_c, out_bits), 2.0 ** -(out_bits - 1)


def online_softmax_me(x: np.ndarray, m_c: int, e_c: int, out_bits: int = 8) -> np.ndarray:
    """:func:`online_softmax`'s integers given its log2 multiplier ``(m_c, e_c) = dyadic(scale log2(e) 2^8)``:
    what the machine's ``VEC online_softmax`` runs with its configuration registers."""
    x = _i64(x)
    _check32(x, "x_int")
    u = requantize(x, m_c, e_c, 32)
    c = -np.right_shift(-u, 8)
    m = np.full(u.shape[:-1] + (1,), int(c.min()) - 1, dtype=I64)
    s = np.zeros_like(m)
    for j in range(u.shape[-1]):  # the recurrence is sequential by definition
        cj, uj = c[..., j:j + 1], u[..., j:j + 1]
        new = cj > m
        shift = np.clip(cj - m, 0, 62)
        s = np.where(new, np.right_shift(s, shift) + _exp2_q15(uj, cj), s + _exp2_q15(uj, m))
        m = np.where(new, cj, m)
    return _normalize(_exp2_q15(u, m), s, out_bits)


def lut_gelu(x: np.ndarray, scale: float) -> tuple[np.ndarray, float]:
    """Edge-MoE table GELU in Q10.22 (oracle: ``lut_gelu.lut_gelu``): (y, 2^-22)."""
    x = _i64(x)
    _check32(x, "x_int")
    if scale != 2.0**-22:
        x = requantize(x, *dyadic(scale * (1 << 22)), 32)
    a = np.abs(x)
    i = np.minimum(np.right_shift(a, 17), 175)
    t = a & ((1 << 17) - 1)
    lo, hi = _GELU_LUT[i], _GELU_LUT[i + 1]
    delta = np.where(a >= (176 << 17), 0, lo + np.right_shift(t * (hi - lo), 17))
    return np.maximum(x, 0) - delta, 2.0**-22


def per_token_gemm(x: np.ndarray, w: np.ndarray, offset: int, unsigned: bool, shift: int,
                   matmul: Any = None, colsum: np.ndarray | None = None) -> np.ndarray:
    """Per-token int8 GEMM without its bias (oracle: ``pertoken.per_token_gemm``): row step t = max(1, ceil(M / L)),
    codes round(x' / t) half away from zero, y = round_half_even((codes @ w * t - offset * colsum(w)) / 2^shift).
    ``matmul``: the exact integer product to use (the simulator's cached one, or a grouped one), default ``@`` in
    int64; ``colsum``: the column sums of the weight it stands for (default ``w``'s; a grouped weight's are of the
    codes times their group multipliers)."""
    xx = x.astype(I64) + int(offset)
    levels = 255 if unsigned else 127
    top = np.maximum(xx.max(axis=-1, keepdims=True), 0) if unsigned else np.abs(xx).max(axis=-1, keepdims=True)
    t = np.maximum((top + (levels - 1)) // levels, 1)
    mag = (2 * np.abs(xx) + t) // (2 * t)
    q = np.clip(np.where(xx < 0, -mag, mag), 0 if unsigned else -levels - 1, levels)
    acc = matmul(q, w) if matmul is not None else q @ w.astype(I64)
    cols = w.astype(I64).sum(axis=0) if colsum is None else colsum
    return round_shift(acc * t - int(offset) * cols, int(shift))


def topk(x: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """The top-``k`` MoE router on integer gate logits ``x`` [..., n] (oracle: ``router.route(...).experts``, which
    ranks the scaled logits with a stable sort, so equal logits go to the lower expert index; a positive logit scale
    keeps the integers' order): ``(experts, logits)``, both [..., k] int64, best first; ``logits`` are the chosen
    experts' own values. ``ValueError`` unless ``1 <= k <= n``. What the machine's ``VEC topk`` runs."""
    x = _i64(x)
    n = x.shape[-1]
    if not 1 <= k <= n:
        raise ValueError(f"topk: k={k} must be in 1..{n}")
    _check32(x, "x_int")  # so that -x cannot overflow and every logit is exact in the oracle's float64
    experts = np.argsort(-x, axis=-1, kind="stable")[..., :k].astype(I64)
    return experts, np.take_along_axis(x, experts, axis=-1)
