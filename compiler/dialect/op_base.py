"""What every ``dataflow`` op shares: the ``layer`` property, the Pure trait, properties parsed from the attribute
dictionary, and the helpers that read and build property values.

The printed IR depends on the order of an op's property definitions: the generic parser moves attributes into
properties in that order, and the custom printer writes the attribute dictionary in the op's property order. xDSL
collects fields walking the class's MRO from the subclass up, so a ``layer`` defined only on the base class would
come after each op's own properties. :func:`dataflow_op` therefore defines ``layer`` on a thin subclass in front of
the op's class: it is collected first, as when every op wrote it as its first property.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TypeVar, cast

from xdsl.dialects.builtin import FloatAttr, IntegerAttr, IntegerType, StringAttr, TensorType, f64, i64
from xdsl.ir import Operation, SSAValue
from xdsl.irdl import IRDLOperation, ParsePropInAttrDict, irdl_op_definition, prop_def, traits_def
from xdsl.traits import Pure
from xdsl.utils.exceptions import VerifyException

from compiler.dialect.choices import LAYER_ATTR

__all__ = [
    "DataflowOp", "dataflow_op", "str_attr", "int_attr", "float_attr", "bool_attr", "layer_of", "int_prop",
    "float_prop", "shape_of", "numel", "int_bits", "check_choice",
]


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


def bool_attr(op: Operation, key: str) -> bool:
    """The truth value of property ``key`` (a ``BoolAttr``, an i1 integer attribute)."""
    attr = op.properties[key]
    assert isinstance(attr, IntegerAttr)
    return bool(attr.value.data)


def layer_of(op: Operation) -> str:
    """The layer name of any dataflow op (a weight's is its WeightStore key), for an op of unknown class such as an
    operand's owner."""
    return str_attr(op, LAYER_ATTR)


def int_prop(value: int) -> IntegerAttr:
    """An i64 property value."""
    return IntegerAttr(value, i64)


def float_prop(value: float) -> FloatAttr:
    """An f64 property value."""
    return FloatAttr(value, f64)


def shape_of(value: SSAValue) -> tuple[int, ...]:
    """The static shape of a ranked tensor value."""
    typ = value.type
    if not isinstance(typ, TensorType):
        raise VerifyException(f"expected a ranked tensor, got {typ}")
    return tuple(typ.get_shape())


def int_bits(value: SSAValue) -> int | None:
    """The element width of an integer tensor value (a quantized one: ``i8``, ``i16``, ``i32``), else None."""
    typ = value.type
    if isinstance(typ, TensorType) and isinstance(typ.element_type, IntegerType):
        return typ.element_type.width.data
    return None


def numel(shape: tuple[int, ...]) -> int:
    """Elements of a tensor of ``shape``."""
    n = 1
    for d in shape:
        n *= d
    return n


def check_choice(op: IRDLOperation, key: str, choices: Sequence[str]) -> None:
    """Reject a string property ``key`` (when present) whose value is not one of ``choices``."""
    value = op.properties.get(key)
    if value is None:
        return
    assert isinstance(value, StringAttr)
    if value.data not in choices:
        raise VerifyException(
            f"{op.name} '{str_attr(op, LAYER_ATTR)}': {key} '{value.data}' is not one of {', '.join(choices)}"
        )


class DataflowOp(IRDLOperation):
    """Shared by every dataflow op: the layer name reports and traces print, no side effects, and properties that
    the generic form writes as attributes. An op adds its own options (``AttrSizedOperandSegments``) in
    ``irdl_options``; xDSL appends this class's after them."""

    layer = prop_def(StringAttr)
    irdl_options = (ParsePropInAttrDict(),)
    traits = traits_def(Pure())

    def layer_name(self) -> str:
        return str_attr(self, LAYER_ATTR)


OpT = TypeVar("OpT", bound=DataflowOp)


def dataflow_op(cls: type[OpT]) -> type[OpT]:
    """``irdl_op_definition`` for a :class:`DataflowOp`, with ``layer`` as the op's first property (module
    docstring: the printed IR keeps that order)."""
    front = {"layer": DataflowOp.__dict__["layer"], "__module__": cls.__module__, "__qualname__": cls.__qualname__,
             "__doc__": cls.__doc__}
    return irdl_op_definition(cast(type[OpT], type(cls)(cls.__name__, (cls,), front)))
