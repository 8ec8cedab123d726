"""Typed reads of compiled IR for the tests: element types, weight names and the discardable attributes the
quantize passes write (``requant``, ``hidden_bits``, ``weight_group``, ...), each narrowed with an assert so a
missing or mistyped attribute fails the test that reads it."""

from __future__ import annotations

from xdsl.dialects.builtin import DictionaryAttr, IntegerAttr, StringAttr, TensorType
from xdsl.ir import Operation, SSAValue

from compiler.dialect import dataflow as df

__all__ = ["attr_int", "attr_ints", "attr_str", "elem_type", "weight_layer"]


def elem_type(value: SSAValue) -> str:
    """The element type of a tensor value as the IR prints it (``i8``, ``i32``, ``f32``)."""
    typ = value.type
    assert isinstance(typ, TensorType), typ
    return str(typ.get_element_type())


def weight_layer(value: SSAValue) -> str:
    """The WeightStore key of the weight op that produces ``value``."""
    owner = value.owner
    assert isinstance(owner, df.WeightOp), owner
    return owner.layer_name()


def attr_int(op: Operation, key: str) -> int:
    """The integer value of discardable attribute ``key``."""
    attr = op.attributes[key]
    assert isinstance(attr, IntegerAttr), (key, attr)
    return attr.value.data


def attr_str(op: Operation, key: str) -> str:
    """The string value of discardable attribute ``key``."""
    attr = op.attributes[key]
    assert isinstance(attr, StringAttr), (key, attr)
    return attr.data


def attr_ints(op: Operation, key: str) -> dict[str, int]:
    """The integers of dictionary attribute ``key`` (the per-token offset, unsigned flag and shift), by name."""
    attr = op.attributes[key]
    assert isinstance(attr, DictionaryAttr), (key, attr)
    out: dict[str, int] = {}
    for name, value in attr.data.items():
        assert isinstance(value, IntegerAttr), (key, name, value)
        out[name] = value.value.data
    return out
