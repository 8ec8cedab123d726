"""hw.rtl.system: the cds1 top level runs compiler/backend programs bit-exactly against compiler/backend/machine.py.

Each run serves DRAM with the Amaranth DRAM model (hw/rtl/system/dram.py; cocotbext-axi's AxiRam, the reference,
where a test says so), runs the program to ``done`` and compares the whole DRAM image
afterwards with the machine model's (so a stray write fails too). Small programs (several ragged GEMM layers on a
4x4 array) run on both simulators; every weight GEMM of bert_tiny (int8, I-ViT set) runs on an 8x8 array in
Verilator, one layer per program, fed the functional simulator's own input to that layer.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
import pytest
from test_backend import random_gemm_layer

from compiler.backend import GemmLayer, Geometry, Machine, ProgramBuilder, run_program
from compiler.backend.select import fused_requant, gemm_layer
from compiler.dialect import dataflow as df
from hw.errors import InputError
from hw.isa import Gemm, Halt, Program, to_bytes
from hw.rtl.system import DramTiming, SystemConfig, run_system
from hw.rtl.system.emit import compact_zero_inits
from hw.rtl.systolic import predicted_cycles

MODELS = Path(__file__).resolve().parents[1] / "examples" / "models"
SMALL = SystemConfig(4, 4, sp_rows=512, acc_rows=64, const_rows=64, max_row=16)


def _geometry(config: SystemConfig) -> Geometry:
    return Geometry(config.rows, config.cols, config.in_bits, config.acc_bits, config.sp_rows, config.acc_rows,
                    config.const_rows)


def _small_program(rng) -> tuple[ProgramBuilder, Program]:
    """Ragged layers with every output kind (int32, per-tensor and per-channel int8, int16), and a chained pair;
    ``plain``'s 70-byte input rows are misaligned and span two of a transposed load's 64-byte chunks."""
    builder = ProgramBuilder(_geometry(SMALL))
    layers = (random_gemm_layer(rng, 9, 70, 7, "none", 32, name="plain"),
              random_gemm_layer(rng, 6, 5, 9, "tensor", name="tensor"),
              random_gemm_layer(rng, 7, 12, 6, "channel", name="channel"),
              random_gemm_layer(rng, 5, 7, 5, "channel", 16, name="wide"))
    for layer in layers:
        x, _ = builder.gemm(layer)
        builder.image.write(x.name, rng.integers(-128, 128, x.shape))
    x, mid = builder.gemm(random_gemm_layer(rng, 6, 8, 5, "channel", name="first"))
    builder.image.write(x.name, rng.integers(-128, 128, x.shape))
    builder.gemm(random_gemm_layer(rng, 6, 5, 3, "tensor", name="second"), x=mid)
    return builder, builder.finish()


def _expected(geometry: Geometry, program: Program, image: bytes) -> bytes:
    dram = bytearray(image)
    run_program(program, Machine(geometry, dram))
    return bytes(dram)


def _array_cycles(program: Program, config: SystemConfig) -> int:
    """The array's own cycles for every GEMM fold: the execute queue runs them one after another."""
    return sum(predicted_cycles(i.m, i.n, i.k, config.rows, config.cols) for i in program.instructions
               if isinstance(i, Gemm))


@pytest.mark.rtl
@pytest.mark.slow
@pytest.mark.parametrize("simulator", ["icarus", "verilator"])
def test_gemm_programs_run_bit_exact_on_the_top_level(simulator: str) -> None:
    builder, program = _small_program(np.random.default_rng(17))
    image = bytes(builder.image.buffer())
    want = _expected(builder.geometry, program, image)
    run = run_system(SMALL, to_bytes(program), image, {"dram": (0, len(image))}, simulator)
    assert run.reads["dram"] == want
    assert run.cycles >= _array_cycles(program, SMALL)


