"""Testbench side of a stream payload: packing field values into the payload integer and back.

The testbenches drive and sample a kernel's ``<port>__payload`` as one integer; these walk the kernel's Amaranth
``StructLayout`` (fields LSB first, as Amaranth lays them out) so that no testbench hand-codes offsets. The kernels
themselves use the layouts directly and never need this.
"""

from __future__ import annotations

from collections.abc import Mapping

from amaranth.hdl import Shape
from amaranth.lib import data


def _field_width(shape) -> int:
    if isinstance(shape, data.Layout):
        return shape.size  # pyright: ignore[reportReturnType]  (Amaranth 0.5 declares Layout.size with no return type)
    return Shape.cast(shape).width


def pack(layout: data.StructLayout, values: Mapping[str, object]) -> int:
    """The payload integer for ``values`` (ints, or lists of ints for ``ArrayLayout`` fields).

    Fields not given are zero; values are taken modulo their width (two's complement).
    """
    word = 0
    for name, fld in layout:
        if name not in values:
            continue
        value = values[name]
        if isinstance(fld.shape, data.ArrayLayout):
            elem = _field_width(fld.shape.elem_shape)
            for index, item in enumerate(value):  # type: ignore[arg-type]
                word |= (int(item) & ((1 << elem) - 1)) << (fld.offset + index * elem)
        else:
            width = _field_width(fld.shape)
            word |= (int(value) & ((1 << width) - 1)) << fld.offset  # type: ignore[arg-type]
    return word


def _decode(raw: int, shape) -> int:
    shape = Shape.cast(shape)
    if shape.signed and raw >> (shape.width - 1):
        return raw - (1 << shape.width)
    return raw


def unpack(layout: data.StructLayout, word: int) -> dict[str, object]:
    """``{field: int or list of ints}`` from a payload integer (signed fields sign-extended)."""
    out: dict[str, object] = {}
    for name, fld in layout:
        if isinstance(fld.shape, data.ArrayLayout):
            elem = fld.shape.elem_shape
            width = _field_width(elem)
            out[name] = [
                _decode((word >> (fld.offset + i * width)) & ((1 << width) - 1), elem)
                for i in range(fld.shape.length)
            ]
        else:
            width = _field_width(fld.shape)
            out[name] = _decode((word >> fld.offset) & ((1 << width) - 1), fld.shape)
    return out
