"""FPGA resource estimates (LUT, FF, DSP, BRAM18, URAM) for the parametric accelerator, from its YAML sizes.

Every constant sits in ``FpgaCalibration``. The array's and the vector lanes' LUT / FF / DSP figures are fitted to
Yosys ``synth_xilinx`` of our RTL kernels (``make calibrate`` = ``python -m hw.rtl.calibrate`` writes
``hw/models/calibration.json``, loaded here as the defaults); the DMA and control figures are ⚠ defaults (not RTL we
write); the DSP packing and memory-block rules are exact device facts.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any

from hw.models.base import ceil_div
from hw.targets.schema import FpgaTarget

__all__ = ["FpgaCalibration", "DEFAULT_CALIBRATION", "CALIBRATION_FILE", "load_calibration", "dsp_per_mac",
           "estimate", "RESOURCES"]

CALIBRATION_FILE = "calibration.json"
"""The fitted constants shipped next to this module (package data of ``hw.models``)."""


def load_calibration(path: str | Path | None = None) -> dict[str, float]:
    """The fitted ``FpgaCalibration`` fields (name -> value) of a ``make calibrate`` document.

    ``path``: a JSON file written by ``python -m hw.rtl.calibrate``; default the bundled ``hw/models/calibration.json``.
    """
    if path is None:
        text = resources.files("hw.models").joinpath(CALIBRATION_FILE).read_text()
    else:
        text = Path(path).read_text()
    doc: dict[str, Any] = json.loads(text)
    return {name: float(value) for name, value in doc.get("fpga_calibration", {}).items()}


_FIT = load_calibration()


def _fitted(name: str, default: float) -> float:
    """The bundled fit of ``name``, or ``default`` where the calibration does not fit it."""
    return _FIT.get(name, default)


RESOURCES = ("lut", "ff", "dsp", "bram18", "uram")


@dataclass(frozen=True)
class FpgaCalibration:
    """Per-component resource costs. Counts are per PE, per vector lane, per DMA channel, or fixed.

    ``fit`` below: the default is the bundled Yosys fit (``calibration.json``, see ``hw.rtl.calibrate`` for what was
    synthesized); the number after ``or`` is the hand default used when a calibration does not fit that field.
    """

    # A PE's MAC sits in a DSP48E2; the fabric around it forwards operands and drains the result.
    lut_per_pe: float = _fitted("lut_per_pe", 16.0)       # fit: systolic_gemm LUTs per PE (or 16: operand muxes)
    ff_per_pe_bit: float = _fitted("ff_per_pe_bit", 1.0)  # fit: FFs per PE per operand/accumulator bit (or 1)
    # A vector lane is one copy of each RTL row unit the cost model times (hw.models.fpga): shiftmax, shiftgelu in
    # its per-element form (``--gelu shiftgelu``: no row buffer, no max pass), ilayernorm, plus one requant lane, at
    # the widths ``codesign rtl`` picks for a quantized ViT; row buffers are left to the buffer model. The published
    # row-max ShiftGELU (``--gelu shiftgelu-row``) is heavier (calibration.json fits "shiftgelu-row").
    lut_per_lane: float = _fitted("lut_per_lane", 400.0)  # fit (or ⚠ 400: 32-bit ALU, shifter, LUT, control)
    ff_per_lane: float = _fitted("ff_per_lane", 400.0)    # fit (or ⚠ 400)
    dsp_per_lane: float = _fitted("dsp_per_lane", 1.0)    # fit: the units' multipliers (or 1: one 27x18 multiplier)
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


def estimate(target: FpgaTarget, cal: FpgaCalibration = DEFAULT_CALIBRATION) -> dict[str, dict[str, float]]:
    """resource -> component (``gemm``, ``vector``, ``buffers.<name>``, ``dma``, ``control``) -> count."""
    g, v, b, d = target.gemm, target.vector, target.buffers, target.dma
    pes = g.rows * g.cols
    lanes = v.count * v.lanes
    out: dict[str, dict[str, float]] = {r: {} for r in RESOURCES}
    out["dsp"]["gemm"] = float(ceil_div(int(pes * dsp_per_mac(g.in_bits, g.w_bits) * 2), 2))
    out["lut"]["gemm"] = pes * cal.lut_per_pe
    out["ff"]["gemm"] = pes * cal.ff_per_pe_bit * (g.in_bits + g.w_bits + g.acc_bits)
    out["dsp"]["vector"] = lanes * cal.dsp_per_lane
    out["lut"]["vector"] = lanes * cal.lut_per_lane
    out["ff"]["vector"] = lanes * cal.ff_per_lane
    out["lut"]["dma"] = d.channels * cal.lut_per_dma
    out["ff"]["dma"] = d.channels * cal.ff_per_dma
    out["bram18"]["dma"] = d.channels * cal.bram18_per_dma
    out["lut"]["control"] = cal.lut_fixed
    out["ff"]["control"] = cal.ff_fixed
    # Each buffer must deliver one operand vector per cycle: its port width sets a minimum number of blocks.
    ports = {"weight_kb": g.cols * g.w_bits, "act_kb": g.rows * g.in_bits, "out_kb": g.cols * g.acc_bits}
    for key, port_bits in ports.items():
        kb = getattr(b, key)
        use_uram = b.memory == "uram" or (b.memory == "auto" and target.device.uram > 0 and kb >= cal.uram_min_kb)
        block_bytes, block_port = (cal.uram_bytes, cal.uram_port_bits) if use_uram else (
            cal.bram18_bytes, cal.bram18_port_bits)
        blocks = max(ceil_div(int(kb * 1024), block_bytes), ceil_div(port_bits, block_port))
        out["uram" if use_uram else "bram18"][f"buffers.{key}"] = float(blocks)
    return out
