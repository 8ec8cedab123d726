"""A fixed-function NPU: several MAC arrays, vector units and one scratchpad (Hexagon HMX/HVX, AMD XDNA tiles).

``mode: independent`` gives the scheduler ``mac_arrays.count`` GEMM units, each pricing a GEMM on one array.
``mode: ganged`` gives it one GEMM unit that spreads each GEMM over all arrays, splitting the batch, the output
columns or the output rows, whichever finishes first (an NPU runtime maps one op over the whole tile array).
"""

from __future__ import annotations

from collections.abc import Mapping

from hw.models.base import (
    Cost,
    buffer_tiles,
    ceil_div,
    dma_move,
    gemm_onchip_bytes,
    move_on_vector,
    offchip_rate,
    operand_passes,
    vector_cost,
)
from hw.models.energy import event_energy_mj
from hw.models.fpga import SHUFFLE_MOVES
from hw.perf.systolic import systolic_cycles
from hw.perf.workload import GemmWork, MoveWork, VectorWork, Work
from hw.targets.schema import NpuTarget, Vector

__all__ = ["NpuModel"]


class NpuModel:
    """Cost and energy model of an ``NpuTarget``."""

    def __init__(self, target: NpuTarget) -> None:
        self.target = target
        self._ganged = target.mode == "ganged"
        v = target.vector
        # Ganged: all vector units act as one with count x lanes lanes.
        self._vector: Vector = v.model_copy(update={"count": 1, "lanes": v.count * v.lanes}) if self._ganged else v

    def units(self) -> dict[str, int]:
        """``gemm`` and ``vector`` units (one each when ganged, else one per array / vector unit) and ``dma``."""
        if self._ganged:
            return {"gemm": 1, "vector": 1, "dma": 1}
        return {"gemm": self.target.mac_arrays.count, "vector": self.target.vector.count, "dma": 1}

    def offchip_bytes_per_cycle(self) -> float:
        """The smaller of DRAM bandwidth and the DMA channels' width, bytes/cycle."""
        return offchip_rate(self.target)

    def peak_macs_per_cycle(self) -> float:
        """count x rows x cols."""
        a = self.target.mac_arrays
        return float(a.count * a.rows * a.cols)

    def cost(self, work: Work) -> Cost:
        """GEMM -> ``gemm``; vector and shuffles -> ``vector``; other moves -> ``dma``."""
        t = self.target
        if isinstance(work, GemmWork):
            return self._gemm(work)
        if isinstance(work, VectorWork):
            return vector_cost(t, self._vector, work)
        if isinstance(work, MoveWork):
            if work.kind in SHUFFLE_MOVES:
                return move_on_vector(self._vector, work)
            return dma_move(t, work)
        raise TypeError(f"not a work item: {work!r}")

    def _gemm(self, work: GemmWork) -> Cost:
        a = self.target.mac_arrays
        passes = operand_passes(work, a)

        def cyc(m: int, n: int, k: int) -> int:
            return systolic_cycles(m, n, k, a.rows, a.cols, a.dataflow)

        if self._ganged and a.count > 1:
            c = a.count
            splits = {
                "batch": ceil_div(work.batch, c) * cyc(work.m, work.n, work.k),
                "n": work.batch * cyc(work.m, ceil_div(work.n, c), work.k),
                "m": work.batch * cyc(ceil_div(work.m, c), work.n, work.k),
            }
            split = min(splits, key=lambda s: splits[s])
            cycles, arrays, scratch = splits[split] * passes, c, self.target.sram_kb
        else:
            split, cycles, arrays = "none", work.batch * cyc(work.m, work.n, work.k) * passes, 1
            scratch = self.target.sram_kb / a.count
        return Cost(
            unit="gemm",
            compute_cycles=cycles,
            tiles=buffer_tiles(work, scratch * 1024 / 2),  # the scratchpad is double buffered by the runtime
            onchip_bytes=gemm_onchip_bytes(work, a.rows, a.cols, a.dataflow),
            detail={"split": split, "passes": passes,
                    "utilization": work.macs / (cycles * arrays * a.rows * a.cols)},
        )

    def resources(self) -> dict[str, tuple[float, float]]:
        """Fixed silicon: nothing to budget."""
        return {}

    def check_fits(self) -> None:
        """Fixed silicon always fits."""

    def energy(
        self, macs_by_bits: Mapping[int, int], onchip_bytes: int, offchip_bytes: int, cycles: int
    ) -> dict[str, float]:
        """mJ: ``mac``, ``onchip``, ``offchip``, ``static``."""
        t = self.target
        return event_energy_mj(t.energy, t.clock_mhz, macs_by_bits, onchip_bytes, offchip_bytes, cycles)
