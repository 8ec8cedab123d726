"""A target's ``gemm.execute_queue`` (the cds1 system top level): GEMM layers priced as the backend's program runs
them (hw/perf/execute_queue.py, hw/models/fpga.py, compiler/schedule/lower.py), and the scheduler's lead bytes.
The RTL's side (traced instruction cycles, layer cycles within 5% / 2%) is tests/test_rtl_system.py's, marked rtl."""

from __future__ import annotations

from functools import partial

import pytest

from compiler.schedule.lower import price_layer
from compiler.schedule.plan import Plan, PlannedLayer, TaskSpec, machine, price, schedule_plan
from hw.errors import InputError
from hw.models import build_model
from hw.perf import execute_queue as eq
from hw.perf.scheduler import Machine, Task, schedule
from hw.perf.workload import GemmWork, MoveWork, VectorWork
from hw.rtl.kernels import invocation_cycles
from hw.targets.loader import load_target

SYSTEM = {"gemm.rows": "8", "gemm.cols": "8", "gemm.partitions": "1", "gemm.fold_overlap": "false",
          # 16 bytes per cycle, what the system's DRAM model serves: a bus byte a sixteenth of a cycle
          "offchip.bandwidth_gbps": str(16 * load_target("fpga-u280").clock_mhz / 1000)}


def _traffic() -> eq.GemmTraffic:
    """The 16 x 128 x 128 layer's loads on 8x8 as the model prices them: each fold its GEMM and fused requant."""
    return eq.gemm_traffic(16, 128, 128, 8, 8, fold_cycles=eq.gemm_fold_cycles(128, 8, 8) + eq.requant_fold_cycles(8))


def _model(execute_queue: bool):
    return build_model(load_target("fpga-u280", {**SYSTEM, "gemm.execute_queue": str(execute_queue).lower()}))


def test_a_gemm_instruction_is_the_array_kernels_fold_plus_its_issue_cycles() -> None:
    for k in (1, 8, 128, 512):
        fold = invocation_cycles("systolic_gemm", {"rows": 8, "cols": 8}, {"m": 8, "n": 8, "k": k})
        assert eq.gemm_fold_cycles(k, 8, 8) == fold + eq.GEMM_ISSUE_CYCLES


def test_fused_requant_and_stores_count_every_fold_including_short_ones() -> None:
    # 20 rows on 8 rows: folds of 8, 8, 4; 20 columns on 8 columns: 8, 8, 4
    per_col = eq.requant_fold_cycles(8) * 2 + eq.requant_fold_cycles(4)
    assert eq.fused_requant_cycles(20, 20, 8, 8) == 3 * per_col
    assert eq.requant_fold_cycles(8) == 8 + eq.REQUANT_STREAM_CYCLES + eq.REQUANT_CONST_CYCLES + eq.VEC_ISSUE_CYCLES
    # a row: its elements plus ROW, CAPTURE, AW and B (the write response 2 cycles after the last beat); a STORE
    # per fold (9 of them) takes 3 more: its queue and the DMA's DONE
    assert eq.store_cycles(20, 20, 8, 8) == 20 * (8 + 8 + 4 + 3 * 5) + 9 * 3


def test_gemm_traffic_counts_the_load_dmas_cycles_of_the_programs_loads() -> None:
    assert [eq.segment_cycles(b) for b in (8, 16, 64, 256, 272)] == [2, 2, 4, 16, 17]  # the issuer, then beats
    # a LOAD's own cycles, measured on the top level: 6 (queue, IDLE, DONE, the read latency), 5 when its rows are
    # one beat each (their second issue cycle waits one of them)
    assert [eq.load_cycles(64, 4), eq.load_cycles(9, 32), eq.load_cycles(16, 64)] == [133, 24, 70]
    # transposing: 4 rows of 64 bytes, 86; of 65 bytes 91 (the second chunk's beats asked for during the columns)
    assert [eq.transposed_load_cycles(4, 64), eq.transposed_load_cycles(4, 65)] == [86, 91]
    const = 3 * 16 * 4 + 6  # three 8-lane int64 rows (64 bytes, 4 beats) per column fold, one LOAD
    a = 8 * 4 + 8 * 4 + 128 + 6  # a row fold: 8 DRAM rows of two 64-byte chunks, then 128 space rows written
    b = 128 * 2 + 5  # a column fold's B: 128 DRAM rows of 8 bytes, a one-beat segment each, 2 cycles to issue
    fetch = 1 + 2 + 16 + 2 * 32  # the loads, and a GEMM and a STORE per fold: a read-channel beat each
    # folds of no cycles: the array waits for every load before the second column fold
    t = eq.gemm_traffic(16, 128, 128, 8, 8)
    assert (t.lead, t.rest, t.folds) == (const + b + 2 * a + b, 14 * b + fetch, 32)
    assert t.total == const + 2 * a + 16 * b + fetch
    # folds of 176 cycles (GEMM and requant): the first fold after const, B0 and A0 (657); A1 is in 22 cycles after
    # it ends (855 against 833), B1 85 after the second (1116 against 1031): 657 + 22 + 85 before the third fold
    t = eq.gemm_traffic(16, 128, 128, 8, 8, fold_cycles=176)
    assert (t.lead, t.total) == (const + b + a + 22 + 85, const + 2 * a + 16 * b + fetch)


