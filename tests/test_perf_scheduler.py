"""Tests for hw.perf.scheduler: hand-computed schedules, input errors, and properties of random task graphs."""

from __future__ import annotations

import math
import re

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from hw.errors import InputError
from hw.perf.scheduler import Machine, Task, schedule

TOL = 1e-9


def machine(bw: float = 10.0, double: bool = True, **units: int) -> Machine:
    return Machine(units=units or {"gemm": 1}, offchip_bytes_per_cycle=bw, double_buffered=double)


# -- hand-computed schedules --------------------------------------------------------------------------------------


def test_compute_bound_single_tile():
    s = schedule([Task("a", "gemm", 1000, 100, 0)], machine(bw=10))
    (a,) = s.tasks
    assert (a.start, a.end, a.memory_cycles, a.stall_cycles) == (0, 1010, 10, 10)
    assert s.makespan == 1010
    assert s.bandwidth == ((0, 10, 10.0),)


def test_compute_bound_tiles_hide_the_loads():
    # 10 tiles of 10 bytes (1 cycle) and 100 cycles: only the first load is exposed.
    a = schedule([Task("a", "gemm", 1000, 100, 0, tiles=10)], machine(bw=10)).task("a")
    assert (a.end, a.memory_cycles, a.stall_cycles) == (1001, 10, 1)


def test_memory_bound_single_tile():
    a = schedule([Task("a", "gemm", 10, 1000, 0)], machine(bw=10)).task("a")
    assert (a.end, a.memory_cycles, a.stall_cycles) == (110, 100, 100)


def test_memory_bound_tiles_hide_the_compute():
    a = schedule([Task("a", "gemm", 10, 1000, 0, tiles=10)], machine(bw=10)).task("a")
    assert (a.end, a.memory_cycles, a.stall_cycles) == (101, 100, 91)


def test_store_after_compute():
    a = schedule([Task("a", "gemm", 50, 0, 200)], machine(bw=10)).task("a")
    assert (a.end, a.memory_cycles) == (70, 20)


def test_partial_last_cycle_rounds_up():
    s = schedule([Task("a", "gemm", 0, 10, 0)], machine(bw=3))
    assert s.makespan == 4  # 10 / 3 = 3.33 cycles
    assert s.bandwidth == ((0, 4, 2.5),)


def test_two_tasks_share_bandwidth_equally():
    s = schedule([Task("a", "gemm", 0, 100, 0), Task("b", "gemm", 0, 300, 0)], machine(bw=10, gemm=2))
    # Both at 5 B/cycle until a's 100 bytes are in (cycle 20), then b alone at 10 B/cycle for its last 200.
    assert (s.task("a").end, s.task("b").end) == (20, 40)
    assert s.bandwidth == ((0, 40, 10.0),)
    assert s.busy_cycles["gemm"] == 60
    assert (s.bytes_read, s.bytes_written, s.bytes_moved) == (400, 0, 400)


def test_shared_transfers_round_up_together():
    s = schedule([Task("a", "gemm", 0, 10, 0), Task("b", "gemm", 0, 10, 0)], machine(bw=3, gemm=2))
    assert [(t.start, t.end) for t in s.tasks] == [(0, 7), (0, 7)]  # 10 / 1.5 = 6.67 cycles each
    assert s.bandwidth == ((0, 7, 20 / 7),)


@pytest.mark.parametrize(
    ("double", "makespan", "timeline"),
    [
        # load i+1 overlaps compute i; load i+2 waits for compute i to free its buffer.
        (True, 110, ((0, 20, 10.0), (35, 45, 10.0), (60, 70, 10.0))),
        (False, 140, ((0, 10, 10.0), (35, 45, 10.0), (70, 80, 10.0), (105, 115, 10.0))),
    ],
)
def test_double_buffering_loads(double, makespan, timeline):
    s = schedule([Task("a", "gemm", 100, 400, 0, tiles=4)], machine(bw=10, double=double))
    assert s.makespan == makespan
    assert s.bandwidth == timeline


@pytest.mark.parametrize(
    ("double", "makespan", "memory"),
    [
        # Load 2 and store 0 share the bandwidth over [35, 55], store 1 and load 3 over [60, 80].
        (True, 120, 80),
        (False, 180, 80),
    ],
)
def test_double_buffering_loads_and_stores(double, makespan, memory):
    a = schedule([Task("a", "gemm", 100, 400, 400, tiles=4)], machine(bw=10, double=double)).task("a")
    assert (a.end, a.memory_cycles, a.stall_cycles) == (makespan, memory, makespan - 100)


