"""The ``dataflow`` dialect: the compiler's one IR between the frontend and the hardware models.

Ops are coarse on purpose: one ``dataflow.attention`` stands for QK^T, scale, mask, softmax and A.V of all heads,
so a pass that swaps the softmax approximation or the attention order touches one op, and the scheduler sees the
unit of work a hardware block executes. Weights are ``dataflow.weight`` ops that name an entry of the compile's
``WeightStore``; the IR never carries tensor data, which keeps a 12-layer ViT-Base module a few hundred KB.

Every op has a ``layer`` property (the layer name used in reports and traces). Generic form (``--mlir-generic``)
is plain MLIR that the upstream parser reads with ``dataflow.irdl.mlir`` loaded (see tests/test_dialect_irdl.py).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

from xdsl.dialects.builtin import (
    ArrayAttr,
    BoolAttr,
    DictionaryAttr,
    FloatAttr,
    IntegerAttr,
    IntegerType,
    StringAttr,
    TensorType,
    f64,
    i64,
)
from xdsl.ir import Attribute, Dialect, Operation, SSAValue, TypeAttribute
from xdsl.irdl import (
    AttrSizedOperandSegments,
    IRDLOperation,
    ParsePropInAttrDict,
    irdl_op_definition,
    operand_def,
    opt_operand_def,
    opt_prop_def,
    prop_def,
    result_def,
    traits_def,
    var_operand_def,
    var_result_def,
)
from xdsl.traits import Pure
from xdsl.utils.exceptions import VerifyException

from compiler.dialect.choices import (
    ALGORITHM_ATTR,
    APPROX_ATTR,
    ATTENTION_ALGORITHMS,
    ELEMENTWISE_KINDS,
    GELU_APPROX,
    HEAD_DIM_ATTR,
    KIND_ATTR,
    KV_HEADS_ATTR,
    LAYER_ATTR,
    LAYERNORM_APPROX,
    LAYERNORM_KINDS,
    MASK_KIND_ATTR,
    MASK_KINDS,
    MOE_ACTIVATIONS,
    MOE_MODES,
    MOVE_KINDS,
    NUM_HEADS_ATTR,
    REDUCE_KINDS,
    SOFTMAX_APPROX,
    SOFTMAX_ATTR,
    TILE_K_ATTR,
    TILE_Q_ATTR,
    AttentionAlgorithm,
    GeluApprox,
    LayerNormApprox,
    LayerNormKind,
    MaskKind,
    MoeMode,
    SoftmaxApprox,
)

__all__ = [
    "Dataflow", "WeightOp", "GemmOp", "RequantOp", "AttentionOp", "SoftmaxOp", "LayerNormOp", "GeluOp",
    "ElementwiseOp", "ReduceOp", "MoveOp", "EmbeddingOp", "MoeOp", "RopeOp", "ROPE_STYLES", "AttentionDims",
    "SoftmaxApprox", "GeluApprox", "LayerNormApprox", "LayerNormKind", "AttentionAlgorithm", "MaskKind", "MoeMode",
    "SOFTMAX_APPROX", "GELU_APPROX", "LAYERNORM_APPROX", "LAYERNORM_KINDS", "ATTENTION_ALGORITHMS", "TILE_Q_ATTR",
    "TILE_K_ATTR", "MASK_KINDS", "ELEMENTWISE_KINDS", "MOVE_KINDS", "REDUCE_KINDS", "MOE_MODES", "MOE_ACTIVATIONS",
    "str_attr", "int_attr", "float_attr", "kv_heads",
]
#: Rotary embedding layouts (``dataflow.rope``'s ``style``): which dim each rotated dim pairs with.
ROPE_STYLES = ("rotate_half", "interleaved")


def str_attr(op: Operation, key: str) -> str:
    """The string value of property ``key``."""
    attr = op.properties[key]
    assert isinstance(attr, StringAttr)
    return attr.data


def int_attr(op: Operation, key: str, default: int | None = None) -> int:
    """The integer value of property ``key`` (``default`` when absent)."""
    attr = op.properties.get(key)
    if attr is None:
        assert default is not None, key
        return default
    assert isinstance(attr, IntegerAttr)
    return attr.value.data


def float_attr(op: Operation, key: str) -> float:
    """The float value of property ``key``."""
    attr = op.properties[key]
    assert isinstance(attr, FloatAttr)
    return attr.value.data


def kv_heads(op: Operation) -> int:
    """Key/value heads of a ``dataflow.attention`` (``num_heads`` unless grouped-query)."""
    return int_attr(op, KV_HEADS_ATTR, int_attr(op, NUM_HEADS_ATTR))


def _shape(value: SSAValue) -> tuple[int, ...]:
    typ = value.type
    if not isinstance(typ, TensorType):
        raise VerifyException(f"expected a ranked tensor, got {typ}")
    return tuple(typ.get_shape())


def _check_choice(op: IRDLOperation, key: str, choices: Sequence[str]) -> None:
    value = op.properties.get(key)
    if value is None:
        return
    assert isinstance(value, StringAttr)
    if value.data not in choices:
        raise VerifyException(
            f"{op.name} '{str_attr(op, 'layer')}': {key} '{value.data}' is not one of {', '.join(choices)}"
        )


class _Named(IRDLOperation):
    """Shared by every dataflow op: the layer name reports and traces print."""

    def layer_name(self) -> str:
        return str_attr(self, LAYER_ATTR)


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


@irdl_op_definition
class WeightOp(_Named):
    """A model constant held in the compile's WeightStore under ``layer`` (the IR carries no data)."""

    name = "dataflow.weight"
    result = result_def(TensorType)
    irdl_options = (ParsePropInAttrDict(),)
    traits = traits_def(Pure())
    assembly_format = "$layer attr-dict `:` type($result)"

    def __init__(self, weight_name: str, result_type: Attribute):
        super().__init__(result_types=[result_type], properties={"layer": StringAttr(weight_name)})

    layer = prop_def(StringAttr)


