"""Instruction fields in hardware: slices of a 128-bit ``cds1`` word at the bit positions ``hw.isa`` defines.

The positions come from each instruction class's ``LAYOUT`` (docs/ISA.md's tables in executable form), so the
decoder in the RTL and the encoder in Python cannot disagree.
"""

from __future__ import annotations

from amaranth.hdl import Value

from hw.isa import Opcode
from hw.isa.instructions import CLASSES

__all__ = ["field", "opcode", "pop_prev", "pop_next", "push_prev", "push_next"]


def field(word: Value, op: Opcode, name: str) -> Value:
    """Field ``name`` of instruction ``op`` in ``word`` (unsigned; the caller reinterprets signed fields)."""
    for fname, lo, width in CLASSES[op].LAYOUT:
        if fname == name:
            return Value.cast(word[lo:lo + width])
    raise KeyError(f"{op.name} has no field {name!r}")


def opcode(word: Value) -> Value:
    return Value.cast(word[0:4])


def pop_prev(word: Value) -> Value:
    return Value.cast(word[4])


def pop_next(word: Value) -> Value:
    return Value.cast(word[5])


def push_prev(word: Value) -> Value:
    return Value.cast(word[6])


def push_next(word: Value) -> Value:
    return Value.cast(word[7])
