"""The parametric FPGA accelerator: one systolic GEMM array, vector lanes, operand buffers and DMA engines.

GEMM timing is SCALE-Sim's (``hw.perf.systolic``); vector timing comes from the target's cost table
(``hw.targets.defaults.VECTOR_COSTS``); resources from ``hw.models.resources``.
"""

from __future__ import annotations

from collections.abc import Mapping

from hw.errors import InputError
from hw.models.base import (
    Cost,
    buffer_tiles,
    ceil_div,
    gemm_onchip_bytes,
    move_on_vector,
    operand_passes,
    vector_cost,
)
from hw.models.energy import event_energy_mj
from hw.models.resources import DEFAULT_CALIBRATION, FpgaCalibration, estimate
from hw.perf.systolic import fold_counts, systolic_cycles
from hw.perf.workload import GemmWork, MoveWork, VectorWork, Work
from hw.targets.schema import FpgaTarget

__all__ = ["FpgaModel", "SHUFFLE_MOVES"]

SHUFFLE_MOVES = frozenset({"transpose", "gather", "scatter", "permute"})
"""Moves that reorder elements run on the vector lanes; the rest (copy, concat, slice ...) are DMA bursts."""

# Which key to change when a component overflows the device.
_KEYS = {
    "gemm": "gemm.rows or gemm.cols",
    "vector": "vector.lanes",
    "dma": "dma.channels",
    "control": "a smaller device.part",
}


class FpgaModel:
    """Cost, resource and energy model of an ``FpgaTarget``."""

    def __init__(self, target: FpgaTarget, calibration: FpgaCalibration = DEFAULT_CALIBRATION) -> None:
        self.target = target
        self.calibration = calibration

    def units(self) -> dict[str, int]:
        """One GEMM array, ``vector.count`` vector units, one DMA engine group."""
        return {"gemm": 1, "vector": self.target.vector.count, "dma": 1}

    def offchip_bytes_per_cycle(self) -> float:
        """The smaller of the memory's bandwidth and what the DMA channels can move per cycle, bytes/cycle."""
        t = self.target
        memory = t.offchip.bandwidth_gbps * 1e9 / (t.clock_mhz * 1e6)
        return min(memory, t.dma.channels * t.dma.width_bits / 8)

    def peak_macs_per_cycle(self) -> float:
        """rows x cols."""
        return float(self.target.gemm.rows * self.target.gemm.cols)

    def cost(self, work: Work) -> Cost:
        """GEMM -> ``gemm`` (SCALE-Sim cycles x batch x operand passes); vector -> ``vector``; moves -> ``dma`` or
        ``vector`` (shuffles)."""
        t = self.target
        if isinstance(work, GemmWork):
            g = t.gemm
            passes = operand_passes(work, g)
            per_item = systolic_cycles(work.m, work.n, work.k, g.rows, g.cols, g.dataflow)
            cycles = work.batch * passes * per_item
            half = 0.5 if t.buffers.double_buffered else 1.0
            caps = tuple(kb * 1024 * half for kb in (t.buffers.act_kb, t.buffers.weight_kb, t.buffers.out_kb))
            return Cost(
                unit="gemm",
                compute_cycles=cycles,
                tiles=buffer_tiles(work, caps),
                onchip_bytes=gemm_onchip_bytes(work, g.rows, g.cols, g.dataflow),
                detail={
                    "folds": work.batch * _product(fold_counts(work.m, work.n, work.k, g.rows, g.cols, g.dataflow)),
                    "cycles_per_item": per_item,
                    "passes": passes,
                    "utilization": work.macs / (cycles * g.rows * g.cols),
                    "dataflow": g.dataflow,
                },
            )
        if isinstance(work, VectorWork):
            return vector_cost(t, t.vector, work)
        if isinstance(work, MoveWork):
            if work.kind in SHUFFLE_MOVES:
                return move_on_vector(t.vector, work)
            per_cycle = t.dma.channels * t.dma.width_bits // 8
            return Cost(unit="dma", compute_cycles=ceil_div(work.bytes, per_cycle), onchip_bytes=2 * work.bytes,
                        detail={"kind": work.kind, "bursts": ceil_div(work.bytes, t.dma.burst_bytes)})
        raise TypeError(f"not a work item: {work!r}")

    def resource_breakdown(self) -> dict[str, dict[str, float]]:
        """resource -> component -> count (see ``hw.models.resources.estimate``)."""
        return estimate(self.target, self.calibration)

    def resources(self) -> dict[str, tuple[float, float]]:
        """resource -> (used, available) for lut, ff, dsp, bram18, uram."""
        dev = self.target.device
        available = {"lut": dev.lut, "ff": dev.ff, "dsp": dev.dsp, "bram18": dev.bram18, "uram": dev.uram}
        return {r: (sum(parts.values()), float(available[r])) for r, parts in self.resource_breakdown().items()}

    def check_fits(self) -> None:
        """Raise ``InputError`` naming the resource overflowed the most (by ratio), its biggest user and the key to
        change; other overflowing resources are listed after it."""
        over = {r: used / max(available, 1e-9) for r, (used, available) in self.resources().items() if used > available}
        if not over:
            return
        resource = max(over, key=lambda r: over[r])
        used, available = self.resources()[resource]
        parts = self.resource_breakdown()[resource]
        culprit = max(parts, key=lambda c: parts[c])
        key = _KEYS.get(culprit) or culprit  # buffers.weight_kb ... are keys already
        others = [r.upper() for r in over if r != resource]
        also = f" ({', '.join(others)} over too)" if others else ""
        raise InputError(
            f"{self.target.name}: the design does not fit {self.target.device.part}: {resource.upper()} needs "
            f"{used:,.0f} of {available:,.0f} (over by {used - available:,.0f}; {culprit} uses {parts[culprit]:,.0f}); "
            f"reduce {key}{also}"
        )

    def energy(
        self, macs_by_bits: Mapping[int, int], onchip_bytes: int, offchip_bytes: int, cycles: int
    ) -> dict[str, float]:
        """mJ: ``mac``, ``onchip``, ``offchip``, ``static``."""
        t = self.target
        return event_energy_mj(t.energy, t.clock_mhz, macs_by_bits, onchip_bytes, offchip_bytes, cycles)


def _product(pair: tuple[int, int]) -> int:
    return pair[0] * pair[1]
