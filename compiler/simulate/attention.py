"""Reordered attention in float64, and the simulator kernels of ``algorithm = edge-moe | flash``.

Both orders are exact rearrangements of ``softmax(scale * Q K^T + mask) V``; what differs is the order of the sums
and the softmax's running (max, sum) rescaling, so results equal the standard order up to float64 rounding
(tests/test_attention_numerics.py bounds it). Shapes: q [B, H, Sq, Dh], k [B, H, Sk, Dh], v [B, H, Sk, Dv],
mask broadcastable to [B, H, Sq, Sk] (additive; -inf blocks).

``edge_moe_attention``: Edge-MoE's P-lane order (docs/SOURCES.md [1, 2]). Query i runs on lane o = i mod P and
visits keys o, o+1, ..., Sk-1, 0, ..., o-1; lane o starts o steps after lane 0, so at step t every lane reads key
t mod Sk (one shared K vector) and only lane t (t < P) loads a new Q vector. Pass 1 is Edge-MoE's single-pass
softmax in that order (start m = -2^9, s = 0; x > m: s = s * exp(m - x) + 1, m = x; else s += exp(x - m)), keeping
(1/s, m) per row; pass 2 (A.V) accumulates exp(x - m) / s * v_j in the same order.

``flash_attention``: tiles of ``tile_q`` queries x ``tile_k`` keys; per query tile a running max m, sum l and
accumulator o are rescaled by exp(m_old - m_new) at each key tile; o / l at the end.
"""

from __future__ import annotations

import numpy as np
from xdsl.ir import Operation

from compiler.dialect import dataflow as df
from compiler.numerics.online_softmax import EDGE_MOE_M0
from compiler.simulate.kernels import causal_bias, masked_rows, register_attention, standard_attention
from compiler.simulate.registry import SimContext, Tensor

__all__ = ["standard_attention64", "edge_moe_attention", "flash_attention", "edge_moe_visit_order"]


def _scores(q: np.ndarray, k: np.ndarray, scale: float, mask: np.ndarray | None) -> np.ndarray:
    s = np.matmul(np.asarray(q, np.float64), np.swapaxes(np.asarray(k, np.float64), -1, -2)) * scale
    return s + mask if mask is not None else s


def standard_attention64(q: np.ndarray, k: np.ndarray, v: np.ndarray, scale: float,
                         mask: np.ndarray | None = None) -> np.ndarray:
    """The standard order in float64: scores materialised, two-pass softmax, then A.V."""
    s = _scores(q, k, scale, mask)
    p = np.exp(s - s.max(axis=-1, keepdims=True))
    return np.matmul(p / p.sum(axis=-1, keepdims=True), np.asarray(v, np.float64))


def edge_moe_visit_order(sq: int, sk: int, lanes: int) -> np.ndarray:
    """[Sq, Sk] key index each query visits at each of its steps: query i (lane i mod P) starts at key i mod P."""
    start = (np.arange(sq) % lanes)[:, None]
    return (start + np.arange(sk)[None, :]) % sk


def edge_moe_attention(q: np.ndarray, k: np.ndarray, v: np.ndarray, scale: float, lanes: int = 4,
                       mask: np.ndarray | None = None) -> np.ndarray:
    """Edge-MoE's rotated-key, single-pass-softmax attention in float64 (module docstring)."""
    if lanes < 1:
        raise ValueError(f"lanes must be >= 1, got {lanes}")
    s = _scores(q, k, scale, mask)
    v64 = np.asarray(v, np.float64)
    sq, sk = s.shape[-2], s.shape[-1]
    order = edge_moe_visit_order(sq, sk, lanes)
    rows = np.arange(sq)
    m = np.full(s.shape[:-1], EDGE_MOE_M0)
    acc_s = np.zeros(s.shape[:-1])
    for t in range(sk):
        x = s[..., rows, order[:, t]]
        new_max = x > m
        with np.errstate(over="ignore", invalid="ignore"):
            acc_s = np.where(new_max, acc_s * np.exp(m - x) + 1.0, acc_s + np.exp(x - m))
        m = np.where(new_max, x, m)
    inv_s = 1.0 / acc_s
    out = np.zeros(s.shape[:-1] + (v64.shape[-1],))
    for t in range(sk):
        j = order[:, t]
        p = np.exp(s[..., rows, j] - m) * inv_s
        out += p[..., None] * v64[..., j, :]
    return out


