"""Event-driven list scheduler: places hardware tasks on unit instances under shared off-chip bandwidth.

The compiler lowers every IR op to one `Task` and calls `schedule(tasks, machine)`. The result is exact for the
model below, in whole cycles:

* **List scheduling.** A task is *ready* once every task it depends on has ended. Ready tasks are dispatched, at the
  moment they become ready or an instance frees up, onto the lowest-numbered free instance of their unit kind, in
  priority order: the longest path from the task to a sink first (its *bottom level*; each task on the path weighs
  its roofline time alone on the machine, ``max(compute_cycles, ceil((bytes_in + bytes_out) / bandwidth))``), ties
  by input order. The instance is held from the task's start to its end, stalls included.
* **Tiles.** A task with ``tiles = T`` runs as T tiles; tile i loads ``bytes_in // T`` bytes, computes
  ``compute_cycles // T`` cycles and stores ``bytes_out // T`` bytes, and the first ``x % T`` tiles take one more of
  each quantity ``x``; a task's ``lead_bytes_in`` (what its first tile needs, loaded once and kept) are tile 0's
  load, and the rest is split so over the other tiles (each loads under the computes before it; with one tile, it
  loads the lead and the rest). Loads of one task run one after another, and so do its
  computes and its stores. With double buffering (two input and two output buffers) load i+1 overlaps compute i
  and store i-1: load i waits for compute i-2, compute i for load i, compute i-1 and store i-2, store i for
  compute i and store i-1. Without it a task runs load 0, compute 0, store 0, load 1, ... strictly one stage at a
  time. A task ends when its last store ends.
* **Streaming across tasks (row tiles).** A dependency named in ``Task.stream`` is read in row order: the task
  is ready once its other dependencies have ended, every streamed one has *started* and stored the rows of its
  first tile (so it never holds its unit just waiting), and its tile i loads only
  once each streamed producer has stored the rows that tile reads. A task works through its ``rows`` in order, in
  blocks of ``block_rows``: its tile i covers rows up to ``ceil((i + 1) rows / tiles)``, a consumer needs the whole
  block that row lies in (a GEMM needs a block of its left operand before the block's first fold), and a
  producer's rows are readable only once their block is complete (after s stores, its first
  ``floor(s * blocks / tiles)`` blocks, ``blocks = ceil(rows / block_rows)``: tiles divide the blocks evenly, as
  a GEMM's buffer tiles of whole row blocks do). Producer and consumer may count rows differently (a view in between):
  rows compare as fractions of the tensor in row-major order. So the vector work of one layer runs on its unit
  while the array computes the row tiles of the layer before or after it, exactly as far as the data allow.
* **Shared bandwidth.** All active transfers of all running tasks share ``offchip_bytes_per_cycle`` equally
  (processor sharing); on a ``duplex`` machine the loads share it and the stores share another as much. Events (a
  transfer or a compute finishing, a task starting or ending) fall on whole cycles: a transfer whose bytes run out
  part-way through a cycle completes at the end of that cycle, and its share of that last partial cycle is not
  handed to the others. Zero-byte transfers and zero-cycle computes take no time, so a task
  with no bytes and no compute starts and ends in the same cycle.

The simulation jumps from event to event (a heap of compute completions plus the few active transfers), never cycle
by cycle, so a layer of millions of cycles costs as much as one of ten.
"""

from __future__ import annotations

import heapq
import math
from collections import deque
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from functools import cached_property
from types import MappingProxyType

from hw.errors import InputError
from hw.perf.kahn import kahn_order

__all__ = ["Task", "Machine", "ScheduledTask", "Schedule", "schedule"]

# Relative slack when turning a fractional transfer time into whole cycles, so that float noise in
# bytes / rate (3.0000000000004 cycles) does not cost a spurious extra cycle.
_REL_TOL = 1e-9


