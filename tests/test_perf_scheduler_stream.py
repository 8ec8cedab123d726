"""Streaming across tasks (hw/perf/scheduler.py): a consumer reads its producer row tile by row tile."""

from __future__ import annotations

import pytest

from hw.errors import InputError
from hw.perf.scheduler import Machine, Task, schedule

MACHINE = Machine(units={"gemm": 1, "vector": 1}, offchip_bytes_per_cycle=1e9)


def _pair(stream: bool, block_rows: int = 1, consumer_tiles: int = 4) -> tuple[int, int, int]:
    producer = Task("p", "gemm", 400, 0, 0, tiles=4, rows=256, block_rows=block_rows)
    consumer = Task("c", "vector", 100, 0, 0, deps=("p",), tiles=consumer_tiles, stream=("p",) if stream else (),
                    rows=256)
    s = schedule([producer, consumer], MACHINE)
    return s.task("c").start, s.task("c").end, s.makespan


def test_streaming_consumer_overlaps_its_producer() -> None:
    assert _pair(stream=False) == (400, 500, 500)
    # Each consumer tile (25 cycles) waits for the producer tile holding its rows (100 cycles each); it takes its
    # unit only once its first tile's rows are stored.
    start, end, makespan = _pair(stream=True)
    assert start == 100
    assert end == makespan == 425


def test_a_producer_block_is_readable_only_when_complete() -> None:
    # Blocks of 128 rows: the consumer's first half waits for the producer's second tile, its second half for the end.
    assert _pair(stream=True, block_rows=128)[1] == 450
    # One block of all rows: nothing to overlap.
    assert _pair(stream=True, block_rows=256)[1] == 500


def test_consumer_blocks_wait_for_whole_blocks() -> None:
    producer = Task("p", "vector", 400, 0, 0, tiles=4, rows=256)
    gemm = Task("g", "gemm", 400, 0, 0, deps=("p",), tiles=4, stream=("p",), rows=256, block_rows=256)
    s = schedule([producer, gemm], MACHINE)
    assert s.task("g").end == 800  # its one block needs all of the producer's rows


def test_stream_must_name_a_dependency() -> None:
    with pytest.raises(InputError, match="task 'c': streams from 'p', which is not among its deps"):
        Task("c", "vector", 1, 0, 0, stream=("p",))
    with pytest.raises(InputError, match="task 'c': stream must be a tuple"):
        Task("c", "vector", 1, 0, 0, deps=("p",), stream="p")  # type: ignore[arg-type]
    with pytest.raises(InputError, match="task 'c': rows must be >= 1"):
        Task("c", "vector", 1, 0, 0, rows=0)


def test_chain_of_streams_on_shared_units_finishes() -> None:
    # vector -> gemm -> vector -> gemm, each streaming the one before: no deadlock, and no unit runs two tasks at once.
    tasks = [Task("v0", "vector", 100, 64, 64, tiles=4, rows=64)]
    for i, unit in enumerate(("gemm", "vector", "gemm", "vector"), start=1):
        tasks.append(Task(f"t{i}", unit, 100 + 10 * i, 64, 64, deps=(tasks[-1].name,), tiles=4,
                          stream=(tasks[-1].name,), rows=64, block_rows=16 if unit == "gemm" else 1))
    s = schedule(tasks, Machine(units={"gemm": 1, "vector": 1}, offchip_bytes_per_cycle=8))
    for unit in ("gemm", "vector"):
        spans = sorted((t.start, t.end) for t in s.tasks if t.unit == unit)
        assert all(a[1] <= b[0] for a, b in zip(spans, spans[1:]))
    assert s.makespan < sum(t.compute_cycles for t in tasks)
    assert s.task("t1").stream == ("v0",)
