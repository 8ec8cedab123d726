"""The energy of a run on any model: the one function the report and the mapping search price energy with.

A model that is a ``SiliconModel`` (the ASIC) prices each work item's access counts (``work_energy``: SRAM traffic
per operand, PE-cycles, leakage over the run); every other model prices aggregate counts (``energy``: MACs by width,
on-chip and off-chip bytes, static power over the run). ``compiler/summary.py`` prices a compile's whole run with
it, ``compiler/schedule/mapping.py`` one candidate mapping of one GEMM, so a mapping chosen for its energy is chosen
by the figures the report then shows.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping

from hw.models.asic import SiliconModel
from hw.models.base import AcceleratorModel
from hw.perf.workload import Work

__all__ = ["run_energy_mj", "total_mj"]


def run_energy_mj(model: AcceleratorModel, works: Iterable[Work], macs_by_bits: Mapping[int, int],
                  onchip_bytes: int, offchip_bytes: int, cycles: int) -> dict[str, float]:
    """mJ per component of a run of ``cycles`` (at the target clock) that ran ``works`` (``macs_by_bits`` MACs,
    ``onchip_bytes`` buffer bytes: what a model without access counts prices) and moved ``offchip_bytes``."""
    if isinstance(model, SiliconModel):
        return model.work_energy(works, offchip_bytes, cycles)
    return model.energy(macs_by_bits, onchip_bytes, offchip_bytes, cycles)


def total_mj(breakdown: Mapping[str, float]) -> float:
    """The run's energy, mJ: its ``total`` where a model gives one, else the sum of its components."""
    return breakdown.get("total", sum(v for k, v in breakdown.items() if k != "total"))
