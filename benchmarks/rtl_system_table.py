"""RTL cycles of the ``cds1`` system top level against the performance model, per bert_tiny weight GEMM.

``python benchmarks/rtl_system_table.py`` (``bench_rtl.py`` prints it too, so ``make bench`` does): compiles
bert_tiny (int8, I-ViT set) for ``fpga-u280`` with an 8x8 array, the off-chip bandwidth set to what the RTL's DRAM
model serves (16 bytes per cycle: ``offchip.bandwidth_gbps`` = 16 B x ``clock_mhz``) and the top level's array
(``codesign rtl --system``'s ``one_array``: ``gemm.partitions=1 gemm.fold_overlap=false gemm.execute_queue=true``),
builds each weight GEMM as its own ``cds1`` program (``compiler/backend``, random int8 input), runs it in Verilator
on ``hw.rtl.system.run_system`` with the Amaranth DRAM model, checks the DRAM image against the backend's machine
model bit for bit, and prints per layer the RTL's ``cycles``, the model's latency of the same work and their
difference, then the totals and Verilator's simulated cycles per second (cycles / wall time from ``start`` to
``done``, and over whole runs with simulator start-up, image load and read-back).

The same work: a program runs the GEMM and, where the IR fuses one directly behind it, its requant, nothing else;
the compiled layer can hold more (the residual add of ``attention.output.dense`` and ``output.dense``, the GELU
and second requant of ``intermediate.dense``), which such a program does not run. So the model's figure is the
layer as the program runs it, priced and scheduled alone by the functions a compile uses
(``compiler.schedule.lower.price_layer``, ``schedule_plan``): the GEMM, the fused requant if any, its input,
weights and bias read and its output written at the program's element size. The compiled layer's ``cycles``
(``report["layers"]``) are printed beside it for reference.

``--trace`` also runs each program a second time with a trace mark ``NOP`` behind every ``GEMM`` and ``VEC`` of the
execute queue (docs/ISA.md, NOP) and prints where the cycles go: the cycle the first fold's ``GEMM`` completes (the
constant table's and the first fold's loads exposed, plus that ``GEMM``), the median cycles between the marks of a
``GEMM`` and of a ``VEC`` in the steady state (each including its mark ``NOP``), and the cycles after the last mark
(the last store, the drain and ``HALT``). Each mark ``NOP`` adds a cycle or two, so the traced run's total is
printed too and the table's figures stay the untraced runs'.
"""

from __future__ import annotations

import argparse
import statistics
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from compiler.backend.gemm import GemmLayer
    from hw.isa import Program
    from hw.models.base import AcceleratorModel

if __package__ in (None, ""):  # run as a script from a checkout
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

ROOT = Path(__file__).resolve().parents[1]
MODEL = ROOT / "examples" / "models" / "bert_tiny.onnx"
BEAT_BYTES = 16


@dataclass(frozen=True)
class LayerFigures:
    """One GEMM layer: its shape, the RTL's cycles, the model's cycles and the Verilator run's wall seconds."""

    name: str
    m: int
    k: int
    n: int
    rtl_cycles: int
    model_cycles: int
    run_s: float
    program_s: float
    trace: FoldTrace | None = None
    report_cycles: int = 0
    """The compiled layer's ``cycles`` (with the fused work the program does not run, scheduled among the others)."""

    @property
    def error(self) -> float:
        """(RTL - model) / model."""
        return (self.rtl_cycles - self.model_cycles) / self.model_cycles


@dataclass(frozen=True)
class FoldTrace:
    """A traced run of one program (module docstring), all in cycles: ``cycles`` of the whole traced run,
    ``first`` the mark behind the first ``GEMM``, ``gemm`` / ``vec`` the median mark-to-mark cycles of a ``GEMM`` /
    a ``VEC`` after the first three folds (0 without ``VEC``), ``tail`` from the last mark to ``done``."""

    cycles: int
    first: int
    gemm: float
    vec: float
    tail: int


def fold_trace(kinds: list[str], marks: list[int], cycles: int) -> FoldTrace:
    """:class:`FoldTrace` of a run whose mark ``i`` follows an instruction of kind ``kinds[i]`` (``"gemm"`` or
    ``"vec"``) and completed at cycle ``marks[i]``."""
    if not marks or len(kinds) != len(marks):
        raise ValueError(f"{len(marks)} marks for {len(kinds)} traced instructions")
    steps: dict[str, list[int]] = {"gemm": [], "vec": []}
    gemms = 0
    for i in range(1, len(marks)):
        gemms += kinds[i] == "gemm"
        if gemms > 3:  # past the folds that wait for the first loads
            steps[kinds[i]].append(marks[i] - marks[i - 1])
    def median(xs: list[int]) -> float:
        return float(statistics.median(xs)) if xs else 0.0
    return FoldTrace(cycles, marks[0], median(steps["gemm"]), median(steps["vec"]), cycles - marks[-1])


