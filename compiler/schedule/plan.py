"""A compile's hardware plan, and the one function that prices it on a target model.

Lowering (``compiler/schedule/lower.py``) walks the IR once and writes down, per reported layer, everything the
hardware does that the IR decides: the work items (``hw.perf.workload``: GEMMs, vector work, moves), the off-chip
bytes of each task, the tasks' dependencies and tile counts, MACs and weight bytes. That is a :class:`Plan`; it
reads no target. :func:`price` turns a plan into priced ``LayerPlan`` s with a target model's ``cost(work)`` (each
distinct work item priced once), and :func:`schedule_plan` runs the event-driven scheduler on them. ``codesign
compile`` (the ``schedule`` pass), sweeps (which keep one plan per model and re-price it per design point) and
``codesign rtl`` all go through these functions, so there is one way costs are combined.

A planned layer prices itself: :class:`PlannedLayer` holds its task names (known without costs, so dependencies are
resolved at planning time) and a pricing function of the costs of its work items, built from the combinators here
(:func:`overlap_epilogue`, :func:`readout_detail`) and the attention and MoE rules next to their lowering.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

from xdsl.dialects.builtin import IntegerType, TensorType
from xdsl.ir import Operation, SSAValue

from compiler.schedule.mapping import MAPPING_MODES, energy_pricer, mapped_work, mapping_space, search
from hw.errors import InputError
from hw.models.base import AcceleratorModel, Cost
from hw.perf.scheduler import Machine, Schedule, Task, schedule
from hw.perf.workload import GemmWork, Work

__all__ = ["CostFn", "LayerPlan", "PlannedLayer", "Plan", "TaskSpec", "price", "machine", "schedule_plan",
           "priced_task", "stream_buffer_bytes", "block_rows", "ROW_TILES", "GEMM_TILES", "overlap_epilogue",
           "serial_epilogue",
           "readout_detail",
           "element_bits", "tensor_bytes", "numel"]

CostFn = Callable[[Work], Cost]
"""A target model's ``cost`` (memoised by :func:`price`)."""


@dataclass
class LayerPlan:
    """One IR op as the report shows it: its tasks, MACs and traffic, and ``works``, the work items its tasks run
    (as the model priced them; a cost looked at but not run, e.g. the standard softmax of a flash attention, is not
    one)."""

    name: str
    op: str
    tasks: list[Task]
    macs: int = 0
    macs_by_bits: dict[int, int] = field(default_factory=dict)
    bytes_offchip: int = 0
    weight_bytes: int = 0
    onchip_bytes: int = 0
    detail: dict[str, Any] = field(default_factory=dict)
    works: list[Work] = field(default_factory=list)


@dataclass(frozen=True)
class TaskSpec:
    """A scheduler task before pricing: its off-chip bytes (in, out), dependencies, and a tile count that overrides
    the cost's (the ``tile`` pass's attribute) or None. ``stream`` names the dependencies it may read row tile by
    row tile while they run (``hw.perf.scheduler``), ``rows`` the rows (tokens x batch) it works through in order."""

    name: str
    bytes_in: int
    bytes_out: int
    deps: tuple[str, ...]
    tiles: int | None = None
    stream: tuple[str, ...] = ()
    rows: int = 1
    lead_bytes_in: int = 0
    """Bytes of ``bytes_in`` loaded with the first tile (``hw.perf.scheduler.Task.lead_bytes_in``)."""


@dataclass(frozen=True)
class PlannedLayer:
    """One reported layer before pricing: the names of its tasks in order (the last one produces its results) and
    ``price``, a function of the model's costs that returns the priced ``LayerPlan``."""

    name: str
    task_names: tuple[str, ...]
    price: Callable[[CostFn], LayerPlan]
    ops: tuple[Operation, ...] = ()
    """The IR ops the layer stands for: its op, then those fused into it (``codesign rtl`` emits their kernels)."""


