"""Run a ``cds1`` program on the system top level in Verilator or Icarus (cocotb).

:func:`run_system` emits the top level's Verilog for a :class:`SystemConfig` (into
``build/rtl_sim/cds1_system_<config>_<sim>/``, rebuilt only when the Verilog changes), places the DRAM image at
address 0 and the program's words after it (4 KiB aligned), runs ``tb_system`` to ``done`` and returns the DRAM
ranges asked for and the cycle count the top level reports (clock edges from ``start`` to ``done``).

DRAM is either the Amaranth model :class:`hw.rtl.system.dram.AxiDram` in the netlist (``dram`` a
:class:`DramTiming`, the default: no Python runs while the program does) or cocotbext-axi's ``AxiRam``
(``dram="axiram"``: the reference, a few thousand cycles per second in Verilator).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from hw.errors import InputError
from hw.isa import HEADER_BYTES, Gemm, Load, Program, Store, Vec, VecFn, from_bytes
from hw.rtl.sim import check_simulator, default_build_root, run_verilog_testbench
from hw.rtl.system.dram import DramTiming
from hw.rtl.system.emit import SIM_TOP_NAME, TOP_NAME, sim_system_verilog, system_verilog
from hw.rtl.system.top import SystemConfig

__all__ = ["TOP_NAME", "SIM_TOP_NAME", "SystemRun", "emit_system", "emit_sim_system", "cycle_budget",
           "dram_words", "run_system"]

_MIN_DRAM_WORDS = 16384
_PAGE = 4096


@dataclass(frozen=True)
class SystemRun:
    """What one program run gave: the DRAM bytes asked for (by name), the cycles from ``start`` to ``done``, the
    simulator's wall times (seconds: build, 0.0 when reused; the whole run; the program alone, ``start`` to
    ``done``, which ``cycles / program_s`` turns into simulated cycles per second) and the trace memory's first
    entries (the cycle at which each trace mark ``NOP`` completed, docs/ISA.md; as many as ``run_system`` was asked
    for)."""

    reads: dict[str, bytes]
    cycles: int
    build_s: float
    run_s: float
    program_s: float = 0.0
    trace: tuple[int, ...] = ()


def emit_system(config: SystemConfig, out_dir: Path) -> Path:
    """``<out_dir>/cds1_system_<config tag>.v`` (rewritten only when its text changes)."""
    out_dir.mkdir(parents=True, exist_ok=True)
    path = out_dir / f"{TOP_NAME}_{config.tag()}.v"
    text = system_verilog(config)
    if not path.exists() or path.read_text() != text:
        path.write_text(text)
    return path


def emit_sim_system(config: SystemConfig, timing: DramTiming, out_dir: Path) -> Path:
    """``<out_dir>/cds1_system_sim_<config tag>_<timing tag>.v``: the top level with its DRAM model."""
    out_dir.mkdir(parents=True, exist_ok=True)
    path = out_dir / f"{SIM_TOP_NAME}_{config.tag()}_{timing.tag()}.v"
    text = sim_system_verilog(config, timing)
    if not path.exists() or path.read_text() != text:
        path.write_text(text)
    return path


def dram_words(mem_bytes: int) -> int:
    """16-byte words of the DRAM model for ``mem_bytes`` of memory: a power of two (at least 256 KiB), so programs
    of similar size share one build."""
    words = max(_MIN_DRAM_WORDS, -(-mem_bytes // 16))
    return 1 << (words - 1).bit_length()


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
        elif isinstance(instr, Vec):  # per element: a few cycles (row kernels walk it 3 times); threshold: 2**b
            levels = 1 << (1 << instr.out_log2) if instr.fn == VecFn.THRESHOLD else 0
            total += instr.rows * (instr.n * 8 + 128) * (1 + levels)
        total += 64
    return 4 * total


def run_system(config: SystemConfig, program_bin: bytes, image: bytes, reads: Mapping[str, tuple[int, int]],
               sim: str = "verilator", *, build_root: Path | None = None, run_name: str = "run",
               waves: bool = False, dram: DramTiming | str | None = None, trace: int = 0) -> SystemRun:
    """Run ``program_bin`` (a ``program.bin``) on ``image`` (the DRAM image) and return ``reads`` (name ->
    ``(byte address, bytes)``) of DRAM afterwards and the first ``trace`` entries of the trace memory. ``dram``: a
    :class:`DramTiming` (its ``words`` is replaced by what the image needs; default timing when None) or
    ``"axiram"``. ``InputError`` for a bad program, simulator or ``dram``; ``RuntimeError`` when the run faults or
    does not reach ``done``."""
    if dram is None:
        dram = DramTiming()
    if not isinstance(dram, DramTiming) and dram != "axiram":
        raise InputError(f"system run: dram={dram!r} is neither a DramTiming nor 'axiram'")
    if isinstance(dram, DramTiming):
        dram.check()
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
    waves_tag = '_waves' if waves else ''
    if isinstance(dram, DramTiming):
        timing = dataclasses.replace(dram, words=dram_words(mem_size))
        timing.check()
        top = SIM_TOP_NAME
        build_dir = Path(root).resolve() / f"{SIM_TOP_NAME}_{config.tag()}_{timing.tag()}_{sim}{waves_tag}"
        source = emit_sim_system(config, timing, build_dir)
    else:
        top = TOP_NAME
        build_dir = Path(root).resolve() / f"{TOP_NAME}_{config.tag()}_{sim}{waves_tag}"
        source = emit_system(config, build_dir)
    image_path = build_dir / f"{run_name}.image.bin"
    program_path = build_dir / f"{run_name}.program.words"
    image_path.write_bytes(image)
    program_path.write_bytes(words)
    job = {"image": str(image_path), "program": str(program_path), "program_addr": program_addr,
           "mem_size": mem_size, "reads": {k: list(v) for k, v in reads.items()},
           "max_cycles": cycle_budget(program), "dram": "axiram" if top == TOP_NAME else "model", "trace": trace}
    run = run_verilog_testbench(top, source, sim, "tb_system", Path(__file__).parent, job, build_dir,
                                waves=waves, run_name=run_name, ports_only=not waves)
    result = run.result
    if not result["done"]:
        raise RuntimeError(f"system run on {sim}: no done within {job['max_cycles']} cycles; log {run.log}")
    if result["fault"]:
        raise RuntimeError(f"system run on {sim}: the program uses an instruction the RTL does not build yet "
                           f"(fault); log {run.log}")
    return SystemRun({name: bytes.fromhex(h) for name, h in result["reads"].items()}, int(result["cycles"]),
                     run.build_s, run.run_s, float(result.get("program_s", 0.0)),
                     tuple(int(t) for t in result.get("trace", ())))
