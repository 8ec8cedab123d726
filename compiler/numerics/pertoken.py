"""Per-token dynamic int8 activations for a GEMM: a row max, a per-row step, and the per-row rescale back.

A per-tensor int8 step is set by the largest value the calibration data showed anywhere; in BERT-family models a
few rows ([CLS], [SEP], padding) and a few channels carry values 10-100x the rest, so every other row gets a handful
of levels. Per-token (dynamic) quantization, as LLM.int8() (Dettmers et al., 2022) and ZeroQuant (Yao et al., 2022)
quantize activations, gives each row its own step from that row's max at run time. Here it is exact integer
arithmetic on an integer input ``x`` (a 16-bit per-tensor grid, the quantize pass's) so the result stays on the
input's grid and nothing downstream changes:

    x'   = x + offset                                 (offset >= 0: a static shift that makes a GELU output >= 0)
    M    = max |x'| over the row       (unsigned: max x')
    t    = max(1, ceil(M / L))                         L = 127 (signed) or 255 (unsigned): the row's step, in x units
    q    = clamp(round_half_away(x' / t))              in [-128, 127] (signed) or [0, 255] (unsigned)
    acc  = q @ W                                       (the int8 x int-b GEMM, int32 accumulator)
    y    = round_half_even((acc * t - offset * colsum(W)) / 2^shift)

y is ``x @ W`` on the grid ``S_x * S_w * 2^shift``: the per-row multiplier t undoes the row's step, the static
``offset * colsum(W)`` (a constant per output column) undoes the shift; ``shift`` (static) keeps y in int32 for any
input the 16-bit grid holds. ``unsigned`` uses all 256 codes for an input that is never negative after the offset
(GELU's output is >= -0.17: the signed grid would spend half its codes on that sliver).

Hardware: a row max (one compare per element), one integer division per row (t, and its reciprocal for the
per-element rounding division, a multiply and a shift), then after the GEMM one multiply per output element by the
row's t with a rounding shift (the requant path, per row instead of per channel).
"""

from __future__ import annotations

import torch

from compiler.numerics._intops import as_int64, as_rows, round_shift
from compiler.numerics.group_gemm import group_gemm

__all__ = ["per_token_gemm", "quantize_rows", "row_levels"]


def row_levels(unsigned: bool) -> int:
    """Largest code of a per-token row: 255 (unsigned) or 127 (signed int8)."""
    return 255 if unsigned else 127


def quantize_rows(x_int: torch.Tensor, offset: int = 0, unsigned: bool = False) -> tuple[torch.Tensor, torch.Tensor]:
    """(codes, t): ``x_int + offset`` per row (last axis) on the step ``t = max(1, ceil(M / L))``; ``t`` keeps the
    row axis (shape [..., 1]). Rounding is half away from zero (an integer division with a rounding bias)."""
    x = as_rows(x_int, "x_int") + int(offset)
    levels = row_levels(unsigned)
    top = x.amax(dim=-1, keepdim=True).clamp(min=0) if unsigned else x.abs().amax(dim=-1, keepdim=True)
    t = torch.clamp(torch.div(top + (levels - 1), levels, rounding_mode="floor"), min=1)
    mag = torch.div(2 * x.abs() + t, 2 * t, rounding_mode="floor")
    q = torch.where(x < 0, -mag, mag)
    return torch.clamp(q, 0 if unsigned else -levels - 1, levels), t


def per_token_gemm(x_int: torch.Tensor, w_int: torch.Tensor, offset: int = 0, unsigned: bool = False,
                   shift: int = 0, bias: torch.Tensor | None = None, group_scales: torch.Tensor | None = None,
                   group: int = 0) -> torch.Tensor:
    """``x_int @ w_int`` [.., K] x [K, N] through per-token int8 codes, on the grid S_x * S_w * 2^shift (see the
    module docstring), plus ``bias`` (int32 on that grid), clamped to int32.

    ``group_scales`` [ceil(K / group), N] (``--weight-group``): the codes' per-group multipliers; the row codes'
    partial sums per group are multiplied by them and summed (compiler/numerics/group_gemm.py) before the row
    rescale, and the static ``offset`` term is taken over the scaled weight ``w_int * q[k // group]``."""
    w = as_int64(w_int, "w_int")
    q, t = quantize_rows(x_int, offset, unsigned)
    if group_scales is not None:
        acc = group_gemm(q, w, group_scales, group)
        w = w * torch.repeat_interleave(as_int64(group_scales, "group_scales"), group, dim=0)[: w.shape[0]]
    else:
        acc = q @ w
    y = round_shift(acc * t - int(offset) * w.sum(dim=0), int(shift))
    if bias is not None:
        y = y + as_int64(bias, "bias")
    return torch.clamp(y, -(1 << 31), (1 << 31) - 1)
