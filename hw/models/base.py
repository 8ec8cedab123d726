"""What every accelerator model offers the scheduler and the report, and the pricing rules kinds share.

A model prices one work item (``hw.perf.workload``) on one instance of one of its units. ``Cost`` maps onto the
scheduler's ``Task`` (``hw.perf.scheduler``): ``unit`` and ``compute_cycles`` as they are, ``tiles`` as the number of
buffer-sized pieces whose loads and stores the scheduler may overlap with compute.
"""

from __future__ import annotations

from collections.abc import Collection, Iterable, Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any, Protocol, runtime_checkable

from hw.errors import InputError
from hw.perf.workload import GemmWork, MoveWork, VectorWork, Work
from hw.targets.schema import Gemm, Target, Vector

__all__ = ["Cost", "AcceleratorModel", "WorkloadSizedModel", "ceil_div", "vector_cost", "move_on_vector",
           "offchip_rate", "dma_move", "operand_passes", "gemm_operand_bytes", "gemm_onchip_bytes", "buffer_tiles",
           "workload_sized"]


@dataclass(frozen=True)
class Cost:
    """The price of one work item on one instance of ``unit``.

    ``compute_cycles``: cycles (at the target's ``clock_mhz``) with operands on chip. ``tiles``: pieces the work
    streams through its buffers (>= 1). ``onchip_bytes``: bytes read and written in on-chip buffers (for energy).
    ``detail``: kind-specific numbers for reports (folds, utilisation, frames, where the time goes ...).
    """

    unit: str
    compute_cycles: int
    tiles: int = 1
    onchip_bytes: int = 0
    detail: Mapping[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        object.__setattr__(self, "detail", MappingProxyType(dict(self.detail)))


@runtime_checkable
class AcceleratorModel(Protocol):
    """A target's performance, resource and energy model. Build one with ``hw.models.build_model(target)``."""

    @property
    def target(self) -> Target:
        """The validated target this model prices (read-only here, so each model may hold its own kind)."""
        ...

    def units(self) -> dict[str, int]:
        """Unit kind -> number of instances the scheduler may run concurrently."""
        ...

    def offchip_bytes_per_cycle(self) -> float:
        """Off-chip bandwidth shared by all transfers, bytes per cycle."""
        ...

    def cost(self, work: Work) -> Cost:
        """Price ``work`` on one instance of the unit that runs it."""
        ...

    def peak_macs_per_cycle(self) -> float:
        """MACs per cycle of the whole machine at full utilisation."""
        ...

    def resources(self) -> dict[str, tuple[float, float]]:
        """Resource -> (used, available); empty where it means nothing (fixed silicon)."""
        ...

    def check_fits(self) -> None:
        """Raise ``InputError`` naming the overflowing resource and the key to change."""
        ...

    def energy(
        self, macs_by_bits: Mapping[int, int], onchip_bytes: int, offchip_bytes: int, cycles: int
    ) -> dict[str, float]:
        """Energy breakdown in mJ (components sum to the total; ``static`` included) for a run of ``cycles``."""
        ...


@runtime_checkable
class WorkloadSizedModel(Protocol):
    """An ``AcceleratorModel`` whose resources depend on the units a compiled workload needs (the FPGA: what each
    vector lane holds). Its ``resources()`` and ``check_fits()`` without ``units`` cost the target's default design
    (what a target-only question gets); a compile passes ``design_units(work)`` of the work items it priced."""

    def design_units(self, work: Iterable[Work]) -> tuple[str, ...]:
        """Names of the units the design needs to run ``work`` (the model's ``cost`` decides which unit runs what)."""
        ...

    def resources(self, units: Collection[str] | None = None) -> dict[str, tuple[float, float]]:
        """Resource -> (used, available) of the design holding ``units`` (``None``: the default design)."""
        ...

    def check_fits(self, units: Collection[str] | None = None) -> None:
        """``AcceleratorModel.check_fits`` for the design holding ``units``."""
        ...

    def resource_detail(self, units: Collection[str] | None = None) -> dict[str, Any]:
        """What the ``resources`` figure is made of, for the report (JSON-ready)."""
        ...


def workload_sized(model: object) -> WorkloadSizedModel | None:
    """``model`` through its ``WorkloadSizedModel`` interface, or None. (An ``isinstance`` check on an
    ``AcceleratorModel`` would leave a type checker reading ``resources`` and ``check_fits`` without ``units``.)"""
    return model if isinstance(model, WorkloadSizedModel) else None


def ceil_div(a: int, b: int) -> int:
    """Ceiling of a / b for non-negative ints."""
    return -(-a // b)


def vector_cost(target: Target, vector: Vector, work: VectorWork, unit: str = "vector") -> Cost:
    """Cycles of ``work`` on one vector unit: ``ceil(elements / lanes) * per_element + ceil(rows / lanes) *
    per_row``, rounded up. Rows spread over lanes (a lane owns a row's reciprocal or division); per-element cost
    from ``vector.costs[kind][approx]``."""
    table = vector.costs.get(work.kind)
    if table is None:
        known = ", ".join(sorted(vector.costs))
        raise InputError(
            f"{target.name}: no vector cost for function '{work.kind}' (known: {known}); "
            f"add vector.costs.{work.kind}.{work.approx} to the target"
        )
    entry = table.get(work.approx)
    if entry is None:
        known = ", ".join(table)
        raise InputError(
            f"{target.name}: no vector cost for {work.kind} approximation '{work.approx}' (known: {known}); "
            f"add vector.costs.{work.kind}.{work.approx} to the target"
        )
    groups = ceil_div(work.elements, vector.lanes)
    row_groups = ceil_div(work.rows, vector.lanes) if work.rows > 0 else 0
    cycles = _ceil(groups * entry.per_element + row_groups * entry.per_row)
    nbytes = ceil_div(work.elements * work.bits, 8)
    return Cost(
        unit=unit,
        compute_cycles=cycles,
        onchip_bytes=2 * nbytes,  # read once, write once
        detail={"lanes": vector.lanes, "per_element": entry.per_element, "per_row": entry.per_row},
    )


def move_on_vector(vector: Vector, work: MoveWork, unit: str = "vector") -> Cost:
    """A shuffle (transpose, gather, scatter) on the vector lanes: one byte per lane per cycle."""
    return Cost(unit=unit, compute_cycles=ceil_div(work.bytes, vector.lanes), onchip_bytes=2 * work.bytes,
                detail={"kind": work.kind})


def offchip_rate(target: Any) -> float:
    """Bytes per cycle off chip: the smaller of the memory's bandwidth (GB/s at ``clock_mhz``) and what the DMA
    channels move per cycle (``dma.channels x dma.width_bits``), for a target with ``offchip`` and ``dma`` sections."""
    memory = target.offchip.bandwidth_gbps * 1e9 / (target.clock_mhz * 1e6)
    return min(memory, target.dma.channels * target.dma.width_bits / 8)


def dma_move(target: Any, work: MoveWork, **detail: Any) -> Cost:
    """A data move (copy, concat, im2col, pad ...) as DMA bursts on unit ``dma``: ``dma.channels x dma.width_bits``
    bits per cycle, each byte read and written on chip once."""
    per_cycle = target.dma.channels * target.dma.width_bits // 8
    return Cost(unit="dma", compute_cycles=ceil_div(work.bytes, per_cycle), onchip_bytes=2 * work.bytes,
                detail={"kind": work.kind, **detail})


def operand_passes(work: GemmWork, array: Gemm) -> int:
    """Passes through an array narrower than the operands: a 16-bit operand on 8-bit PEs is split into two 8-bit
    slices whose partial products are shifted and added, so 16x16 bits on an 8x8-bit array takes 2 x 2 passes."""
    return ceil_div(work.in_bits, array.in_bits) * ceil_div(work.w_bits, array.w_bits)


def gemm_operand_bytes(work: GemmWork) -> tuple[int, int, int]:
    """Bytes of one batch item's left operand (m x k), right operand (k x n) and accumulators (m x n, acc_bits)."""
    return (
        ceil_div(work.m * work.k * work.in_bits, 8),
        ceil_div(work.k * work.n * work.w_bits, 8),
        ceil_div(work.m * work.n * work.acc_bits, 8),
    )


def gemm_onchip_bytes(work: GemmWork, rows: int, cols: int, dataflow: str) -> int:
    """Buffer traffic of the whole GEMM on a ``rows`` x ``cols`` array, bytes.

    The streamed operands are re-read once per fold of the other spatial dimension; a stationary operand is read
    once; partial sums go back and forth once per fold of the reduction when the reduction is spatial (ws, is).
    """
    m, n, k = work.m, work.n, work.k
    a, b, acc = work.in_bits, work.w_bits, work.acc_bits
    if dataflow == "os":  # A rows re-streamed per column fold, B columns per row fold, outputs written once
        bits = m * k * a * ceil_div(n, cols) + k * n * b * ceil_div(m, rows) + m * n * acc
    elif dataflow == "ws":  # weights once, A re-streamed per column fold, psums per row (k) fold
        bits = k * n * b + m * k * a * ceil_div(n, cols) + 2 * m * n * acc * ceil_div(k, rows)
    else:  # "is": inputs once, weights re-streamed per column (m) fold, psums per row (k) fold
        bits = m * k * a + k * n * b * ceil_div(m, cols) + 2 * m * n * acc * ceil_div(k, rows)
    return work.batch * ceil_div(bits, 8)


def buffer_tiles(work: GemmWork, capacities: tuple[float, ...] | float) -> int:
    """Pieces the GEMM streams through its buffers: per batch item, the most any operand needs to fit its buffer
    (``capacities`` = bytes for left, right, accumulators; one number = one shared scratchpad), times ``batch``."""
    sizes = gemm_operand_bytes(work)
    if isinstance(capacities, tuple):
        per_item = max(ceil_div(size, max(1, int(cap))) for size, cap in zip(sizes, capacities, strict=True))
    else:
        per_item = ceil_div(sum(sizes), max(1, int(capacities)))
    return work.batch * max(1, per_item)


def _ceil(x: float) -> int:
    """Round a cycle count up, forgiving float noise (24.000000000004 -> 24)."""
    r = round(x)
    return int(r) if abs(x - r) < 1e-9 * max(1.0, abs(x)) else int(-(-x // 1))
