"""cocotb testbench for ``systolic_gemm``: streams each job case's A and B through the array and
reports the product and the measured cycles (see ``tb_common.stream_transfer``).

Job: ``{"params": {...}, "cases": [{"a": [[...]], "b": [[...]], "gap_prob": 0.0, "stall_prob": 0.0,
"seed": 0}]}``. Result: ``{"cases": [{"c": [[...]], "cycles": int, "last_flags_ok": bool}]}``.
The host compares with its reference.
"""

from __future__ import annotations

import random

import cocotb
from tb_common import load_job, start, stream_transfer, write_result

from hw.rtl.systolic import assemble_results, operand_beats, pack_operands, unpack_results


@cocotb.test()
async def run_job(dut):
    job = load_job()
    p = job["params"]
    rows, cols, in_bits, acc_bits = p["rows"], p["cols"], p["in_bits"], p["acc_bits"]
    await start(dut, ["operands__valid", "operands__payload", "results__ready"])
    results = []
    for case in job["cases"]:
        a, b = case["a"], case["b"]
        m, n = len(a), len(b[0])
        words = [pack_operands(al, bl, last, in_bits) for al, bl, last in operand_beats(a, b, rows, cols)]
        n_out = len(words) // len(b) * rows
        transfer = await stream_transfer(
            dut,
            "operands",
            "results",
            words,
            n_out,
            gap_prob=case.get("gap_prob", 0.0),
            stall_prob=case.get("stall_prob", 0.0),
            rng=random.Random(case.get("seed", 0)),
        )
        lanes = [unpack_results(word, cols, acc_bits) for word in transfer.outputs]
        last_ok = all(last == (index % rows == rows - 1) for index, (_, last) in enumerate(lanes))
        c = assemble_results([row for row, _ in lanes], m, n, rows, cols)
        results.append({"c": c, "cycles": transfer.cycles, "last_flags_ok": last_ok})
    write_result({"cases": results})