def flash_attention(q: np.ndarray, k: np.ndarray, v: np.ndarray, scale: float, tile_q: int, tile_k: int,
                    mask: np.ndarray | None = None) -> np.ndarray:
    """Tiled attention with an online softmax over key tiles, in float64 (module docstring)."""
    if tile_q < 1 or tile_k < 1:
        raise ValueError(f"tiles must be >= 1, got {tile_q} x {tile_k}")
    q64, k64, v64 = (np.asarray(a, np.float64) for a in (q, k, v))
    sq, sk = q64.shape[-2], k64.shape[-2]
    full_mask = None if mask is None else np.broadcast_to(mask, q64.shape[:-2] + (sq, sk))
    out = np.zeros(q64.shape[:-1] + (v64.shape[-1],))
    for i0 in range(0, sq, tile_q):
        qi = q64[..., i0:i0 + tile_q, :]
        m = np.full(qi.shape[:-1], -np.inf)
        l = np.zeros(qi.shape[:-1])  # noqa: E741 - FlashAttention's name for the running softmax sum
        o = np.zeros(qi.shape[:-1] + (v64.shape[-1],))
        for j0 in range(0, sk, tile_k):
            sc = np.matmul(qi, np.swapaxes(k64[..., j0:j0 + tile_k, :], -1, -2)) * scale
            if full_mask is not None:
                sc = sc + full_mask[..., i0:i0 + tile_q, j0:j0 + tile_k]
            m_new = np.maximum(m, sc.max(axis=-1))
            with np.errstate(invalid="ignore"):
                alpha = np.where(np.isneginf(m_new), 1.0, np.exp(m - m_new))
                p = np.where(np.isneginf(m_new)[..., None], 0.0, np.exp(sc - m_new[..., None]))
            l = l * alpha + p.sum(axis=-1)  # noqa: E741
            o = o * alpha[..., None] + np.matmul(p, v64[..., j0:j0 + tile_k, :])
            m = m_new
        out[..., i0:i0 + tile_q, :] = o / l[..., None]
    return out


def _split(x: np.ndarray, heads: int) -> np.ndarray:
    b, s, d = x.shape
    return x.reshape(b, s, heads, d // heads).transpose(0, 2, 1, 3)


def _mask(op: Operation, mask: np.ndarray | None,
          shape: tuple[int, ...]) -> tuple[np.ndarray | None, np.ndarray | None]:
    """(the additive float64 bias of [B, H, Sq, Sk] scores ``shape`` from the op's ``mask`` operand and causal flag,
    the causal flag's blocked keys [Sq, Sk])."""
    assert isinstance(op, df.AttentionOp)
    if not op.causal_value():
        return (None if mask is None else mask.astype(np.float64)), None
    sq, sk = shape[-2:]
    causal = np.triu(np.ones((sq, sk), dtype=bool), 1 + sk - sq)  # query i sees keys up to i + sk - sq
    return causal_bias(op, mask, causal, shape).astype(np.float64), causal


def _reordered(op: Operation, ins: list[Tensor], ctx: SimContext) -> list[Tensor]:
    """Float attention in the op's order. Quantized attention: the integer products are exact in any order, but the
    integer online softmax is not (its running sum is shifted right, flooring, whenever a new max appears), so in
    Edge-MoE order each query row's keys reach it in that row's lane order (edge_moe_visit_order), as in the
    hardware; flash visits key tiles in index order, which is the standard kernel's."""
    assert isinstance(op, df.AttentionOp)
    edge_moe = op.algorithm_choice() == df.AttentionAlgorithm.EDGE_MOE
    if ins[0].quantized:
        if edge_moe and op.softmax_choice() == df.SoftmaxApprox.ONLINE and not ctx.exact:
            sq, sk = ins[0].data.shape[-2], ins[1].data.shape[-2]
            return standard_attention(op, ins, ctx, edge_moe_visit_order(sq, sk, op.lanes_value(4)))
        return standard_attention(op, ins, ctx)
    if op.softmax_choice() not in (df.SoftmaxApprox.EXACT, df.SoftmaxApprox.ONLINE) or op.softcap_value() is not None \
            or op.sinks_value() is not None:
        # A soft-cap is element-wise on each score: applied per tile it gives the standard kernel's result, which
        # the float simulation therefore computes (the reordering changes only the summation order). Likewise
        # sinks: an online softmax whose running max and sum start at the sink gives the standard result.
        return standard_attention(op, ins, ctx)
    heads, kv = op.num_heads_value(), op.kv_heads_value()
    q = _split(ins[0].real(), heads)
    k, v = (np.repeat(_split(t.real(), kv), heads // kv, axis=1) for t in ins[1:3])
    operand = ins[3].real() if len(ins) > 3 else None
    shape = q.shape[:-1] + (k.shape[-2],)
    mask, causal = _mask(op, operand, shape)
    scale = op.scale_value()
    empty = masked_rows(op, operand, causal, shape)
    # these rows' online sums are 0 (0/0 in flash order, 0 * (1/0) in Edge-MoE's): their NaN is zeroed below
    quiet = "ignore" if empty is not None else None
    with np.errstate(divide=quiet, invalid=quiet):
        if edge_moe:
            out = edge_moe_attention(q, k, v, scale, op.lanes_value(4), mask)
        else:
            tq, tk = op.attributes.get(df.TILE_Q_ATTR), op.attributes.get(df.TILE_K_ATTR)
            out = flash_attention(q, k, v, scale, tq.value.data if tq else q.shape[-2],  # type: ignore[attr-defined]
                                  tk.value.data if tk else k.shape[-2], mask)  # type: ignore[attr-defined]
    if empty is not None:
        out = np.where(empty, 0.0, out)
    b, h, s, dv = out.shape
    return [Tensor(out.transpose(0, 2, 1, 3).reshape(b, s, h * dv).astype(np.float32))]


register_attention("edge-moe", _reordered)
register_attention("flash", _reordered)