def traced(program: Program) -> tuple[Program, list[str]]:
    """``program`` with a trace mark ``NOP`` behind each execute-queue ``GEMM`` and ``VEC`` (at most 256, the top
    level's trace memory), and the kind of instruction each mark follows."""
    from hw.isa import Gemm, Instruction, Nop, Program, Queue, Vec

    out: list[Instruction] = []
    kinds: list[str] = []
    for instr in program.instructions:
        out.append(instr)
        if isinstance(instr, (Gemm, Vec)) and len(kinds) < 256:
            out.append(Nop(queue=Queue.EXECUTE, trace=1, mark=len(kinds)))
            kinds.append("gemm" if isinstance(instr, Gemm) else "vec")
    return Program(tuple(out), program.dram_bytes), kinds


def program_model_cycles(layer: GemmLayer, model: AcceleratorModel) -> int:
    """The model's latency (cycles) of what ``layer``'s program runs (module docstring): the GEMM and its fused
    requant, if any, priced by ``price_layer`` and scheduled alone on ``model``'s machine."""
    from functools import partial

    from compiler.schedule.lower import price_layer
    from compiler.schedule.plan import Plan, PlannedLayer, TaskSpec, schedule_plan
    from hw.perf.workload import GemmWork, VectorWork

    m, k, n = layer.m, layer.k, layer.n
    out_bytes = 4 if layer.requant is None else layer.requant[2] // 8
    weights = k * n + (4 * n if layer.bias is not None else 0)
    spec = TaskSpec(layer.name, m * k + weights, m * n * out_bytes, ())
    epilogue = () if layer.requant is None else (VectorWork(kind="requant", elements=m * n, rows=m, bits=32),)
    op = "gemm" if layer.requant is None else "gemm+requant"
    planned = PlannedLayer(layer.name, (layer.name,),
                           partial(price_layer, spec, op, GemmWork(m, n, k), epilogue, weights))
    _, schedule = schedule_plan(Plan((planned,)), model)
    return schedule.makespan


def compare(rows: int = 8, cols: int = 8, layers: int | None = None, read_latency: int | None = None,
            sim: str = "verilator", trace: bool = False, dataflow: str = "os") -> list[LayerFigures]:
    """Per weight GEMM of bert_tiny (the first ``layers`` of them if given): RTL and model cycles (and with
    ``trace`` a second, traced run of each program: :class:`FoldTrace`). ``dataflow`` ``"ws"``: compiled with
    ``gemm.dataflow=ws``, so the programs run weight-stationary folds (``compiler/backend/gemm_ws.py``) on a top
    level built with the ws array, priced by ``hw.perf.execute_queue_ws``."""
    import numpy as np

    from codesign.api import compile_options, run_compile
    from codesign.rtl_system import one_array
    from compiler.backend import Geometry, Machine, ProgramBuilder, run_program
    from compiler.backend.select import gemm_layer
    from compiler.dialect import dataflow as df
    from hw.isa import to_bytes
    from hw.models import build_model
    from hw.rtl.system import DramTiming, SystemConfig, run_system
    from hw.targets.loader import load_target

    clock = load_target("fpga-u280").clock_mhz
    overrides = {"gemm.rows": str(rows), "gemm.cols": str(cols),
                 "offchip.bandwidth_gbps": str(BEAT_BYTES * clock / 1000), "gemm.dataflow": dataflow}
    # the top level's one array, each fold one instruction on one execute queue (what codesign rtl --system
    # compiles with): no sub-arrays, no streaming folds, gemm.execute_queue
    options, _ = one_array(compile_options("fpga-u280", overrides, quant="int8", softmax="shiftmax",
                                           gelu="shiftgelu", layernorm="ilayernorm"))
    result, _ = run_compile(str(MODEL), options)
    assert result.report is not None and result.env.target is not None
    model = build_model(result.env.target)
    model_layers = [lay for lay in result.report["layers"] if lay["unit"] == "gemm" and lay["op"].startswith("gemm")]
    gemms = [gemm_layer(op, result.env.weights) for op in result.module.walk()
             if isinstance(op, df.GemmOp) and isinstance(op.rhs.owner, df.WeightOp)]
    if len(gemms) != len(model_layers):
        raise RuntimeError(f"{len(gemms)} weight GEMMs in the IR, {len(model_layers)} GEMM layers in the report")
    config = SystemConfig(rows, cols, sp_rows=2304, acc_rows=64, const_rows=256, max_row=16,  # GEMM, requant only
                          ws_array=dataflow == "ws")
    geometry = Geometry(rows, cols, config.in_bits, config.acc_bits, config.sp_rows, config.acc_rows,
                        config.const_rows, dataflow=dataflow)
    timing = DramTiming() if read_latency is None else DramTiming(read_latency=read_latency)
    rng = np.random.default_rng(0)
    out = []
    for index, (layer, report) in enumerate(list(zip(gemms, model_layers))[:layers]):
        builder = ProgramBuilder(geometry)
        x, _ = builder.gemm(layer)
        builder.image.write(x.name, rng.integers(-128, 128, x.shape))
        program = builder.finish()
        image = bytes(builder.image.buffer())
        dram = bytearray(image)
        run_program(program, Machine(geometry, dram))
        run = run_system(config, to_bytes(program), image, {"dram": (0, len(image))}, sim, dram=timing,
                         run_name=f"bench{index}")
        if run.reads["dram"] != bytes(dram):
            raise RuntimeError(f"{layer.name}: the RTL's DRAM differs from the machine model's")
        fold = None
        if trace:
            marked, kinds = traced(program)
            traced_run = run_system(config, to_bytes(marked), image, {}, sim, dram=timing,
                                    run_name=f"bench{index}t", trace=len(kinds))
            fold = fold_trace(kinds, list(traced_run.trace), traced_run.cycles)
        predicted = program_model_cycles(layer, model)
        out.append(LayerFigures(report["name"], layer.m, layer.k, layer.n, run.cycles, predicted, run.run_s,
                                run.program_s, fold, int(report["cycles"])))
    return out


