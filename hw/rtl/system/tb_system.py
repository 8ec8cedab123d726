"""cocotb testbench of the system top level: serves DRAM with cocotbext-axi's ``AxiRam``, runs one program to
``done`` and hands back the DRAM bytes the host asked for, the top level's cycle count and its trace entries.

Job (``$CODESIGN_TB_JOB``): ``{"image": path, "program": path, "program_addr": int, "mem_size": int,
"reads": {name: [addr, nbytes]}, "max_cycles": int, "trace": int}``: the DRAM image is placed at address 0 and
the program's instruction words (``program.bin`` without its header) at ``program_addr``. Result
(``$CODESIGN_TB_RESULT``): ``{"done": bool, "fault": bool, "cycles": int, "reads": {name: hex}, "trace": [int]}``
(``trace``: the first ``trace`` entries of the trace memory, read after ``done``: the cycle each trace mark
latched); a program that does not finish within ``max_cycles`` simulated cycles comes back with ``done`` false (a
cycle budget, not a wall-clock one).
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import cocotb
from cocotb.clock import Clock
from cocotb.triggers import ClockCycles, FallingEdge, RisingEdge, SimTimeoutError, with_timeout
from cocotbext.axi import AxiBus, AxiRam

CLOCK_NS = 10


@cocotb.test()
async def run_program(dut):
    job = json.loads(Path(os.environ["CODESIGN_TB_JOB"]).read_text())
    dut.start.value = 0
    dut.program_addr.value = 0
    dut.rst.value = 1
    cocotb.start_soon(Clock(dut.clk, CLOCK_NS, unit="ns").start())
    ram = AxiRam(AxiBus.from_prefix(dut, "m_axi_"), dut.clk, dut.rst, size=job["mem_size"])
    ram.write(0, Path(job["image"]).read_bytes())
    ram.write(job["program_addr"], Path(job["program"]).read_bytes())
    await ClockCycles(dut.clk, 2)
    await FallingEdge(dut.clk)
    dut.rst.value = 0
    dut.program_addr.value = job["program_addr"]
    dut.start.value = 1
    await FallingEdge(dut.clk)
    dut.start.value = 0
    done = True
    try:
        await with_timeout(RisingEdge(dut.done), job["max_cycles"] * CLOCK_NS, "ns")
    except SimTimeoutError:
        done = False
    await FallingEdge(dut.clk)
    reads = {name: bytes(ram.read(addr, size) or b"").hex() for name, (addr, size) in job["reads"].items()}
    trace = []
    for entry in range(job.get("trace", 0)):  # the trace memory's read port answers one cycle after its address
        dut.trace_addr.value = entry
        await FallingEdge(dut.clk)
        await FallingEdge(dut.clk)
        trace.append(int(dut.trace_data.value))
    result = {"done": done, "fault": bool(int(dut.fault.value)), "cycles": int(dut.cycles.value), "reads": reads,
              "trace": trace}
    Path(os.environ["CODESIGN_TB_RESULT"]).write_text(json.dumps(result))
