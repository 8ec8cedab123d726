"""cocotb testbench for ``requant``: streams each job case's beats and reports outputs and cycles.

Job: ``{"params": {...}, "cases": [{"acc": [[...lanes]...], "m": [[...]...], "e": [[...]...],
"gap_prob": 0.0, "stall_prob": 0.0, "seed": 0}]}`` (one list entry per beat). Result:
``{"cases": [{"y": [[...lanes]...], "cycles": int, "last_flags_ok": bool}]}``; the last beat of a
case is sent with ``last`` set and must come back with it.
"""

from __future__ import annotations

import random

import cocotb
from tb_common import load_job, start, stream_transfer, write_result

from hw.rtl.requant import pack_inputs, unpack_outputs


@cocotb.test()
async def run_job(dut):
    job = load_job()
    p = job["params"]
    lanes, acc_bits, out_bits = p["lanes"], p["acc_bits"], p["out_bits"]
    await start(dut, ["inputs__valid", "inputs__payload", "outputs__ready"])
    results = []
    for case in job["cases"]:
        beats = len(case["acc"])
        words = [
            pack_inputs(case["acc"][t], case["m"][t], case["e"][t], t == beats - 1, acc_bits) for t in range(beats)
        ]
        transfer = await stream_transfer(
            dut,
            "inputs",
            "outputs",
            words,
            beats,
            gap_prob=case.get("gap_prob", 0.0),
            stall_prob=case.get("stall_prob", 0.0),
            rng=random.Random(case.get("seed", 0)),
        )
        rows = [unpack_outputs(word, lanes, out_bits) for word in transfer.outputs]
        last_ok = all(last == (t == beats - 1) for t, (_, last) in enumerate(rows))
        results.append({"y": [y for y, _ in rows], "cycles": transfer.cycles, "last_flags_ok": last_ok})
    write_result({"cases": results})