def main(argv: list[str] | None = None) -> list[LayerFigures]:
    """Parse ``argv``, run :func:`compare`, print the table, return the figures."""
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--rows", type=int, default=8)
    parser.add_argument("--cols", type=int, default=8)
    parser.add_argument("--layers", type=int, default=None, help="only the first N weight GEMMs")
    parser.add_argument("--read-latency", type=int, default=None, help="DRAM model read latency (cycles)")
    parser.add_argument("--dataflow", choices=("os", "ws"), default="os", help="the weight GEMMs' folds: output "
                        "stationary (the default) or weight stationary (gemm.dataflow=ws)")
    parser.add_argument("--trace", action="store_true", help="also run each program with trace marks and print "
                        "where its cycles go (first fold, GEMM and VEC per fold, tail)")
    args = parser.parse_args(argv)
    figures = compare(args.rows, args.cols, args.layers, args.read_latency, trace=args.trace, dataflow=args.dataflow)
    print(f"bert_tiny weight GEMMs on a {args.rows}x{args.cols} cds1 system ({args.dataflow}), DRAM 16 B/cycle: RTL vs "
          "model cycles")
    print(f"{'layer':60s} {'m x k x n':>13s} {'rtl':>8s} {'model':>8s} {'error':>7s} {'layer in report':>16s}")
    for f in figures:
        print(f"{f.name:60s} {f'{f.m}x{f.k}x{f.n}':>13s} {f.rtl_cycles:8d} {f.model_cycles:8d} {f.error:+7.1%} "
              f"{f.report_cycles:16d}")
    rtl = sum(f.rtl_cycles for f in figures)
    model = sum(f.model_cycles for f in figures)
    worst = max(abs(f.error) for f in figures)
    print(f"{'total':60s} {'':13s} {rtl:8d} {model:8d} {(rtl - model) / model:+7.1%}  (worst layer {worst:.1%})")
    run_s = sum(f.run_s for f in figures)
    program_s = sum(f.program_s for f in figures)
    print(f"verilator, Amaranth DRAM model: {rtl} cycles in {program_s:.2f} s from start to done = "
          f"{rtl / program_s:,.0f} cycles/s ({rtl / run_s:,.0f} cycles/s over {run_s:.1f} s of whole runs: "
          f"simulator start-up, image load and read-back included)")
    if args.trace:
        print("traced runs (a mark NOP behind every GEMM and VEC; cycles include the marks):")
        print(f"{'layer':60s} {'traced':>8s} {'1st GEMM':>9s} {'GEMM/fold':>10s} {'VEC/fold':>9s} {'tail':>6s}")
        for f in figures:
            t = f.trace
            if t is not None:
                print(f"{f.name:60s} {t.cycles:8d} {t.first:9d} {t.gemm:10.1f} {t.vec:9.1f} {t.tail:6d}")
    return figures


if __name__ == "__main__":
    main()
