"""The ``cds1`` accelerator ISA (docs/ISA.md): instructions, their encoding, programs and listings.

The compiler backend writes programs with it and the RTL top level decodes the same fields, which is why it lives in
``hw`` (the bottom layer: it imports neither ``compiler`` nor ``codesign``).
"""

from __future__ import annotations

from hw.isa.instructions import (
    WORD_BYTES,
    Config,
    ConfigReg,
    Deps,
    Gemm,
    Halt,
    Instruction,
    Load,
    Nop,
    Opcode,
    Queue,
    Space,
    Store,
    Vec,
    VecFn,
    decode,
    encode,
    queue_of,
)
from hw.isa.program import HEADER_BYTES, MAGIC, Program, check_tokens, from_bytes, listing, parse_listing, to_bytes

__all__ = [
    "WORD_BYTES", "HEADER_BYTES", "MAGIC",
    "Opcode", "Queue", "Space", "VecFn", "ConfigReg", "Deps",
    "Halt", "Load", "Store", "Gemm", "Vec", "Config", "Nop", "Instruction",
    "encode", "decode", "queue_of",
    "Program", "to_bytes", "from_bytes", "listing", "parse_listing", "check_tokens",
]
