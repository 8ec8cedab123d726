"""The ``cds1`` instructions: typed records, their 128-bit encoding and decoding, and field validation.

docs/ISA.md is the specification; this module is its executable form. Each instruction class lists its fields in
``LAYOUT`` as ``(name, first bit, width)``; bits ``[0, 4)`` hold the opcode and ``[4, 8)`` the dependency flags
for every class. :func:`encode` packs an instruction into 16 little-endian bytes and :func:`decode` unpacks and
validates one, so ``decode(encode(i)) == i`` for every valid ``i`` and every 16-byte word either decodes to a valid
instruction or is refused with the field that is wrong.
"""

from __future__ import annotations

from dataclasses import dataclass, fields
from enum import IntEnum
from typing import ClassVar

from hw.errors import InputError

__all__ = [
    "WORD_BYTES",
    "Opcode",
    "Queue",
    "Space",
    "VecFn",
    "ConfigReg",
    "Deps",
    "Halt",
    "Load",
    "Store",
    "Gemm",
    "Vec",
    "Config",
    "Nop",
    "Instruction",
    "encode",
    "decode",
    "queue_of",
]

WORD_BYTES = 16
"""Bytes per instruction word (128 bits, VTA's width)."""

MAX_ELEMS = 4096
"""Largest element count a row, a GEMM dimension or a VEC row length may have (13-bit fields)."""


class Opcode(IntEnum):
    HALT = 0
    LOAD = 1
    STORE = 2
    GEMM = 3
    VEC = 4
    CONFIG = 5
    NOP = 6


class Queue(IntEnum):
    """The three in-order queues, in the order of the dependency chain (load -> execute -> store)."""

    LOAD = 0
    EXECUTE = 1
    STORE = 2


class Space(IntEnum):
    SP = 0
    ACC = 1
    CONST = 2


class VecFn(IntEnum):
    REQUANT = 0
    REQUANT_ADD = 1
    SHIFTMAX = 2
    SHIFTGELU = 3
    ILAYERNORM = 4
    ONLINE_SOFTMAX = 5
    TOPK = 6
    COPY = 7
    THRESHOLD = 8
    DIGIT = 9
    MUL = 10


class ConfigReg(IntEnum):
    SHIFTMAX_X0 = 0
    SHIFTGELU_X0 = 1
    SOFTMAX_M = 2
    SOFTMAX_E = 3
    REQUANT_M = 4
    REQUANT_E = 5
    RESIDUAL_M = 6
    RESIDUAL_E = 7
    TOPK_K = 8
    SHIFTMAX_SHIFT = 9
    DIGIT_SHIFT = 10
    LAYERNORM_EPS = 11
    LAYERNORM_RMS = 12


@dataclass(frozen=True)
class Deps:
    """VTA's four dependency flags: pop before starting, push after completing (docs/ISA.md, Dependency tokens)."""

    pop_prev: bool = False
    pop_next: bool = False
    push_prev: bool = False
    push_next: bool = False

    def bits(self) -> int:
        return int(self.pop_prev) | int(self.pop_next) << 1 | int(self.push_prev) << 2 | int(self.push_next) << 3

    @classmethod
    def from_bits(cls, value: int) -> Deps:
        return cls(bool(value & 1), bool(value & 2), bool(value & 4), bool(value & 8))


_NO_DEPS = Deps()

#: (field, first bit, width); the value range is [lo, hi] from ``_RANGES`` or the full unsigned width.
Layout = tuple[tuple[str, int, int], ...]


@dataclass(frozen=True)
class _Base:
    OPCODE: ClassVar[Opcode]
    LAYOUT: ClassVar[Layout] = ()
    #: Inclusive value ranges narrower than the field's width.
    RANGES: ClassVar[dict[str, tuple[int, int]]] = {}
    #: Enum type of a field, for decoding and the listing.
    ENUMS: ClassVar[dict[str, type[IntEnum]]] = {}


@dataclass(frozen=True)
class Halt(_Base):
    """End of program, once all queues have drained."""

    OPCODE: ClassVar[Opcode] = Opcode.HALT
    deps: Deps = _NO_DEPS


_DMA_LAYOUT: Layout = (("space", 8, 2), ("row", 10, 16), ("rows", 26, 16), ("cols", 42, 13), ("elem_log2", 55, 2),
                       ("transpose", 57, 1), ("dram", 58, 32), ("stride", 90, 24))
_DMA_RANGES = {"rows": (1, 65535), "cols": (1, MAX_ELEMS), "space": (0, 2)}


@dataclass(frozen=True)
class _Dma(_Base):
    """The fields LOAD and STORE share: a 2-D transfer between DRAM and rows of a space (docs/ISA.md)."""

    LAYOUT: ClassVar[Layout] = _DMA_LAYOUT
    ENUMS: ClassVar[dict[str, type[IntEnum]]] = {"space": Space}
    space: Space
    row: int
    rows: int
    cols: int
    elem_log2: int
    dram: int
    stride: int
    transpose: int = 0
    deps: Deps = _NO_DEPS


