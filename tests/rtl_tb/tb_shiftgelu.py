"""cocotb testbench for ``shiftgelu`` (driver in tb_rows.py): config port ``x0``."""

from __future__ import annotations

import cocotb
from tb_common import load_job
from tb_rows import run_cases

from hw.rtl.shiftgelu import input_layout, output_layout


@cocotb.test()
async def run_job(dut):
    p = load_job()["params"]
    out = output_layout(p["in_bits"], p["out_bits"], p["x0_bits"])
    await run_cases(dut, input_layout(p["in_bits"]), out, ["x0"])
