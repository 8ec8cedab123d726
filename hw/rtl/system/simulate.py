"""Run a ``cds1`` program on the system top level in Verilator or Icarus (cocotb, cocotbext-axi ``AxiRam``).

:func:`run_system` emits the top level's Verilog for a :class:`SystemConfig` (into
``build/rtl_sim/cds1_system_<config>_<sim>/``, rebuilt only when the Verilog changes), places the DRAM image at
address 0 and the program's words after it (4 KiB aligned), runs ``tb_system`` to ``done`` and returns the DRAM
ranges asked for and the cycle count the top level reports (clock edges from ``start`` to ``done``).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from hw.errors import InputError
from hw.isa import HEADER_BYTES, Gemm, Load, Program, Store, Vec, from_bytes
from hw.rtl.sim import check_simulator, default_build_root, run_verilog_testbench
from hw.rtl.system.top import SystemConfig, SystemTop

__all__ = ["TOP_NAME", "SystemRun", "emit_system", "cycle_budget", "run_system"]

TOP_NAME = "cds1_system"
_PAGE = 4096


@dataclass(frozen=True)
class SystemRun:
    """What one program run gave: the DRAM bytes asked for (by name), the cycles from ``start`` to ``done``, the
    simulator's wall times (seconds: build, 0.0 when reused, and run) and the trace memory's first entries (the
    cycle at which each trace mark ``NOP`` completed, docs/ISA.md; as many as ``run_system`` was asked for)."""

    reads: dict[str, bytes]
    cycles: int
    build_s: float
    run_s: float
    trace: tuple[int, ...] = ()


def emit_system(config: SystemConfig, out_dir: Path) -> Path:
    """``<out_dir>/cds1_system_<config tag>.v`` (rewritten only when its text changes)."""
    from amaranth.back import verilog

    out_dir.mkdir(parents=True, exist_ok=True)
    path = out_dir / f"{TOP_NAME}_{config.tag()}.v"
    text = verilog.convert(SystemTop(config), name=TOP_NAME, emit_src=False)
    if not path.exists() or path.read_text() != text:
        path.write_text(text)
    return path


def cycle_budget(program: Program) -> int:
    """A generous bound on the cycles ``program`` can take (the testbench gives up after it): two cycles per DMA
    element plus a burst's worth of overhead per row, the array's beats and skew, and a fixed cost per instruction.
    A bound in simulated cycles, so a busy machine cannot make a run fail."""
    total = 10_000
    for instr in program.instructions:
        if isinstance(instr, (Load, Store)):
            total += instr.rows * (2 * instr.cols + 64)
        elif isinstance(instr, Gemm):
            total += 2 * instr.k + 8 * (instr.m + instr.n) + 64
        elif isinstance(instr, Vec):
            total += 2 * instr.rows + 64
        total += 64
    return 4 * total


def run_system(config: SystemConfig, program_bin: bytes, image: bytes, reads: Mapping[str, tuple[int, int]],
               sim: str = "verilator", *, build_root: Path | None = None, run_name: str = "run",
               waves: bool = False, trace: int = 0) -> SystemRun:
    """Run ``program_bin`` (a ``program.bin``) on ``image`` (the DRAM image) and return ``reads`` (name ->
    ``(byte address, bytes)``) of DRAM afterwards and the first ``trace`` entries of the trace memory.
    ``InputError`` for a bad program or simulator; ``RuntimeError`` when the run faults or does not reach ``done``."""
    config.check()
    if not 0 <= trace <= config.trace_depth:
        raise InputError(f"system run: {trace} trace entries asked for; the top level holds {config.trace_depth}")
    check_simulator(sim)
    program = from_bytes(program_bin)
    if len(image) < program.dram_bytes:
        raise InputError(f"system run: the DRAM image has {len(image)} bytes; the program addresses "
                         f"{program.dram_bytes}")
    words = program_bin[HEADER_BYTES:]
    program_addr = -(-len(image) // _PAGE) * _PAGE
    mem_size = -(-(program_addr + len(words)) // _PAGE) * _PAGE
    for name, (addr, size) in reads.items():
        if addr < 0 or size < 0 or addr + size > len(image):
            raise InputError(f"system run: read '{name}' ({addr}, {size}) is outside the {len(image)}-byte image")
    root = build_root or default_build_root()
    build_dir = Path(root).resolve() / f"{TOP_NAME}_{config.tag()}_{sim}{'_waves' if waves else ''}"
    source = emit_system(config, build_dir)
    image_path = build_dir / f"{run_name}.image.bin"
    program_path = build_dir / f"{run_name}.program.words"
    image_path.write_bytes(image)
    program_path.write_bytes(words)
    job = {"image": str(image_path), "program": str(program_path), "program_addr": program_addr,
           "mem_size": mem_size, "reads": {k: list(v) for k, v in reads.items()},
           "max_cycles": cycle_budget(program), "trace": trace}
    run = run_verilog_testbench(TOP_NAME, source, sim, "tb_system", Path(__file__).parent, job, build_dir,
                                waves=waves, run_name=run_name)
    result = run.result
    if not result["done"]:
        raise RuntimeError(f"system run on {sim}: no done within {job['max_cycles']} cycles; log {run.log}")
    if result["fault"]:
        raise RuntimeError(f"system run on {sim}: the program uses an instruction the RTL does not build yet "
                           f"(fault); log {run.log}")
    return SystemRun({name: bytes.fromhex(h) for name, h in result["reads"].items()}, int(result["cycles"]),
                     run.build_s, run.run_s, tuple(int(t) for t in result.get("trace", ())))