@dataclass(frozen=True)
class Load(_Dma):
    """DMA ``rows`` x ``cols`` elements from DRAM (byte address ``dram``, row pitch ``stride`` bytes) into rows
    ``row ..`` of ``space``; ``transpose`` lands DRAM element ``(r, c)`` at row ``c``, lane ``r``."""

    OPCODE: ClassVar[Opcode] = Opcode.LOAD
    RANGES: ClassVar[dict[str, tuple[int, int]]] = _DMA_RANGES


@dataclass(frozen=True)
class Store(_Dma):
    """DMA rows ``row ..`` of ``space`` (``sp`` or ``acc``) to DRAM; the low ``8 << elem_log2`` bits of each value."""

    OPCODE: ClassVar[Opcode] = Opcode.STORE
    RANGES: ClassVar[dict[str, tuple[int, int]]] = {**_DMA_RANGES, "space": (0, 1), "transpose": (0, 0)}


@dataclass(frozen=True)
class Gemm(_Base):
    """One fold on the systolic array: ``C[m x n] (+)= A[m x k] @ B[k x n] (+ bias)`` from scratchpad rows into
    accumulator rows (docs/ISA.md, GEMM, for the row layout of each dataflow and the bias)."""

    OPCODE: ClassVar[Opcode] = Opcode.GEMM
    LAYOUT: ClassVar[Layout] = (("dataflow", 8, 1), ("accumulate", 9, 1), ("a_row", 10, 16), ("b_row", 26, 16),
                                ("c_row", 42, 16), ("m", 58, 13), ("n", 71, 13), ("k", 84, 13), ("bias", 97, 1),
                                ("bias_row", 98, 16))
    RANGES: ClassVar[dict[str, tuple[int, int]]] = {"m": (1, MAX_ELEMS), "n": (1, MAX_ELEMS), "k": (1, MAX_ELEMS)}
    dataflow: int
    accumulate: int
    a_row: int
    b_row: int
    c_row: int
    m: int
    n: int
    k: int
    bias: int = 0
    bias_row: int = 0
    deps: Deps = _NO_DEPS


@dataclass(frozen=True)
class Vec(_Base):
    """A vector kernel ``fn`` over ``rows`` rows of ``n`` elements (docs/ISA.md, VEC)."""

    OPCODE: ClassVar[Opcode] = Opcode.VEC
    LAYOUT: ClassVar[Layout] = (("fn", 8, 4), ("src_space", 12, 2), ("src", 14, 16), ("dst_space", 30, 2),
                                ("dst", 32, 16), ("aux_space", 48, 2), ("aux", 50, 16), ("rows", 66, 16),
                                ("n", 82, 13), ("out_log2", 95, 4))
    RANGES: ClassVar[dict[str, tuple[int, int]]] = {"rows": (1, 65535), "n": (1, MAX_ELEMS),
                                                    "out_log2": (2, 5), "fn": (0, max(VecFn)),
                                                    "src_space": (0, 2), "dst_space": (0, 1), "aux_space": (0, 2)}
    ENUMS: ClassVar[dict[str, type[IntEnum]]] = {"fn": VecFn, "src_space": Space, "dst_space": Space,
                                                 "aux_space": Space}
    fn: VecFn
    src_space: Space
    src: int
    dst_space: Space
    dst: int
    rows: int
    n: int
    out_log2: int
    aux_space: Space = Space.SP
    aux: int = 0
    deps: Deps = _NO_DEPS


_VALUE_BITS = 64


@dataclass(frozen=True)
class Config(_Base):
    """Write ``value`` (signed 64-bit) into configuration register ``reg``, in execute-queue order."""

    OPCODE: ClassVar[Opcode] = Opcode.CONFIG
    LAYOUT: ClassVar[Layout] = (("reg", 8, 8), ("value", 64, _VALUE_BITS))
    RANGES: ClassVar[dict[str, tuple[int, int]]] = {"reg": (0, max(ConfigReg)),
                                                    "value": (-(1 << 63), (1 << 63) - 1)}
    ENUMS: ClassVar[dict[str, type[IntEnum]]] = {"reg": ConfigReg}
    reg: ConfigReg
    value: int
    deps: Deps = _NO_DEPS


