"""The dialect's typed view of its ops: choice enums match the verifiers' lists, accessors read what the IR holds."""

import pytest
from xdsl.dialects.builtin import BoolAttr, FloatAttr, IntegerAttr, StringAttr, TensorType, f32, f64, i64
from xdsl.ir import Block

from compiler.dialect import choices
from compiler.dialect import dataflow as df


@pytest.mark.parametrize("enum, values", [
    (df.SoftmaxApprox, df.SOFTMAX_APPROX), (df.GeluApprox, df.GELU_APPROX), (df.LayerNormApprox, df.LAYERNORM_APPROX),
    (df.LayerNormKind, ("layernorm", "rmsnorm")), (df.AttentionAlgorithm, df.ATTENTION_ALGORITHMS),
    (df.MaskKind, df.MASK_KINDS), (df.MoeMode, df.MOE_MODES),
])
def test_each_choice_enum_is_its_verifier_list_in_order(enum, values):
    assert tuple(e.value for e in enum) == tuple(values)
    assert all(type(v) is str for v in values)  # the IR and the messages see plain strings


def _attention(seq_q=5, seq_k=7, heads=4, kv=2, dh=8, dv=6, **props):
    block = Block(arg_types=[TensorType(f32, [2, seq_q, heads * dh]), TensorType(f32, [2, seq_k, kv * dh]),
                             TensorType(f32, [2, seq_k, kv * dv])])
    properties = {"layer": StringAttr("att"), "num_heads": IntegerAttr(heads, i64), "head_dim": IntegerAttr(dh, i64),
                  "scale": FloatAttr(0.125, f64), "causal": BoolAttr.from_bool(False), "softmax": StringAttr("shiftmax"),
                  "algorithm": StringAttr("flash"), "kv_heads": IntegerAttr(kv, i64), **props}
    op = df.AttentionOp.build(operands=[*block.args, []], result_types=[TensorType(f32, [2, seq_q, heads * dv])],
                              properties=properties)
    op.verify()
    return op


def test_attention_dims_and_macs_come_from_the_operands_and_properties():
    op = _attention()
    assert op.dims() == df.AttentionDims(batch=2, seq_q=5, seq_k=7, num_heads=4, kv_heads=2, head_dim=8, v_head_dim=6)
    assert op.macs() == 2 * 4 * 5 * 7 * (8 + 6)


def test_choice_accessors_return_enums_and_an_absent_mask_kind_is_none():
    op = _attention()
    assert op.softmax_choice() is df.SoftmaxApprox.SHIFTMAX
    assert op.algorithm_choice() is df.AttentionAlgorithm.FLASH
    assert op.mask_kind_choice() is None
    assert _attention(mask_kind=StringAttr("causal")).mask_kind_choice() is df.MaskKind.CAUSAL


def test_property_names_are_the_ones_the_ops_define():
    op = _attention()
    for name in (choices.LAYER_ATTR, choices.SOFTMAX_ATTR, choices.ALGORITHM_ATTR, choices.NUM_HEADS_ATTR,
                 choices.HEAD_DIM_ATTR, choices.KV_HEADS_ATTR, choices.SCALE_ATTR, choices.CAUSAL_ATTR):
        assert name in op.properties
