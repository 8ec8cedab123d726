"""FPGA resource estimates (LUT, FF, DSP, BRAM18, URAM) for the parametric accelerator, from its YAML sizes and the
units its vector lanes hold.

Every constant sits in ``FpgaCalibration``. The array's and the vector units' LUT / FF / DSP figures are fitted to
Yosys ``synth_xilinx`` of our RTL kernels (``make calibrate`` = ``python -m hw.rtl.calibrate`` writes
``hw/models/calibration.json``, loaded here as the defaults); the DMA, control and generic vector ALU figures are ⚠
defaults (not RTL we write); the DSP packing and memory-block rules are exact device facts.

The vector lanes (``vector.count x vector.lanes`` of them) each hold one copy of every unit the design needs:

``estimate(target, cal, lane_units=names)``
    a lane is the sum of those units' per-lane figures (``FpgaCalibration.unit_costs``): an RTL unit's fitted fixed
    logic (a row-wise unit's intercept; requant's slope per lane; a row buffer is left to the buffer model), and,
    for ``VECTOR_ALU``, the ⚠ default generic ALU (``lut_per_alu`` ...) that runs what has no RTL unit (operations
    priced from the target's cost table: exact softmax / GELU / LayerNorm on an FPGA, residual adds, shuffles).
    A compile passes the units its work needed (``hw.models.fpga.FpgaModel.design_units``), so ``--gelu shiftgelu-row``
    costs its heavier unit, a float compile no integer unit at all.
``estimate(target, cal)``
    without a workload (``codesign targets``, the fit check before a compile, a target-only sweep): the default
    lane, ``DEFAULT_LANE_UNITS`` (calibration.json ``lane_units``: shiftmax, the per-element shiftgelu,
    ilayernorm and one requant lane, at the widths ``codesign rtl`` picks for a quantized ViT), whose fitted sum is
    ``lut_per_lane`` / ``ff_per_lane`` / ``dsp_per_lane``.
"""

from __future__ import annotations

import json
from collections.abc import Collection
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any

from hw.models.base import ceil_div
from hw.targets.schema import FpgaTarget

__all__ = ["FpgaCalibration", "DEFAULT_CALIBRATION", "CALIBRATION_FILE", "load_calibration", "load_unit_costs",
           "dsp_per_mac", "estimate", "lane_cost", "unit_cost", "RESOURCES", "LANE_RESOURCES", "VECTOR_ALU",
           "DEFAULT_LANE_UNITS"]

CALIBRATION_FILE = "calibration.json"
"""The fitted constants shipped next to this module (package data of ``hw.models``)."""

LANE_RESOURCES = ("lut", "ff", "dsp")
"""The resources a vector lane's units are charged in (their row buffers go to the buffer model)."""


def _document(path: str | Path | None) -> dict[str, Any]:
    if path is None:
        return json.loads(resources.files("hw.models").joinpath(CALIBRATION_FILE).read_text())
    return json.loads(Path(path).read_text())


def _fields(doc: dict[str, Any]) -> dict[str, float]:
    return {name: float(value) for name, value in doc.get("fpga_calibration", {}).items()}


def _unit_costs(doc: dict[str, Any]) -> dict[str, tuple[float, float, float]]:
    out = {}
    for unit, fit in doc.get("fits", {}).items():
        if unit == "systolic_gemm":
            continue
        lut, ff, dsp = (float(fit[r].get("per_lanes", fit[r]["fixed"])) for r in LANE_RESOURCES)
        out[unit] = (lut, ff, dsp)
    return out


def load_calibration(path: str | Path | None = None) -> dict[str, float]:
    """The fitted ``FpgaCalibration`` fields (name -> value) of a ``make calibrate`` document.

    ``path``: a JSON file written by ``python -m hw.rtl.calibrate``; default the bundled ``hw/models/calibration.json``.
    """
    return _fields(_document(path))


def load_unit_costs(path: str | Path | None = None) -> dict[str, tuple[float, float, float]]:
    """unit name -> (LUT, FF, DSP) that one vector lane's copy of that RTL unit costs, from the per-unit fits of a
    ``make calibrate`` document (``path`` as for ``load_calibration``).

    A row-wise unit (fitted against its row length) costs its intercept, the fixed logic; its slope is the row
    buffer, which the buffer model holds. ``requant`` is fitted against its lane count: one lane costs its slope.
    The GEMM array's fit (``systolic_gemm``) is not a lane unit.
    """
    return _unit_costs(_document(path))


_BUNDLED = _document(None)
_FIT = _fields(_BUNDLED)

VECTOR_ALU = "vector_alu"
"""The generic vector ALU a lane needs for work no RTL unit runs (costed from the target's vector cost table)."""