def test_lead_bytes_load_with_the_first_tile() -> None:
    machine = Machine({"gemm": 1}, 1.0)
    plain = schedule([Task("t", "gemm", 400, 100, 0, tiles=4)], machine)
    lead = schedule([Task("t", "gemm", 400, 100, 0, tiles=4, lead_bytes_in=60)], machine)
    assert plain.makespan == 25 + 400  # a quarter of the bytes, then the computes back to back
    assert lead.makespan == 60 + 400  # the lead alone, the other 40 bytes under the computes of tiles 0..2
    one = schedule([Task("t", "gemm", 400, 100, 0, tiles=1, lead_bytes_in=60)], machine)
    assert one.makespan == 100 + 400  # one tile: the lead and the rest
    assert lead.bytes_read == plain.bytes_read == 100
    with pytest.raises(InputError, match="lead_bytes_in"):
        Task("t", "gemm", 1, 10, 0, lead_bytes_in=11)


def test_a_duplex_machine_loads_and_stores_each_at_the_full_bandwidth() -> None:
    tasks = [Task("a", "gemm", 0, 0, 100), Task("b", "vector", 0, 100, 0)]  # one store and one load at once
    shared = schedule(tasks, Machine({"gemm": 1, "vector": 1}, 1.0))
    duplex = schedule(tasks, Machine({"gemm": 1, "vector": 1}, 1.0, duplex=True))
    assert (shared.makespan, duplex.makespan) == (200, 100)
    two_loads = [Task("a", "gemm", 0, 100, 0), Task("b", "vector", 0, 100, 0)]
    assert schedule(two_loads, Machine({"gemm": 1, "vector": 1}, 1.0, duplex=True)).makespan == 200


def test_the_execute_queue_prices_a_fold_per_instruction_and_leaves_the_default_alone() -> None:
    work = GemmWork(16, 128, 128)
    default = _model(False).cost(work)
    assert default.compute_cycles == 4543 + 8 and "execute_queue" not in default.detail
    cost = _model(True).cost(work)
    assert cost.compute_cycles == 32 * eq.gemm_fold_cycles(128, 8, 8)
    assert cost.tiles == 32
    d = cost.detail
    assert d["execute_queue"] and d["drain_cycles"] == 0
    assert d["fused_requant_cycles"] == eq.fused_requant_cycles(16, 128, 8, 8)
    traffic = _traffic()
    assert (d["lead_bus_bytes"], d["load_bus_bytes"]) == (16 * traffic.lead, 16 * traffic.total)
    # the top level's load and store DMAs use AXI's read and write channels apart; the default shares one
    assert machine(_model(True)).duplex and not machine(_model(False)).duplex


def _layer(epilogue: tuple[VectorWork, ...], out_bytes: int = 1) -> tuple[TaskSpec, PlannedLayer]:
    m, k, n = 16, 128, 128
    weights = k * n + 4 * n
    spec = TaskSpec("g", m * k + weights, m * n * out_bytes, ())
    return spec, PlannedLayer("g", ("g",), partial(price_layer, spec, "gemm", GemmWork(m, n, k), epilogue, weights))


def test_the_epilogue_runs_after_the_gemm_on_the_queue_the_first_requant_per_fold() -> None:
    model = _model(True)
    requant = VectorWork(kind="requant", elements=16 * 128, rows=16, bits=32)
    gelu = VectorWork(kind="gelu", elements=16 * 128, rows=16, approx="shiftgelu", bits=8)
    spec, planned = _layer((requant, gelu))
    (layer,) = price(Plan((planned,)), model)
    (task,) = layer.tasks
    gemm = 32 * eq.gemm_fold_cycles(128, 8, 8)
    assert task.compute_cycles == gemm + eq.fused_requant_cycles(16, 128, 8, 8) + model.cost(gelu).compute_cycles
    assert task.tiles == 32 and task.lead_bytes_in == 16 * _traffic().lead
    assert task.bytes_in == 16 * _traffic().total
    assert task.bytes_out == 16 * eq.store_cycles(16, 128, 8, 8)
    assert layer.bytes_offchip == spec.bytes_in + spec.bytes_out  # the report keeps the tensors' bytes
    # beside the array (the default) the same layer takes the longer of the GEMM and its epilogue
    (beside,) = price(Plan((planned,)), _model(False))
    assert beside.tasks[0].compute_cycles < task.compute_cycles


def test_a_plain_gemm_layer_on_the_queue_is_its_first_loads_its_folds_and_its_last_store() -> None:
    """No requant: one task whose first tile waits for the lead and whose last store follows the last fold; the
    other folds' loads and stores hide under the folds (the machine is duplex: loads and stores apart)."""
    model = _model(True)
    _, planned = _layer((), out_bytes=4)
    _, sched = schedule_plan(Plan((planned,)), model)
    traffic = _traffic()
    first = traffic.lead  # the first tile's load (the others load theirs under the folds), bytes / 16 a cycle
    last_store = eq.store_cycles(8, 8, 8, 8)  # one fold of 8 rows
    assert sched.makespan == first + 32 * eq.gemm_fold_cycles(128, 8, 8) + last_store


def test_an_islands_dequantize_and_moves_cost_nothing_on_the_queue() -> None:
    """A ``dequantize -> moves -> quantize`` island runs as the quantize's threshold layers reading the integer
    source through a DMA window (compiler/backend/model.py): its dequantize and moves are no instructions."""
    split = MoveWork(kind="split", bytes=4096, quant="island_member")
    dequant = VectorWork(kind="add", elements=4096, rows=16, bits=32, quant="island_member")  # a cast is priced so
    for work in (split, dequant):
        assert _model(True).cost(work).compute_cycles == 0
        assert _model(False).cost(work).compute_cycles > 0  # elsewhere priced as before
    assert _model(True).cost(MoveWork(kind="split", bytes=4096)).compute_cycles > 0
