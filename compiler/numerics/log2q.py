"""RepQ-ViT's log-sqrt(2) quantizer for post-softmax activations.

Source: Li et al., "RepQ-ViT" (ICCV 2023), zkkli/RepQ-ViT ``LogSqrt2Quantizer.quantize``. Levels are
powers of sqrt(2) below Delta, which suits the long tail of attention probabilities; a code c stands for
Delta * 2^(-c/2) = Delta * 2^-ceil(c/2) * (1 + (sqrt(2) - 1) * (c mod 2)), so A.V needs only shifts and
one optional multiply by sqrt(2). Float64 throughout: the input is a real probability tensor.
"""

from __future__ import annotations

import math

import torch

from compiler.numerics._intops import as_int64, as_rows, check_bits, scalar_scale

__all__ = ["log2q_dequantize", "log2q_quantize", "log2q_softmax"]


def _levels(codes: torch.Tensor, delta: float) -> torch.Tensor:
    odd = torch.remainder(codes, 2).to(torch.float64)
    half_up = torch.div(codes + 1, 2, rounding_mode="floor")  # ceil(c / 2) for c >= 0
    return torch.pow(2.0, -half_up.to(torch.float64)) * (1.0 + (math.sqrt(2.0) - 1.0) * odd) * delta


def log2q_quantize(
    x: torch.Tensor, bits: int = 4, delta: float | None = None
) -> tuple[torch.Tensor, torch.Tensor]:
    """(codes, x_hat): RepQ-ViT log-sqrt2 quantization of a non-negative tensor ``x``.

    ``delta`` defaults to x.max() (RepQ-ViT's starting value; its percentile search is calibration,
    which is not ours to do here). With n = 2^bits::

        c     = round_half_even(-2 * log2(x / delta))      # +inf for x = 0
        codes = clamp(c, 0, n - 1)                          # int64
        x_hat = 0 if c >= n else delta * 2^-ceil(codes/2) * (1 + (sqrt2 - 1)(codes mod 2))

    The top code n - 1 stands both for delta * 2^-(n-1)/2 (when c == n - 1) and for zero (c >= n);
    ``x_hat`` follows RepQ-ViT, which knows c. A datapath that sees only codes decodes the top code as
    zero (:func:`log2q_dequantize`); the two differ only where c == n - 1 exactly.
    """
    bits = check_bits(bits, "bits", 2, 8)
    if not isinstance(x, torch.Tensor) or not x.dtype.is_floating_point:
        raise TypeError("log2q_quantize needs a floating-point tensor")
    xf = x.detach().to(torch.float64)
    if bool((xf < 0).any()) or not bool(torch.isfinite(xf).all()):
        raise ValueError("log2q_quantize needs finite, non-negative inputs (post-softmax values)")
    d = float(xf.max()) if delta is None else scalar_scale(delta, "delta")
    if d <= 0.0:
        raise ValueError("log2q_quantize: delta must be > 0 (x is all zero and no delta was given)")
    n = 1 << bits
    c = torch.round(-torch.log2(xf / d) * 2)
    codes = torch.clamp(c, 0, n - 1).to(torch.int64)
    x_hat = torch.where(c >= n, torch.zeros_like(xf), _levels(codes, d))
    return codes, x_hat


def log2q_dequantize(codes: torch.Tensor, delta: float, bits: int = 4) -> torch.Tensor:
    """Datapath decoding of ``bits``-bit codes: delta * 2^(-c/2) (sqrt2 form), and the top code as 0."""
    bits = check_bits(bits, "bits", 2, 8)
    c = as_int64(codes, "codes")
    top = (1 << bits) - 1
    if bool((c < 0).any()) or bool((c > top).any()):
        raise ValueError(f"codes must be in [0, {top}] for {bits} bits")
    vals = _levels(c, scalar_scale(delta, "delta"))
    return torch.where(c == top, torch.zeros_like(vals), vals)


def log2q_softmax(x_int: torch.Tensor, scale: float, out_bits: int = 4) -> tuple[torch.Tensor, float]:
    """Exact softmax of x_int * scale (float64) quantized by :func:`log2q_quantize` with delta = 1.

    Returns (codes, delta=1.0); decode with :func:`log2q_dequantize` (the value is *not* codes * delta).
    delta = 1 bounds every probability and needs no calibration, so it suits a fixed datapath.
    """
    x = as_rows(x_int, "x_int")
    p = torch.softmax(x.to(torch.float64) * scalar_scale(scale), dim=-1)
    codes, _ = log2q_quantize(p, out_bits, delta=1.0)
    return codes, 1.0
