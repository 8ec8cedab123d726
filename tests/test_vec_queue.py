"""``gemm.execute_queue``'s vector layers and attention (hw/perf/vec_queue.py): each ``VEC``'s cycles as
``hw.rtl.system.vec`` runs it (pinned to Verilator runs by tests/test_rtl_system_vec.py, marked rtl), the row
blocks' pipeline, and the FPGA model pricing the system's vector layers on the array's queue only with the key."""

from __future__ import annotations

import math

from hw.models import build_model
from hw.perf import vec_queue as vq
from hw.perf.execute_queue import VEC_ISSUE_CYCLES
from hw.perf.workload import VectorWork
from hw.targets.loader import load_target

# One VEC over 16 element rows of 8 values on 4 lanes (32 space rows), or 4 rows of 16 for the row functions, on
# tests/test_rtl_system_vec.py's VEC4 (max_row 16): the cycles a second copy of the instruction adds there.
MEASURED = {"requant_lane": 229, "requant_stream": 41, "copy": 133, "mul": 133, "shiftgelu": 389, "ilayernorm": 2609,
            "shiftmax": 309}


def formulas() -> dict[str, int]:
    """:data:`MEASURED`'s instructions priced by hw.perf.vec_queue."""
    return {"requant_lane": vq.lane_cycles("requant", 32, 4), "requant_stream": vq.stream_requant_cycles(32),
            "copy": vq.lane_cycles("copy", 32, 4), "mul": vq.lane_cycles("mul", 32, 4), "shiftgelu": vq.lane_cycles("shiftgelu", 32, 4),
            "ilayernorm": vq.ilayernorm_cycles(4, 16, 4), "shiftmax": vq.shiftmax_cycles(4, 16, 4)}


def test_each_vec_costs_what_the_vector_unit_took() -> None:
    assert formulas() == MEASURED
    assert vq.stream_requant_cycles(8, const_pair=True) == 8 + 4 + 3 + VEC_ISSUE_CYCLES
    assert vq.lane_cycles("threshold", 1, 16, 8) == 4 + 257 + VEC_ISSUE_CYCLES


def test_row_blocks_overlap_loads_and_stores_with_the_execute_queue() -> None:
    one = vq.Block(load=10, execute=100, store=20)
    assert vq.pipeline_cycles([one]) == 130
    # the second block loads under the first's execute; the first's store runs under the second's execute
    assert vq.pipeline_cycles([one, one]) == 10 + 100 + 100 + 20
    # the store queue is the bottleneck: each store waits for the previous one
    slow = vq.Block(load=1, execute=1, store=50)
    assert vq.pipeline_cycles([slow] * 3, lead=5) == 5 + 1 + 1 + 3 * 50
    assert vq.block_rows(16, 32, 0, 512, 4096) == 8


def test_the_model_prices_system_vector_layers_only_with_execute_queue() -> None:
    ln = VectorWork(kind="layernorm", elements=16 * 128, rows=16, approx="ilayernorm", bits=32, row_length=128,
                    in_bits=32, out_bits=32)
    sizes = {"gemm.rows": "8", "gemm.cols": "8", "buffers.act_kb": "16", "buffers.weight_kb": "16",
             "buffers.out_kb": "16", "gemm.partitions": "1", "gemm.fold_overlap": "false"}
    queued = build_model(load_target("fpga-u280", {**sizes, "gemm.execute_queue": "true"})).cost(ln)
    lanes = build_model(load_target("fpga-u280", sizes)).cost(ln)
    assert queued.unit == "gemm" and queued.detail["execute_queue"] and lanes.unit == "vector"
    mach = vq.Machine(lanes=8, width=8, acc_rows=512, sp_rows=4096)
    assert queued.compute_cycles == vq.layer_cycles("layernorm", 16, 128, 32, 32, mach)
    # two blocks of 8 rows (two halves of 2 x 16 accumulator rows each fit 512): bias, the first load, the
    # epsilon's CONFIG, two instructions, the last store
    per_vec = vq.ilayernorm_cycles(8, 128, 8)
    assert queued.compute_cycles == vq.load_cycles(16, 32) + vq.load_cycles(128, 32) + vq.CONFIG_CYCLES + \
        2 * per_vec + vq.store_cycles(128, 8)
    # a float element-wise op (the host's prologue) stays on the lanes
    host = VectorWork(kind="add", elements=2048, bits=32, row_length=128)
    assert build_model(load_target("fpga-u280", {**sizes, "gemm.execute_queue": "true"})).cost(host).unit == "vector"


def test_mirrored_rtl_constants_equal_the_rtls() -> None:
    """hw.perf does not import hw.rtl: the I-LayerNorm figures vec_queue restates must equal the kernel's."""
    from hw.perf import vec_queue
    from hw.rtl import ilayernorm

    for c in (16, 128, 768, 4096):
        for bits in (8, 16, 24):
            assert vec_queue.variance_bits(c, bits) == ilayernorm.var_bits(c, bits)
            assert vec_queue.variance_bits(c, bits, eps=True) == ilayernorm.newton_bits(c, bits, eps=1)
    assert vec_queue._LN_NEWTON_STEPS == ilayernorm.NEWTON_STEPS
    assert vec_queue._LN_FACTOR_CYCLES == ilayernorm.FACTOR_CYCLES


