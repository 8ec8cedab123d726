"""RTL cycles of the ``cds1`` system top level against the performance model, per bert_tiny weight GEMM.

``python benchmarks/rtl_system_table.py`` (``bench_rtl.py`` prints it too, so ``make bench`` does): compiles
bert_tiny (int8, I-ViT set) for ``fpga-u280`` with an 8x8 array and the off-chip bandwidth set to what the RTL's
DRAM model serves (16 bytes per cycle: ``offchip.bandwidth_gbps`` = 16 B x ``clock_mhz``), builds each weight GEMM
as its own ``cds1`` program (``compiler/backend``, random int8 input), runs it in Verilator on
``hw.rtl.system.run_system`` with the Amaranth DRAM model, checks the DRAM image against the backend's machine
model bit for bit, and prints per layer the RTL's ``cycles``, the model's layer latency (``report["layers"]``
``cycles``) and their difference, then the totals and Verilator's simulated cycles per second (cycles / wall time
from ``start`` to ``done``, and over whole runs with simulator start-up, image load and read-back).
"""

from __future__ import annotations

import argparse
import sys
from dataclasses import dataclass
from pathlib import Path

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

    @property
    def error(self) -> float:
        """(RTL - model) / model."""
        return (self.rtl_cycles - self.model_cycles) / self.model_cycles


def compare(rows: int = 8, cols: int = 8, layers: int | None = None, read_latency: int | None = None,
            sim: str = "verilator") -> list[LayerFigures]:
    """Per weight GEMM of bert_tiny (the first ``layers`` of them if given): RTL and model cycles."""
    import numpy as np

    from codesign.api import compile_options, run_compile
    from compiler.backend import Geometry, Machine, ProgramBuilder, run_program
    from compiler.backend.select import gemm_layer
    from compiler.dialect import dataflow as df
    from hw.isa import to_bytes
    from hw.rtl.system import DramTiming, SystemConfig, run_system
    from hw.targets.loader import load_target

    clock = load_target("fpga-u280").clock_mhz
    overrides = {"gemm.rows": str(rows), "gemm.cols": str(cols),
                 "offchip.bandwidth_gbps": str(BEAT_BYTES * clock / 1000),
                 # the top level's one array runs each fold whole (hw/rtl/systolic.py): no sub-arrays, no
                 # streaming folds (what codesign rtl --system compiles with, codesign/rtl_system.py one_array)
                 "gemm.partitions": "1", "gemm.fold_overlap": "false"}
    options = compile_options("fpga-u280", overrides, quant="int8", softmax="shiftmax", gelu="shiftgelu",
                              layernorm="ilayernorm")
    result, _ = run_compile(str(MODEL), options)
    assert result.report is not None
    model_layers = [lay for lay in result.report["layers"] if lay["unit"] == "gemm" and lay["op"].startswith("gemm")]
    gemms = [gemm_layer(op, result.env.weights) for op in result.module.walk()
             if isinstance(op, df.GemmOp) and isinstance(op.rhs.owner, df.WeightOp)]
    if len(gemms) != len(model_layers):
        raise RuntimeError(f"{len(gemms)} weight GEMMs in the IR, {len(model_layers)} GEMM layers in the report")
    config = SystemConfig(rows, cols, sp_rows=2304, acc_rows=64, const_rows=256, max_row=16)  # GEMM, requant only
    geometry = Geometry(rows, cols, config.in_bits, config.acc_bits, config.sp_rows, config.acc_rows,
                        config.const_rows)
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
        out.append(LayerFigures(report["name"], layer.m, layer.k, layer.n, run.cycles, int(report["cycles"]),
                                run.run_s, run.program_s))
    return out


def main(argv: list[str] | None = None) -> list[LayerFigures]:
    """Parse ``argv``, run :func:`compare`, print the table, return the figures."""
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--rows", type=int, default=8)
    parser.add_argument("--cols", type=int, default=8)
    parser.add_argument("--layers", type=int, default=None, help="only the first N weight GEMMs")
    parser.add_argument("--read-latency", type=int, default=None, help="DRAM model read latency (cycles)")
    args = parser.parse_args(argv)
    figures = compare(args.rows, args.cols, args.layers, args.read_latency)
    print(f"bert_tiny weight GEMMs on a {args.rows}x{args.cols} cds1 system, DRAM 16 B/cycle: RTL vs model cycles")
    print(f"{'layer':60s} {'m x k x n':>13s} {'rtl':>8s} {'model':>8s} {'error':>7s}")
    for f in figures:
        print(f"{f.name:60s} {f'{f.m}x{f.k}x{f.n}':>13s} {f.rtl_cycles:8d} {f.model_cycles:8d} {f.error:+7.1%}")
    rtl = sum(f.rtl_cycles for f in figures)
    model = sum(f.model_cycles for f in figures)
    worst = max(abs(f.error) for f in figures)
    print(f"{'total':60s} {'':13s} {rtl:8d} {model:8d} {(rtl - model) / model:+7.1%}  (worst layer {worst:.1%})")
    run_s = sum(f.run_s for f in figures)
    program_s = sum(f.program_s for f in figures)
    print(f"verilator, Amaranth DRAM model: {rtl} cycles in {program_s:.2f} s from start to done = "
          f"{rtl / program_s:,.0f} cycles/s ({rtl / run_s:,.0f} cycles/s over {run_s:.1f} s of whole runs: "
          f"simulator start-up, image load and read-back included)")
    return figures


if __name__ == "__main__":
    main()
