"""cocotb testbench for ``ilayernorm`` (driver in tb_rows.py): each case first loads its per-channel
biases (``"bias": [int] * c``) through the ``bias`` port; those cycles are not counted. Built with ``eps=1``,
the ``eps`` port is a configuration port (a case's ``"config": {"eps": int}``)."""

from __future__ import annotations

import cocotb
from cocotb.triggers import FallingEdge
from payload import pack
from tb_common import load_job
from tb_rows import run_cases

from hw.rtl.ilayernorm import bias_layout, input_layout, output_layout


@cocotb.test()
async def run_job(dut):
    p = load_job()["params"]
    layout = bias_layout(p["c"], p["bias_bits"])

    async def load_biases(dut, case):
        for addr, value in enumerate(case.get("bias", [])):
            await FallingEdge(dut.clk)
            dut.bias__valid.value = 1
            dut.bias__payload.value = pack(layout, {"addr": addr, "value": value})
        await FallingEdge(dut.clk)
        dut.bias__valid.value = 0

    dut.bias__valid.value = 0
    await run_cases(dut, input_layout(p["in_bits"]), output_layout(p["in_bits"], p["bias_bits"]),
                    config_ports=("eps",) if p.get("eps") else (), before_case=load_biases)
