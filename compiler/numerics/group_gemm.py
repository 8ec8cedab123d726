"""Grouped-scale integer GEMM: int8 x int-b products summed per group of K rows, each group's partial sum times its
unsigned integer multiplier, accumulated in int32 (the datapath of ``--weight-group``, compiler/quant_groups.py).

    acc[m, n] = bias[n] + sum_g q[g, n] * sum_{k in g} x[m, k] * w[k, n]

The real output is acc * s_x * s_n (s_n: the per-output-channel step); the usual dyadic requant follows. The format
is two-level scales as in QLoRA (Dettmers et al., 2023, "double quantization") and llama.cpp's k-quants
(ggml-quants.c: 6-bit sub-block scales under one fp16 super-block scale); here both levels are integers except the
per-channel step, which the requant absorbs. Every term is exact in int64; the accumulator must fit int32.
"""

from __future__ import annotations

import torch

from compiler.numerics._intops import as_int64

__all__ = ["group_gemm"]


def group_gemm(x: torch.Tensor, w: torch.Tensor, q: torch.Tensor, group: int,
               bias: torch.Tensor | None = None) -> torch.Tensor:
    """``acc`` (int64 holding an int32) of int ``x`` [..., K] by codes ``w`` [K, N] with multipliers ``q``
    [ceil(K / group), N] (unsigned) and optional int32 ``bias`` [N]; ValueError if a value leaves int32."""
    x, w, q = as_int64(x, "x"), as_int64(w, "w"), as_int64(q, "q")
    k = w.shape[0]
    if group <= 0 or q.shape[0] != -(-k // group) or q.shape[1] != w.shape[1]:
        raise ValueError(f"q must be [ceil(K / group), N] = [{-(-k // max(group, 1))}, {w.shape[1]}], "
                         f"got {tuple(q.shape)}")
    if int(q.min()) < 0:
        raise ValueError("group multipliers q must be unsigned")
    acc = torch.zeros((*x.shape[:-1], w.shape[1]), dtype=torch.int64)
    if bias is not None:
        acc = acc + as_int64(bias, "bias")
    for g, k0 in enumerate(range(0, k, group)):
        acc = acc + (x[..., k0:k0 + group] @ w[k0:k0 + group]) * q[g]
    if acc.numel() and int(acc.abs().max()) >= 2**31:
        raise ValueError("the grouped accumulator leaves int32")
    return acc