@irdl_op_definition
class GemmOp(_Named):
    """``result[..., m, n] = sum_k lhs[..., m, k] * rhs[..., k, n] (+ bias[n])``.

    ``rhs`` is a weight (rank 2, already in K x N layout; the frontend folds Gemm's transB) or an activation with
    the same batch dims as ``lhs`` (QK^T-style products outside attention). ``acc_type`` is the accumulator element
    type the hardware uses: f32 before quantization, i32 after. For integer operands the result element type must
    equal ``acc_type``.
    """

    name = "dataflow.gemm"
    lhs = operand_def(TensorType)
    rhs = operand_def(TensorType)
    bias = opt_operand_def(TensorType)
    result = result_def(TensorType)
    layer = prop_def(StringAttr)
    acc_type = prop_def(TypeAttribute)
    irdl_options = (AttrSizedOperandSegments(as_property=True), ParsePropInAttrDict())
    traits = traits_def(Pure())
    assembly_format = ("$layer $lhs `,` $rhs (`bias` $bias^)? attr-dict `:` type($lhs) `,` type($rhs) "
                       "(`,` type($bias)^)? `->` type($result)")

    def __init__(self, layer: str, lhs: SSAValue, rhs: SSAValue, bias: SSAValue | None, result_type: Attribute,
                 acc_type: Attribute):
        super().__init__(
            operands=[lhs, rhs, bias], result_types=[result_type],
            properties={"layer": StringAttr(layer), "acc_type": acc_type},
        )

    def mnk(self) -> tuple[int, int, int, int]:
        """(batch, m, n, k) of the product as the hardware runs it.

        A rank-2 ``rhs`` (a weight shared by every leading index of ``lhs``) makes one product whose rows are all of
        ``lhs``'s leading dims: m = prod(lhs[:-1]), batch 1. So a sequence-first (L, 1, D) activation, a batch of
        sequences or a batch-1 dimension in any position give the same GEMM, and the weight is streamed once for
        all rows instead of once per leading index. Products of two activations (rank-3+ ``rhs``, QK^T-style) keep
        their leading dims as independent ``batch`` products.
        """
        lhs, rhs = _shape(self.lhs), _shape(self.rhs)
        if len(rhs) == 2:
            m = 1
            for d in lhs[:-1]:
                m *= d
            return 1, m, rhs[-1], lhs[-1]
        batch = 1
        for d in lhs[:-2]:
            batch *= d
        return batch, lhs[-2], rhs[-1], lhs[-1]

    def verify_(self) -> None:
        lhs, rhs, out = _shape(self.lhs), _shape(self.rhs), _shape(self.result)
        tag = f"dataflow.gemm '{self.layer_name()}'"
        if len(lhs) < 2 or len(rhs) < 2:
            raise VerifyException(f"{tag}: operands must have rank >= 2, got {lhs} and {rhs}")
        if lhs[-1] != rhs[-2]:
            raise VerifyException(f"{tag}: contraction dims differ: lhs {lhs} vs rhs {rhs}")
        if len(rhs) > 2 and rhs[:-2] != lhs[:-2]:
            raise VerifyException(f"{tag}: batch dims differ: lhs {lhs} vs rhs {rhs}")
        expect = lhs[:-1] + (rhs[-1],)
        if out != expect:
            raise VerifyException(f"{tag}: result shape {out} should be {expect}")
        if self.bias is not None and _shape(self.bias) != (rhs[-1],):
            raise VerifyException(f"{tag}: bias shape {_shape(self.bias)} should be ({rhs[-1]},)")
        lhs_el = self.lhs.type.get_element_type()  # type: ignore[attr-defined]
        out_el = self.result.type.get_element_type()  # type: ignore[attr-defined]
        if isinstance(lhs_el, IntegerType) and out_el != self.acc_type:
            raise VerifyException(f"{tag}: integer gemm must produce its accumulator type {self.acc_type}, "
                                  f"got {out_el}")


