"""cocotb testbench of the system top level: runs one program to ``done`` and hands back the DRAM bytes the host
asked for and the top level's cycle count.

Job (``$CODESIGN_TB_JOB``): ``{"image": path, "program": path, "program_addr": int, "mem_size": int,
"reads": {name: [addr, nbytes]}, "max_cycles": int, "dram": "model" | "axiram", "trace": int}``: the DRAM
image is placed at address 0 and the program's instruction words (``program.bin`` without its header) at
``program_addr``. Result
(``$CODESIGN_TB_RESULT``): ``{"done": bool, "fault": bool, "cycles": int, "reads": {name: hex},
"program_s": float, "trace": [int]}`` (``program_s``: wall seconds from ``start`` to ``done``, for cycles-per-second
figures; ``trace``: the first ``trace`` entries of the trace memory, read after ``done``: the cycle each trace mark
latched); a program that does not finish within ``max_cycles`` simulated cycles comes back with ``done`` false (a cycle
budget, not a wall-clock one).

``"model"``: the top is ``cds1_system_sim`` (``hw/rtl/system/dram.py``, DRAM in the netlist); the image goes in
and the reads come out through its debug port, one 16-byte word per cycle, before ``start`` and after ``done``,
so no Python runs while the program does. ``"axiram"``: the top is ``cds1_system`` and cocotbext-axi's
``AxiRam`` serves its AXI port (Python on every cycle; the reference the model is checked against).
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

import cocotb
from cocotb.clock import Clock
from cocotb.triggers import ClockCycles, FallingEdge, RisingEdge, SimTimeoutError, with_timeout

CLOCK_NS = 10
WORD = 16


async def _load_words(dut, memory: bytearray) -> None:
    """Write every non-zero word of ``memory`` through the debug port (the model's memory starts at zero)."""
    dut.dbg_we.value = 1
    for index in range(len(memory) // WORD):
        word = memory[index * WORD:(index + 1) * WORD]
        if any(word):
            dut.dbg_addr.value = index
            dut.dbg_wdata.value = int.from_bytes(word, "little")
            await FallingEdge(dut.clk)
    dut.dbg_we.value = 0


async def _read_bytes(dut, addr: int, size: int) -> bytes:
    first, last = addr // WORD, -(-(addr + size) // WORD)
    out = bytearray()
    for index in range(first, last):
        dut.dbg_addr.value = index
        await FallingEdge(dut.clk)
        out += int(dut.dbg_rdata.value).to_bytes(WORD, "little")
    start = addr - first * WORD
    return bytes(out[start:start + size])


@cocotb.test()
async def run_program(dut):
    job = json.loads(Path(os.environ["CODESIGN_TB_JOB"]).read_text())
    model = job.get("dram", "axiram") == "model"
    dut.start.value = 0
    dut.program_addr.value = 0
    dut.rst.value = 1
    # The model's clock runs in the simulator (cocotb's C++ clock: the testbench only writes at falling edges, so
    # inertial writes are safe); AxiRam keeps cocotb's default Python clock, as the reference always ran.
    clock = Clock(dut.clk, CLOCK_NS, unit="ns", impl="gpi" if model else None)
    cocotb.start_soon(clock.start())
    memory = bytearray(job["mem_size"])
    image = Path(job["image"]).read_bytes()
    program = Path(job["program"]).read_bytes()
    memory[:len(image)] = image
    memory[job["program_addr"]:job["program_addr"] + len(program)] = program
    ram = None
    if model:
        dut.dbg_we.value = 0
        dut.dbg_addr.value = 0
        dut.dbg_wdata.value = 0
        await FallingEdge(dut.clk)
        await _load_words(dut, memory)
    else:
        from cocotbext.axi import AxiBus, AxiRam

        ram = AxiRam(AxiBus.from_prefix(dut, "m_axi_"), dut.clk, dut.rst, size=job["mem_size"])
        ram.write(0, bytes(memory))
    await ClockCycles(dut.clk, 2)
    await FallingEdge(dut.clk)
    dut.rst.value = 0
    dut.program_addr.value = job["program_addr"]
    dut.start.value = 1
    began = time.perf_counter()  # a figure for the host (cycles per second), never a limit
    await FallingEdge(dut.clk)
    dut.start.value = 0
    done = True
    try:
        await with_timeout(RisingEdge(dut.done), job["max_cycles"] * CLOCK_NS, "ns")
    except SimTimeoutError:
        done = False
    program_s = time.perf_counter() - began
    await FallingEdge(dut.clk)
    reads = {}
    for name, (addr, size) in job["reads"].items():
        if ram is not None:
            reads[name] = bytes(ram.read(addr, size) or b"").hex()
        else:
            reads[name] = (await _read_bytes(dut, addr, size)).hex()
    trace = []
    for entry in range(job.get("trace", 0)):  # the trace memory's read port answers one cycle after its address
        dut.trace_addr.value = entry
        await FallingEdge(dut.clk)
        await FallingEdge(dut.clk)
        trace.append(int(dut.trace_data.value))
    result = {"done": done, "fault": bool(int(dut.fault.value)), "cycles": int(dut.cycles.value), "reads": reads,
              "program_s": program_s, "trace": trace}
    Path(os.environ["CODESIGN_TB_RESULT"]).write_text(json.dumps(result))
