"""The machine's sizes from a target YAML, as docs/ISA.md's memory table derives them: one rule that the compiler
backend's functional machine (``compiler/backend/machine.Geometry``) and the RTL top level
(``hw/rtl/system/top.SystemConfig``) both use, so a program built for one fits the other."""

from __future__ import annotations

from dataclasses import dataclass

from hw.errors import InputError

__all__ = ["MAX_SPACE_ROWS", "MemorySizes", "memory_sizes"]

MAX_SPACE_ROWS = 65536
"""Most rows of one memory space: a LOAD/STORE row field is 16 bits wide."""


@dataclass(frozen=True)
class MemorySizes:
    """The array (``rows`` x ``cols`` PEs, signed ``in_bits`` operands, ``acc_bits`` accumulators) and the rows of
    each memory space: scratchpad (``sp_rows``) and constants (``const_rows``), each ``width`` lanes, and
    accumulators (``acc_rows``, ``cols`` lanes of ``acc_bits``). The backend's machine model and the RTL top level
    both extend it."""

    rows: int
    cols: int
    in_bits: int = 8
    acc_bits: int = 32
    sp_rows: int = 4096
    acc_rows: int = 1024
    const_rows: int = 4096

    @property
    def width(self) -> int:
        """Lanes of a scratchpad or constant row (docs/ISA.md): a fold's A column and B row both fit."""
        return max(self.rows, self.cols)


def memory_sizes(target: object, who: str) -> MemorySizes:
    """The sizes of a target with a ``gemm`` array and ``buffers`` (FPGA, ASIC): the act and weight buffers make the
    scratchpad, the out buffer the accumulators (whole rows; YAML sizes are KiB and may be fractional).
    ``InputError`` naming ``who`` for a target kind without them."""
    gemm = getattr(target, "gemm", None)
    buffers = getattr(target, "buffers", None)
    if gemm is None or buffers is None:
        raise InputError(f"target '{getattr(target, 'name', '?')}': {who} needs a systolic array (gemm) and "
                         "buffers; this target kind has none")
    width = max(gemm.rows, gemm.cols)
    sp_rows = int((buffers.act_kb + buffers.weight_kb) * 1024 * 8 // (width * gemm.in_bits))
    acc_rows = int(buffers.out_kb * 1024 * 8 // (gemm.cols * gemm.acc_bits))
    return MemorySizes(gemm.rows, gemm.cols, gemm.in_bits, gemm.acc_bits, min(sp_rows, MAX_SPACE_ROWS),
                       min(acc_rows, MAX_SPACE_ROWS))
