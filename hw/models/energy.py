"""Energy from event counts: MACs by operand width, on-chip and off-chip bytes, and static power over time.

All inputs are counts (MACs, bytes) and a run length in cycles at the target clock; the output is mJ per component.
The components sum to the run's energy; there is no separate total key. ``macs_by_bits`` keys are the operand
width of a MAC (the wider of a GEMM's ``in_bits`` and ``w_bits``).
"""

from __future__ import annotations

from collections.abc import Mapping

from hw.targets.schema import Energy

__all__ = ["PJ_TO_MJ", "seconds", "event_energy_mj", "power_energy_mj"]

PJ_TO_MJ = 1e-9
"""1 pJ = 1e-12 J = 1e-9 mJ."""


def seconds(cycles: int, clock_mhz: float) -> float:
    """Wall time of ``cycles`` at ``clock_mhz``, seconds."""
    return cycles / (clock_mhz * 1e6)


def event_energy_mj(
    energy: Energy, clock_mhz: float, macs_by_bits: Mapping[int, int], onchip_bytes: int, offchip_bytes: int,
    cycles: int,
) -> dict[str, float]:
    """``{"mac", "onchip", "offchip", "static"}`` in mJ: counts times the target's pJ figures, plus ``static_w``
    over the run (``cycles`` at ``clock_mhz``)."""
    mac_pj = sum(count * energy.mac_pj(bits) for bits, count in macs_by_bits.items())
    return {
        "mac": mac_pj * PJ_TO_MJ,
        "onchip": onchip_bytes * energy.pj_per_byte_onchip * PJ_TO_MJ,
        "offchip": offchip_bytes * energy.pj_per_byte_offchip * PJ_TO_MJ,
        "static": power_energy_mj(energy.static_w, cycles, clock_mhz),
    }


def power_energy_mj(watts: float, cycles: int, clock_mhz: float) -> float:
    """Energy of drawing ``watts`` for ``cycles`` at ``clock_mhz``, mJ."""
    return watts * seconds(cycles, clock_mhz) * 1e3
