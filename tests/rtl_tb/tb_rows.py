"""Shared driver for the row-wise kernel testbenches (shiftmax, shiftgelu, ilayernorm, online_softmax,
topk_router): each job case sets the kernel's configuration ports, streams its input beats through
:func:`tb_common.stream_transfer` and reports the unpacked outputs and the measured cycles.

Job: ``{"params": {...}, "cases": [{"config": {port: int}, "beats": [{field: value}...], "n_out": int,
"gap_prob": 0.0, "stall_prob": 0.0, "seed": 0}]}``. Result: ``{"cases": [{"outputs": [{field: value}...],
"cycles": int}]}``.
"""

from __future__ import annotations

import random

from payload import pack, unpack
from tb_common import load_job, start, stream_transfer, write_result


async def run_cases(dut, in_layout, out_layout, config_ports=(), inp="inputs", out="outputs", before_case=None):
    """Run every case of the job on ``dut`` and write the result file."""
    job = load_job()
    await start(dut, [f"{inp}__valid", f"{inp}__payload", f"{out}__ready", *config_ports])
    results = []
    for case in job["cases"]:
        for port, value in case.get("config", {}).items():
            getattr(dut, port).value = value & ((1 << len(getattr(dut, port))) - 1)
        if before_case is not None:
            await before_case(dut, case)
        words = [pack(in_layout, beat) for beat in case["beats"]]
        transfer = await stream_transfer(
            dut, inp, out, words, case["n_out"],
            gap_prob=case.get("gap_prob", 0.0), stall_prob=case.get("stall_prob", 0.0),
            rng=random.Random(case.get("seed", 0)), timeout=case.get("timeout", 2_000_000),
        )
        results.append({"outputs": [unpack(out_layout, w) for w in transfer.outputs], "cycles": transfer.cycles})
    write_result({"cases": results})
