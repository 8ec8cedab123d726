"""Cycles of a weight GEMM layer as the ``cds1`` system top level runs the backend's program for it.

The system top level (``hw/rtl/system``, docs/RTL.md) runs ``compiler/backend/gemm.py``'s program for a GEMM layer:
one ``GEMM`` instruction per output fold of ``rows x cols`` (column folds outer, row folds inner) on ONE execute
queue, each followed by its fused requant as a ``VEC`` on the same queue; the load queue brings the constant table
(three constant rows per column fold) and every row fold's left operand ``A`` (transposed) with the first column
fold, then each column fold's ``B`` once for all its row folds, double-buffered; the store queue writes each fold.
A target says it is this machine with ``gemm.execute_queue`` (``hw.targets.schema.FpgaGemm``); the FPGA model then
prices its GEMM layers with the functions here (``hw/models/fpga.py``), all in cycles at the array's clock:

* a ``GEMM`` instruction: the array kernel's ``predicted_cycles`` for one fold (``hw.rtl.systolic``: SCALE-Sim's
  ``k + rows + cols - 3`` plus ``rows`` readout cycles) plus :data:`GEMM_ISSUE_CYCLES`;
* a fused ``VEC requant`` of a fold of ``r`` rows (``hw.rtl.system.vec``, streaming): ``r * span + 4`` plus 3 for
  the fold's per-channel ``(m, e)`` constant rows plus :data:`VEC_ISSUE_CYCLES`;
* the load DMA (``hw.rtl.system.dma_load``) moves one 16-byte beat per cycle and cuts every transfer into one
  segment per DRAM row, so a row of fewer bytes than a beat still takes a whole beat on the bus, and its issuer
  takes a cycle to open each segment before it asks for the segment's bursts, one a cycle: a segment takes
  ``max(beats, 1 + bursts)`` cycles (:func:`segment_cycles`; 2 for a one-beat row). A transposed load also takes
  a cycle per space row it writes, and its later 64-byte chunks' segments are asked for while the previous
  chunk's columns are written, so their beats come one a cycle (:func:`transposed_load_cycles`). Each ``LOAD``
  adds :data:`LOAD_TRANSFER_CYCLES` (its queue, the DMA's ``IDLE`` and ``DONE``, the memory's read latency), and
  every instruction of the program is a beat on the same read channel (:data:`FETCH_BEAT_CYCLES`: the fetch unit
  shares it with the load DMA). Transfers are counted in *bus bytes*, 16 per such cycle, so that the
  scheduler's off-chip bandwidth of 16 bytes per cycle prices them in the DMA's cycles;
* the store DMA (``hw.rtl.system.dma_store``) writes one element per cycle, a row at a time, each row a burst
  that waits for its write response: ``n_fold + STORE_ROW_CYCLES`` cycles per row of a fold, whatever the element
  size, plus :data:`STORE_TRANSFER_CYCLES` per ``STORE``; counted likewise in bus bytes (16 per cycle).

The scheduler follows the program fold by fold: one tile per fold; the first carries the constant table, the first
row fold's ``A`` and the first column fold's ``B`` (the ``lead``), the other row folds' ``A`` and column folds'
``B`` are spread over the other tiles (they load under the folds before them), and each fold's store follows its
compute.

The issue cycles were counted from the queue controller's and the execute unit's state machines (take the
instruction, start the unit, the ``GEMM``'s bias read, operand read and result register, ``DONE``, retire) and
checked against traced runs (``python benchmarks/rtl_system_table.py --trace``: a ``GEMM`` plus its trace mark
``NOP`` of :data:`NOP_CYCLES` is 158 cycles at ``k = 128`` on an 8x8 array, a ``VEC requant`` of 8 rows 22;
``tests/test_rtl_system.py`` pins both); the DMAs' cycles per transfer were measured on the top level, a program of
one and two ``LOAD`` s or ``STORE`` s of each shape; docs/RTL.md, "Whole models against the model", measures what
remains.
"""

