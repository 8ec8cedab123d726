"""A systolic-array ASIC whose area and energy follow the design: array size, SRAM capacity, node and clock.

Timing is SCALE-Sim v3's (``hw.perf.systolic``): a GEMM takes ``batch x passes`` invocations of the array, each
``systolic_cycles(m, n, k, rows, cols, dataflow)``; vector work is priced from the cost table, moves as on the NPU.

Area (mm^2, ``area_breakdown_mm2``) is the sum of components at the 45 nm reference node, scaled to
``technology.node_nm`` by Stillmaker & Baas's area factor (``hw.targets.technology``):

    PE         mult8 x (in_bits x w_bits / 64) + add32 x acc_bits / 32 + register_bit x (in + w + acc bits)
    pe_array   rows x cols x PE
    sram_<op>  <op>_kb x 8192 bits x sram_bit                                (act, weight, out buffers)
    vector     count x lanes x vector_lane

Energy (``work_energy``, mJ per component, summing to the run's energy) counts events and scales each 45 nm, 0.9 V
figure by Stillmaker & Baas's energy factor for (node, vdd):

    mac           useful MACs (x operand passes) x (mult8 x in x w / 64 + add32 x acc / 32)
    pe_idle       (idle_pe: toggle) every idle PE slot of the run switches like a MAC: (PEs x cycles - MACs) x e_mac
    pe_registers  the PEs' pipeline registers, (in + w + acc) bits each, clocked every cycle of the run
                  (toggle, clocked) or of the array's GEMMs (gated)
    sram_<op>     reads and writes of each operand buffer, counted from the dataflow's fold structure
                  (``sram_traffic``), in ``word_bits`` words at the per-access energy of one ``bank_kb`` bank
    vector        vector-lane operations (elements x per_element + rows x per_row of the cost table) x vector_op,
                  and their operands' SRAM bytes at the activation bank's energy
    dram          off-chip bytes x ``energy.pj_per_byte_offchip`` (an interface figure: it does not scale with node)
    leakage       area x leakage density (scaled per device by the energy factor, per mm^2 by 1 / area factor)
                  over the run
    static        ``energy.static_w`` over the run (fixed power outside the model, 0 by default)

Why PE slots and register clocks count per cycle of the run rather than per MAC: a PE that holds no mapped element
(a partial fold, the fill and drain skew) still has its clock, and without operand gating its datapath switches;
that is what makes a larger, less utilised array cost more energy per inference (docs/ASIC.md).
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from typing import Protocol, runtime_checkable

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
from hw.models.energy import PJ_TO_MJ, power_energy_mj
from hw.models.fpga import SHUFFLE_MOVES
from hw.perf.systolic import systolic_cycles
from hw.perf.workload import GemmWork, MoveWork, VectorWork, Work
from hw.targets.schema import AsicTarget
from hw.targets.technology import area_factor, energy_factor

__all__ = ["AsicModel", "SiliconModel", "sram_traffic", "sram_pj_per_64b"]

_UM2_PER_MM2 = 1e6
_BITS_PER_KB = 8192


@runtime_checkable
class SiliconModel(Protocol):
    """A model whose design has an area and whose energy follows the work's access counts (the ASIC). The report
    asks it for ``area_mm2`` and prices energy with ``work_energy`` instead of ``AcceleratorModel.energy``."""

    def area_breakdown_mm2(self) -> dict[str, float]:
        """Component -> mm^2 at the target node."""
        ...

    def area_mm2(self) -> float:
        """Total area, mm^2."""
        ...

    def work_energy(self, works: Iterable[Work], offchip_bytes: int, cycles: int) -> dict[str, float]:
        """Energy breakdown in mJ of a run of ``cycles`` that ran ``works`` and moved ``offchip_bytes``."""
        ...


def sram_traffic(work: GemmWork, rows: int, cols: int, dataflow: str) -> dict[str, tuple[int, int]]:
    """Bytes (read, written) of each operand buffer (``act``, ``weight``, ``out``) for the whole GEMM.

    Every operand is written into its buffer once. The streamed operands are read once per fold of the other
    spatial dimension; the stationary one once. Output stationary writes each accumulator once and reads it once
    to drain; ws / is keep partial sums in the out buffer across folds of the reduction (``kf = ceil(k / rows)``):
    kf writes, and kf - 1 reads to accumulate plus one to drain.
    """
    m, n, k = work.m, work.n, work.k
    a = ceil_div(m * k * work.in_bits, 8)
    b = ceil_div(k * n * work.w_bits, 8)
    o = ceil_div(m * n * work.acc_bits, 8)
    if dataflow == "os":
        act, weight, out = (a * ceil_div(n, cols), a), (b * ceil_div(m, rows), b), (o, o)
    else:
        kf = ceil_div(k, rows)
        psums = (o * kf, o * kf)  # (kf - 1) accumulate reads + 1 drain read, kf writes
        if dataflow == "ws":
            act, weight, out = (a * ceil_div(n, cols), a), (b, b), psums
        else:  # "is": inputs stationary, weights streamed per column (m) fold
            act, weight, out = (a, a), (b * ceil_div(m, cols), b), psums
    batch = work.batch
    return {name: (r * batch, w * batch) for name, (r, w) in (("act", act), ("weight", weight), ("out", out))}


def sram_pj_per_64b(table: Mapping[float, float], bank_kb: float) -> float:
    """pJ of one 64-bit access to a ``bank_kb`` KiB bank: log-log interpolation of ``table`` (KiB -> pJ), the end
    segments extended; one entry alone grows with the square root of capacity (a CACTI-like wire-dominated bank:
    its bit lines and word lines lengthen with the side of the array)."""
    points = sorted(table.items())
    if len(points) == 1:
        size, pj = points[0]
        return pj * math.sqrt(bank_kb / size)
    i = 0
    while i < len(points) - 2 and bank_kb > points[i + 1][0]:
        i += 1
    (x0, y0), (x1, y1) = points[i], points[i + 1]
    if y0 <= 0 or y1 <= 0:
        return y0 + (y1 - y0) * (bank_kb - x0) / (x1 - x0)
    slope = math.log(y1 / y0) / math.log(x1 / x0)
    return y0 * (bank_kb / x0) ** slope


class AsicModel:
    """Cost, area and energy model of an ``AsicTarget`` (module docstring)."""

    def __init__(self, target: AsicTarget) -> None:
        self.target = target
        tech = target.technology
        self._area = area_factor(tech.node_nm)
        self._energy = energy_factor(tech.node_nm, tech.vdd)

    # --- timing ---------------------------------------------------------------------------------------------------

    def units(self) -> dict[str, int]:
        """One GEMM array, ``vector.count`` vector units, one DMA engine group."""
        return {"gemm": 1, "vector": self.target.vector.count, "dma": 1}

    def offchip_bytes_per_cycle(self) -> float:
        """The smaller of DRAM bandwidth and what the DMA channels move per cycle, bytes/cycle."""
        return offchip_rate(self.target)

    def peak_macs_per_cycle(self) -> float:
        """rows x cols."""
        return float(self.target.gemm.rows * self.target.gemm.cols)

    def cost(self, work: Work) -> Cost:
        """GEMM -> ``gemm`` (SCALE-Sim cycles); vector and shuffles -> ``vector``; other moves -> ``dma``."""
        t = self.target
        if isinstance(work, GemmWork):
            return self._gemm_cost(work)
        if isinstance(work, VectorWork):
            return vector_cost(t, t.vector, work)
        if isinstance(work, MoveWork):
            if work.kind in SHUFFLE_MOVES:
                return move_on_vector(t.vector, work)
            return dma_move(t, work)
        raise TypeError(f"not a work item: {work!r}")

    def _gemm_cost(self, work: GemmWork) -> Cost:
        g, b = self.target.gemm, self.target.buffers
        passes = operand_passes(work, g)
        per_item = systolic_cycles(work.m, work.n, work.k, g.rows, g.cols, g.dataflow)
        cycles = work.batch * passes * per_item
        half = 0.5 if b.double_buffered else 1.0
        caps = tuple(kb * 1024 * half for kb in (b.act_kb, b.weight_kb, b.out_kb))
        return Cost(
            unit="gemm",
            compute_cycles=cycles,
            tiles=buffer_tiles(work, caps),
            onchip_bytes=gemm_onchip_bytes(work, g.rows, g.cols, g.dataflow),
            detail={"passes": passes, "cycles_per_item": per_item, "dataflow": g.dataflow,
                    "utilization": work.macs / (cycles * g.rows * g.cols)},
        )

    # --- resources and area ---------------------------------------------------------------------------------------

    def resources(self) -> dict[str, tuple[float, float]]:
        """Nothing to budget: an ASIC's size is its area (``area_mm2``), not a fraction of a device."""
        return {}

    def check_fits(self) -> None:
        """A design always fits the die drawn for it."""

    def pe_um2(self) -> float:
        """One PE's area at 45 nm, um^2: multiplier, accumulator adder and its registers."""
        g, a = self.target.gemm, self.target.area
        return (a.mult8_um2 * g.in_bits * g.w_bits / 64 + a.add32_um2 * g.acc_bits / 32
                + a.register_um2_per_bit * (g.in_bits + g.w_bits + g.acc_bits))

    def area_breakdown_mm2(self) -> dict[str, float]:
        """mm^2 at the target node: ``pe_array``, ``sram_act``, ``sram_weight``, ``sram_out``, ``vector``."""
        t = self.target
        g, b, a = t.gemm, t.buffers, t.area
        sram_mm2_per_kb = _BITS_PER_KB * a.sram_um2_per_bit / _UM2_PER_MM2
        parts = {
            "pe_array": g.rows * g.cols * self.pe_um2() / _UM2_PER_MM2,
            "sram_act": b.act_kb * sram_mm2_per_kb,
            "sram_weight": b.weight_kb * sram_mm2_per_kb,
            "sram_out": b.out_kb * sram_mm2_per_kb,
            "vector": t.vector.count * t.vector.lanes * a.vector_lane_um2 / _UM2_PER_MM2,
        }
        return {name: mm2 * self._area for name, mm2 in parts.items()}

    def area_mm2(self) -> float:
        """Total area at the target node, mm^2."""
        return sum(self.area_breakdown_mm2().values())

    def leakage_w(self) -> float:
        """Leakage power of the whole design, W."""
        density = self.target.leakage.mw_per_mm2 * self._energy / self._area  # per device x devices per mm^2
        return self.area_mm2() * density * 1e-3

    # --- energy ---------------------------------------------------------------------------------------------------

    def mac_pj(self) -> float:
        """One useful MAC on a PE at the target node, pJ: multiply plus accumulate."""
        g, d = self.target.gemm, self.target.dynamic
        return (d.mult8_pj * g.in_bits * g.w_bits / 64 + d.add32_pj * g.acc_bits / 32) * self._energy

    def pe_register_pj(self) -> float:
        """One PE's pipeline registers clocked once, pJ."""
        g = self.target.gemm
        return self.target.dynamic.register_pj_per_bit * (g.in_bits + g.w_bits + g.acc_bits) * self._energy

    def sram_pj_per_byte(self) -> float:
        """One byte of a ``word_bits`` access to one ``bank_kb`` bank at the target node, pJ."""
        b = self.target.buffers
        return sram_pj_per_64b(self.target.dynamic.sram_pj_per_64b, b.bank_kb) / 8 * self._energy

    def work_energy(self, works: Iterable[Work], offchip_bytes: int, cycles: int) -> dict[str, float]:
        """mJ per component (module docstring) of a run of ``cycles`` at ``clock_mhz`` that ran ``works``."""
        t = self.target
        g = t.gemm
        pes = g.rows * g.cols
        sram_byte = self.sram_pj_per_byte()
        macs = busy = vector_ops = 0
        sram = {"act": 0, "weight": 0, "out": 0}
        for work in works:
            if isinstance(work, GemmWork):
                passes = operand_passes(work, g)
                macs += work.macs * passes
                busy += work.batch * passes * systolic_cycles(work.m, work.n, work.k, g.rows, g.cols, g.dataflow)
                for name, (read, written) in sram_traffic(work, g.rows, g.cols, g.dataflow).items():
                    sram[name] += read + written
            elif isinstance(work, VectorWork):
                cost = self.cost(work)
                vector_ops += work.elements * cost.detail["per_element"] + work.rows * cost.detail["per_row"]
                sram["act"] += cost.onchip_bytes
            elif isinstance(work, MoveWork):
                sram["act"] += self.cost(work).onchip_bytes
        run = cycles if g.idle_pe != "gated" else busy
        out = {
            "mac": macs * self.mac_pj() * PJ_TO_MJ,
            "pe_idle": max(0, pes * cycles - macs) * self.mac_pj() * PJ_TO_MJ if g.idle_pe == "toggle" else 0.0,
            "pe_registers": pes * run * self.pe_register_pj() * PJ_TO_MJ,
        }
        out.update({f"sram_{name}": nbytes * sram_byte * PJ_TO_MJ for name, nbytes in sram.items()})
        out["vector"] = vector_ops * t.dynamic.vector_op_pj * self._energy * PJ_TO_MJ
        out["dram"] = offchip_bytes * t.energy.pj_per_byte_offchip * PJ_TO_MJ
        out["leakage"] = power_energy_mj(self.leakage_w(), cycles, t.clock_mhz)
        out["static"] = power_energy_mj(t.energy.static_w, cycles, t.clock_mhz)
        return out

    def energy(
        self, macs_by_bits: Mapping[int, int], onchip_bytes: int, offchip_bytes: int, cycles: int
    ) -> dict[str, float]:
        """mJ from aggregate counts, for callers without the work items: every MAC at the array's width, all
        on-chip bytes at one bank's per-byte energy, PE slots and registers as ``work_energy`` (no ``gated``
        distinction: registers over the whole run). ``work_energy`` splits SRAM traffic by operand."""
        t = self.target
        pes = t.gemm.rows * t.gemm.cols
        macs = sum(macs_by_bits.values())
        return {
            "mac": macs * self.mac_pj() * PJ_TO_MJ,
            "pe_idle": max(0, pes * cycles - macs) * self.mac_pj() * PJ_TO_MJ if t.gemm.idle_pe == "toggle" else 0.0,
            "pe_registers": pes * cycles * self.pe_register_pj() * PJ_TO_MJ,
            "sram": onchip_bytes * self.sram_pj_per_byte() * PJ_TO_MJ,
            "dram": offchip_bytes * t.energy.pj_per_byte_offchip * PJ_TO_MJ,
            "leakage": power_energy_mj(self.leakage_w(), cycles, t.clock_mhz),
            "static": power_energy_mj(t.energy.static_w, cycles, t.clock_mhz),
        }
