"""The ``cds1`` system top level (docs/RTL.md, System top level): an Amaranth accelerator that fetches and runs
programs the compiler backend writes (docs/ISA.md), with its DMA on an AXI4 master port."""

from __future__ import annotations

from hw.rtl.system.dram import DramTiming
from hw.rtl.system.simulate import SystemRun, run_system
from hw.rtl.system.top import CYCLE_BITS, SystemConfig, SystemTop

__all__ = ["SystemConfig", "SystemTop", "CYCLE_BITS", "SystemRun", "run_system", "DramTiming"]
