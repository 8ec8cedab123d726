"""cocotb testbench for ``topk_router`` (driver in tb_rows.py): one output beat per token."""

from __future__ import annotations

import cocotb
from tb_common import load_job
from tb_rows import run_cases

from hw.rtl.topk_router import input_layout, output_layout


@cocotb.test()
async def run_job(dut):
    p = load_job()["params"]
    await run_cases(dut, input_layout(p["in_bits"]), output_layout(p["experts"], p["k"], p["in_bits"]))
