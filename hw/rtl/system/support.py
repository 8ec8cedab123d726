"""Which ``cds1`` instructions the system top level builds: the static twin of ``execute.py``'s ``fault``.

``codesign rtl --system --simulate`` asks this before it runs a program, so a program the RTL cannot run is refused
with one line naming the layer instead of a simulation that raises ``fault`` (docs/RTL.md, System top level). A unit
added to ``execute.py`` is added here in the same change.
"""

from __future__ import annotations

from hw.isa import Gemm, Instruction, Space, Vec, VecFn
from hw.rtl.system.top import SystemConfig

__all__ = ["BUILT", "rtl_lacks"]

BUILT = ("LOAD, STORE, output-stationary GEMM, VEC requant from the accumulator to 4-, 8- or 16-bit outputs, CONFIG, "
         "NOP, HALT")
"""What the top level runs today, in words (for messages)."""


def rtl_lacks(instr: Instruction, config: SystemConfig) -> str | None:
    """Why the top level cannot run ``instr`` (a short phrase), or None when it can."""
    if isinstance(instr, Gemm):
        if instr.dataflow != 0:
            return "weight-stationary GEMM"
        if instr.m > config.rows or instr.n > config.cols:
            return f"GEMM of {instr.m} x {instr.n} (one fold is at most {config.rows} x {config.cols})"
    elif isinstance(instr, Vec):
        fn = VecFn(instr.fn)
        if fn != VecFn.REQUANT:
            return f"VEC {fn.name.lower()}"
        if instr.src_space != Space.ACC or instr.out_log2 > 4:
            return "VEC requant from outside the accumulator or to 32 bits"
        if instr.n > config.cols:
            return f"VEC requant of {instr.n} elements per row (at most {config.cols})"
    return None