DEFAULT_LANE_UNITS: tuple[str, ...] = tuple(_BUNDLED.get("lane_units", {}))
"""The lane a target-only estimate charges: calibration.json ``lane_units`` (the I-ViT integer set: shiftmax,
per-element shiftgelu, ilayernorm, requant), fitted as ``lut_per_lane`` / ``ff_per_lane`` / ``dsp_per_lane``."""


def _fitted(name: str, default: float) -> float:
    """The bundled fit of ``name``, or ``default`` where the calibration does not fit it."""
    return _FIT.get(name, default)


RESOURCES = ("lut", "ff", "dsp", "bram18", "uram")


@dataclass(frozen=True)
class FpgaCalibration:
    """Per-component resource costs. Counts are per PE, per vector lane (or per unit in a lane), per DMA channel,
    or fixed.

    ``fit`` below: the default is the bundled Yosys fit (``calibration.json``, see ``hw.rtl.calibrate`` for what was
    synthesized); the number after ``or`` is the hand default used when a calibration does not fit that field.
    """

    # A PE's MAC sits in a DSP48E2; the fabric around it forwards operands and drains the result.
    lut_per_pe: float = _fitted("lut_per_pe", 16.0)       # fit: systolic_gemm LUTs per PE (or 16: operand muxes)
    ff_per_pe_bit: float = _fitted("ff_per_pe_bit", 1.0)  # fit: FFs per PE per operand/accumulator bit (or 1)
    # The default lane (DEFAULT_LANE_UNITS), charged when no workload names the units: one copy of each RTL row
    # unit of the I-ViT set, shiftmax, shiftgelu in its per-element form (``--gelu shiftgelu``: no row buffer, no max
    # pass), ilayernorm, plus one requant lane, at the widths ``codesign rtl`` picks for a quantized ViT.
    lut_per_lane: float = _fitted("lut_per_lane", 400.0)  # fit (or ⚠ 400: 32-bit ALU, shifter, LUT, control)
    ff_per_lane: float = _fitted("ff_per_lane", 400.0)    # fit (or ⚠ 400)
    dsp_per_lane: float = _fitted("dsp_per_lane", 1.0)    # fit: the units' multipliers (or 1: one 27x18 multiplier)
    # A lane sized to a workload: (unit, LUT, FF, DSP) per lane of each fitted RTL unit (load_unit_costs), e.g. the
    # published row-max ShiftGELU ("shiftgelu-row", ``--gelu shiftgelu-row``), "online_softmax", "topk_router" ...
    unit_costs: tuple[tuple[str, float, float, float], ...] = tuple(
        sorted((name, *cost) for name, cost in _unit_costs(_BUNDLED).items()))
    # ... and the generic ALU (VECTOR_ALU) for work no RTL unit runs: a 32-bit ALU, shifter, LUT and control.
    lut_per_alu: float = 400.0           # ⚠ default
    ff_per_alu: float = 400.0            # ⚠ default
    dsp_per_alu: float = 1.0             # ⚠ default: one 27x18 multiplier
    # A DMA channel: an AXI DataMover-class engine with its FIFO.
    lut_per_dma: float = 1500.0          # ⚠ default
    ff_per_dma: float = 2000.0           # ⚠ default
    bram18_per_dma: float = 2.0          # ⚠ default: a 4 KiB burst FIFO
    # Controller, instruction sequencer, AXI-Lite registers.
    lut_fixed: float = 5000.0            # ⚠ default
    ff_fixed: float = 8000.0             # ⚠ default
    # Memory blocks. A BRAM18 holds 18 Kb and a URAM 288 Kb, but the ninth bit of each byte (parity / ECC) is of no
    # use to byte-wide int8 data, so the usable capacity is 16 Kb = 2 KiB and 256 Kb = 32 KiB.
    bram18_bytes: int = 2048
    uram_bytes: int = 32768
    bram18_port_bits: int = 36           # widest BRAM18 port (simple dual port)
    uram_port_bits: int = 72             # URAM port width
    uram_min_kb: float = 64.0            # ``memory: auto`` puts buffers of this size and larger in URAM


DEFAULT_CALIBRATION = FpgaCalibration()
"""The bundled calibration: Yosys fits where ``calibration.json`` has them, hand defaults elsewhere."""


def dsp_per_mac(a_bits: int, b_bits: int) -> float:
    """DSP48E2 slices per MAC for ``a_bits`` x ``b_bits`` operands.

    Two int8 MACs share one DSP48E2 when they share an operand: the 27-bit pre-adder packs two 8-bit values
    18 bits apart, ``(a << 18 + b) * c``, and the 45-bit product holds ``a*c`` and ``b*c`` side by side (Xilinx
    WP486, "Deep Learning with INT8 Optimization on Xilinx Devices"). In a systolic array neighbouring PEs share
    the streamed operand, so a rows x cols int8 array needs rows*cols/2 DSPs. Up to 27x18 bits one MAC is one DSP;
    wider operands tile the 27x18 multiplier.
    """
    wide, narrow = max(a_bits, b_bits), min(a_bits, b_bits)
    if wide <= 8:
        return 0.5
    if wide <= 27 and narrow <= 18:
        return 1.0
    return float(ceil_div(wide, 27) * ceil_div(narrow, 18))