@irdl_op_definition
class RequantOp(_Named):
    """Dyadic requantization ``clamp(round_half_even(x * m / 2^e))`` of an accumulator to ``out_bits``.

    Multipliers and shifts (per channel or per tensor) live in the WeightStore under ``layer``.
    """

    name = "dataflow.requant"
    input = operand_def(TensorType)
    result = result_def(TensorType)
    layer = prop_def(StringAttr)
    out_bits = prop_def(IntegerAttr)
    irdl_options = (ParsePropInAttrDict(),)
    traits = traits_def(Pure())
    assembly_format = "$layer $input attr-dict `:` functional-type(operands, results)"

    def verify_(self) -> None:
        if _shape(self.input) != _shape(self.result):
            raise VerifyException(f"dataflow.requant '{self.layer_name()}': shape changes")
        if int_attr(self, "out_bits") not in (4, 8, 16, 32):
            raise VerifyException(f"dataflow.requant '{self.layer_name()}': out_bits must be 4, 8, 16 or 32")


@irdl_op_definition
class AttentionOp(_Named):
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
    """

    name = "dataflow.attention"
    q = operand_def(TensorType)
    k = operand_def(TensorType)
    v = operand_def(TensorType)
    mask = opt_operand_def(TensorType)
    result = result_def(TensorType)
    layer = prop_def(StringAttr)
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
    irdl_options = (AttrSizedOperandSegments(as_property=True), ParsePropInAttrDict())
    traits = traits_def(Pure())
    assembly_format = ("$layer $q `,` $k `,` $v (`mask` $mask^)? attr-dict `:` type($q) `,` type($k) `,` type($v) "
                       "(`,` type($mask)^)? `->` type($result)")

    def verify_(self) -> None:
        tag = f"dataflow.attention '{self.layer_name()}'"
        q, k, v, out = _shape(self.q), _shape(self.k), _shape(self.v), _shape(self.result)
        if not (len(q) == len(k) == len(v) == 3):
            raise VerifyException(f"{tag}: q, k, v must be [batch, seq, dim], got {q}, {k}, {v}")
        heads, dim = int_attr(self, "num_heads"), int_attr(self, "head_dim")
        if heads <= 0 or dim <= 0:
            raise VerifyException(f"{tag}: num_heads and head_dim must be positive")
        kv = kv_heads(self)
        if kv <= 0 or heads % kv:
            raise VerifyException(f"{tag}: kv_heads {kv} does not divide num_heads {heads}")
        if q[2] != heads * dim or k[2] != kv * dim:
            grouped = f" / kv_heads*head_dim = {kv * dim}" if kv != heads else ""
            raise VerifyException(f"{tag}: q/k dim {q[2]}/{k[2]} != num_heads*head_dim = {heads * dim}{grouped}")
        if v[2] % kv:
            raise VerifyException(f"{tag}: v dim {v[2]} is not a multiple of kv_heads {kv}")
        if out != (q[0], q[1], v[2] // kv * heads):
            raise VerifyException(f"{tag}: result shape {out} should be {(q[0], q[1], v[2] // kv * heads)}")
        _check_choice(self, "mask_kind", MASK_KINDS)
        if k[:2] != v[:2] or q[0] != k[0]:
            raise VerifyException(f"{tag}: batch/sequence of q {q}, k {k}, v {v} disagree")
        _check_choice(self, "softmax", SOFTMAX_APPROX)
        _check_choice(self, "algorithm", ATTENTION_ALGORITHMS)
        cap = self.softcap_value()
        if cap is not None and not (math.isfinite(cap) and cap > 0):
            raise VerifyException(f"{tag}: softcap must be a positive finite number, got {cap}")

    def softcap_value(self) -> float | None:
        """The logit soft-cap c (scores c * tanh(s / c)), or None without one."""
        attr = self.properties.get("softcap")
        return attr.value.data if isinstance(attr, FloatAttr) else None

    def dims(self) -> AttentionDims:
        """Batch, sequence lengths, heads and head sizes (of a verified op)."""
        b, sq, _ = _shape(self.q)
        kv = kv_heads(self)
        return AttentionDims(batch=b, seq_q=sq, seq_k=_shape(self.k)[1], num_heads=int_attr(self, NUM_HEADS_ATTR),
                             kv_heads=kv, head_dim=int_attr(self, HEAD_DIM_ATTR), v_head_dim=_shape(self.v)[2] // kv)

    def macs(self) -> int:
        """Multiply-accumulates of QK^T and A.V for all heads."""
        return self.dims().macs

    def softmax_choice(self) -> SoftmaxApprox:
        return SoftmaxApprox(str_attr(self, SOFTMAX_ATTR))

    def algorithm_choice(self) -> AttentionAlgorithm:
        return AttentionAlgorithm(str_attr(self, ALGORITHM_ATTR))

    def mask_kind_choice(self) -> MaskKind | None:
        """The mask structure the frontend found, or None when it recorded none."""
        return MaskKind(str_attr(self, MASK_KIND_ATTR)) if MASK_KIND_ATTR in self.properties else None


@irdl_op_definition
class SoftmaxOp(_Named):
    """Softmax along ``axis`` with the chosen hardware ``approx`` (a standalone softmax outside attention)."""

    name = "dataflow.softmax"
    input = operand_def(TensorType)
    result = result_def(TensorType)
    layer = prop_def(StringAttr)
    axis = prop_def(IntegerAttr)
    approx = prop_def(StringAttr)
    irdl_options = (ParsePropInAttrDict(),)
    traits = traits_def(Pure())
    assembly_format = "$layer $input attr-dict `:` functional-type(operands, results)"

    def verify_(self) -> None:
        shape = _shape(self.input)
        if _shape(self.result) != shape:
            raise VerifyException(f"dataflow.softmax '{self.layer_name()}': shape changes")
        if not -len(shape) <= int_attr(self, "axis") < len(shape):
            raise VerifyException(f"dataflow.softmax '{self.layer_name()}': axis out of range for {shape}")
        _check_choice(self, "approx", SOFTMAX_APPROX)

    def approx_choice(self) -> SoftmaxApprox:
        return SoftmaxApprox(str_attr(self, APPROX_ATTR))


@irdl_op_definition
class LayerNormOp(_Named):
    """LayerNorm (``kind = layernorm``) or RMSNorm (``kind = rmsnorm``) over the last dimension."""

    name = "dataflow.layernorm"
    input = operand_def(TensorType)
    weight = operand_def(TensorType)
    bias = opt_operand_def(TensorType)
    result = result_def(TensorType)
    layer = prop_def(StringAttr)
    epsilon = prop_def(FloatAttr)
    kind = prop_def(StringAttr)
    approx = prop_def(StringAttr)
    irdl_options = (AttrSizedOperandSegments(as_property=True), ParsePropInAttrDict())
    traits = traits_def(Pure())
    assembly_format = ("$layer $input `,` $weight (`bias` $bias^)? attr-dict `:` type($input) `,` type($weight) "
                       "(`,` type($bias)^)? `->` type($result)")

    def verify_(self) -> None:
        tag = f"dataflow.layernorm '{self.layer_name()}'"
        shape = _shape(self.input)
        if _shape(self.result) != shape:
            raise VerifyException(f"{tag}: shape changes")
        if _shape(self.weight) != (shape[-1],):
            raise VerifyException(f"{tag}: weight shape {_shape(self.weight)} should be ({shape[-1]},)")
        if self.bias is not None and _shape(self.bias) != (shape[-1],):
            raise VerifyException(f"{tag}: bias shape {_shape(self.bias)} should be ({shape[-1]},)")
        _check_choice(self, "kind", LAYERNORM_KINDS)
        _check_choice(self, "approx", LAYERNORM_APPROX)

    def approx_choice(self) -> LayerNormApprox:
        return LayerNormApprox(str_attr(self, APPROX_ATTR))

    def norm_kind(self) -> LayerNormKind:
        return LayerNormKind(str_attr(self, KIND_ATTR))


@irdl_op_definition
class GeluOp(_Named):
    """GELU; ``approx`` is how hardware computes it (``exact`` erf, the export's ``tanh`` form, or integer ones)."""

    name = "dataflow.gelu"
    input = operand_def(TensorType)
    result = result_def(TensorType)
    layer = prop_def(StringAttr)
    approx = prop_def(StringAttr)
    irdl_options = (ParsePropInAttrDict(),)
    traits = traits_def(Pure())
    assembly_format = "$layer $input attr-dict `:` functional-type(operands, results)"

    def verify_(self) -> None:
        if _shape(self.result) != _shape(self.input):
            raise VerifyException(f"dataflow.gelu '{self.layer_name()}': shape changes")
        _check_choice(self, "approx", GELU_APPROX)

    def approx_choice(self) -> GeluApprox:
        return GeluApprox(str_attr(self, APPROX_ATTR))


@irdl_op_definition
class ElementwiseOp(_Named):
    """An element-wise op with numpy broadcasting (``kind`` from ELEMENTWISE_KINDS, ONNX attributes in ``attrs``)."""

    name = "dataflow.elementwise"
    inputs = var_operand_def(TensorType)
    result = result_def(TensorType)
    layer = prop_def(StringAttr)
    kind = prop_def(StringAttr)
    attrs = opt_prop_def(DictionaryAttr)
    irdl_options = (ParsePropInAttrDict(),)
    traits = traits_def(Pure())
    assembly_format = "$layer $inputs attr-dict `:` `(` type($inputs) `)` `->` type($result)"

    def verify_(self) -> None:
        _check_choice(self, "kind", ELEMENTWISE_KINDS)
        if not self.inputs:
            raise VerifyException(f"dataflow.elementwise '{self.layer_name()}': needs at least one input")


@irdl_op_definition
class ReduceOp(_Named):
    """A reduction (``kind`` from REDUCE_KINDS) over ``axes``."""

    name = "dataflow.reduce"
    input = operand_def(TensorType)
    result = result_def(TensorType)
    layer = prop_def(StringAttr)
    kind = prop_def(StringAttr)
    axes = prop_def(ArrayAttr[IntegerAttr])
    keepdims = prop_def(BoolAttr)
    irdl_options = (ParsePropInAttrDict(),)
    traits = traits_def(Pure())
    assembly_format = "$layer $input attr-dict `:` functional-type(operands, results)"

    def verify_(self) -> None:
        _check_choice(self, "kind", REDUCE_KINDS)
        rank = len(_shape(self.input))
        for axis in self.axes.data:
            if not -rank <= axis.value.data < rank:
                raise VerifyException(f"dataflow.reduce '{self.layer_name()}': axis {axis.value.data} out of range")


@irdl_op_definition
class MoveOp(_Named):
    """Data movement without arithmetic (``kind`` from MOVE_KINDS; ONNX attributes kept in ``attrs``)."""

    name = "dataflow.move"
    inputs = var_operand_def(TensorType)
    outputs = var_result_def(TensorType)
    layer = prop_def(StringAttr)
    kind = prop_def(StringAttr)
    attrs = opt_prop_def(DictionaryAttr)
    irdl_options = (ParsePropInAttrDict(),)
    traits = traits_def(Pure())
    assembly_format = "$layer $inputs attr-dict `:` `(` type($inputs) `)` `->` `(` type($outputs) `)`"

    def verify_(self) -> None:
        _check_choice(self, "kind", MOVE_KINDS)
        kind = str_attr(self, "kind")
        if kind in ("reshape", "flatten", "squeeze", "unsqueeze"):
            size_in = _numel(_shape(self.inputs[0]))
            size_out = _numel(_shape(self.outputs[0]))
            if size_in != size_out:
                raise VerifyException(
                    f"dataflow.move '{self.layer_name()}': {kind} changes the element count {size_in} -> {size_out}"
                )


@irdl_op_definition
class EmbeddingOp(_Named):
    """Row lookup ``table[indices]`` (token, position or segment embeddings)."""

    name = "dataflow.embedding"
    table = operand_def(TensorType)
    indices = operand_def(TensorType)
    result = result_def(TensorType)
    layer = prop_def(StringAttr)
    irdl_options = (ParsePropInAttrDict(),)
    traits = traits_def(Pure())
    assembly_format = "$layer $table `,` $indices attr-dict `:` functional-type(operands, results)"

    def verify_(self) -> None:
        table, idx, out = _shape(self.table), _shape(self.indices), _shape(self.result)
        if len(table) != 2 or out != idx + (table[1],):
            raise VerifyException(f"dataflow.embedding '{self.layer_name()}': result {out} should be {idx + table[1:]}")


@irdl_op_definition
class MoeOp(_Named):
    """A mixture-of-experts block: router, dispatch, per-expert FFNs and weighted combine, as one unit of work.

    Operands: ``input`` [tokens..., D], ``gate`` [D, E], the experts' weights w1 [E, D, H], w2 [E, H, D] and optional
    biases b1 [E, H], b2 [E, D]; ``result`` has the input's element count with last dim D (exports may flatten the
    tokens). Expert e computes ``activation(x @ w1[e] + b1[e]) @ w2[e] + b2[e]``. ``mode`` is token | task | image
    routing (semantics: compiler/numerics/router.py), ``top_k`` experts per token, ``capacity_factor`` per-expert
    capacity ``ceil(cf * T * k / E)`` tokens (0 = no limit; overflow is dropped), ``renormalize`` divides the k
    weights by their sum. After ``quantize`` the block is integer: input, gate, w1, w2 and result integers, biases
    i32 (the formats and their WeightStore entries: compiler/simulate/moe.py).
    """

    name = "dataflow.moe"
    input = operand_def(TensorType)
    gate = operand_def(TensorType)
    w1 = operand_def(TensorType)
    w2 = operand_def(TensorType)
    b1 = opt_operand_def(TensorType)
    b2 = opt_operand_def(TensorType)
    result = result_def(TensorType)
    layer = prop_def(StringAttr)
    num_experts = prop_def(IntegerAttr)
    top_k = prop_def(IntegerAttr)
    mode = prop_def(StringAttr)
    capacity_factor = prop_def(FloatAttr)
    renormalize = prop_def(BoolAttr)
    activation = prop_def(StringAttr)
    irdl_options = (AttrSizedOperandSegments(as_property=True), ParsePropInAttrDict())
    traits = traits_def(Pure())
    assembly_format = ("$layer $input `,` $gate `,` $w1 `,` $w2 (`b1` $b1^ `:` type($b1))? (`b2` $b2^ `:` type($b2))? "
                       "attr-dict `:` type($input) `,` type($gate) `,` type($w1) `,` type($w2) `->` type($result)")

    def verify_(self) -> None:
        tag = f"dataflow.moe '{self.layer_name()}'"
        x, gate, w1, w2 = _shape(self.input), _shape(self.gate), _shape(self.w1), _shape(self.w2)
        out = _shape(self.result)
        experts = int_attr(self, "num_experts")
        if gate != (x[-1], experts):
            raise VerifyException(f"{tag}: gate shape {gate} should be {(x[-1], experts)}")
        if len(w1) != 3 or w1[0] != experts or w1[1] != x[-1]:
            raise VerifyException(f"{tag}: w1 shape {w1} should be [{experts}, {x[-1]}, hidden]")
        if w2 != (experts, w1[2], x[-1]):
            raise VerifyException(f"{tag}: w2 shape {w2} should be {(experts, w1[2], x[-1])}")
        if self.b1 is not None and _shape(self.b1) != (experts, w1[2]):
            raise VerifyException(f"{tag}: b1 shape {_shape(self.b1)} should be {(experts, w1[2])}")
        if self.b2 is not None and _shape(self.b2) != (experts, x[-1]):
            raise VerifyException(f"{tag}: b2 shape {_shape(self.b2)} should be {(experts, x[-1])}")
        if out[-1:] != x[-1:] or _numel(out) != _numel(x):
            raise VerifyException(f"{tag}: result shape {out} should hold the input's {x} elements, last dim {x[-1]}")
        if not 1 <= int_attr(self, "top_k") <= experts:
            raise VerifyException(f"{tag}: top_k must be in 1..{experts}")
        if float_attr(self, "capacity_factor") < 0:
            raise VerifyException(f"{tag}: capacity_factor must be >= 0 (0 = no limit)")
        _check_choice(self, "mode", MOE_MODES)
        _check_choice(self, "activation", MOE_ACTIVATIONS)
        if str_attr(self, "mode") == "task" and float_attr(self, "capacity_factor") > 0:
            raise VerifyException(f"{tag}: task routing has no capacity limit (capacity_factor must be 0)")
        if isinstance(self.input.type.get_element_type(), IntegerType):  # type: ignore[attr-defined]
            for key in ("gate", "w1", "w2", "result"):
                if not isinstance(getattr(self, key).type.get_element_type(), IntegerType):
                    raise VerifyException(f"{tag}: an integer block needs an integer {key}")
            for key in ("b1", "b2"):
                bias = getattr(self, key)
                if bias is not None and bias.type.get_element_type() != IntegerType(32):
                    raise VerifyException(f"{tag}: an integer block needs an i32 {key}")


@irdl_op_definition
class RopeOp(_Named):
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
    layer = prop_def(StringAttr)
    style = prop_def(StringAttr)
    head_dim = prop_def(IntegerAttr)
    rotary_dim = prop_def(IntegerAttr)
    irdl_options = (ParsePropInAttrDict(),)
    traits = traits_def(Pure())
    assembly_format = "$layer $input `,` $cos `,` $sin attr-dict `:` functional-type(operands, results)"

    def verify_(self) -> None:
        tag = f"dataflow.rope '{self.layer_name()}'"
        _check_choice(self, "style", ROPE_STYLES)
        shape = _shape(self.input)
        if _shape(self.result) != shape or len(shape) != 3:
            raise VerifyException(f"{tag}: needs a [B, S, D] input and an output of the same shape, got {shape}")
        dh, r = int_attr(self, "head_dim"), int_attr(self, "rotary_dim")
        if dh <= 0 or shape[2] % dh or not 0 < r <= dh or r % 2:
            raise VerifyException(f"{tag}: head_dim {dh} and rotary_dim {r} do not fit D = {shape[2]} "
                                  "(rotary_dim even, at most head_dim, head_dim dividing D)")
        for key in ("cos", "sin"):
            if _shape(getattr(self, key)) != (shape[1], r):
                raise VerifyException(f"{tag}: {key} table {_shape(getattr(self, key))} should be {(shape[1], r)}")


def _numel(shape: tuple[int, ...]) -> int:
    n = 1
    for d in shape:
        n *= d
    return n


def int_prop(value: int) -> IntegerAttr:
    """An i64 property value."""
    return IntegerAttr(value, i64)


def float_prop(value: float) -> FloatAttr:
    """An f64 property value."""
    return FloatAttr(value, f64)


Dataflow = Dialect(
    "dataflow",
    [WeightOp, GemmOp, RequantOp, AttentionOp, SoftmaxOp, LayerNormOp, GeluOp, ElementwiseOp, ReduceOp, MoveOp,
     EmbeddingOp, MoeOp, RopeOp],
    [],
)