@dataclass(frozen=True)
class Plan:
    """Every costed layer of a module, in program order (``lower.plan_module``)."""

    layers: tuple[PlannedLayer, ...]


GEMM_TILES = 8
"""The most tiles the scheduler follows a searched GEMM mapping in (more buffer tiles are grouped): enough to hide a
tile's load behind the one before and to let consumers stream its row blocks, few enough that a sweep point
schedules in milliseconds."""

ROW_TILES = 4
"""Row tiles of a vector task whose rows can stream (at most; fewer when it has fewer rows or lane rounds): enough
to overlap its loads, compute and stores with each other and with the GEMM before or after it, few enough that a
tile is a few lane rounds."""


def priced_task(spec: TaskSpec, cost: Cost, stream_buffer: float | None = None) -> Task:
    """The scheduler ``Task`` of ``spec`` with ``cost``'s unit, cycles and (unless ``spec`` fixes them) tiles.

    Row-wise vector work (``spec.rows > 1`` on a ``vector`` unit) runs in row tiles: ``ROW_TILES``, or its lane rounds
    (``detail["rows_per_lane"]``) if fewer, or more where a double-buffered tile (input and output) would not fit in
    ``stream_buffer`` bytes; when even one-row tiles would not fit, it reads nothing tile by tile (``stream`` is
    dropped). A GEMM works through its rows in blocks of ``detail["block_rows"]`` (its mapping's row fold,
    :func:`price`)."""
    tiles = max(1, spec.tiles if spec.tiles is not None else cost.tiles)
    if "mapping_tiles" in cost.detail:  # a searched mapping's buffer tiles, as finely as the scheduler follows them
        tiles = max(tiles, min(int(cost.detail["mapping_tiles"]), GEMM_TILES))
    block = 1
    stream = spec.stream
    if cost.unit == "vector" and spec.rows > 1 and spec.tiles is None:
        rounds = max(1, int(cost.detail.get("rows_per_lane", ROW_TILES)))
        tiles = max(tiles, min(spec.rows, ROW_TILES, rounds))
        if stream_buffer is not None:
            need = -(-2 * (spec.bytes_in + spec.bytes_out) // max(1, int(stream_buffer)))
            if need > spec.rows:
                stream = ()
            else:
                tiles = max(tiles, need)
    elif cost.unit == "gemm":  # without a mapping's row fold, its rows are readable only at its end
        block = max(1, min(spec.rows, int(cost.detail.get("block_rows", spec.rows))))
    if cost.unit != "vector" and cost.unit != "gemm":
        stream = ()
    return Task(name=spec.name, unit=cost.unit, compute_cycles=cost.compute_cycles, bytes_in=spec.bytes_in,
                bytes_out=spec.bytes_out, deps=spec.deps, tiles=tiles, stream=stream, rows=max(1, spec.rows),
                block_rows=block, lead_bytes_in=spec.lead_bytes_in)


class _Costing:
    """A model's ``cost`` memoised per distinct (hashable) work item, each GEMM's cost carrying the rows of its
    output block (``detail["block_rows"]``, :func:`compiler.schedule.mapping.block_rows`), and the bytes a
    streaming vector task's row tiles may hold (``stream_buffer``)."""

    def __init__(self, model: AcceleratorModel, mapping: str = "search", objective: str | None = None) -> None:
        if mapping not in MAPPING_MODES:
            raise InputError(f"mapping must be one of {', '.join(MAPPING_MODES)}, got {mapping!r}")
        self.model = model
        self.costs: dict[Work, Cost] = {}
        self.stream_buffer = stream_buffer_bytes(model)
        self.space = mapping_space(model, objective) if mapping == "search" else None
        self.pricer = energy_pricer(model, self.space)
        self.runs: dict[GemmWork, GemmWork] = {}
        """GEMM as written -> as the array runs it (operands swapped by a transposed mapping)."""

    def as_run(self, work: Work) -> Work:
        """``work`` as the array runs it under the mapping it was priced with (itself unless transposed)."""
        return self.runs.get(work, work) if isinstance(work, GemmWork) else work

    def __call__(self, work: Work) -> Cost:
        try:
            found = self.costs.get(work)
        except TypeError:  # an unhashable work item
            return self._cost(work)
        if found is None:
            found = self.costs[work] = self._cost(work)
        return found

    def _cost(self, work: Work) -> Cost:
        if isinstance(work, GemmWork) and self.space is not None:
            chosen = search(work, self.space, self.pricer)
            run = mapped_work(work, chosen)
            if run is not work:
                self.runs[work] = run
            cost = self.model.cost(run)
            # The tile count stays the model's for the GEMM as written (what the ``tile`` pass records, so a sweep's
            # plan tier and a compile agree); the mapping's own tiles refine it in ``priced_task``.
            tiles = cost.tiles if run is work else self.model.cost(work).tiles
            return replace(cost, tiles=tiles, detail={**cost.detail, **chosen.detail(), "block_rows": chosen.block_rows,
                                                      "mapping_tiles": work.batch * chosen.tiles})
        cost = self.model.cost(work)
        if isinstance(work, GemmWork) and "block_rows" not in cost.detail:
            cost = replace(cost, detail={**cost.detail, "block_rows": block_rows(work, self.model)})
        return cost


def stream_buffer_bytes(model: AcceleratorModel) -> float | None:
    """Bytes a vector task's double-buffered row tiles may hold while the array works on another layer: half the
    target's activation buffer (the GEMM streams its left operand through the other half), or None for a target
    without such buffers (its caches are not modelled)."""
    buffers = getattr(model.target, "buffers", None)
    act_kb = getattr(buffers, "act_kb", None)
    return act_kb * 1024 / 2 if isinstance(act_kb, (int, float)) else None


def price(plan: Plan, model: AcceleratorModel, mapping: str = "search", objective: str | None = None
          ) -> list[LayerPlan]:
    """The priced layers of ``plan`` on ``model``; each distinct (hashable) work item is priced once, each GEMM with
    the mapping ``mapping`` picks (``compiler.schedule.mapping``: ``search`` or ``fixed``) for ``objective``
    (``latency``, ``energy``, ``edp``; None: the target's ``gemm.mapping_objective``). Each layer's ``works`` are
    the GEMMs as the array runs them (a transposed mapping's operands swapped), so energy priced from them counts
    the SRAM accesses of the orientation chosen."""
    costing = _Costing(model, mapping, objective)
    layers = [layer.price(costing) for layer in plan.layers]
    if costing.runs:
        for layer in layers:
            layer.works = [costing.as_run(w) for w in layer.works]
    return layers


def machine(model: AcceleratorModel) -> Machine:
    """The scheduler's machine for ``model``: its units, its off-chip bandwidth, double buffering where the
    target has buffers that say so (on by default), and separate read and write channels (``duplex``) on the system
    top level (``gemm.execute_queue``)."""
    # The system top level (gemm.execute_queue) reads and writes DRAM on AXI's separate read and write channels,
    # each 16 bytes a cycle, its load and store DMAs independent (hw/perf/execute_queue.py).
    duplex = bool(getattr(getattr(model.target, "gemm", None), "execute_queue", False))
    return Machine(units=model.units(), offchip_bytes_per_cycle=model.offchip_bytes_per_cycle(),
                   double_buffered=model.target.double_buffered(), duplex=duplex)


def schedule_plan(plan: Plan, model: AcceleratorModel, mapping: str = "search", objective: str | None = None
                  ) -> tuple[list[LayerPlan], Schedule]:
    """Price ``plan`` on ``model`` (GEMMs mapped as ``mapping`` says, for ``objective``) and schedule its tasks:
    (priced layers, the schedule)."""
    layers = price(plan, model, mapping, objective)
    return layers, schedule([t for layer in layers for t in layer.tasks], machine(model))


def block_rows(work: GemmWork, model: AcceleratorModel) -> int:
    """Rows of the output a GEMM completes at a time, in order: an output-stationary array finishes ``rows`` rows of
    every column fold before it moves to the next row fold (M outermost, as SCALE-Sim orders os folds); a weight-
    or input-stationary one, or a model without a systolic array, finishes a batch item's rows only at its end."""
    gemm = getattr(model.target, "gemm", None)
    rows, dataflow = getattr(gemm, "rows", None), getattr(gemm, "dataflow", None)
    if dataflow == "os" and isinstance(rows, int):
        return min(work.m, rows)
    return work.m


# --- Cost combinators -------------------------------------------------------------------------------------------------


def overlap_epilogue(cost: Cost, extra: Cost) -> Cost:
    """``cost`` with an epilogue ``extra`` fused behind it: the epilogue runs on the vector lanes while the array
    works on the next fold, so the layer takes the longer of the two. The array's readout (``drain_cycles``) is
    kept only as far as it makes the layer longer than the epilogue and the array's own compute."""
    compute = max(cost.compute_cycles, extra.compute_cycles)
    detail = cost.detail
    drain = int(detail.get("drain_cycles", 0))
    if drain:
        detail = {**detail, "drain_cycles": compute - max(cost.compute_cycles - drain, extra.compute_cycles)}
    return Cost(unit=cost.unit, compute_cycles=compute, tiles=cost.tiles,
                onchip_bytes=cost.onchip_bytes + extra.onchip_bytes, detail=detail)


def serial_epilogue(cost: Cost, extra: Cost, per_fold_cycles: int | None = None) -> Cost:
    """``cost`` with an epilogue ``extra`` run on the same queue after it (a target's ``gemm.execute_queue``: the
    system top level's one execute queue runs the array's instructions and the vector unit's in series), so the
    layer takes both: ``extra``'s cycles, or ``per_fold_cycles`` where the epilogue runs as one instruction behind
    each fold (a requant fused into the GEMM's program, ``hw.perf.execute_queue.fused_requant_cycles``)."""
    added = extra.compute_cycles if per_fold_cycles is None else per_fold_cycles
    detail = {**cost.detail, "epilogue_cycles": int(cost.detail.get("epilogue_cycles", 0)) + added}
    return Cost(unit=cost.unit, compute_cycles=cost.compute_cycles + added, tiles=cost.tiles,
                onchip_bytes=cost.onchip_bytes + extra.onchip_bytes, detail=detail)


def readout_detail(*costs: Cost) -> dict[str, int]:
    """``{"drain_cycles": total}`` of costs run one after another, or ``{}`` when none has a readout."""
    drain = sum(int(c.detail.get("drain_cycles", 0)) for c in costs)
    return {"drain_cycles": drain} if drain else {}


# --- Sizes of IR values (bytes and elements the plan counts) ---------------------------------------------------------


def element_bits(value: SSAValue) -> int:
    """Bits of one element of a tensor value (i1 counts as 8: it is stored as a byte)."""
    el = value.type.get_element_type()  # type: ignore[attr-defined]
    width = el.width.data if isinstance(el, IntegerType) else el.bitwidth  # type: ignore[attr-defined]
    return max(8, width) if width == 1 else width


def numel(value: SSAValue) -> int:
    """Elements of a tensor value."""
    n = 1
    for d in value.type.get_shape():  # type: ignore[attr-defined]
        n *= d
    return n


def tensor_bytes(value: SSAValue) -> int:
    """Bytes of a whole tensor value."""
    assert isinstance(value.type, TensorType)
    return -(-numel(value) * element_bits(value) // 8)


def sum_cycles(costs: Sequence[Cost]) -> int:
    """Cycles of costs run one after another on one unit."""
    return sum(c.compute_cycles for c in costs)
