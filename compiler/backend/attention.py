"""Integer attention as three layers per op: ``Q K^T`` folds, a softmax vector layer, ``P V`` digit folds.

What compiler.simulate.kernels.standard_attention computes on integers, per head ``h``:
``x = clip(Q_h K_h^T + mask_int, int32)`` (causal positions at ``-2^31``), ``P = shiftmax(x >> k)`` with the
pre-shift ``k`` and ``x0`` of compiler.backend.constants.shiftmax_config (or the online softmax with its
``(m_c, e_c)``), then ``P V_h`` into the head's columns of the int32 output. Each piece is an ISA pattern:

* ``Q K^T``: ``K_h^T`` is the transposing LOAD of ``K_h``'s rows (no transpose pass), ``Q_h`` / ``K_h`` /
  ``V_h`` are column windows of the projections, and the merge of the heads is the output window's address. With
  fewer key/value heads than query heads (grouped- or multi-query attention) query head ``h`` reads K/V head
  ``h // (heads / kv_heads)``, the simulator's repetition, so no repeated K or V is ever stored.
* the mask: the host quantizes the float mask onto the scores' grid as the simulator does (clip to +-2^32, causal
  entries -2^32), and gives it as two int32 halves ``a + b`` of the same sign; two saturating ``VEC requant_add``
  with unit multipliers add them: clamping after each of two same-signed addends equals clamping once.
* ``P`` has ``softmax_bits`` (16) bits, wider than the array's int8 lanes: ``VEC digit`` splits it into 7-bit
  digits (non-negative, so they fit int8) and ``P V = sum_d 2^(7d) P_d V`` runs as digit GEMMs with the accumulator
  scaled by 2^7 between them (exact while ``Sk * 2^(bits-1) * 2^7 < 2^31``).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from compiler.backend.constants import DesignScales, attention_scores_scale, online_softmax_config, shiftmax_config
from compiler.backend.gemm import ProgramBuilder
from compiler.backend.image import Region
from compiler.backend.tiles import Slot, VecStep, View, matmul_layer, vector_layer
from compiler.dialect import dataflow as df
from compiler.dialect.choices import AttentionAlgorithm, SoftmaxApprox
from compiler.simulate.kernels import softmax_bits
from hw.errors import InputError
from hw.isa import ConfigReg, Space, VecFn

__all__ = ["AttentionPlan", "emit_attention", "host_mask_halves", "DIGIT_BITS"]

DIGIT_BITS = 7
"""Bits per probability digit: the non-negative range of the array's int8 lanes."""

_MASK_LIMIT = 1 << 32  # the simulator clips the quantized mask to +-2^32 (kernels.standard_attention)


@dataclass(frozen=True)
class AttentionPlan:
    """What the host gives an attention op: its mask halves' regions (None without a mask or causal), the
    scores' scale and the op's shape. ``masked_rows_zero``: the op gives a row with every key masked 0, which no
    vector step here does (the softmax unit makes such a row uniform), so the host refuses a mask with one."""

    name: str
    heads: int
    sq: int
    sk: int
    scores_scale: float
    causal: bool
    mask: tuple[Region, Region] | None
    masked_rows_zero: bool = False


def host_mask_halves(mask: np.ndarray | None, plan: AttentionPlan) -> tuple[np.ndarray, np.ndarray]:
    """The host's part of a masked attention: the float mask on the scores' grid, causal positions at -2^32, as
    two int32 ``[H * Sq, Sk]`` halves of the same sign (module docstring). A row with every key masked in an op that
    gives such rows 0 (``plan.masked_rows_zero``) is an ``InputError`` naming the op and the row."""
    if plan.masked_rows_zero:
        blocked = np.zeros((plan.sq, plan.sk), bool) if mask is None else np.isneginf(
            np.broadcast_to(np.asarray(mask, np.float64), (1, plan.heads, plan.sq, plan.sk)))
        if plan.causal:
            blocked = blocked | np.triu(np.ones((plan.sq, plan.sk), dtype=bool), 1 + plan.sk - plan.sq)
        rows = np.argwhere(np.broadcast_to(blocked, (1, plan.heads, plan.sq, plan.sk)).all(axis=-1))
        if rows.size:
            raise InputError(f"system backend: dataflow.attention '{plan.name}': query row {int(rows[0][2])} of "
                             f"head {int(rows[0][1])} has every key masked; the model gives it 0, which has no "
                             "code generator (the softmax unit makes it uniform)")
    total = np.zeros((plan.heads, plan.sq, plan.sk), np.int64)
    if mask is not None:
        with np.errstate(over="ignore"):
            grid = np.clip(np.round(np.asarray(mask, np.float64) / plan.scores_scale), -_MASK_LIMIT, _MASK_LIMIT)
        total = np.broadcast_to(grid.astype(np.int64), (1, plan.heads, plan.sq, plan.sk)).reshape(total.shape)
    if plan.causal:
        blocked = np.triu(np.ones((plan.sq, plan.sk), dtype=bool), 1 + plan.sk - plan.sq)
        total = np.where(blocked, -_MASK_LIMIT, total)
    total = np.clip(total, -_MASK_LIMIT, _MASK_LIMIT - 2)  # x + (2^32 - 2) still saturates for |x| < 2^30
    a = np.floor_divide(total, 2)
    b = total - a
    return a.reshape(-1, plan.sk), b.reshape(-1, plan.sk)


