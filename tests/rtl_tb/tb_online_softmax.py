"""cocotb testbench for ``online_softmax`` (driver in tb_rows.py): config ports ``m_c`` and ``e_c``;
a case's beats hold every row twice (pass 1, then pass 2)."""

from __future__ import annotations

import cocotb
from tb_common import load_job
from tb_rows import run_cases

from hw.rtl.online_softmax import input_layout, output_layout


@cocotb.test()
async def run_job(dut):
    p = load_job()["params"]
    await run_cases(dut, input_layout(p["in_bits"]), output_layout(p["out_bits"]), ["m_c", "e_c"])
