"""SOFT softmax-free attention (Lu et al., NeurIPS 2021), float64 reference.

Source: fudan-zvg/SOFT ``models/softmax_free_transformer.py`` (``SoftmaxFreeAttentionKernel``) and
``SOFT/kernel/inverse.py`` (``newton_inv``). Keys are the queries (K = Q), scaled by d^-1/4, and the
softmax kernel becomes a Gaussian, exp(-||q_i - q_j||^2 / 2). With m landmarks Q~ the N x N kernel
is approximated by the Nystrom form K(Q, Q~) K(Q~, Q~)^+ K(Q~, Q), and the pseudo-inverse comes from
20 Newton-Schulz iterations (matrix products only, which is why accelerators like it).

SOFT's landmarks are a learned strided convolution + LayerNorm + GELU of Q; a reference without
weights uses mean pooling of consecutive tokens (or landmarks you pass in). Its depthwise-conv skip
branch is left out. This is a float model (no integer semantics): use it for accuracy studies.
"""

from __future__ import annotations

import math

import torch

from compiler.soft_params import NEWTON_ITERS, soft_landmarks

__all__ = ["gaussian_kernel", "newton_schulz_pinv", "softmax_free_attention", "soft_landmarks", "NEWTON_ITERS"]


def gaussian_kernel(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """exp(-||a_i - b_j||^2 / 2) for a (..., N, d) and b (..., M, d): shape (..., N, M), float64."""
    a = a.to(torch.float64)
    b = b.to(torch.float64)
    sq = (a * a).sum(-1, keepdim=True) + (b * b).sum(-1).unsqueeze(-2) - 2.0 * a @ b.transpose(-1, -2)
    return torch.exp(-sq / 2.0)


def newton_schulz_pinv(mat: torch.Tensor, iters: int = NEWTON_ITERS) -> torch.Tensor:
    """SOFT's Newton-Schulz inverse of a batch of symmetric (..., m, m) matrices, float64.

    alpha = 0.9 * 2 / max_i(sum_j mat_ij)^2 (per matrix, from ``mat`` itself), P = mat + 0.01 I,
    V_0 = alpha P, then ``iters`` times V = 2 V - V P V. Converges to (mat + 0.01 I)^-1 when the
    starting residual is below 1 (true for the Gaussian kernels here: PSD, row sums >= the largest
    eigenvalue); the 0.01 I keeps near-duplicate landmarks from blowing it up.
    """
    p = mat.to(torch.float64)
    eye = torch.eye(p.shape[-1], dtype=torch.float64)
    alpha = 0.9 * 2.0 / p.sum(-1).amax(-1) ** 2
    p = p + 0.01 * eye
    v = alpha[..., None, None] * p
    for _ in range(iters):
        v = 2.0 * v - v @ p @ v
    return v


def _pool_landmarks(q: torch.Tensor, num_landmarks: int) -> torch.Tensor:
    """Adaptive mean pooling over the sequence: landmark i averages tokens floor(i*n/m) .. ceil((i+1)*n/m) - 1.

    When m divides n these are the n/m consecutive tokens of each segment; otherwise segments overlap by at most
    one token (PyTorch's adaptive_avg_pool1d bins), so any landmark count up to n works, as SOFT's strided conv does.
    """
    n = q.shape[-2]
    if not 0 < num_landmarks <= n:
        raise ValueError(f"num_landmarks must be in 1..{n} (the sequence length), got {num_landmarks}")
    flat = q.reshape(-1, n, q.shape[-1]).transpose(1, 2)
    pooled = torch.nn.functional.adaptive_avg_pool1d(flat, num_landmarks).transpose(1, 2)
    return pooled.reshape(*q.shape[:-2], num_landmarks, q.shape[-1])


def softmax_free_attention(
    q: torch.Tensor,
    v: torch.Tensor,
    num_landmarks: int | None = None,
    landmarks: torch.Tensor | None = None,
    iters: int = NEWTON_ITERS,
) -> torch.Tensor:
    """SOFT attention output for queries ``q`` (..., N, d) and values ``v`` (..., N, dv), float64.

    Q = q / d^(1/4); landmarks L = mean pooling of Q over N / ``num_landmarks`` consecutive tokens, or
    ``landmarks`` (..., m, d) given in q's units (scaled the same way). Output::

        K1 = gaussian_kernel(Q, L)                 # N x m
        K2 = gaussian_kernel(L, L)                 # m x m
        out = K1 @ newton_schulz_pinv(K2) @ (K1^T @ v)

    Note there is no row normalisation: SOFT relies on the layers around it (and its LayerNorm).
    """
    qf = q.to(torch.float64) / math.sqrt(math.sqrt(q.shape[-1]))
    if landmarks is not None:
        lm = landmarks.to(torch.float64) / math.sqrt(math.sqrt(q.shape[-1]))
    elif num_landmarks is not None:
        lm = _pool_landmarks(qf, num_landmarks)
    else:
        raise ValueError("softmax_free_attention needs num_landmarks or landmarks")
    k1 = gaussian_kernel(qf, lm)
    k2 = gaussian_kernel(lm, lm)
    return k1 @ newton_schulz_pinv(k2, iters) @ (k1.transpose(-1, -2) @ v.to(torch.float64))