def emit_attention(b: ProgramBuilder, op: df.AttentionOp, q: Region, k: Region, v: Region, out: Region,
                   scales: DesignScales) -> AttentionPlan:
    """Emit ``op`` (q, k, v int8 ``[1, S, D]`` regions; ``out`` int32 ``[1, Sq, H * Dv]``); returns what the host
    must give it (the mask halves' regions are placed here)."""
    name = op.layer_name()
    where = f"system backend: dataflow.attention '{name}'"
    heads, kv = op.num_heads_value(), op.kv_heads_value()
    approx = op.softmax_choice()
    if approx not in (SoftmaxApprox.SHIFTMAX, SoftmaxApprox.ONLINE):
        raise InputError(f"{where}: softmax '{approx}' has no vector unit here (the system backend runs shiftmax "
                         f"and online)")
    if op.algorithm_choice() != AttentionAlgorithm.STANDARD:
        raise InputError(f"{where}: algorithm '{op.algorithm_choice().value}' has no code generator (standard only)")
    if op.sinks_value() is not None:
        raise InputError(f"{where}: attention sinks (a sink logit per head in each softmax row) have no code "
                         "generator")
    if op.softcap_value() is not None:
        raise InputError(f"{where}: a logit soft-cap has no code generator")
    if kv < 1 or heads % kv:
        raise InputError(f"{where}: {kv} key/value heads do not divide {heads} query heads")
    if len(q.shape) != 3 or q.shape[0] != 1:
        raise InputError(f"{where}: only a batch of one [1, S, D] runs on the system backend, got {q.shape}")
    sq, sk = q.shape[1], k.shape[1]
    dh, dv = q.shape[2] // heads, v.shape[2] // kv
    group = heads // kv  # query head h reads key/value head h // group (kernels._kv_heads)
    bits = softmax_bits(op, approx)
    if bits not in (8, 16):
        raise InputError(f"{where}: {bits}-bit probabilities have no vector output width here (8 or 16)")
    s = attention_scores_scale(op, scales)
    if s is None:
        raise InputError(f"{where}: float scores have no integer softmax unit")
    if dh * (1 << 14) >= 1 << 30 or sk * (1 << (bits - 1 + DIGIT_BITS)) >= 1 << 31:
        raise InputError(f"{where}: head_dim {dh} or {sk} keys overflow the int32 accumulator of the digit products")
    causal = bool(op.properties["causal"].value.data)  # type: ignore[attr-defined]
    img = b.image
    scores = img.place(f"{name}.scores", (heads * sq, sk), 4)
    n_digits = -(-(bits - 1) // DIGIT_BITS)
    digits = [img.place(f"{name}.p{d}", (heads * sq, sk), 1) for d in range(n_digits)]
    qv, kv_, vv, ov = View.of(q), View.of(k), View.of(v), View.of(out)
    for h in range(heads):
        matmul_layer(b, f"{name}.qk{h}", [qv.sub(0, sq, h * dh, dh)], kv_.sub(0, sk, h // group * dh, dh), True,
                     View.of(scores).sub(h * sq, sq, 0, sk))
    masked = len(op.operands) > 3 or causal
    mask = None
    slots = [Slot(Space.ACC, sk)]
    loads: list[tuple[View, int]] = [(View.of(scores), 0)]
    steps: list[VecStep] = []
    if masked:
        mask = (img.place(f"{name}.mask_a", (heads * sq, sk), 4), img.place(f"{name}.mask_b", (heads * sq, sk), 4))
        slots += [Slot(Space.ACC, sk), Slot(Space.ACC, sk)]
        loads += [(View.of(mask[0]), 1), (View.of(mask[1]), 2)]
        unit = ((ConfigReg.REQUANT_M, 1), (ConfigReg.REQUANT_E, 0), (ConfigReg.RESIDUAL_M, 1),
                (ConfigReg.RESIDUAL_E, 0))
        steps += [VecStep(VecFn.REQUANT_ADD, 0, 0, 32, aux=1, configs=unit),
                  VecStep(VecFn.REQUANT_ADD, 0, 0, 32, aux=2)]
    if approx == "shiftmax":
        cfg = shiftmax_config(s, sk, {"out_bits": bits, "x0_bits": 29})
        steps.append(VecStep(VecFn.SHIFTMAX, 0, 0, bits, configs=((ConfigReg.SHIFTMAX_X0, cfg["x0"]),
                                                                  (ConfigReg.SHIFTMAX_SHIFT, cfg["input_shift"]))))
    else:
        cfg = online_softmax_config(s, {"out_bits": bits})
        steps.append(VecStep(VecFn.ONLINE_SOFTMAX, 0, 0, bits, configs=((ConfigReg.SOFTMAX_M, cfg["m_c"]),
                                                                        (ConfigReg.SOFTMAX_E, cfg["e_c"]))))
    stores = []
    for d in range(n_digits):
        slots.append(Slot(Space.SP, sk))
        steps.append(VecStep(VecFn.DIGIT, 0, len(slots) - 1, 8, configs=((ConfigReg.DIGIT_SHIFT, DIGIT_BITS * d),)))
        stores.append((len(slots) - 1, View.of(digits[d])))
    vector_layer(b, f"{name}.softmax", heads * sq, slots, loads, steps, stores)
    for h in range(heads):
        a_digits = [View.of(digits[d]).sub(h * sq, sq, 0, sk) for d in reversed(range(n_digits))]
        matmul_layer(b, f"{name}.av{h}", a_digits, vv.sub(0, sk, h // group * dv, dv), False, ov.sub(0, sq, h * dv, dv),
                     DIGIT_BITS)
    return AttentionPlan(name, heads, sq, sk, s, causal, mask, op.masked_rows_zero_value())
