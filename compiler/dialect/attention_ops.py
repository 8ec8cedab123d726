"""``dataflow`` ops of attention: the whole multi-head attention as one op (its sizes as :class:`AttentionDims`)
and the rotary position embedding applied to its Q and K."""

from __future__ import annotations

import math
from dataclasses import dataclass

from xdsl.dialects.builtin import (
    BoolAttr,
    DenseArrayBase,
    Float64Type,
    FloatAttr,
    IntegerAttr,
    StringAttr,
    TensorType,
    UnitAttr,
)
from xdsl.ir import Operation
from xdsl.irdl import AttrSizedOperandSegments, operand_def, opt_operand_def, opt_prop_def, prop_def, result_def
from xdsl.utils.exceptions import VerifyException

from compiler.dialect.choices import (
    ALGORITHM_ATTR,
    ATTENTION_ALGORITHMS,
    KV_HEADS_ATTR,
    MASK_KIND_ATTR,
    MASK_KINDS,
    NUM_HEADS_ATTR,
    SOFTMAX_APPROX,
    SOFTMAX_ATTR,
    AttentionAlgorithm,
    MaskKind,
    SoftmaxApprox,
)
from compiler.dialect.op_base import DataflowOp, check_choice, dataflow_op, int_attr, shape_of

__all__ = ["AttentionDims", "AttentionOp", "RopeOp", "ROPE_STYLES", "kv_heads"]

#: Rotary embedding layouts (``dataflow.rope``'s ``style``): which dim each rotated dim pairs with.
ROPE_STYLES = ("rotate_half", "interleaved")


def kv_heads(op: Operation) -> int:
    """Key/value heads of a ``dataflow.attention`` (``num_heads`` unless grouped-query)."""
    return int_attr(op, KV_HEADS_ATTR, int_attr(op, NUM_HEADS_ATTR))


@dataclass(frozen=True)
class AttentionDims:
    """The sizes of one ``dataflow.attention``: q is [batch, seq_q, num_heads * head_dim], k is [batch, seq_k,
    kv_heads * head_dim], v is [batch, seq_k, kv_heads * v_head_dim]."""

    batch: int
    seq_q: int
    seq_k: int
    num_heads: int
    kv_heads: int
    head_dim: int
    v_head_dim: int

    @property
    def macs(self) -> int:
        """Multiply-accumulates of QK^T and A.V for all heads."""
        return self.batch * self.num_heads * self.seq_q * self.seq_k * (self.head_dim + self.v_head_dim)