def test_tile_remainders_go_to_the_first_tiles():
    # 7 bytes and 5 cycles in 3 tiles: loads 3, 2, 2 bytes; computes 2, 2, 1 cycles; run serially at 1 B/cycle.
    s = schedule([Task("a", "gemm", 5, 7, 0, tiles=3)], machine(bw=1, double=False))
    assert s.makespan == 12
    assert s.bandwidth == ((0, 3, 1.0), (5, 7, 1.0), (9, 11, 1.0))


def test_more_tiles_than_bytes():
    s = schedule([Task("a", "gemm", 0, 2, 0, tiles=4)], machine(bw=1))
    assert s.makespan == 2
    assert s.bandwidth == ((0, 2, 1.0),)


def test_chain_across_units():
    tasks = [
        Task("a", "gemm", 100, 0, 0),
        Task("b", "vector", 50, 0, 0, deps=("a",)),
        Task("c", "gemm", 30, 0, 0, deps=("b",)),
    ]
    s = schedule(tasks, machine(gemm=1, vector=1))
    assert [(t.name, t.start, t.end) for t in s.tasks] == [("a", 0, 100), ("b", 100, 150), ("c", 150, 180)]
    assert dict(s.busy_cycles) == {"gemm": 130, "vector": 50}


def test_different_units_run_in_parallel():
    s = schedule([Task("a", "gemm", 100, 0, 0), Task("b", "vector", 70, 0, 0)], machine(gemm=1, vector=1))
    assert [(t.start, t.end) for t in s.tasks] == [(0, 100), (0, 70)]


def test_instances_are_reused_lowest_first():
    tasks = [Task(n, "gemm", c, 0, 0) for n, c in (("a", 100), ("b", 60), ("c", 50), ("d", 10))]
    s = schedule(tasks, machine(gemm=2))
    assert [(t.name, t.instance, t.start, t.end) for t in s.tasks] == [
        ("a", 0, 0, 100),
        ("b", 1, 0, 60),
        ("c", 1, 60, 110),
        ("d", 0, 100, 110),
    ]


def test_critical_path_first():
    tasks = [
        Task("x", "gemm", 10, 0, 0),
        Task("y", "gemm", 10, 0, 0),
        Task("z", "vector", 100, 0, 0, deps=("y",)),
    ]
    s = schedule(tasks, machine(gemm=1, vector=1))
    # y feeds the long z, so it goes first; at cycle 10 z (level 100) is dispatched before x (level 10).
    assert [(t.name, t.start) for t in s.tasks] == [("y", 0), ("z", 10), ("x", 10)]
    assert s.makespan == 110


def test_priority_counts_bytes_and_breaks_ties_by_input_order():
    tasks = [
        Task("compute", "gemm", 50, 0, 0),
        Task("memory", "gemm", 0, 1000, 0),  # 100 cycles alone at 10 B/cycle
        Task("tie", "gemm", 50, 0, 0),
    ]
    s = schedule(tasks, machine(bw=10))
    assert [t.name for t in s.tasks] == ["memory", "compute", "tie"]


def test_zero_tasks_take_no_time():
    tasks = [Task("a", "host", 0, 0, 0), Task("b", "host", 0, 0, 0, deps=("a",)), Task("c", "gemm", 5, 0, 0, ("b",))]
    s = schedule(tasks, machine(gemm=1, host=1))
    assert [(t.name, t.start, t.end) for t in s.tasks] == [("a", 0, 0), ("b", 0, 0), ("c", 0, 5)]
    assert s.bandwidth == ()


def test_input_order_need_not_be_topological():
    tasks = [Task("b", "gemm", 5, 0, 0, deps=("a",)), Task("a", "gemm", 7, 0, 0)]
    s = schedule(tasks, machine())
    assert [(t.name, t.start, t.end) for t in s.tasks] == [("a", 0, 7), ("b", 7, 12)]


def test_empty():
    s = schedule([], machine())
    assert (s.tasks, s.makespan, s.bandwidth, s.bytes_moved) == ((), 0, (), 0)


def test_long_layers_are_cheap():
    # Millions of cycles must not mean millions of steps.
    s = schedule([Task("a", "gemm", 10**12, 10**12, 10**12, tiles=4)], machine(bw=1000.0))
    assert s.makespan == 10**12 + 500_000_000


