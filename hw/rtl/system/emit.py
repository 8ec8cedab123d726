"""The system top level's Verilog text: ``cds1_system`` (:func:`system_verilog`) and its simulation wrapper with
the DRAM model, ``cds1_system_sim`` (:func:`sim_system_verilog`).

Yosys writes a memory's initial contents as one ``mem[i] = 0;`` per word. For the top level's scratchpad,
accumulator and constant memories that is tens of thousands of lines, which Verilator turns into megabytes of C++
(most of a whole-model build's compile time) for a memory that starts at zero anyway. :func:`compact_zero_inits`
rewrites every such all-zero block as one loop, the same contents at time 0 in every simulator. Each text is kept
per configuration for the life of the process, so the runs of several samples (or tests) on one configuration
elaborate it once.
"""

from __future__ import annotations

import re
from functools import lru_cache

from hw.rtl.system.dram import STORAGE_VERILOG, DramTiming, SimSystem
from hw.rtl.system.top import SystemConfig, SystemTop

__all__ = ["TOP_NAME", "SIM_TOP_NAME", "compact_zero_inits", "system_verilog", "sim_system_verilog"]

TOP_NAME = "cds1_system"
SIM_TOP_NAME = "cds1_system_sim"

# One word of a Yosys memory initial block: `    name[12] = 32'd0;` or `    \const [12] = 256'h00..;`.
_ZERO_WORD = re.compile(r"^    (\\\S+ |[A-Za-z_][\w$]*)\[(\d+)\] = \d+'(?:h0+|d0|b0+);$")


def compact_zero_inits(text: str) -> str:
    """``text`` with every ``initial begin`` block that sets words ``0 .. n-1`` of one memory to zero, one word
    per line (Yosys' ``write_verilog``), replaced by a named block with one ``for`` loop (Verilog-2005)."""
    lines = text.split("\n")
    out: list[str] = []
    index = blocks = 0
    while index < len(lines):
        line = lines[index]
        if line == "  initial begin":
            name, end = None, index + 1
            while end < len(lines):
                match = _ZERO_WORD.match(lines[end])
                if match is None or match.group(2) != str(end - index - 1) or name not in (None, match.group(1)):
                    break
                name, end = match.group(1), end + 1
            words = end - index - 1
            if name is not None and end < len(lines) and lines[end] == "  end":
                label = f"codesign_zero_init_{blocks}"
                blocks += 1
                out += [f"  initial begin : {label}", "    integer i;",
                        f"    for (i = 0; i < {words}; i = i + 1) {name}[i] = 0;", "  end"]
                index = end + 1
                continue
        out.append(line)
        index += 1
    return "\n".join(out)


@lru_cache(maxsize=4)
def system_verilog(config: SystemConfig) -> str:
    """Verilog of ``cds1_system`` for ``config`` (memory initial blocks compacted)."""
    from amaranth.back import verilog

    return compact_zero_inits(verilog.convert(SystemTop(config), name=TOP_NAME, emit_src=False))


@lru_cache(maxsize=4)
def sim_system_verilog(config: SystemConfig, timing: DramTiming) -> str:
    """Verilog of ``cds1_system_sim`` (the top level and the DRAM model, ``hw/rtl/system/dram.py``) with the DRAM
    storage module appended."""
    from amaranth.back import verilog

    text = verilog.convert(SimSystem(config, timing), name=SIM_TOP_NAME, emit_src=False)
    return compact_zero_inits(text) + STORAGE_VERILOG