@dataflow_op
class AttentionOp(DataflowOp):
    """Multi-head scaled dot-product attention over already projected ``q``, ``k``, ``v`` of shape [B, S, D].

    ``softmax(scale * Q_h K_h^T + mask) V_h`` for each of ``num_heads`` heads of ``head_dim``, heads merged back
    into [B, Sq, D]. ``mask`` (optional operand) is additive and broadcast to [B, H, Sq, Sk]; ``causal`` adds the
    lower-triangular mask. ``softmax`` is the approximation; ``algorithm`` the evaluation order: ``standard`` (scores
    materialised), ``edge-moe`` (Edge-MoE's rotated-key order over ``lanes`` query lanes with a single-pass online
    softmax) or ``flash`` (tiles with an online softmax; scores never leave the chip).

    ``kv_heads`` (optional, default ``num_heads``): grouped-query / multi-query attention. ``k`` and ``v`` hold
    ``kv_heads`` heads, each shared by ``num_heads / kv_heads`` consecutive query heads, so they are read and stored
    once per KV head. ``mask_kind`` (optional) records the structure of the mask the frontend found (``causal``,
    ``banded``, ``block``, ``padding``, ``input`` (a graph input), ``other``); it describes what the ``causal`` flag and
    the ``mask`` operand
    compute, it changes nothing.

    ``softcap`` (optional, c > 0): attention-logit soft-capping (Gemma 2, Grok): the scores are
    ``c * tanh(scale * Q_h K_h^T / c)`` before the mask is added and the softmax runs, which bounds them to (-c, c).
    Priced as a tanh over the score matrix on the vector unit (compiler/schedule/attention.py).

    ``sinks`` (optional, ``array<f64: ...>`` of ``num_heads`` values): attention sinks (gpt-oss; StreamingLLM's
    sink logits, the "off-by-one" softmax with sink 0). Each softmax row of head h gets one more logit ``sinks[h]``
    (after the scale, soft-cap and mask), whose probability is dropped: ``p_j = exp(s_j) / (exp(sinks[h]) +
    sum_j' exp(s_j'))``, so a row's probabilities sum to less than 1. The softmax covers Sk + 1 elements per row.

    ``masked_rows_zero`` (optional unit property): a query row whose every key is masked (the ``mask`` operand
    ``-inf`` at every key of the row, after broadcasting, or the key blocked by ``causal``) gives 0 (its output row
    is 0) instead of the NaN that ``softmax`` of an all ``-inf`` row is. It is the guard the ONNX ``Attention``
    function (opset 23) writes, ``Where(ReduceMax(bias) == -inf, 0, P)``, and torch's safe softmax
    (``Where(IsNaN(P), 0, P)``); the frontend sets it where it finds either after the softmax. Without it such a
    row is NaN in float (as ONNX's Softmax gives) and uniform in integer softmaxes (all -2^31).

    ``causal_first`` (optional unit property, with ``causal`` and a ``mask``): the causal fill comes before the mask
    is added, so a blocked key holds ``fill + mask`` (float32: -inf where the mask is as low as the fill) instead of
    the fill alone. GPT-Neo writes ``Where(causal, s, min) + padding``: a query row whose every visible key is
    padding then spreads over those keys, not over every key, as it does when the fill comes last. The two differ
    only in such rows, and only in float: the integer kernels (and the hardware) clip both to -2^31.
    """

    name = "dataflow.attention"
    q = operand_def(TensorType)
    k = operand_def(TensorType)
    v = operand_def(TensorType)
    mask = opt_operand_def(TensorType)
    result = result_def(TensorType)
    num_heads = prop_def(IntegerAttr)
    head_dim = prop_def(IntegerAttr)
    scale = prop_def(FloatAttr)
    causal = prop_def(BoolAttr)
    softmax = prop_def(StringAttr)
    algorithm = prop_def(StringAttr)
    lanes = opt_prop_def(IntegerAttr)
    kv_heads = opt_prop_def(IntegerAttr)
    mask_kind = opt_prop_def(StringAttr)
    softcap = opt_prop_def(FloatAttr)
    sinks = opt_prop_def(DenseArrayBase)
    masked_rows_zero = opt_prop_def(UnitAttr)
    causal_first = opt_prop_def(UnitAttr)
    irdl_options = (AttrSizedOperandSegments(as_property=True),)
    assembly_format = ("$layer $q `,` $k `,` $v (`mask` $mask^)? attr-dict `:` type($q) `,` type($k) `,` type($v) "
                       "(`,` type($mask)^)? `->` type($result)")

    def verify_(self) -> None:
        tag = f"dataflow.attention '{self.layer_name()}'"
        q, k, v, out = shape_of(self.q), shape_of(self.k), shape_of(self.v), shape_of(self.result)
        if not (len(q) == len(k) == len(v) == 3):
            raise VerifyException(f"{tag}: q, k, v must be [batch, seq, dim], got {q}, {k}, {v}")
        heads, dim = self.num_heads_value(), self.head_dim_value()
        if heads <= 0 or dim <= 0:
            raise VerifyException(f"{tag}: num_heads and head_dim must be positive")
        kv = self.kv_heads_value()
        if kv <= 0 or heads % kv:
            raise VerifyException(f"{tag}: kv_heads {kv} does not divide num_heads {heads}")
        if q[2] != heads * dim or k[2] != kv * dim:
            grouped = f" / kv_heads*head_dim = {kv * dim}" if kv != heads else ""
            raise VerifyException(f"{tag}: q/k dim {q[2]}/{k[2]} != num_heads*head_dim = {heads * dim}{grouped}")
        if v[2] % kv:
            raise VerifyException(f"{tag}: v dim {v[2]} is not a multiple of kv_heads {kv}")
        if out != (q[0], q[1], v[2] // kv * heads):
            raise VerifyException(f"{tag}: result shape {out} should be {(q[0], q[1], v[2] // kv * heads)}")
        check_choice(self, MASK_KIND_ATTR, MASK_KINDS)
        if k[:2] != v[:2] or q[0] != k[0]:
            raise VerifyException(f"{tag}: batch/sequence of q {q}, k {k}, v {v} disagree")
        check_choice(self, SOFTMAX_ATTR, SOFTMAX_APPROX)
        check_choice(self, ALGORITHM_ATTR, ATTENTION_ALGORITHMS)
        cap = self.softcap_value()
        if cap is not None and not (math.isfinite(cap) and cap > 0):
            raise VerifyException(f"{tag}: softcap must be a positive finite number, got {cap}")
        if self.sinks is not None:
            if not isinstance(self.sinks.elt_type, Float64Type):
                raise VerifyException(f"{tag}: sinks must be an array<f64>, got {self.sinks.elt_type}")
            sinks = self.sinks_value()
            if sinks is None or len(sinks) != heads or not all(math.isfinite(x) for x in sinks):
                raise VerifyException(f"{tag}: sinks must hold num_heads = {heads} finite values, got "
                                      f"{0 if sinks is None else len(sinks)}")

    def sinks_value(self) -> tuple[float, ...] | None:
        """One sink logit per query head (module docstring), or None without sinks."""
        return None if self.sinks is None else tuple(float(x) for x in self.sinks.get_values())  # type: ignore[attr-defined]

    def masked_rows_zero_value(self) -> bool:
        """Whether a row with every key masked gives 0 (class docstring)."""
        return self.masked_rows_zero is not None

    def causal_first_value(self) -> bool:
        """Whether the mask adds onto the causal fill rather than the fill replacing it (class docstring)."""
        return self.causal_first is not None

    def softcap_value(self) -> float | None:
        """The logit soft-cap c (scores c * tanh(s / c)), or None without one."""
        return None if self.softcap is None else self.softcap.value.data

    def dims(self) -> AttentionDims:
        """Batch, sequence lengths, heads and head sizes (of a verified op)."""
        b, sq, _ = shape_of(self.q)
        kv = self.kv_heads_value()
        return AttentionDims(batch=b, seq_q=sq, seq_k=shape_of(self.k)[1], num_heads=self.num_heads_value(),
                             kv_heads=kv, head_dim=self.head_dim_value(), v_head_dim=shape_of(self.v)[2] // kv)

    def macs(self) -> int:
        """Multiply-accumulates of QK^T and A.V for all heads."""
        return self.dims().macs

    def num_heads_value(self) -> int:
        """Query heads."""
        return self.num_heads.value.data

    def head_dim_value(self) -> int:
        """Elements per head of Q and K."""
        return self.head_dim.value.data

    def kv_heads_value(self) -> int:
        """Key/value heads (``num_heads`` unless grouped-query)."""
        return kv_heads(self)

    def scale_value(self) -> float:
        """The factor on Q K^T before the softmax."""
        return self.scale.value.data

    def causal_value(self) -> bool:
        """Whether the lower-triangular mask applies (on top of any ``mask`` operand)."""
        return bool(self.causal.value.data)

    def lanes_value(self, default: int) -> int:
        """Edge-MoE's query lanes, ``default`` when ``set-attention`` recorded none."""
        return default if self.lanes is None else self.lanes.value.data

    def softmax_choice(self) -> SoftmaxApprox:
        return SoftmaxApprox(self.softmax.data)

    def algorithm_choice(self) -> AttentionAlgorithm:
        return AttentionAlgorithm(self.algorithm.data)

    def mask_kind_choice(self) -> MaskKind | None:
        """The mask structure the frontend found, or None when it recorded none."""
        return None if self.mask_kind is None else MaskKind(self.mask_kind.data)


@dataflow_op
class RopeOp(DataflowOp):
    """Rotary position embedding of Q or K, ``input`` [B, S, H*head_dim] in the layout the attention op reads.

    Per head the first ``rotary_dim`` dims rotate, the rest pass through: ``y[b, s, h, i] = x[b, s, h, i] *
    cos[s, i] + x[b, s, h, p(i)] * sin[s, i]`` for ``i < rotary_dim``, ``sin`` carrying the sign, with the partner
    ``p(i) = (i + R/2) mod R`` (``rotate_half``: LLaMA, Mistral, Qwen2, Phi) or ``i xor 1`` (``interleaved``:
    GPT-J). ``cos`` and ``sin`` are [S, rotary_dim] weights. An integer op (``quantize``) reads int8 x and
    Q1.14 int16 tables; its int32 sum is requantized to int8 by ``[m, e]`` in the WeightStore under its layer, its
    output scale in the ``scale`` attribute (compiler/simulate/rope.py has the arithmetic)."""

    name = "dataflow.rope"
    input = operand_def(TensorType)
    cos = operand_def(TensorType)
    sin = operand_def(TensorType)
    result = result_def(TensorType)
    style = prop_def(StringAttr)
    head_dim = prop_def(IntegerAttr)
    rotary_dim = prop_def(IntegerAttr)
    assembly_format = "$layer $input `,` $cos `,` $sin attr-dict `:` functional-type(operands, results)"

    def verify_(self) -> None:
        tag = f"dataflow.rope '{self.layer_name()}'"
        check_choice(self, "style", ROPE_STYLES)
        shape = shape_of(self.input)
        if shape_of(self.result) != shape or len(shape) != 3:
            raise VerifyException(f"{tag}: needs a [B, S, D] input and an output of the same shape, got {shape}")
        dh, r = self.head_dim_value(), self.rotary_dim_value()
        if dh <= 0 or shape[2] % dh or not 0 < r <= dh or r % 2:
            raise VerifyException(f"{tag}: head_dim {dh} and rotary_dim {r} do not fit D = {shape[2]} "
                                  "(rotary_dim even, at most head_dim, head_dim dividing D)")
        for key in ("cos", "sin"):
            if shape_of(getattr(self, key)) != (shape[1], r):
                raise VerifyException(f"{tag}: {key} table {shape_of(getattr(self, key))} should be {(shape[1], r)}")

    def style_value(self) -> str:
        """Which dims rotate together (one of ROPE_STYLES)."""
        return self.style.data

    def head_dim_value(self) -> int:
        """Elements per head."""
        return self.head_dim.value.data

    def rotary_dim_value(self) -> int:
        """The leading dims of each head that rotate."""
        return self.rotary_dim.value.data
