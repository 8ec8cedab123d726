"""hw/perf/execute_queue_ws.py: the system top level's weight-stationary GEMM layers as the FPGA model prices them
(``gemm.execute_queue`` with ``gemm.dataflow: ws``), checked against the kernel's own timing and the backend's
program (the Verilator figures are in tests/test_rtl_system_ws.py and docs/RTL.md)."""

from __future__ import annotations

import numpy as np
import pytest

from compiler.backend import Geometry, ProgramBuilder
from compiler.backend.gemm import GemmLayer
from hw.isa import Gemm, Load
from hw.models import build_model
from hw.perf.execute_queue import GEMM_ISSUE_CYCLES, fused_requant_cycles
from hw.perf.execute_queue_ws import (
    ws_block_rows,
    ws_fused_requant_cycles,
    ws_gemm_cycles,
    ws_gemm_traffic,
    ws_layer_gemm_cycles,
)
from hw.perf.workload import GemmWork
from hw.rtl.systolic_ws import predicted_cycles
from hw.targets.loader import load_target


@pytest.mark.parametrize(("m", "rows", "cols"), [(1, 4, 4), (16, 8, 8), (100, 8, 16), (7, 16, 4)])
def test_one_ws_gemm_is_the_kernels_fold_plus_the_issue_cycles(m: int, rows: int, cols: int) -> None:
    assert ws_gemm_cycles(m, rows, cols) == predicted_cycles(m, cols, rows, rows, cols) + GEMM_ISSUE_CYCLES
    assert ws_gemm_cycles(m, rows, cols) == m + 2 * rows + cols - 2 + GEMM_ISSUE_CYCLES


def test_the_layer_counts_the_backends_gemms() -> None:
    """As many ws GEMMs, of as many rows each, as compiler/backend/gemm_ws.py emits."""
    geo = Geometry(8, 8, sp_rows=4096, acc_rows=32, dataflow="ws")
    rng = np.random.default_rng(0)
    m, k, n = 19, 37, 21
    builder = ProgramBuilder(geo)
    builder.gemm(GemmLayer("l", m, rng.integers(-128, 128, (k, n)), None, None))
    gemms = [i for i in builder.finish().instructions if isinstance(i, Gemm)]
    mt = ws_block_rows(m, geo.acc_rows)
    assert mt == 8
    assert sum(ws_gemm_cycles(g.m, 8, 8) for g in gemms) == ws_layer_gemm_cycles(m, n, k, 8, 8, mt)
    a_loads = [i for i in builder.finish().instructions if isinstance(i, Load) and i.cols <= 8 and i.rows <= mt]
    assert a_loads and ws_gemm_traffic(m, n, k, 8, 8, mt).folds == 3 * 3
    assert ws_fused_requant_cycles(m, n, 8, mt) == fused_requant_cycles(m, n, mt, 8)


def test_the_fpga_model_prices_weight_gemms_ws_and_the_rest_os() -> None:
    target = load_target("fpga-u280", {"gemm.rows": "8", "gemm.cols": "8", "gemm.partitions": "1",
                                       "gemm.execute_queue": "true", "gemm.dataflow": "ws", "buffers.out_kb": "16"})
    model = build_model(target)
    weight = model.cost(GemmWork(16, 128, 128))
    assert weight.detail["execute_queue"] and weight.detail["ws_block_rows"] == 16
    assert weight.compute_cycles == ws_layer_gemm_cycles(16, 128, 128, 8, 8, 16) == 256 * ws_gemm_cycles(16, 8, 8)
    product = model.cost(GemmWork(16, 16, 64, weights_static=False))  # an attention product: os on the system
    assert product.detail["execute_queue"] and "ws_block_rows" not in product.detail
