"""Cycles of a weight GEMM layer run weight stationary on the ``cds1`` system top level (``gemm.dataflow: ws``).

The ws twin of ``hw.perf.execute_queue`` (kept in its own module): ``compiler/backend/gemm_ws.py``'s program cuts
``C = X (M x K) @ W (K x N)`` into *blocks* of ``mt`` output rows by ``cols`` columns (column folds outer, row
blocks inner); each block is ``ceil(K / rows)`` ``GEMM dataflow=1`` instructions, one per weight tile of ``rows``
reduction rows, the first writing the accumulator (with the bias), the others adding to it, then its fused
requant ``VEC`` and its store. All in cycles at the array's clock:

* a ws ``GEMM`` of ``m`` activation rows: ``hw.rtl.systolic_ws.predicted_cycles`` for one fold (SCALE-Sim's
  ``m + 2 * rows + cols - 2`` less one, plus one handover) plus ``GEMM_ISSUE_CYCLES`` (the same queue, bias read,
  read latency, result register and ``DONE`` as an os fold): :func:`ws_gemm_cycles`, whatever ``k`` and ``n``;
* the fused requant and the store of a block: ``hw.perf.execute_queue``'s functions with ``mt`` rows per block;
* the loads: the constant table, ``A`` per row block as one plain (not transposing) load per weight tile
  (``mt`` DRAM rows of ``rows`` bytes: a segment each), ``B`` per column fold as in the os program (``K`` DRAM rows
  of ``n_fold`` bytes): :func:`ws_gemm_traffic`.
"""

from __future__ import annotations

from hw.perf.execute_queue import (
    CONST_LANE_BYTES,
    CONST_ROWS_PER_FOLD,
    GEMM_ISSUE_CYCLES,
    GemmTraffic,
    fused_requant_cycles,
    segment_cycles,
)
from hw.perf.systolic import systolic_cycles

__all__ = ["WS_HANDOVER_CYCLES", "ws_block_rows", "ws_gemm_cycles", "ws_layer_gemm_cycles", "ws_gemm_traffic",
           "ws_fused_requant_cycles"]

WS_HANDOVER_CYCLES = 1
"""``hw.rtl.systolic_ws.HANDOVER_CYCLES`` (restated: ``hw.perf`` does not import ``hw.rtl``): the last result row
is taken one edge after the last MAC."""


def _folds(size: int, fold: int) -> list[int]:
    """The sizes of ``size`` cut into folds of ``fold`` (the last one short)."""
    return [min(fold, size - start) for start in range(0, size, fold)]


def ws_block_rows(m: int, acc_rows: int) -> int:
    """Output rows of one ws block (``compiler/backend/gemm_ws.py``): all ``m`` when two halves of them and two
    staging halves fit the accumulator's ``acc_rows``, else a quarter of it (at most 4,096, a ``GEMM``'s ``m``)."""
    return max(1, min(m, acc_rows // 4, 4096))


def ws_gemm_cycles(m: int, rows: int, cols: int) -> int:
    """Cycles of one ``GEMM dataflow=1`` instruction of ``m`` activation rows (one weight tile) on a ``rows x
    cols`` array: the kernel's one-fold count plus :data:`GEMM_ISSUE_CYCLES` (module docstring)."""
    return systolic_cycles(m, cols, rows, rows, cols, "ws") + WS_HANDOVER_CYCLES + GEMM_ISSUE_CYCLES


def ws_layer_gemm_cycles(m: int, n: int, k: int, rows: int, cols: int, mt: int) -> int:
    """Cycles of all a layer's ws ``GEMM`` instructions (one batch item): per column fold and row block of ``mt``
    rows, ``ceil(k / rows)`` of them, in series on the execute queue."""
    tiles = len(_folds(k, rows)) * len(_folds(n, cols))
    return tiles * sum(ws_gemm_cycles(r, rows, cols) for r in _folds(m, mt))


def ws_gemm_traffic(m: int, n: int, k: int, rows: int, cols: int, mt: int, in_bytes: int = 1,
                    w_bytes: int = 1) -> GemmTraffic:
    """Load DMA cycles (beats, ``hw.perf.execute_queue.GemmTraffic``) of the ws program: ``lead`` the constant
    table, every row block's ``A`` (a segment per DRAM row of each weight tile's ``rows`` or fewer elements) and
    the first column fold's ``B``; ``rest`` the other column folds' ``B``; ``folds`` the blocks. Assumes the
    scratchpad holds every row block's ``A`` (the backend's reuse case)."""
    col_folds, blocks = _folds(n, cols), _folds(m, mt)
    b = [k * segment_cycles(width * w_bytes) for width in col_folds]
    lead = CONST_ROWS_PER_FOLD * len(col_folds) * segment_cycles(cols * CONST_LANE_BYTES) + b[0]
    lead += sum(r * sum(segment_cycles(kc * in_bytes) for kc in _folds(k, rows)) for r in blocks)
    return GemmTraffic(lead, sum(b[1:]), len(blocks) * len(col_folds))



def ws_fused_requant_cycles(m: int, n: int, cols: int, mt: int) -> int:
    """Cycles of the ``VEC requant`` behind every ws block of an ``m x n`` output (one batch item): the os
    program's per-fold requant (``hw.perf.execute_queue.fused_requant_cycles``) with blocks of ``mt`` rows."""
    return fused_requant_cycles(m, n, mt, cols)
