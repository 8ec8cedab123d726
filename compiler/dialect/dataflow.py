"""The ``dataflow`` dialect: the compiler's one IR between the frontend and the hardware models.

Ops are coarse on purpose: one ``dataflow.attention`` stands for QK^T, scale, mask, softmax and A.V of all heads,
so a pass that swaps the softmax approximation or the attention order touches one op, and the scheduler sees the
unit of work a hardware block executes. Weights are ``dataflow.weight`` ops that name an entry of the compile's
``WeightStore``; the IR never carries tensor data, which keeps a 12-layer ViT-Base module a few hundred KB.

Every op has a ``layer`` property (the layer name used in reports and traces). Generic form (``--mlir-generic``)
is plain MLIR that the upstream parser reads with ``dataflow.irdl.mlir`` loaded (see tests/test_dialect_irdl.py).

This module is the dialect's import surface; the ops live by family in ``tensor_ops`` (weight, gemm, requant,
move, embedding), ``vector_ops`` (softmax, layernorm, gelu, elementwise, reduce), ``attention_ops`` (attention,
rope) and ``moe_ops``, on the shared base of ``op_base``. Read a property through its op's typed accessor
(``AttentionOp.num_heads_value()``, ``MoveOp.kind_value()``, ``SoftmaxOp.approx_choice()`` ...), so that its name
is written once, in the op's definition.
"""

from __future__ import annotations

from xdsl.ir import Dialect

from compiler.dialect.attention_ops import ROPE_STYLES, AttentionDims, AttentionOp, RopeOp, kv_heads
from compiler.dialect.choices import (
    ATTENTION_ALGORITHMS,
    ELEMENTWISE_KINDS,
    GELU_APPROX,
    LAYERNORM_APPROX,
    LAYERNORM_KINDS,
    MASK_KINDS,
    MOE_ACTIVATIONS,
    MOE_MODES,
    MOVE_KINDS,
    REDUCE_KINDS,
    SOFTMAX_APPROX,
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
from compiler.dialect.moe_ops import ROUTER_ATTR, MoeOp
from compiler.dialect.op_base import (
    DataflowOp,
    bool_attr,
    float_attr,
    float_prop,
    int_attr,
    int_bits,
    int_prop,
    layer_of,
    str_attr,
)
from compiler.dialect.tensor_ops import EmbeddingOp, GemmOp, MoveOp, RequantOp, WeightOp
from compiler.dialect.vector_ops import ElementwiseOp, GeluOp, LayerNormOp, ReduceOp, SoftmaxOp

__all__ = [
    "Dataflow", "DataflowOp", "WeightOp", "GemmOp", "RequantOp", "AttentionOp", "SoftmaxOp", "LayerNormOp", "GeluOp",
    "ElementwiseOp", "ReduceOp", "MoveOp", "EmbeddingOp", "MoeOp", "ROUTER_ATTR", "RopeOp", "ROPE_STYLES",
    "AttentionDims",
    "SoftmaxApprox", "GeluApprox", "LayerNormApprox", "LayerNormKind", "AttentionAlgorithm", "MaskKind", "MoeMode",
    "SOFTMAX_APPROX", "GELU_APPROX", "LAYERNORM_APPROX", "LAYERNORM_KINDS", "ATTENTION_ALGORITHMS", "TILE_Q_ATTR",
    "TILE_K_ATTR", "MASK_KINDS", "ELEMENTWISE_KINDS", "MOVE_KINDS", "REDUCE_KINDS", "MOE_MODES", "MOE_ACTIVATIONS",
    "str_attr", "int_attr", "float_attr", "bool_attr", "layer_of", "int_prop", "float_prop", "kv_heads", "int_bits",
]

Dataflow = Dialect(
    "dataflow",
    [WeightOp, GemmOp, RequantOp, AttentionOp, SoftmaxOp, LayerNormOp, GeluOp, ElementwiseOp, ReduceOp, MoveOp,
     EmbeddingOp, MoeOp, RopeOp],
    [],
)