@pytest.mark.rtl
@pytest.mark.slow
def test_the_dram_model_matches_axiram_in_dram_and_cycles() -> None:
    """The Amaranth DRAM model (no Python per cycle) against cocotbext-axi's AxiRam, the reference: same bytes, and
    ``cycles`` within 1% at the latencies AxiRam has (they were equal while one read burst was in flight at a time;
    with several, AxiRam's Python channel queues answer a few bursts a cycle later: 1,916 against 1,904 here,
    docs/RTL.md)."""
    builder, program = _small_program(np.random.default_rng(17))
    image = bytes(builder.image.buffer())
    runs = [run_system(SMALL, to_bytes(program), image, {"dram": (0, len(image))}, "verilator", dram=dram,
                       run_name=f"parity_{index}") for index, dram in enumerate(("axiram", DramTiming()))]
    assert runs[0].reads == runs[1].reads
    assert runs[0].reads["dram"] == _expected(builder.geometry, program, image)
    assert abs(runs[0].cycles - runs[1].cycles) <= 0.01 * runs[0].cycles


@pytest.mark.rtl
@pytest.mark.slow
def test_a_slower_dram_costs_cycles_not_correctness() -> None:
    """A longer read latency changes ``cycles`` (the model's timing is live) and never the bytes."""
    builder, program = _small_program(np.random.default_rng(17))
    image = bytes(builder.image.buffer())
    want = _expected(builder.geometry, program, image)
    fast, slow = (run_system(SMALL, to_bytes(program), image, {"dram": (0, len(image))}, "verilator",
                             dram=DramTiming(read_latency=latency), run_name=f"latency{latency}")
                  for latency in (2, 40))
    assert fast.reads["dram"] == want and slow.reads["dram"] == want
    assert slow.cycles > fast.cycles


@pytest.mark.rtl
@pytest.mark.slow
def test_a_missing_token_gives_a_wrong_result_in_rtl() -> None:
    """Without the data-loaded wait the array runs before its operands arrive: the check above can fail."""
    rng = np.random.default_rng(5)
    builder = ProgramBuilder(_geometry(SMALL))
    x, _ = builder.gemm(random_gemm_layer(rng, 8, 12, 8, "none", 32, name="layer"))
    builder.image.write(x.name, rng.integers(-128, 128, x.shape))
    program = builder.finish()
    broken = Program(tuple(dataclasses.replace(i, deps=dataclasses.replace(i.deps, pop_prev=False))
                           if isinstance(i, Gemm) else i for i in program.instructions), program.dram_bytes)
    image = bytes(builder.image.buffer())
    run = run_system(SMALL, to_bytes(broken), image, {"dram": (0, len(image))}, "verilator")
    assert run.reads["dram"] != _expected(builder.geometry, program, image)


@pytest.mark.rtl
@pytest.mark.slow
def test_an_instruction_the_rtl_lacks_raises_fault() -> None:
    gemm = Gemm(dataflow=1, accumulate=0, a_row=0, b_row=0, c_row=0, m=2, n=2, k=2)  # weight stationary
    program = Program((gemm, Halt()), 64)
    with pytest.raises(RuntimeError, match="does not build yet"):
        run_system(SMALL, to_bytes(program), bytes(64), {}, "verilator")


def test_bad_sizes_are_one_line() -> None:
    with pytest.raises(InputError, match=r"^system RTL: rows=0 must be an integer in \[1, 64\]$"):
        SystemConfig(0, 4).check()
    with pytest.raises(InputError, match=r"^system RTL: in_bits=6 is not supported \(4 or 8\)$"):
        SystemConfig(4, 4, in_bits=6).check()
    with pytest.raises(InputError, match=r"^system RTL: max_row=5000 must be an integer in \[1, 4096\]$"):
        SystemConfig(4, 4, max_row=5000).check()


def test_memories_start_at_zero_through_one_loop_each() -> None:
    """Yosys' one-line-per-word initial blocks of all-zero memories become one loop each; others stay as they are."""
    text = "\n".join(["  reg [7:0] sp [2:0];", "  initial begin", "    sp[0] = 8'h00;", "    sp[1] = 8'h00;",
                      "    sp[2] = 8'h00;", "  end", "  initial begin", "    \\const [0] = 32'd0;", "  end",
                      "  initial begin", "    t[0] = 8'h00;", "    t[1] = 8'h01;", "  end", ""])
    assert compact_zero_inits(text).split("\n") == [
        "  reg [7:0] sp [2:0];",
        "  initial begin : codesign_zero_init_0", "    integer i;", "    for (i = 0; i < 3; i = i + 1) sp[i] = 0;",
        "  end",
        "  initial begin : codesign_zero_init_1", "    integer i;",
        "    for (i = 0; i < 1; i = i + 1) \\const [i] = 0;", "  end",
        "  initial begin", "    t[0] = 8'h00;", "    t[1] = 8'h01;", "  end", ""]