def test_a_causal_attention_is_priced_with_the_mask_halves_the_backend_adds(tmp_path) -> None:
    """A causal attention with no mask operand (GPT-2's SDPA export) runs on the system with the causal positions
    added as two int32 mask halves, as any mask (compiler/backend/attention.py), and the execute queue's price
    counts them; it priced such an op as unmasked, 4.3% under Verilator's cycles for GPT-2's attention (measured
    2026-12-05: 18,067 RTL cycles per op against 17,287, now 18,101)."""
    from codesign.api import compile
    from compiler.backend import Geometry
    from compiler.dialect import dataflow as df
    from examples import zoo

    path = tmp_path / "gpt2.onnx"
    zoo.export("gpt2", zoo.variants("gpt2")[0], path)  # no attention_mask input: the causal flag alone
    result = compile(str(path), target="fpga-u280", quant="int8", softmax="shiftmax",
                     overrides={"gemm.rows": 8, "gemm.cols": 8, "gemm.partitions": 1, "gemm.fold_overlap": "false",
                                "gemm.execute_queue": "true"})
    ops = {op.layer_name(): op for op in result.module.walk() if isinstance(op, df.AttentionOp)}
    layers = {layer["name"]: layer for layer in result.report["layers"] if layer["name"] in ops}
    assert layers and all(op.causal_value() and len(op.operands) == 3 for op in ops.values())
    geo = Geometry.from_target(result.env.target)  # the system backend's spaces on this target
    mach = vq.Machine(lanes=geo.cols, width=geo.width, acc_rows=geo.acc_rows, sp_rows=geo.sp_rows)
    for name, op in ops.items():
        _, sq, d = op.q.type.get_shape()  # type: ignore[attr-defined]
        heads, sk = op.num_heads_value(), op.k.type.get_shape()[1]  # type: ignore[attr-defined]
        priced = vq.attention_cycles(heads, sq, sk, d // heads, d // heads, True, mach, 8)
        assert layers[name]["cycles"] == priced > vq.attention_cycles(heads, sq, sk, d // heads, d // heads, False,
                                                                      mach, 8)


def test_every_norm_is_priced_with_the_programs_longest_row(tmp_path) -> None:
    """Persimmon's per-head query / key norms (16 values a row) sit beside 64-value norms: the top level's I-LayerNorm
    is built for 64, and the model prices each norm with that kernel's Newton steps (measured on Verilator:
    tests/test_rtl_system_vec.py)."""
    from codesign.api import compile
    from compiler.backend import Geometry
    from compiler.dialect import dataflow as df
    from examples import zoo

    path = tmp_path / "persimmon.onnx"
    zoo.export("persimmon", zoo.variants("persimmon")[0], path)
    result = compile(str(path), target="fpga-u280", quant="int8", softmax="shiftmax", layernorm="ilayernorm",
                     overrides={"gemm.rows": 8, "gemm.cols": 8, "gemm.partitions": 1, "gemm.fold_overlap": "false",
                                "gemm.execute_queue": "true"})
    norms = [op for op in result.module.walk() if isinstance(op, df.LayerNormOp)]
    widths = {op.results[0].type.get_shape()[-1] for op in norms}  # type: ignore[attr-defined]
    assert widths == {16, 64}
    geo = Geometry.from_target(result.env.target)
    mach = vq.Machine(lanes=geo.cols, width=geo.width, acc_rows=geo.acc_rows, sp_rows=geo.sp_rows)
    layers = {layer["name"]: layer for layer in result.report["layers"]}
    for op in norms:
        shape = op.results[0].type.get_shape()  # type: ignore[attr-defined]
        rows, n = math.prod(shape[:-1]), shape[-1]
        priced = layers[op.layer_name()]["cycles"]
        assert priced == vq.layer_cycles("layernorm", rows, n, 32, 32, mach, 64)  # in_bits: its widest operand
        assert (priced > vq.layer_cycles("layernorm", rows, n, 32, 32, mach)) == (n == 16)


def test_element_rows_split_into_transfers_as_the_backend_emits_them() -> None:
    """``rows_load_cycles`` / ``rows_store_cycles`` price the transfers ``compiler/backend/tiles.py``'s ``_dma``
    emits: one for a block whose element rows are whole space rows (or fit one), else two per element row (its full
    space rows and its tail: an attention's 17 or 21 keys on 8 lanes). Before, every block was priced as one transfer,
    and YOLOS's attention (21 keys, four heads) was 6.5% under the RTL's cycles."""
    from compiler.backend.gemm import ProgramBuilder
    from compiler.backend.machine import Geometry
    from compiler.backend.tiles import View, _dma
    from hw.isa import Load, Space, Store
    from hw.perf.execute_queue import FETCH_BEAT_CYCLES, load_cycles

    geo = Geometry.from_target(load_target("fpga-u280", {"gemm.rows": "8", "gemm.cols": "8"}))
    b = ProgramBuilder(geo)
    for n in (5, 8, 16, 17, 21):
        view = View(0, 6, n, n * 4, 4)
        loads = [i for i in _dma(Load, b, view, Space.ACC, 0, "test") if isinstance(i, Load)]
        stores = [i for i in _dma(Store, b, view, Space.ACC, 0, "test") if isinstance(i, Store)]
        assert len(loads) == len(stores) == (12 if n > 8 and n % 8 else 1)
        if n < 8:  # rows shorter than the lanes: priced as whole space rows (an upper bound), one transfer
            continue
        beats = FETCH_BEAT_CYCLES * len(loads) if len(loads) > 1 else 0
        assert vq.rows_load_cycles(6, n, 4, 8) == sum(load_cycles(i.rows, i.cols * 4) for i in loads) + beats
        assert vq.rows_store_cycles(6, n, 8) == sum(vq.store_cycles(i.rows, i.cols) for i in stores)