@dataclass(frozen=True)
class Task:
    """One unit of work for one unit instance.

    ``compute_cycles`` is the whole task's compute time on one instance once its operands are on chip (cycles);
    ``bytes_in`` / ``bytes_out`` are the off-chip bytes it reads (non-resident activations plus weights) and writes.
    ``tiles`` splits it into that many equal tiles so that loads and stores can overlap compute (see the module doc).
    ``stream`` names the dependencies it reads row tile by row tile; it works through ``rows`` rows in order, in
    blocks of ``block_rows`` (module doc, streaming across tasks). ``lead_bytes_in`` of ``bytes_in`` are the first
    tile's load, the rest split evenly over the other tiles (module doc, tiles).
    """

    name: str
    unit: str
    compute_cycles: int
    bytes_in: int
    bytes_out: int
    deps: tuple[str, ...] = ()
    tiles: int = 1
    stream: tuple[str, ...] = ()
    rows: int = 1
    block_rows: int = 1
    lead_bytes_in: int = 0

    def __post_init__(self) -> None:
        for attr in ("compute_cycles", "bytes_in", "bytes_out", "tiles", "rows", "block_rows", "lead_bytes_in"):
            value = getattr(self, attr)
            if not isinstance(value, int) or isinstance(value, bool):
                raise InputError(f"task {self.name!r}: {attr} must be an int, got {value!r}")
            if value < (1 if attr in ("tiles", "rows", "block_rows") else 0):
                bound = "1" if attr in ("tiles", "rows", "block_rows") else "0"
                raise InputError(f"task {self.name!r}: {attr} must be >= {bound}, got {value}")
        if self.lead_bytes_in > self.bytes_in:
            raise InputError(f"task {self.name!r}: lead_bytes_in {self.lead_bytes_in} exceeds bytes_in "
                             f"{self.bytes_in}")
        if isinstance(self.deps, str):
            raise InputError(f"task {self.name!r}: deps must be a tuple of task names, got the string {self.deps!r}")
        object.__setattr__(self, "deps", tuple(self.deps))
        if isinstance(self.stream, str):
            raise InputError(f"task {self.name!r}: stream must be a tuple of task names, "
                             f"got the string {self.stream!r}")
        object.__setattr__(self, "stream", tuple(self.stream))
        for dep in self.stream:
            if dep not in self.deps:
                raise InputError(f"task {self.name!r}: streams from {dep!r}, which is not among its deps")


@dataclass(frozen=True)
class Machine:
    """The resources tasks compete for.

    ``units`` maps a unit kind (``"gemm"``, ``"vector"``, ``"dma"`` ...) to its number of instances;
    ``offchip_bytes_per_cycle`` is the off-chip bandwidth (bytes/cycle) shared by all concurrent transfers.
    ``double_buffered`` lets a task's tile loads and stores overlap its compute. ``duplex``: reads and writes each
    have ``offchip_bytes_per_cycle`` (separate read and write channels, as AXI's), loads sharing it among loads
    and stores among stores, instead of all transfers sharing one.
    """

    units: Mapping[str, int]
    offchip_bytes_per_cycle: float
    double_buffered: bool = True
    duplex: bool = False

    def __post_init__(self) -> None:
        for kind, count in self.units.items():
            if not isinstance(count, int) or isinstance(count, bool) or count < 0:
                raise InputError(f"machine: unit {kind!r} must have an int count >= 0, got {count!r}")
        bw = self.offchip_bytes_per_cycle
        if isinstance(bw, bool) or not isinstance(bw, (int, float)) or not math.isfinite(bw) or bw <= 0:
            raise InputError(f"machine: offchip_bytes_per_cycle must be a finite number > 0, got {bw!r}")
        object.__setattr__(self, "units", MappingProxyType(dict(self.units)))


@dataclass(frozen=True)
class ScheduledTask:
    """Where and when one task ran. All times are in cycles.

    ``memory_cycles`` counts the cycles during which at least one of the task's transfers was active;
    ``stall_cycles = end - start - compute_cycles`` is the time its unit instance was held without computing
    (waiting for loads, for a free output buffer, for a streamed producer's rows, or for the last store).
    ``stream`` names the tasks it read row tile by row tile while they ran.
    """

    name: str
    unit: str
    instance: int
    start: int
    end: int
    compute_cycles: int
    memory_cycles: int
    stall_cycles: int
    bytes_in: int
    bytes_out: int
    stream: tuple[str, ...] = ()

    @property
    def duration(self) -> int:
        """Cycles the unit instance was held: ``end - start``."""
        return self.end - self.start