def test_a_bad_program_or_read_is_one_line_before_any_build(tmp_path) -> None:
    with pytest.raises(InputError, match=r"^program: 4 bytes is shorter than the 16-byte header$"):
        run_system(SMALL, b"junk", bytes(64), {}, "verilator", build_root=tmp_path)
    program = to_bytes(Program((Halt(),), 64))
    with pytest.raises(InputError, match=r"^system run: read 'y' \(60, 8\) is outside the 64-byte image$"):
        run_system(SMALL, program, bytes(64), {"y": (60, 8)}, "verilator", build_root=tmp_path)
    with pytest.raises(InputError, match=r"^system run: the DRAM image has 32 bytes; the program addresses 64$"):
        run_system(SMALL, program, bytes(32), {}, "verilator", build_root=tmp_path)
    with pytest.raises(InputError, match=r"^system run: dram='ddr' is neither a DramTiming nor 'axiram'$"):
        run_system(SMALL, program, bytes(64), {}, "verilator", build_root=tmp_path, dram="ddr")
    with pytest.raises(InputError, match=r"^system DRAM model: read_latency=1 must be an integer in \[2, 65536\]$"):
        run_system(SMALL, program, bytes(64), {}, "verilator", build_root=tmp_path, dram=DramTiming(read_latency=1))
    assert not list(tmp_path.iterdir())


def test_sizes_from_a_target_match_the_backend() -> None:
    from hw.targets.loader import load_target

    target = load_target("fpga-u280", {"gemm.rows": "8", "gemm.cols": "16", "gemm.partitions": "1"})
    config, geo = SystemConfig.from_target(target), Geometry.from_target(target)
    assert (config.rows, config.cols, config.width, config.sp_rows, config.acc_rows, config.const_rows) == \
        (geo.rows, geo.cols, geo.width, geo.sp_rows, geo.acc_rows, geo.const_rows)
    with pytest.raises(InputError, match=r"^target 'gpu-a100': the system RTL needs a systolic array"):
        SystemConfig.from_target(load_target("gpu-a100"))


# --- bert_tiny, every weight GEMM, 8x8 ---------------------------------------------------------------------------

BERT = SystemConfig(8, 8, sp_rows=2304, acc_rows=64, const_rows=256, max_row=16)  # GEMM and requant only
BERT_GEMMS = 12


@pytest.fixture(scope="module")
def bert_layers() -> list[tuple[GemmLayer, np.ndarray, np.ndarray]]:
    """(layer, its input, the functional simulator's output) for each weight GEMM of bert_tiny, int8 I-ViT."""
    from codesign.api import compile_options, run_compile
    from compiler.calibrate import synthetic_inputs
    from compiler.simulate import Simulator

    options = compile_options("fpga-u280", {"gemm.rows": "8", "gemm.cols": "8", "gemm.partitions": "1"}, quant="int8", softmax="shiftmax",
                              gelu="shiftgelu", layernorm="ilayernorm")
    result, _ = run_compile(str(MODELS / "bert_tiny.onnx"), options)
    sim = Simulator(result.module, result.env.weights, result.imported.input_names, result.imported.output_names)
    feeds = {name: batch[0] for name, batch in synthetic_inputs(result.module, sim.input_names, 1).items()}
    values = {}

    def observe(op, outs) -> None:
        for value, tensor in zip(op.results, outs):
            values[value] = tensor.data

    sim.run(feeds, observe)
    layers = []
    for op in result.module.walk():
        if isinstance(op, df.GemmOp) and isinstance(op.rhs.owner, df.WeightOp) and \
                np.issubdtype(np.asarray(values.get(op.lhs, np.zeros(0))).dtype, np.integer):
            layer = gemm_layer(op, result.env.weights)
            rq = fused_requant(op)
            out = values[rq.result if rq is not None else op.result]
            layers.append((layer, np.asarray(values[op.lhs]).reshape(layer.m, layer.k),
                           np.asarray(out).reshape(layer.m, layer.n)))
    return layers