# -- input errors --------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"compute_cycles": -1}, "task 'a': compute_cycles must be >= 0, got -1"),
        ({"bytes_in": -5}, "task 'a': bytes_in must be >= 0, got -5"),
        ({"bytes_out": -5}, "task 'a': bytes_out must be >= 0, got -5"),
        ({"tiles": 0}, "task 'a': tiles must be >= 1, got 0"),
        ({"compute_cycles": 1.5}, "task 'a': compute_cycles must be an int, got 1.5"),
        ({"deps": "b"}, "task 'a': deps must be a tuple of task names, got the string 'b'"),
    ],
)
def test_bad_task_fields(kwargs, message):
    fields = {"name": "a", "unit": "gemm", "compute_cycles": 1, "bytes_in": 0, "bytes_out": 0} | kwargs
    with pytest.raises(InputError, match=f"^{re.escape(message)}$"):
        Task(**fields)


@pytest.mark.parametrize(
    ("units", "bw", "message"),
    [
        ({"gemm": -1}, 1.0, "machine: unit 'gemm' must have an int count >= 0, got -1"),
        ({"gemm": 1}, 0.0, "machine: offchip_bytes_per_cycle must be a finite number > 0, got 0.0"),
        ({"gemm": 1}, math.inf, "machine: offchip_bytes_per_cycle must be a finite number > 0, got inf"),
    ],
)
def test_bad_machine(units, bw, message):
    with pytest.raises(InputError, match=f"^{re.escape(message)}$"):
        Machine(units=units, offchip_bytes_per_cycle=bw)


@pytest.mark.parametrize(
    ("tasks", "message"),
    [
        ([Task("a", "optical", 1, 0, 0)], "task 'a': unit 'optical' is not on the machine (units: gemm, vector)"),
        ([Task("a", "vector", 1, 0, 0)], "task 'a': unit 'vector' has 0 instances on the machine"),
        ([Task("a", "gemm", 1, 0, 0, ("ghost",))], "task 'a': depends on 'ghost', which is not among the tasks"),
        ([Task("a", "gemm", 1, 0, 0)] * 2, "task 'a' appears twice (items 0 and 1)"),
        ([Task("a", "gemm", 1, 0, 0, ("a",))], "dependency cycle: 'a' -> 'a' (each depends on the next)"),
        (
            [
                Task("root", "gemm", 1, 0, 0),
                Task("a", "gemm", 1, 0, 0, ("root", "c")),
                Task("b", "gemm", 1, 0, 0, ("a",)),
                Task("c", "gemm", 1, 0, 0, ("b",)),
            ],
            "dependency cycle: 'a' -> 'c' -> 'b' -> 'a' (each depends on the next)",
        ),
    ],
)
def test_bad_graph(tasks, message):
    with pytest.raises(InputError, match=f"^{re.escape(message)}$"):
        schedule(tasks, Machine(units={"gemm": 1, "vector": 0}, offchip_bytes_per_cycle=1.0))


def test_records_are_frozen():
    s = schedule([Task("a", "gemm", 1, 0, 0)], machine())
    with pytest.raises(AttributeError):
        s.tasks[0].end = 0  # type: ignore[misc]
    with pytest.raises(TypeError):
        s.busy_cycles["gemm"] = 0  # type: ignore[index]


# -- properties of random graphs ----------------------------------------------------------------------------------

UNIT_KINDS = ("gemm", "vector", "dma")


@st.composite
def problems(draw) -> tuple[list[Task], Machine]:
    n = draw(st.integers(1, 14))
    units = {k: draw(st.integers(1, 3)) for k in UNIT_KINDS}
    bw = draw(st.one_of(st.integers(1, 64).map(float), st.floats(0.1, 100.0)))
    tasks = []
    for i in range(n):
        deps = draw(st.lists(st.integers(0, i - 1), max_size=3, unique=True)) if i else []
        tasks.append(
            Task(
                name=f"t{i}",
                unit=draw(st.sampled_from(UNIT_KINDS)),
                compute_cycles=draw(st.integers(0, 400)),
                bytes_in=draw(st.one_of(st.just(0), st.integers(0, 3000))),
                bytes_out=draw(st.one_of(st.just(0), st.integers(0, 3000))),
                deps=tuple(f"t{d}" for d in deps),
                tiles=draw(st.integers(1, 6)),
            )
        )
    tasks = draw(st.permutations(tasks))
    return list(tasks), Machine(units=units, offchip_bytes_per_cycle=bw, double_buffered=draw(st.booleans()))


def critical_path_compute(tasks: list[Task]) -> int:
    by_name = {t.name: t for t in tasks}
    memo: dict[str, int] = {}

    def longest(name: str) -> int:
        if name not in memo:
            t = by_name[name]
            memo[name] = t.compute_cycles + max((longest(d) for d in t.deps), default=0)
        return memo[name]

    return max(longest(t.name) for t in tasks)