@dataclass(frozen=True)
class Schedule:
    """The outcome of `schedule`.

    ``tasks`` are in start order (ties in dispatch order). ``busy_cycles`` sums, per unit kind, the cycles its
    instances were held by tasks. ``bandwidth`` is the off-chip traffic as consecutive non-overlapping segments
    ``(t0, t1, bytes_per_cycle)`` with ``t0 < t1`` in cycles; cycles without traffic are left out and neighbouring
    segments with the same rate are merged, so ``sum((t1 - t0) * r)`` equals ``bytes_read + bytes_written``.
    """

    tasks: tuple[ScheduledTask, ...]
    makespan: int
    busy_cycles: Mapping[str, int]
    bytes_read: int
    bytes_written: int
    bandwidth: tuple[tuple[int, int, float], ...]

    @property
    def bytes_moved(self) -> int:
        """Off-chip bytes read plus written."""
        return self.bytes_read + self.bytes_written

    @cached_property
    def _by_name(self) -> dict[str, ScheduledTask]:
        return {r.name: r for r in self.tasks}

    def task(self, name: str) -> ScheduledTask:
        """The scheduled record of the task called ``name`` (KeyError if there is none)."""
        return self._by_name[name]


def schedule(tasks: Sequence[Task], machine: Machine) -> Schedule:
    """Schedule ``tasks`` on ``machine`` (semantics in the module docstring); all times in cycles.

    Raises `InputError` naming the task for an unknown unit kind, a unit with no instances, a duplicate name, a
    dependency on a missing task or a dependency cycle.
    """
    order = _topological_order(tasks, machine)
    return _Simulation(tasks, machine, order).run()


def _topological_order(tasks: Sequence[Task], machine: Machine) -> list[int]:
    """Validate the graph and return task indices in dependency order (ties by input order)."""
    index: dict[str, int] = {}
    for i, task in enumerate(tasks):
        if not isinstance(task, Task):
            raise InputError(f"schedule: item {i} is a {type(task).__name__}, not a Task")
        if task.name in index:
            raise InputError(f"task {task.name!r} appears twice (items {index[task.name]} and {i})")
        index[task.name] = i
        count = machine.units.get(task.unit)
        if count is None:
            known = ", ".join(sorted(machine.units)) or "none"
            raise InputError(f"task {task.name!r}: unit {task.unit!r} is not on the machine (units: {known})")
        if count == 0:
            raise InputError(f"task {task.name!r}: unit {task.unit!r} has 0 instances on the machine")
    for task in tasks:
        for dep in task.deps:
            if dep not in index:
                raise InputError(f"task {task.name!r}: depends on {dep!r}, which is not among the tasks")
    order, missing_deps = kahn_order([[index[d] for d in dict.fromkeys(task.deps)] for task in tasks])
    if len(order) < len(tasks):
        raise InputError(f"dependency cycle: {_find_cycle(tasks, index, missing_deps)} (each depends on the next)")
    return order


def _find_cycle(tasks: Sequence[Task], index: Mapping[str, int], missing_deps: list[int]) -> str:
    """Describe one cycle among the tasks Kahn's algorithm could not order (each has an unordered dependency)."""
    i = next(k for k, n in enumerate(missing_deps) if n > 0)
    seen: dict[int, int] = {}
    path: list[int] = []
    while i not in seen:
        seen[i] = len(path)
        path.append(i)
        i = next(index[d] for d in tasks[i].deps if missing_deps[index[d]] > 0)
    cycle = path[seen[i] :] + [i]
    return " -> ".join(repr(tasks[k].name) for k in cycle)


class _Transfer:
    """One active load or store: the bytes it still has to move and whose it is."""

    __slots__ = ("remaining", "state", "is_load")

    def __init__(self, remaining: float, state: _TaskState, is_load: bool) -> None:
        self.remaining = remaining
        self.state = state
        self.is_load = is_load


