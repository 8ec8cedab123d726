"""cocotb testbench for ``systolic_gemm_ws``: streams each job case's weight tiles and A through the
array and reports the product (row folds summed on the host) and the measured cycles (see
``tb_common.stream_transfer``).

Job: ``{"params": {...}, "cases": [{"a": [[...]], "b": [[...]], "gap_prob": 0.0, "stall_prob": 0.0,
"seed": 0}]}``. Result: ``{"cases": [{"c": [[...]], "cycles": int, "last_flags_ok": bool}]}``.
The host compares with its reference.
"""

from __future__ import annotations

import random

import cocotb
from tb_common import load_job, start, stream_transfer, write_result

from hw.rtl.systolic_ws import assemble_results, fold_origins, operand_beats, pack_operands, unpack_results


@cocotb.test()
async def run_job(dut):
    job = load_job()
    p = job["params"]
    rows, cols, in_bits, acc_bits = p["rows"], p["cols"], p["in_bits"], p["acc_bits"]
    await start(dut, ["operands__valid", "operands__payload", "results__ready"])
    results = []
    for case in job["cases"]:
        a, b = case["a"], case["b"]
        m, k, n = len(a), len(b), len(b[0])
        words = [pack_operands(al, wl, load, last, in_bits) for al, wl, load, last in operand_beats(a, b, rows, cols)]
        n_out = len(fold_origins(k, n, rows, cols)) * m
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
        last_ok = all(last == (index % m == m - 1) for index, (_, last) in enumerate(lanes))
        c = assemble_results([row for row, _ in lanes], m, n, k, rows, cols)
        results.append({"c": c, "cycles": transfer.cycles, "last_flags_ok": last_ok})
    write_result({"cases": results})