@settings(max_examples=300, deadline=None)
@given(problems())
def test_random_graphs(problem):
    tasks, m = problem
    s = schedule(tasks, m)
    bw = m.offchip_bytes_per_cycle
    assert sorted(t.name for t in s.tasks) == sorted(t.name for t in tasks)
    assert [t.start for t in s.tasks] == sorted(t.start for t in s.tasks)

    # No unit instance runs two tasks at once.
    per_instance: dict[tuple[str, int], list[tuple[int, int]]] = {}
    for r in s.tasks:
        assert 0 <= r.instance < m.units[r.unit]
        per_instance.setdefault((r.unit, r.instance), []).append((r.start, r.end))
    for spans in per_instance.values():
        spans.sort()
        assert all(a[1] <= b[0] for a, b in zip(spans, spans[1:]))

    # Every task starts after its dependencies end, and takes at least its own roofline time.
    for t in tasks:
        r = s.task(t.name)
        assert all(r.start >= s.task(d).end for d in t.deps)
        assert r.end - r.start >= max(t.compute_cycles, (t.bytes_in + t.bytes_out) / bw * (1 - TOL))
        assert r.start + r.compute_cycles + r.stall_cycles == r.end and r.stall_cycles >= 0
        assert (t.bytes_in + t.bytes_out) / bw * (1 - TOL) <= r.memory_cycles <= r.end - r.start
        assert (r.memory_cycles == 0) == (t.bytes_in + t.bytes_out == 0)

    # The bandwidth timeline: ordered, within the machine's bandwidth, and accounting for every byte.
    total = sum(t.bytes_in + t.bytes_out for t in tasks)
    assert (s.bytes_read, s.bytes_written) == (sum(t.bytes_in for t in tasks), sum(t.bytes_out for t in tasks))
    assert s.bytes_moved == total
    prev_end = 0
    for t0, t1, rate in s.bandwidth:
        assert prev_end <= t0 < t1 <= s.makespan
        assert 0 < rate <= bw * (1 + TOL)
        prev_end = t1
    assert math.isclose(sum((t1 - t0) * r for t0, t1, r in s.bandwidth), total, rel_tol=TOL, abs_tol=TOL)

    # Roofline lower bound, busy cycles, determinism.
    assert s.makespan >= critical_path_compute(tasks)
    assert s.makespan >= total / bw * (1 - TOL)
    assert dict(s.busy_cycles) == {k: sum(r.duration for r in s.tasks if r.unit == k) for k in m.units}
    again = schedule(tasks, m)
    assert again == s and again.tasks == s.tasks and again.bandwidth == s.bandwidth


@settings(max_examples=100, deadline=None)
@given(problems())
def test_chain_runs_each_task_as_if_alone(problem):
    """Chained through every task, the schedule is the chain end to end, each task taking its time alone."""
    tasks, m = problem
    chain = [Task(t.name, t.unit, t.compute_cycles, t.bytes_in, t.bytes_out, tuple(), t.tiles) for t in tasks]
    chain = [c if i == 0 else Task(c.name, c.unit, c.compute_cycles, c.bytes_in, c.bytes_out, (chain[i - 1].name,),
                                   c.tiles) for i, c in enumerate(chain)]  # fmt: skip
    s = schedule(chain, m)
    assert [r.name for r in s.tasks] == [t.name for t in chain]
    assert all(a.end == b.start for a, b in zip(s.tasks, s.tasks[1:]))
    for t in chain:
        alone = schedule([Task(t.name, t.unit, t.compute_cycles, t.bytes_in, t.bytes_out, (), t.tiles)], m)
        assert s.task(t.name).duration == alone.makespan



def test_a_task_whose_last_store_and_compute_end_together_finishes_once():
    """Found by test_random_graphs: a two-tile task whose tile-0 store and tile-1 compute end in the same cycle was
    finished twice, freeing its instance twice and releasing a dependant before its other dependency ended."""
    tasks = [Task("a", "gemm", 2, 0, 1, tiles=2), Task("b", "gemm", 1, 0, 0), Task("c", "gemm", 0, 0, 0, deps=("a", "b")),
             *(Task(f"z{i}", "gemm", 0, 0, 0) for i in range(3))]
    s = schedule(tasks, Machine(units={"gemm": 1}, offchip_bytes_per_cycle=1.0, double_buffered=True))
    a, b, c = s.task("a"), s.task("b"), s.task("c")
    assert (a.start, a.end) == (0, 2) and (b.start, b.end) == (2, 3)
    assert c.start >= max(a.end, b.end)
    spans = sorted((r.start, r.end) for r in s.tasks if r.end > r.start)
    assert all(x[1] <= y[0] for x, y in zip(spans, spans[1:]))
    assert all(not (b.start < r.start < b.end) for r in s.tasks)  # nothing else on the instance while b runs