class _TaskState:
    """Progress of one running task through its tiles."""

    __slots__ = (
        "index", "task", "key", "instance", "start", "tiles",
        "loads", "computes", "stores", "loading", "computing", "storing",
        "active_transfers", "memory_since", "memory_cycles",
    )  # fmt: skip

    def __init__(self, index: int, task: Task, key: tuple[int, int]) -> None:
        self.index = index
        self.task = task
        self.key = key
        self.instance = -1
        self.start = 0
        self.tiles = task.tiles
        self.loads = self.computes = self.stores = 0  # tiles whose load / compute / store has finished
        self.loading = self.computing = self.storing = False
        self.active_transfers = 0
        self.memory_since = 0
        self.memory_cycles = 0


def _share(total: int, parts: int, i: int) -> int:
    """Part ``i`` of ``total`` split into ``parts`` near-equal integers, the first ``total % parts`` one larger."""
    q, r = divmod(total, parts)
    return q + 1 if i < r else q


class _Simulation:
    """One run of the event loop; `run` returns the `Schedule`."""

    def __init__(self, tasks: Sequence[Task], machine: Machine, order: list[int]) -> None:
        self.tasks = tasks
        self.machine = machine
        self.bw = float(machine.offchip_bytes_per_cycle)
        self.double = machine.double_buffered
        self.duplex = machine.duplex
        self.now = 0
        n = len(tasks)
        index = {t.name: i for i, t in enumerate(tasks)}
        self.deps = [[index[d] for d in dict.fromkeys(t.deps)] for t in tasks]
        self.users: list[list[int]] = [[] for _ in tasks]  # released when the task ends
        self.start_users: list[list[int]] = [[] for _ in tasks]  # streaming users: released when it starts
        self.streamed = [[index[d] for d in dict.fromkeys(t.stream)] for t in tasks]
        for i, ds in enumerate(self.deps):
            streamed = set(self.streamed[i])
            for j in ds:
                self.users[j].append(i)
                if j in streamed:
                    self.start_users[j].append(i)
        self.running: dict[int, _TaskState] = {}
        self.held: set[int] = set()  # streaming tasks whose dependencies are met but not their first tile's rows
        # Bottom level: the longest roofline-weighted path from a task to a sink, the task included.
        level = [0] * n
        for i in reversed(order):
            t = tasks[i]
            weight = max(t.compute_cycles, math.ceil((t.bytes_in + t.bytes_out) / self.bw))
            level[i] = weight + max((level[u] for u in self.users[i]), default=0)
        self.keys = [(-level[i], i) for i in range(n)]
        self.waiting = [len(ds) for ds in self.deps]
        self.ready: dict[str, list[tuple[int, int]]] = {kind: [] for kind in machine.units}
        self.free: dict[str, list[int]] = {kind: list(range(count)) for kind, count in machine.units.items()}
        self.dirty: set[str] = set()
        self.to_advance: deque[_TaskState] = deque()
        self.transfers: list[_Transfer] = []
        self.computes: list[tuple[int, int, _TaskState]] = []  # heap of (finish cycle, sequence, task)
        self.sequence = 0
        self.started: list[_TaskState] = []
        self.records: dict[int, ScheduledTask] = {}
        self.timeline: list[tuple[int, int, float]] = []

    # -- the event loop ------------------------------------------------------------------------------------------

    def run(self) -> Schedule:
        """Simulate until every task has ended."""
        for i, waiting in enumerate(self.waiting):
            if waiting == 0:
                self._make_ready(i)
        self._settle()
        while len(self.records) < len(self.tasks):
            self._step()
            self._settle()
        return self._result()

    def _step(self) -> None:
        """Jump to the next event, move the bytes of the elapsed interval and apply what completed."""
        now, transfers = self.now, self.transfers
        n = len(transfers)
        finish: list[int] = []
        next_t = self.computes[0][0] if self.computes else math.inf
        sharing = self._sharing(transfers)
        if n:
            for tr, k in zip(transfers, sharing):
                x = tr.remaining * k / self.bw
                f = now + max(1, math.ceil(x - _REL_TOL * x))
                finish.append(f)
                if f < next_t:
                    next_t = f
        if next_t == math.inf:  # unreachable after validation: every task has a unit instance
            raise AssertionError("scheduler deadlock")
        next_t = int(next_t)  # a finite event time is a whole cycle (math.inf only marked "none yet")
        dt = next_t - now
        self.now = next_t
        done: list[_Transfer] = []
        if n:
            moved = 0.0
            still: list[_Transfer] = []
            for tr, f, k in zip(transfers, finish, sharing):
                step_bytes = dt * self.bw / k
                if f <= next_t:
                    moved += tr.remaining
                    done.append(tr)
                else:
                    moved += step_bytes
                    tr.remaining -= step_bytes
                    still.append(tr)
            self.transfers = still
            self._record_bandwidth(now, next_t, moved / dt)
        for tr in done:
            st = tr.state
            if tr.is_load:
                st.loading = False
                st.loads += 1
            else:
                st.storing = False
                st.stores += 1
                self._wake_streamers(st)
            st.active_transfers -= 1
            if st.active_transfers == 0:
                st.memory_cycles += next_t - st.memory_since
            self.to_advance.append(st)
        computes = self.computes
        while computes and computes[0][0] == next_t:
            st = heapq.heappop(computes)[2]
            st.computing = False
            st.computes += 1
            self.to_advance.append(st)

    def _sharing(self, transfers: list[_Transfer]) -> list[int]:
        """Per active transfer, how many transfers share its bandwidth: all of them, or with ``duplex`` those
        in its direction (loads, or stores)."""
        if not self.duplex:
            return [len(transfers)] * len(transfers)
        loads = sum(tr.is_load for tr in transfers)
        return [loads if tr.is_load else len(transfers) - loads for tr in transfers]

    def _settle(self) -> None:
        """Start everything that can start at the current cycle, including zero-time work and what it unblocks."""
        while True:
            if self.to_advance:
                self._advance(self.to_advance.popleft())
            elif self.dirty:
                self._dispatch()
            else:
                return

    def _dispatch(self) -> None:
        """Put ready tasks on free instances, highest priority first, lowest instance number first."""
        started: list[_TaskState] = []
        for kind in sorted(self.dirty):
            ready, free = self.ready[kind], self.free[kind]
            while ready and free:
                key = heapq.heappop(ready)
                st = _TaskState(key[1], self.tasks[key[1]], key)
                st.instance = heapq.heappop(free)
                st.start = self.now
                started.append(st)
                self.running[st.index] = st
        self.dirty.clear()
        for st in started:  # after the clear: a streaming user made ready here must mark its unit dirty
            for u in self.start_users[st.index]:
                self._release(u)
        started.sort(key=lambda s: s.key)
        self.started.extend(started)
        self.to_advance.extend(started)

    def _advance(self, st: _TaskState) -> None:
        """Start every stage of ``st`` that its data and buffers allow; finish the task once its last store is done.

        A task can be queued twice for one cycle (its last store and its last compute both end then); the second
        visit finds it finished and does nothing, so its instance is freed and its users released exactly once."""
        if st.index in self.records:
            return
        task, tiles, double = st.task, st.tiles, self.double
        depth = 2 if double else 1  # input buffers, and output buffers
        progress = True
        while progress:
            progress = False
            i = st.loads
            if (not st.loading and i < tiles and i < st.computes + depth and (double or st.stores == i)
                    and (not self.streamed[st.index] or self._rows_ready(st.index, i))):
                lead = task.lead_bytes_in
                if lead and tiles > 1:  # the first tile loads what it needs; the others share the rest
                    size = lead if i == 0 else _share(task.bytes_in - lead, tiles - 1, i - 1)
                else:
                    size = _share(task.bytes_in - lead, tiles, i) + (lead if i == 0 else 0)
                if size:
                    st.loading = True
                    self._start_transfer(st, size, True)
                else:
                    st.loads += 1
                    progress = True
            i = st.computes
            if not st.computing and i < st.loads and i < st.stores + depth:
                cycles = _share(task.compute_cycles, tiles, i)
                if cycles:
                    st.computing = True
                    self.sequence += 1
                    heapq.heappush(self.computes, (self.now + cycles, self.sequence, st))
                else:
                    st.computes += 1
                    progress = True
            i = st.stores
            if not st.storing and i < st.computes:
                size = _share(task.bytes_out, tiles, i)
                if size:
                    st.storing = True
                    self._start_transfer(st, size, False)
                else:
                    st.stores += 1
                    self._wake_streamers(st)
                    progress = True
        if st.stores == tiles:
            self._finish(st)

    def _wake_streamers(self, st: _TaskState) -> None:
        """``st`` stored a tile: the running tasks that stream from it may load their next one."""
        for u in self.start_users[st.index]:
            user = self.running.get(u)
            if user is not None:
                self.to_advance.append(user)
            elif u in self.held and self._rows_ready(u, 0):
                self.held.discard(u)
                self._make_ready(u)

    def _rows_ready(self, index: int, i: int) -> bool:
        """Whether every producer task ``index`` streams from has stored the rows its tile ``i`` reads (module doc)."""
        task = self.tasks[index]
        rows, block = task.rows, task.block_rows
        end = -(-(i + 1) * rows // task.tiles)
        end = min(rows, -(-end // block) * block)
        for j in self.streamed[index]:
            if j in self.records:
                continue
            producer = self.tasks[j]
            stores = self.running[j].stores
            p_rows = producer.rows
            if stores >= producer.tiles:
                continue
            p_block = producer.block_rows
            blocks = -(-p_rows // p_block)  # the last block may be short (197 rows in blocks of 64)
            complete = min(p_rows, stores * blocks // producer.tiles * p_block)
            if complete * rows < end * p_rows:
                return False
        return True

    def _start_transfer(self, st: _TaskState, size: int, is_load: bool) -> None:
        self.transfers.append(_Transfer(float(size), st, is_load))
        if st.active_transfers == 0:
            st.memory_since = self.now
        st.active_transfers += 1

    def _finish(self, st: _TaskState) -> None:
        """Record ``st`` as ended now, free its instance and release the tasks waiting on it."""
        task, now = st.task, self.now
        self.records[st.index] = ScheduledTask(
            name=task.name,
            unit=task.unit,
            instance=st.instance,
            start=st.start,
            end=now,
            compute_cycles=task.compute_cycles,
            memory_cycles=st.memory_cycles,
            stall_cycles=now - st.start - task.compute_cycles,
            bytes_in=task.bytes_in,
            bytes_out=task.bytes_out,
            stream=task.stream,
        )
        del self.running[st.index]
        heapq.heappush(self.free[task.unit], st.instance)
        self.dirty.add(task.unit)
        streamed_by = self.start_users[st.index]
        for u in self.users[st.index]:
            if u not in streamed_by:
                self._release(u)
            else:
                user = self.running.get(u)
                if user is not None:
                    self.to_advance.append(user)
                elif u in self.held:
                    self.held.discard(u)
                    self._make_ready(u)

    def _release(self, i: int) -> None:
        """One more dependency of task ``i`` is satisfied (ended, or started for a streamed one). A task that streams
        is ready once the rows of its first tile are there too, so that it never holds its unit just waiting."""
        self.waiting[i] -= 1
        if self.waiting[i] == 0:
            if self.streamed[i] and not self._rows_ready(i, 0):
                self.held.add(i)
            else:
                self._make_ready(i)

    def _make_ready(self, i: int) -> None:
        unit = self.tasks[i].unit
        heapq.heappush(self.ready[unit], self.keys[i])
        self.dirty.add(unit)

    def _record_bandwidth(self, t0: int, t1: int, rate: float) -> None:
        timeline = self.timeline
        if timeline and timeline[-1][1] == t0 and timeline[-1][2] == rate:
            timeline[-1] = (timeline[-1][0], t1, rate)
        else:
            timeline.append((t0, t1, rate))

    def _result(self) -> Schedule:
        records = tuple(self.records[st.index] for st in self.started)
        busy = dict.fromkeys(self.machine.units, 0)
        for r in records:
            busy[r.unit] += r.end - r.start
        return Schedule(
            tasks=records,
            makespan=max((r.end for r in records), default=0),
            busy_cycles=MappingProxyType(busy),
            bytes_read=sum(t.bytes_in for t in self.tasks),
            bytes_written=sum(t.bytes_out for t in self.tasks),
            bandwidth=tuple(self.timeline),
        )