from __future__ import annotations

from dataclasses import dataclass

from hw.perf.systolic import systolic_cycles

__all__ = ["BEAT_BYTES", "CONST_ROWS_PER_FOLD", "CONST_LANE_BYTES", "GEMM_ISSUE_CYCLES", "VEC_ISSUE_CYCLES",
           "NOP_CYCLES", "REQUANT_STREAM_CYCLES", "REQUANT_CONST_CYCLES", "STORE_ROW_CYCLES", "BURST_BEATS",
           "LOAD_TRANSFER_CYCLES", "TRANSFER_CYCLES", "STORE_TRANSFER_CYCLES", "FETCH_BEAT_CYCLES", "MAX_READS",
           "GemmTraffic", "segment_cycles", "load_cycles", "transposed_load_cycles", "gemm_fold_cycles",
           "requant_fold_cycles", "fused_requant_cycles", "gemm_traffic", "store_cycles"]

BEAT_BYTES = 16
"""Bytes of one AXI beat of the system's DMA (``hw.rtl.system.axi.BEAT_BYTES``)."""
BURST_BEATS = 16
"""The longest read burst the load DMA asks for (``hw.rtl.system.dma_load.BURST_BEATS``)."""
CONST_ROWS_PER_FOLD = 3
"""Constant-memory rows the backend loads per column fold: bias, requant multipliers, shifts."""
CONST_LANE_BYTES = 8
"""Bytes per lane of a constant row in DRAM (the backend writes the table as int64)."""
GEMM_ISSUE_CYCLES = 7
"""Cycles a ``GEMM`` instruction takes beyond the array kernel's ``predicted_cycles`` for its fold: the queue takes
it (1), the execute unit starts (1) and reads the bias row (1), the scratchpad's read latency (1), the result
register before the accumulator write (1), ``DONE`` (1), the queue retires it (1)."""
VEC_ISSUE_CYCLES = 5
"""Cycles a ``VEC`` instruction takes beyond the vector unit's own: the queue takes it (1), the execute unit hands
it to the vector unit (1) and waits for its ``done`` (1), ``DONE`` (1), the queue retires it (1)."""
NOP_CYCLES = 2
"""Cycles an execute-queue ``NOP`` (a trace mark) takes: the queue takes it and retires it the next cycle."""
REQUANT_STREAM_CYCLES = 4
"""The streaming requant's cycles beyond one per row and span (``hw.rtl.system.vec``: ``rows * span + 4``)."""
REQUANT_CONST_CYCLES = 3
"""The per-channel requant's read of its two constant rows before it streams (``hw.rtl.system.vec``)."""
STORE_ROW_CYCLES = 5
"""The store DMA's cycles per row beyond one per element (``hw.rtl.system.dma_store``): ``ROW``, ``CAPTURE``,
``AW``, then ``B`` until the write response, which the DRAM model gives ``write_latency`` (2) cycles after the last
beat."""
STORE_TRANSFER_CYCLES = 3
"""Cycles a ``STORE`` takes beyond its rows: the store queue takes it and retires it, and the DMA's ``DONE``
(measured: a one-row store of 4 elements 12 cycles, of 8 rows 75)."""
LOAD_TRANSFER_CYCLES = 6
"""Cycles a ``LOAD`` takes beyond its segments (``hw.rtl.system.dma_load``): the queue takes it and retires it (2),
the DMA's ``IDLE`` and ``DONE`` (2), and the memory's read latency (2) between the last segment's ask and its
beats; one less when every segment is one beat, whose second issue cycle (:func:`segment_cycles`) already waits
one of them (measured: 64 rows of 4 bytes 133 cycles, 9 rows of 32 bytes 24, a transposed 64-byte row 74)."""
TRANSFER_CYCLES = LOAD_TRANSFER_CYCLES
"""The same for a transposing ``LOAD``, whose column writes follow its last chunk's beats."""
FETCH_BEAT_CYCLES = 1
"""Read-channel cycles of one instruction: the fetch unit reads the program in bursts of 16-byte words, one beat
each, on the AXI read channel it shares with the load DMA (``hw.rtl.system.fetch``, ``axi.ReadArbiter``), and the
DRAM returns bursts in order, so a load-bound stretch of the program takes about a cycle more per instruction."""
MAX_READS = 8
"""Read bursts the load DMA keeps in flight (``hw.rtl.system.dma_load.MAX_READS``)."""