@dataclass(frozen=True)
class Nop(_Base):
    """Does nothing on ``queue`` but pop and push its tokens: how a program seeds the write-after-read FIFOs with
    one token per buffer half at its start and drains them before ``HALT`` (VTA's runtime does the same with
    zero-sized transfers). With ``trace`` (execute queue only) its completion also latches the cycle counter into
    entry ``mark`` of the top level's trace memory: how a run's cycles are attributed to layers (docs/ISA.md)."""

    OPCODE: ClassVar[Opcode] = Opcode.NOP
    LAYOUT: ClassVar[Layout] = (("queue", 8, 2), ("trace", 10, 1), ("mark", 16, 16))
    RANGES: ClassVar[dict[str, tuple[int, int]]] = {"queue": (0, 2)}
    ENUMS: ClassVar[dict[str, type[IntEnum]]] = {"queue": Queue}
    queue: Queue
    deps: Deps = _NO_DEPS
    trace: int = 0
    mark: int = 0


Instruction = Halt | Load | Store | Gemm | Vec | Config | Nop
CLASSES: dict[Opcode, type[_Base]] = {c.OPCODE: c for c in (Halt, Load, Store, Gemm, Vec, Config, Nop)}

_QUEUE = {Opcode.LOAD: Queue.LOAD, Opcode.STORE: Queue.STORE, Opcode.GEMM: Queue.EXECUTE,
          Opcode.VEC: Queue.EXECUTE, Opcode.CONFIG: Queue.EXECUTE}


def queue_of(instr: Instruction) -> Queue | None:
    """The queue ``instr`` runs on (None for ``HALT``, which the fetch unit handles)."""
    if isinstance(instr, Nop):
        return Queue(instr.queue)
    return _QUEUE.get(instr.OPCODE)


def _range(cls: type[_Base], name: str, width: int) -> tuple[int, int]:
    return cls.RANGES.get(name, (0, (1 << width) - 1))


def _check(instr: Instruction, where: str) -> None:
    cls = type(instr)
    for name, _, width in cls.LAYOUT:
        value = getattr(instr, name)
        lo, hi = _range(cls, name, width)
        if isinstance(value, bool) or not isinstance(value, int) or not lo <= value <= hi:
            raise InputError(f"{where}{cls.__name__.upper()}: field '{name}' must be an integer in [{lo}, {hi}], "
                             f"got {value!r}")
    queue = queue_of(instr)
    d = instr.deps
    name = cls.__name__.upper()
    if queue is None and d.bits():
        raise InputError(f"{where}HALT: carries no dependency flags")
    if queue == Queue.LOAD and (d.pop_prev or d.push_prev):
        raise InputError(f"{where}{name}: the load queue has no previous queue (pop_prev/push_prev must be 0)")
    if queue == Queue.STORE and (d.pop_next or d.push_next):
        raise InputError(f"{where}{name}: the store queue has no next queue (pop_next/push_next must be 0)")
    if isinstance(instr, Nop) and instr.trace and queue != Queue.EXECUTE:
        raise InputError(f"{where}NOP: a trace mark runs on the execute queue only, not on {Queue(queue).name.lower()}")


def encode(instr: Instruction, index: int | None = None) -> bytes:
    """The 16-byte word of ``instr``; ``InputError`` naming the field (and ``index``) when one is out of range."""
    where = "" if index is None else f"instruction {index}: "
    _check(instr, where)
    word = int(instr.OPCODE) | instr.deps.bits() << 4
    for name, lo, width in type(instr).LAYOUT:
        word |= (int(getattr(instr, name)) & ((1 << width) - 1)) << lo
    return word.to_bytes(WORD_BYTES, "little")


def decode(raw: bytes, index: int | None = None) -> Instruction:
    """The instruction in a 16-byte word; ``InputError`` for an unknown opcode, a set unused bit or a bad field."""
    where = "" if index is None else f"instruction {index}: "
    if len(raw) != WORD_BYTES:
        raise InputError(f"{where}an instruction word is {WORD_BYTES} bytes, got {len(raw)}")
    word = int.from_bytes(raw, "little")
    try:
        cls = CLASSES[Opcode(word & 0xF)]
    except ValueError:
        raise InputError(f"{where}unknown opcode {word & 0xF}") from None
    used = 0xFF
    values: dict[str, object] = {"deps": Deps.from_bits(word >> 4 & 0xF)}
    for name, lo, width in cls.LAYOUT:
        mask = (1 << width) - 1
        used |= mask << lo
        value = word >> lo & mask
        if name == "value":  # the one signed field
            value -= (value >> (width - 1)) << width
        enum = cls.ENUMS.get(name)
        if enum is not None and value in enum._value2member_map_:
            value = enum(value)
        values[name] = value
    if word & ~used:
        raise InputError(f"{where}{cls.__name__.upper()}: unused bits are set ({word & ~used:#x})")
    instr = cls(**values)  # type: ignore[arg-type]
    _check(instr, where)  # type: ignore[arg-type]
    return instr  # type: ignore[return-value]


def field_names(cls: type[_Base]) -> list[str]:
    """The fields of ``cls`` in declaration order, ``deps`` excluded (the listing's order)."""
    return [f.name for f in fields(cls) if f.name != "deps"]
