"""I-ViT I-LayerNorm (``IntLayerNorm``): integer mean, variance and a 10-step integer Newton sqrt.

Source: zkkli/I-ViT ``models/quantization_utils/quant_modules.py`` (``IntLayerNorm``). Semantics are
that code evaluated in float64 (exact integers for sums below 2^53) with sqrt(C) in float64; here every
integer step is exact int64, so the result stays defined past 2^53 as long as nothing overflows int64.

One addition to I-ViT: the model's epsilon. I-ViT's IntLayerNorm normalizes by sqrt(var) alone, which is
LayerNorm only while the variance dwarfs epsilon. A norm whose input varies little (the first GroupNorm of a
MobileViT-v2 block after timm's initialisation: variance 2.7e-5 against epsilon 1e-5) then comes out 17% too
large and the int8 model's cosine falls from 0.94 to 0.79. Here epsilon is added to the integer variance in its
own units (:func:`eps_units`: C * eps / scale^2, one integer per layer from the calibrated input scale), so
``eps_int = 0`` is I-ViT's algorithm bit for bit.
"""

from __future__ import annotations

import math

import torch

from compiler.numerics._intops import as_rows, floor_div, round_half_even_div, scalar_scale

__all__ = ["NEWTON_K0", "NEWTON_STEPS", "eps_units", "ilayernorm", "isqrt_newton"]

NEWTON_K0 = 1 << 16
"""Starting guess of I-ViT's integer square root."""

NEWTON_STEPS = 10
"""Fixed number of Newton steps (no convergence test, so hardware latency is constant)."""

_FACTOR_NUM = (1 << 31) - 1


def isqrt_newton(var: torch.Tensor, k0: int = NEWTON_K0, steps: int = NEWTON_STEPS) -> torch.Tensor:
    """I-ViT's integer square root: k = k0, then ``steps`` times k = floor((k + floor(var / k)) / 2).

    The result is always >= floor(sqrt(var)) (so never 0), but with a fixed start and step count it is
    not an isqrt: for 34596 <= var < 2^45 it is floor(sqrt(var)) or floor(sqrt(var)) + 1 (integer Newton
    can oscillate next to a perfect square); below 34596 it has not converged yet (k stays larger; a
    constant row, var = 0, ends at 2^16 / 2^10 = 64) and from about 2^45.9 up neither. Both ranges are
    pinned by tests. For LayerNorm, var = C * variance, so var >= 34596 means std >= sqrt(34596 / C)
    integer steps (6.7 for C = 768): a near-constant row normalizes to too small a value.
    """
    k = torch.full_like(var, k0)
    for _ in range(steps):
        k = floor_div(k + floor_div(var, k), 2)
    return k


def eps_units(c: int, eps: float, scale: float, in_bits: int) -> int:
    """LayerNorm's ``eps`` in the units of I-LayerNorm's integer variance ``sum((x - mean)^2)``: round(c * eps /
    scale^2), ``scale`` the input's step (real value per integer). At most the largest variance ``in_bits``-bit
    inputs can give, c * (2^in_bits - 1)^2 (and 2^62 - 1), so variance plus epsilon needs one bit more than the
    variance (the RTL unit's register, ``hw.rtl.ilayernorm.var_bits``); a larger epsilon, one above the square of
    the whole input range, normalizes as if it were that bound. 0 for ``eps <= 0``."""
    if not eps > 0:
        return 0
    cap = min(c * ((1 << in_bits) - 1) ** 2, (1 << 62) - 1)
    units = c * eps / scale**2 if scale > 0 else math.inf
    return cap if not units < cap else int(round(units))


def ilayernorm(
    x_int: torch.Tensor,
    scale: float,
    weight: torch.Tensor,
    bias: torch.Tensor,
    eps_int: int = 0,
    rms: bool = False,
) -> tuple[torch.Tensor, torch.Tensor]:
    """I-ViT I-LayerNorm over the last dimension (C channels): (y_int, out_scale), out_scale per channel.

    ``x_int`` integer tensor (..., C). ``scale`` is its per-tensor scale; LayerNorm does not depend on it,
    so it is only validated. ``weight`` (gamma) and ``bias`` (beta): float tensors of shape (C,),
    gamma nonzero. Per row::

        mean  = round_half_even(sum(x) / C)           # exact rational, ties to even (torch.round)
        y     = x - mean
        var   = sum(y^2) + eps_int                    # C times (variance + eps)
        k     = isqrt_newton(var)                     # ~ sqrt(C) * std
        y     = floor(y * floor((2^31 - 1) / k) / 2)  # ~ y / std * 2^30 / sqrt(C)
        y     = y + floor((beta / gamma) / (sqrt(C) / 2^30))

    out_scale = sqrt(C) / 2^30 * gamma (float64, shape (C,)); y_int * out_scale ~= LayerNorm(x) with
    epsilon ``eps_int`` (:func:`eps_units`; I-ViT's own I-LayerNorm is ``eps_int = 0``).
    ``rms``: RMSNorm (T5, LLaMA): the same steps with the mean taken as 0, so ``var = sum(x^2) + eps_int`` is C
    times the mean square plus epsilon and ``y_int * out_scale ~= x / sqrt(mean(x^2) + eps) * gamma (+ beta)``.
    The bias integer and out_scale are float64 expressions of gamma, beta and C
    in I-ViT's operation order. Requires C * max|y|^2 < 2^62 (int64 variance).
    """
    x = as_rows(x_int, "x_int")
    scalar_scale(scale)
    c = x.shape[-1]
    gamma = torch.as_tensor(weight).detach().to(torch.float64)
    beta = torch.as_tensor(bias).detach().to(torch.float64)
    if gamma.shape != (c,) or beta.shape != (c,):
        raise ValueError(
            f"weight and bias must have shape ({c},), got {tuple(gamma.shape)} and {tuple(beta.shape)}"
        )
    if bool((gamma == 0).any()) or not bool(torch.isfinite(gamma).all() & torch.isfinite(beta).all()):
        raise ValueError("ilayernorm needs finite weight and bias and a nonzero weight in every channel")

    mean = torch.zeros_like(x[..., :1]) if rms else round_half_even_div(x.sum(dim=-1, keepdim=True), c)
    y = x - mean
    ymax = int(y.abs().max())
    if float(ymax) ** 2 * c >= 2.0**62:
        raise ValueError(f"ilayernorm input too wide: C * max|x - mean|^2 = {c} * {ymax}^2 overflows int64")
    if not 0 <= eps_int < 1 << 62:
        raise ValueError(f"ilayernorm: eps_int must be in [0, 2^62), got {eps_int}")
    var = (y * y).sum(dim=-1, keepdim=True) + eps_int
    k = isqrt_newton(var)
    y = torch.bitwise_right_shift(y * floor_div(_FACTOR_NUM, k), 1)

    step = math.sqrt(c) / 2**30
    bias_real = torch.floor((beta / gamma) / step)
    if not bool((bias_real.abs() < 2.0**62).all()):
        raise ValueError("ilayernorm: beta / gamma is too large for an int64 bias at scale sqrt(C) / 2^30")
    return y + bias_real.to(torch.int64), step * gamma
