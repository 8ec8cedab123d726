"""A GPU as a roofline baseline: every op is one kernel bounded by compute or by memory, plus a launch overhead.

    cycles = max(macs / (peak * compute_efficiency), bytes / (bandwidth * memory_efficiency)) + launch

``peak`` is the int8 tensor-core peak when both operands are 8 bits or narrower, else the fp16 peak. Vector ops and
moves are memory bound (read once, write once). Energy assumes the board draws its TDP while running.
"""

from __future__ import annotations

import math
from collections.abc import Mapping

from hw.models.base import Cost, ceil_div
from hw.models.energy import power_energy_mj
from hw.perf.workload import GemmWork, MoveWork, VectorWork, Work
from hw.targets.schema import GpuTarget

__all__ = ["GpuModel"]

_TILE_BYTES = 64 * 1024  # bytes per scheduler tile: small ops stay one tile
_MAX_TILES = 64  # keeps the serial head/tail of a tiled task under 2% of it and the scheduler's events few


class GpuModel:
    """Roofline cost and TDP energy of a ``GpuTarget``."""

    def __init__(self, target: GpuTarget) -> None:
        self.target = target
        t = target
        self._launch = t.gpu.launch_us * t.clock_mhz  # us x cycles/us

    def units(self) -> dict[str, int]:
        """The whole GPU is one unit: kernels run one after another."""
        return {"gpu": 1}

    def offchip_bytes_per_cycle(self) -> float:
        """Achievable memory bandwidth (``memory_efficiency`` of the data sheet), bytes/cycle."""
        t = self.target
        return t.offchip.bandwidth_gbps * 1e9 * t.gpu.memory_efficiency / (t.clock_mhz * 1e6)

    def macs_per_cycle(self, bits: int) -> float:
        """Data-sheet MACs/cycle for ``bits``-bit operands (int8 tensor cores up to 8 bits, fp16 above)."""
        tops = self.target.gpu.peak_int8_tops if bits <= 8 else self.target.gpu.peak_fp16_tops
        return tops * 1e12 / 2 / (self.target.clock_mhz * 1e6)

    def peak_macs_per_cycle(self) -> float:
        """The int8 peak, MACs/cycle."""
        return self.macs_per_cycle(8)

    def cost(self, work: Work) -> Cost:
        """Every op runs on ``gpu``; ``detail`` says which roof bound it."""
        t = self.target
        if isinstance(work, GemmWork):
            a, b, out = (ceil_div(work.m * work.k * work.in_bits, 8), ceil_div(work.k * work.n * work.w_bits, 8),
                         ceil_div(work.m * work.n * work.in_bits, 8))  # output requantised to the input width
            nbytes = work.batch * (a + b + out)
            compute = work.macs / (self.macs_per_cycle(max(work.in_bits, work.w_bits)) * t.gpu.compute_efficiency)
        elif isinstance(work, VectorWork):
            nbytes, compute = 2 * ceil_div(work.elements * work.bits, 8), 0.0
        elif isinstance(work, MoveWork):
            nbytes, compute = 2 * work.bytes, 0.0
        else:
            raise TypeError(f"not a work item: {work!r}")
        memory = nbytes / self.offchip_bytes_per_cycle()
        cycles = math.ceil(max(compute, memory) + self._launch - 1e-9)
        # compute_cycles already includes the memory roof; tiles let the scheduler overlap the task's own transfers
        # with it (as a kernel streams its operands), instead of adding them in series.
        tiles = max(1, min(_MAX_TILES, ceil_div(nbytes, _TILE_BYTES)))
        return Cost(unit="gpu", compute_cycles=max(cycles, 1), tiles=tiles, onchip_bytes=nbytes,
                    detail={"bound": "compute" if compute >= memory else "memory",
                            "compute_cycles": compute, "memory_cycles": memory, "launch_cycles": self._launch})

    def resources(self) -> dict[str, tuple[float, float]]:
        """Nothing to budget."""
        return {}

    def check_fits(self) -> None:
        """A GPU always fits."""

    def energy(
        self, macs_by_bits: Mapping[int, int], onchip_bytes: int, offchip_bytes: int, cycles: int
    ) -> dict[str, float]:
        """mJ: ``static`` (idle power) + ``dynamic`` (TDP minus idle) over the run; counts are not used."""
        t = self.target
        static = min(t.energy.static_w, t.gpu.tdp_w)
        return {
            "static": power_energy_mj(static, cycles, t.clock_mhz),
            "dynamic": power_energy_mj(t.gpu.tdp_w - static, cycles, t.clock_mhz),
        }