_CHUNK_BYTES = 64
"""Bytes of each DRAM row a transposed load gathers per chunk (``hw.rtl.system.dma_load.CHUNK_BYTES``)."""


def _folds(size: int, fold: int) -> list[int]:
    """The sizes of ``size`` cut into folds of ``fold`` (the last one short)."""
    return [min(fold, size - start) for start in range(0, size, fold)]


def segment_cycles(nbytes: int) -> int:
    """Cycles the load DMA takes for one segment of ``nbytes`` contiguous bytes (starting on a beat): its beats,
    one a cycle, or, when its issuer is slower, a cycle to open it plus one per burst."""
    beats = -(-nbytes // BEAT_BYTES)
    return max(beats, 1 + -(-beats // BURST_BEATS))


def load_cycles(rows: int, row_bytes: int) -> int:
    """Cycles of one plain ``LOAD`` of ``rows`` DRAM rows of ``row_bytes`` each (a segment a row, starting on a
    beat), :data:`LOAD_TRANSFER_CYCLES` included."""
    one_beat = row_bytes <= BEAT_BYTES
    return rows * segment_cycles(row_bytes) + LOAD_TRANSFER_CYCLES - (1 if one_beat else 0)


def transposed_load_cycles(rows: int, k: int, elem_bytes: int = 1, transfer: int = TRANSFER_CYCLES) -> int:
    """Cycles of a transposing ``LOAD`` of ``rows`` DRAM rows of ``k`` elements into ``k`` space rows: each DRAM row
    gathered in 64-byte chunks, a segment each; the first chunk's at the issuer's pace (:func:`segment_cycles`),
    a later chunk's asked for while the previous chunk's columns are written, so up to :data:`MAX_READS` of its
    segments take only their beats; a cycle per space row written; plus ``transfer`` (measured: 4 rows of 64
    bytes 86 cycles, of 65 bytes 91)."""
    nbytes = k * elem_bytes
    chunks = [min(_CHUNK_BYTES, nbytes - c) for c in range(0, nbytes, _CHUNK_BYTES)]
    cycles = k + transfer + rows * segment_cycles(chunks[0]) if chunks else transfer
    for c in chunks[1:]:
        ahead = min(rows, MAX_READS)
        cycles += ahead * -(-c // BEAT_BYTES) + (rows - ahead) * segment_cycles(c)
    return cycles


def gemm_fold_cycles(k: int, rows: int, cols: int) -> int:
    """Cycles of one ``GEMM`` instruction (one fold, ``k`` beats) on a ``rows x cols`` output-stationary array:
    the array kernel's ``predicted_cycles`` for one fold plus :data:`GEMM_ISSUE_CYCLES`."""
    return systolic_cycles(rows, cols, k, rows, cols, "os") + rows + GEMM_ISSUE_CYCLES


def requant_fold_cycles(rows: int, span: int = 1) -> int:
    """Cycles of one fused per-channel ``VEC requant`` over ``rows`` rows of ``span`` space rows each."""
    return rows * span + REQUANT_STREAM_CYCLES + REQUANT_CONST_CYCLES + VEC_ISSUE_CYCLES


def fused_requant_cycles(m: int, n: int, rows: int, cols: int) -> int:
    """Cycles of the ``VEC requant`` behind every fold of an ``m x n`` output (one batch item), in series with the
    folds' ``GEMM`` s on the execute queue."""
    return len(_folds(n, cols)) * sum(requant_fold_cycles(r) for r in _folds(m, rows))


def store_cycles(m: int, n: int, rows: int, cols: int) -> int:
    """Cycles the store DMA takes for an ``m x n`` output stored fold by fold: one element per cycle plus
    :data:`STORE_ROW_CYCLES` per row of each fold (``m`` rows per column fold), and :data:`STORE_TRANSFER_CYCLES`
    per fold (a ``STORE`` each)."""
    folds = len(_folds(m, rows)) * len(_folds(n, cols))
    return m * sum(width + STORE_ROW_CYCLES for width in _folds(n, cols)) + folds * STORE_TRANSFER_CYCLES


@dataclass(frozen=True)
class GemmTraffic:
    """The loads of one batch item's GEMM layer on the system, in DMA cycles (module docstring): ``lead``, what the
    first fold needs (the constant table, the first row fold's ``A``, the first column fold's ``B``), ``rest``
    (the other row folds' ``A``, the other column folds' ``B``, the instructions' fetch beats), and ``folds``, the
    output folds (row folds x column folds)."""

    lead: int
    rest: int
    folds: int

    @property
    def total(self) -> int:
        """All the layer's load beats."""
        return self.lead + self.rest


def gemm_traffic(m: int, n: int, k: int, rows: int, cols: int, in_bytes: int = 1, w_bytes: int = 1,
                 fold_cycles: int = 0) -> GemmTraffic:
    """Load DMA cycles of an ``m x k`` by ``k x n`` GEMM layer (``in_bytes`` / ``w_bytes`` per element) on a ``rows
    x cols`` system (module docstring): the constant table (one :func:`load_cycles`, a segment per row), ``A`` per
    row fold (:func:`transposed_load_cycles` of its ``m_fold`` DRAM rows of ``k`` elements), ``B`` per column fold
    (:func:`load_cycles` of ``k`` DRAM rows of ``n_fold`` elements), and the read channel's beats of the program's
    instructions (:data:`FETCH_BEAT_CYCLES` each: the loads, a ``GEMM`` and a ``STORE`` per fold; a fused requant's
    ``VEC`` is not counted).

    The ``lead`` is what the loads delay the array by until the second column fold starts: the program loads the
    table, the first column fold's ``B`` and the first row fold's ``A``, then each other row fold's ``A`` just
    before that row fold's first fold, then the second column fold's ``B``, the folds running ``fold_cycles`` each
    (the execute queue's cycles per fold) as soon as their operands are in; the rest of the loads (the remainder
    of those, the other column folds' ``B``, the fetch beats) load under the folds. Assumes the scratchpad holds
    every row fold's ``A`` (the backend's reuse case, ``compiler/backend/gemm.py``)."""
    col_folds, row_folds = _folds(n, cols), _folds(m, rows)
    b = [load_cycles(k, width * w_bytes) for width in col_folds]
    a = [transposed_load_cycles(r, k, in_bytes) for r in row_folds]
    loaded = load_cycles(CONST_ROWS_PER_FOLD * len(col_folds), cols * CONST_LANE_BYTES) + b[0]
    array = 0  # when the array is done with the folds issued so far
    for a_load in a:  # the first column fold: each row fold's A, then its fold
        loaded += a_load
        array = max(array, loaded) + fold_cycles
    if len(b) > 1:  # the second column fold's first fold waits for its B, too
        loaded += b[1]
        array = max(array, loaded) + fold_cycles
    lead = array - fold_cycles * (len(row_folds) + (len(b) > 1))
    folds = len(row_folds) * len(col_folds)
    fetch = FETCH_BEAT_CYCLES * (1 + len(row_folds) + len(col_folds) + 2 * folds)
    total = loaded + sum(b[2:]) + fetch
    return GemmTraffic(lead, total - lead, folds)