def unit_cost(unit: str, cal: FpgaCalibration = DEFAULT_CALIBRATION) -> dict[str, float]:
    """LUT, FF and DSP of one lane's copy of ``unit`` (a name of ``cal.unit_costs``, or ``VECTOR_ALU``). Raises
    ``ValueError`` for a unit the calibration has no fit of."""
    if unit == VECTOR_ALU:
        return {"lut": cal.lut_per_alu, "ff": cal.ff_per_alu, "dsp": cal.dsp_per_alu}
    for name, *counts in cal.unit_costs:
        if name == unit:
            return dict(zip(LANE_RESOURCES, counts, strict=True))
    known = ", ".join(sorted([name for name, *_ in cal.unit_costs] + [VECTOR_ALU]))
    raise ValueError(f"no resource fit for vector unit '{unit}' (calibrated: {known})")


def lane_cost(units: Collection[str] | None, cal: FpgaCalibration = DEFAULT_CALIBRATION) -> dict[str, float]:
    """LUT, FF and DSP of one vector lane holding ``units`` (the sum of their ``unit_cost``); ``None``: the default
    lane (``lut_per_lane`` ...)."""
    if units is None:
        return {"lut": cal.lut_per_lane, "ff": cal.ff_per_lane, "dsp": cal.dsp_per_lane}
    lane: dict[str, float] = dict.fromkeys(LANE_RESOURCES, 0.0)
    for unit in units:
        for resource, count in unit_cost(unit, cal).items():
            lane[resource] += count
    return lane


def estimate(target: FpgaTarget, cal: FpgaCalibration = DEFAULT_CALIBRATION,
             lane_units: Collection[str] | None = None) -> dict[str, dict[str, float]]:
    """resource -> component (``gemm``, ``vector``, ``buffers.<name>``, ``dma``, ``control``) -> count.

    ``lane_units``: the units each vector lane holds (``lane_cost``); ``None``, the default lane (module docstring).
    """
    g, v, b, d = target.gemm, target.vector, target.buffers, target.dma
    pes = g.rows * g.cols
    lanes = v.count * v.lanes
    lane = lane_cost(lane_units, cal)
    out: dict[str, dict[str, float]] = {r: {} for r in RESOURCES}
    out["dsp"]["gemm"] = float(ceil_div(int(pes * dsp_per_mac(g.in_bits, g.w_bits) * 2), 2))
    out["lut"]["gemm"] = pes * cal.lut_per_pe
    # The streaming array (gemm.fold_overlap, hw/rtl/systolic_stream.py) adds a shadow accumulator per PE.
    shadow = g.acc_bits if getattr(g, "fold_overlap", False) and g.dataflow == "os" else 0
    out["ff"]["gemm"] = pes * cal.ff_per_pe_bit * (g.in_bits + g.w_bits + g.acc_bits + shadow)
    for resource in LANE_RESOURCES:
        out[resource]["vector"] = lanes * lane[resource]
    out["lut"]["dma"] = d.channels * cal.lut_per_dma
    out["ff"]["dma"] = d.channels * cal.ff_per_dma
    out["bram18"]["dma"] = d.channels * cal.bram18_per_dma
    out["lut"]["control"] = cal.lut_fixed
    out["ff"]["control"] = cal.ff_fixed
    # Each buffer must deliver one operand vector per cycle: its port width sets a minimum number of blocks.
    # Sub-arrays (gemm.partitions) each take their own weight vector and hand over their own result rows.
    parts = getattr(g, "partitions", 1)
    ports = {"weight_kb": parts * g.cols * g.w_bits, "act_kb": g.rows * g.in_bits,
             "out_kb": parts * g.cols * g.acc_bits}
    for key, port_bits in ports.items():
        kb = getattr(b, key)
        use_uram = b.memory == "uram" or (b.memory == "auto" and target.device.uram > 0 and kb >= cal.uram_min_kb)
        block_bytes, block_port = (cal.uram_bytes, cal.uram_port_bits) if use_uram else (
            cal.bram18_bytes, cal.bram18_port_bits)
        blocks = max(ceil_div(int(kb * 1024), block_bytes), ceil_div(port_bits, block_port))
        out["uram" if use_uram else "bram18"][f"buffers.{key}"] = float(blocks)
    return out