@pytest.mark.rtl
@pytest.mark.slow
@pytest.mark.parametrize("index", range(BERT_GEMMS))
def test_every_bert_tiny_weight_gemm_runs_bit_exact(bert_layers, index: int) -> None:
    assert len(bert_layers) == BERT_GEMMS
    layer, x, simulated = bert_layers[index]
    builder = ProgramBuilder(_geometry(BERT))
    x_region, y_region = builder.gemm(layer)
    builder.image.write(x_region.name, x)
    program = builder.finish()
    image = bytes(builder.image.buffer())
    want = _expected(builder.geometry, program, image)
    run = run_system(BERT, to_bytes(program), image, {"dram": (0, len(image))}, "verilator",
                     run_name=f"bert{index}")
    assert run.reads["dram"] == want, layer.name
    dtype = np.dtype(f"<i{y_region.elem_bytes}")
    got = np.frombuffer(run.reads["dram"], dtype, count=int(np.prod(y_region.shape)), offset=y_region.addr)
    np.testing.assert_array_equal(got.reshape(y_region.shape), simulated, err_msg=layer.name)
    print(f"\n{layer.name}: m={layer.m} k={layer.k} n={layer.n} rtl_cycles={run.cycles} sim_s={run.run_s:.1f}")


# --- cycles against the performance model ------------------------------------------------------------------------

MODEL_ERROR_BOUND = 0.05
"""The worst |RTL - model| / model of a bert_tiny weight GEMM (8x8, DRAM 16 B/cycle) allowed: issue #17's 5% per
layer (measured 1.9%, the model pricing the program's GEMM and fused requant with ``gemm.execute_queue``:
hw/perf/execute_queue.py); docs/RTL.md, "Cycles against the model", explains what is left."""
MODEL_TOTAL_BOUND = 0.02
"""|RTL - model| / model of the 12 GEMMs' total allowed: issue #17's 2% (measured 0.6%)."""


@pytest.mark.rtl
@pytest.mark.slow
def test_rtl_cycles_per_bert_layer_stay_within_the_pinned_bound_of_the_model() -> None:
    """benchmarks/rtl_system_table.py's figures: every weight GEMM runs bit-exact (checked inside) and its RTL
    ``cycles`` are within the pinned fraction of the model's latency of the same work for the same target
    parameters, and so is their total."""
    import sys

    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
    from rtl_system_table import compare

    figures = compare()
    assert len(figures) == BERT_GEMMS
    for f in figures:
        assert abs(f.error) <= MODEL_ERROR_BOUND, (f.name, f.rtl_cycles, f.model_cycles)
    total_rtl, total_model = sum(f.rtl_cycles for f in figures), sum(f.model_cycles for f in figures)
    assert abs(total_rtl - total_model) <= MODEL_TOTAL_BOUND * total_model, (total_rtl, total_model)


@pytest.mark.rtl
@pytest.mark.slow
def test_traced_gemm_and_requant_instructions_take_the_cycles_the_model_prices() -> None:
    """A traced run of the first bert GEMM (16 x 128 x 128 on 8x8, a per-channel requant per fold): in the steady
    state a fold's ``GEMM`` and its ``VEC requant``, each with its trace mark ``NOP``, take exactly what
    hw/perf/execute_queue.py prices them at, and the first ``GEMM`` completes once its loads are in."""
    import sys

    from hw.perf.execute_queue import NOP_CYCLES, gemm_fold_cycles, requant_fold_cycles

    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
    from rtl_system_table import compare

    (figure,) = compare(layers=1, trace=True)
    trace = figure.trace
    assert trace is not None
    assert trace.gemm == gemm_fold_cycles(128, 8, 8) + NOP_CYCLES
    assert trace.vec == requant_fold_cycles(8) + NOP_CYCLES
    assert trace.first > gemm_fold_cycles(128, 8, 8)  # the constant table and the first fold's operands first
