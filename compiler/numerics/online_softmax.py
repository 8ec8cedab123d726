"""Edge-MoE's single-pass ("online") softmax: a float64 reference and a fixed-point integer version.

Edge-MoE (sharc-lab/Edge-MoE, ``src/attention.cpp``, after Milakov & Gimelshein 2018) walks a row once,
keeping a running max m and a running sum s of exp(x - m); it stores (1/s, m) per row and the A.V pass
then uses exp(x - m) / s. Starting state m = -2^9 (the most negative ap_fixed<32,10>), s = 0::

    if x > m:  s = s * exp(m - x) + 1;  m = x        # strictly greater: ties take the else branch
    else:      s = s + exp(x - m)

The integer version runs the same recurrence on the base-2 arithmetic of
:mod:`compiler.numerics.base2`, where the running max is an integer so the rescale exp(m - x) is a
right shift. Shifting a partial sum floors it, so the online sum differs from the two-pass sum, within::

    sum_j floor(P_j / 2^k_j)  <=  s_online  <=  floor(sum_j P_j / 2^k_j)

(P_j, k_j: the table value and the whole halvings of element j against the final max; the left side is
``base2_softmax``'s sum). Both sides are integers, so s_online exceeds the two-pass sum by less than the
row length; the tests check both bounds exactly.
"""

from __future__ import annotations

import torch

from compiler.numerics._intops import check_bits
from compiler.numerics.base2 import ceil_int, exp2_q15, normalize, to_log2_domain

__all__ = ["EDGE_MOE_M0", "online_softmax", "online_softmax_float", "online_softmax_stats"]

EDGE_MOE_M0 = -512.0
"""Initial running max in Edge-MoE: the minimum of ap_fixed<32,10>."""


def online_softmax_float(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Edge-MoE's online softmax over the last dimension in float64: (p, m, inv_s).

    ``p`` = exp(x - m) * inv_s (the A.V pass), ``m`` the final running max and ``inv_s`` = 1 / s, both
    with a kept last dimension of 1. Equals ``torch.softmax`` up to float64 rounding for rows whose
    max is above -512 (at or below it Edge-MoE never updates m, which is still exact unless exp
    underflows). ``x`` is any real tensor (use dequantized scores: x_int * scale).
    """
    if not isinstance(x, torch.Tensor) or x.dim() == 0 or x.shape[-1] == 0:
        raise ValueError("online_softmax_float needs a tensor with a non-empty last dimension")
    xf = x.detach().to(torch.float64)
    m = torch.full(xf.shape[:-1] + (1,), EDGE_MOE_M0, dtype=torch.float64)
    s = torch.zeros_like(m)
    for j in range(xf.shape[-1]):
        xj = xf[..., j : j + 1]
        new_max = xj > m
        s = torch.where(new_max, s * torch.exp(m - xj) + 1.0, s + torch.exp(xj - m))
        m = torch.where(new_max, xj, m)
    inv_s = 1.0 / s
    return torch.exp(xf - m) * inv_s, m, inv_s


def online_softmax_stats(x_int: torch.Tensor, scale: float) -> tuple[torch.Tensor, torch.Tensor]:
    """The integer single pass: per-row (s, m) as int64 tensors with a kept last dimension.

    u and c = ceil(u / 2^F) as in :mod:`compiler.numerics.base2`. Start m = c_min - 1 (below any c;
    a sentinel like Edge-MoE's -2^9), s = 0, then for each element j in order::

        if c_j > m:  s = (s >> (c_j - m)) + exp2_q15(u_j, c_j);  m = c_j
        else:        s = s + exp2_q15(u_j, m)

    The final m equals base2's integer max. s < 2^31 for rows of up to 2^15 elements.
    """
    return _stats(to_log2_domain(x_int, scale))


def _stats(u: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    c = ceil_int(u)
    m = torch.full(u.shape[:-1] + (1,), int(c.min()) - 1, dtype=torch.int64)
    s = torch.zeros_like(m)
    for j in range(u.shape[-1]):
        # both branches in one: with m' = max(m, c_j), s = (s >> (m' - m)) + exp2_q15(u_j, m')
        new_m = torch.maximum(m, c[..., j : j + 1])
        shift = torch.clamp(new_m - m, max=62)
        s = torch.bitwise_right_shift(s, shift) + exp2_q15(u[..., j : j + 1], new_m)
        m = new_m
    return s, m


def online_softmax(x_int: torch.Tensor, scale: float, out_bits: int = 8) -> tuple[torch.Tensor, float]:
    """Single-pass integer softmax along the last dimension: (y_int, 2^-(b - 1)).

    Pass 1 is :func:`online_softmax_stats`; pass 2 (the A.V pass) is base2's normalisation with the
    stored (s, m): y = (exp2_q15(u, m) * floor((2^31 - 1) / s)) >> (32 - b). Since s_online >= the
    two-pass sum, y <= ``base2_softmax``'s y element by element, and y is in [0, 2^(b-1) - 1].
    """
    b = check_bits(out_bits, "out_bits", 2, 32)
    u = to_log2_domain(x_int, scale)
    s, m = _stats(u)
    e = exp2_q15(u, m)
    return normalize(e, s, b), 2.0 ** -(b - 1)
