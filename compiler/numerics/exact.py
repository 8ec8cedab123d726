"""Float64 "exact" nonlinearities with the same integer interface as the approximations.

``--softmax exact`` etc. mean: compute the function in float64 on the dequantized input, then round
the result onto the output grid its integer counterpart uses, so a functional simulation can swap one
for the other without touching scales.
"""

from __future__ import annotations

import math

import torch

from compiler.numerics._intops import as_rows, check_bits, scalar_scale

__all__ = ["gelu_exact", "layernorm_exact", "softmax_exact"]


def softmax_exact(x_int: torch.Tensor, scale: float, out_bits: int = 8) -> tuple[torch.Tensor, float]:
    """softmax(x_int * scale) over the last dimension on Shiftmax's grid: (y_int, 2^-(b - 1)).

    y = min(round_half_even(p * 2^(b-1)), 2^(b-1) - 1) (a probability of 1 takes the largest code).
    """
    x = as_rows(x_int, "x_int")
    b = check_bits(out_bits, "out_bits", 2, 32)
    p = torch.softmax(x.to(torch.float64) * scalar_scale(scale), dim=-1)
    top = (1 << (b - 1)) - 1
    return torch.clamp(torch.round(p * 2.0 ** (b - 1)), 0, top).to(torch.int64), 2.0 ** -(b - 1)


def gelu_exact(x_int: torch.Tensor, scale: float, out_bits: int = 8) -> tuple[torch.Tensor, float]:
    """GELU(x_int * scale) = x Phi(x) (erf form, float64) on ShiftGELU's grid: scale * 2^-(b - 1)."""
    x = as_rows(x_int, "x_int")
    b = check_bits(out_bits, "out_bits", 2, 32)
    s = scalar_scale(scale)
    g = torch.nn.functional.gelu(x.to(torch.float64) * s)
    out_scale = s * 2.0 ** -(b - 1)
    return torch.round(g / out_scale).to(torch.int64), out_scale


def layernorm_exact(
    x_int: torch.Tensor,
    scale: float,
    weight: torch.Tensor,
    bias: torch.Tensor,
    eps: float = 1e-6,
) -> tuple[torch.Tensor, torch.Tensor]:
    """LayerNorm(x_int * scale) * weight + bias in float64, on I-LayerNorm's per-channel grid.

    out_scale = sqrt(C) / 2^30 * weight (shape (C,)), y = round_half_even(LN / out_scale). ``eps``
    defaults to 1e-6 (timm ViT); I-ViT's I-LayerNorm has none (``ilayernorm`` takes it as ``eps_int``, in
    variance units).
    """
    x = as_rows(x_int, "x_int")
    c = x.shape[-1]
    gamma = torch.as_tensor(weight).detach().to(torch.float64)
    beta = torch.as_tensor(bias).detach().to(torch.float64)
    if gamma.shape != (c,) or beta.shape != (c,) or bool((gamma == 0).any()):
        raise ValueError(f"weight and bias must have shape ({c},) and the weight no zeros")
    ln = torch.nn.functional.layer_norm(x.to(torch.float64) * scalar_scale(scale), (c,), gamma, beta, eps)
    out_scale = math.sqrt(c) / 2**30 * gamma
    return torch.round(ln / out_scale).to(torch.int64), out_scale
