"""``dataflow.moe``'s verifier: shapes of weights and biases, result size, routing properties."""

from __future__ import annotations

import pytest
from xdsl.dialects.builtin import (
    BoolAttr,
    DenseArrayBase,
    FloatAttr,
    IntegerAttr,
    IntegerType,
    StringAttr,
    TensorType,
    f32,
    f64,
    i64,
)
from xdsl.ir import Attribute, Block
from xdsl.utils.exceptions import VerifyException

from compiler.dialect import dataflow as df


def _moe(x=(1, 9, 8), out=None, b1=(4, 16), b2=(4, 8), w1=(4, 8, 16), mode="task", cf=0.0, act="gelu", k=2,
         w3=None):
    block = Block(arg_types=[TensorType(f32, list(s)) for s in (x, (8, 4), w1, (4, 16, 8))]
                  + [TensorType(f32, list(s)) for s in (b1, b2, w3) if s])
    biases = [1 if b1 else 0, 1 if b2 else 0, 1 if w3 else 0]
    return df.MoeOp.create(
        operands=list(block.args), result_types=[TensorType(f32, list(out or x))],
        properties={"layer": StringAttr("m"), "num_experts": IntegerAttr(4, i64), "top_k": IntegerAttr(k, i64),
                    "mode": StringAttr(mode), "capacity_factor": FloatAttr(cf, f64),
                    "renormalize": BoolAttr.from_bool(False), "activation": StringAttr(act),
                    "operandSegmentSizes": DenseArrayBase.from_list(IntegerType(32), [1, 1, 1, 1] + biases)})


def test_a_well_formed_block_verifies_with_and_without_biases():
    _moe().verify()
    _moe(b1=None, b2=None).verify()
    _moe(out=(9, 8)).verify()  # exports may flatten the tokens


def test_a_gated_block_takes_an_up_projection_shaped_like_w1():
    op = _moe(w3=(4, 8, 16), b1=None, b2=None, act="silu")
    op.verify()
    assert op.gated() and not _moe().gated()


@pytest.mark.parametrize("kwargs, message", [
    ({"b1": (4, 8)}, "b1 shape (4, 8) should be (4, 16)"),
    ({"b2": (8,)}, "b2 shape (8,) should be (4, 8)"),
    ({"out": (1, 9, 4)}, "result shape (1, 9, 4) should hold the input's (1, 9, 8) elements, last dim 8"),
    ({"mode": "task", "cf": 1.25}, "task routing has no capacity limit"),
    ({"mode": "token", "cf": -1.0}, "capacity_factor must be >= 0"),
    ({"act": "swish"}, "activation 'swish' is not one of gelu, gelu_tanh, relu, silu, identity"),
    ({"k": 5}, "top_k must be in 1..4"),
    ({"w1": (4, 7, 16)}, "w1 shape (4, 7, 16) should be [4, 8, hidden]"),
    ({"w3": (4, 8, 8)}, "w3 (the gated experts' up projection) shape (4, 8, 8) should be w1's (4, 8, 16)"),
])
def test_malformed_blocks_are_rejected_with_the_reason(kwargs, message):
    with pytest.raises(VerifyException, match=message.replace("(", r"\(").replace(")", r"\)").replace("[", r"\[")
                       .replace("]", r"\]")):
        _moe(**kwargs).verify()


_I16, _I32 = IntegerType(16), IntegerType(32)


def _int_moe(gate_el: Attribute = _I16, b1_el: Attribute = _I32):
    types = [TensorType(IntegerType(8), [1, 9, 8]), TensorType(gate_el, [8, 4]), TensorType(IntegerType(8), [4, 8, 16]),
             TensorType(IntegerType(8), [4, 16, 8]), TensorType(b1_el, [4, 16])]
    block = Block(arg_types=types)
    return df.MoeOp.create(
        operands=list(block.args), result_types=[TensorType(IntegerType(16), [1, 9, 8])],
        properties={"layer": StringAttr("m"), "num_experts": IntegerAttr(4, i64), "top_k": IntegerAttr(2, i64),
                    "mode": StringAttr("task"), "capacity_factor": FloatAttr(0.0, f64),
                    "renormalize": BoolAttr.from_bool(False), "activation": StringAttr("gelu"),
                    "operandSegmentSizes": DenseArrayBase.from_list(IntegerType(32), [1, 1, 1, 1, 1, 0, 0])})


def test_an_integer_block_needs_integer_weights_and_i32_biases():
    _int_moe().verify()
    with pytest.raises(VerifyException, match="an integer block needs an integer gate"):
        _int_moe(gate_el=f32).verify()
    with pytest.raises(VerifyException, match="an integer block needs an i32 b1"):
        _int_moe(b1_el=IntegerType(8)).verify()
