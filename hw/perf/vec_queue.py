"""Cycles of a vector layer as the ``cds1`` system top level runs the backend's program for it.

With ``gemm.execute_queue`` (``hw.perf.execute_queue``) the FPGA model prices each vector layer (a requant, a
residual add, an I-LayerNorm, a ShiftGELU) as ``compiler/backend/tiles.py``'s ``vector_layer`` runs it on the top
level: the element rows cut into row blocks that fit two halves of the accumulator and the scratchpad, each block
loaded (load queue), run through its ``VEC`` s (execute queue, the one vector unit ``hw/rtl/system/vec.py``) and
stored (store queue), double-buffered; the layer's constant table is loaded first. All in cycles at the array's
clock.

The ``VEC`` cycles are counted from ``hw.rtl.system.vec.VecUnit``'s state machine (one state a cycle), beyond
:data:`hw.perf.execute_queue.VEC_ISSUE_CYCLES` (the queue and the execute unit's hand-over):

* streaming ``requant`` / ``requant_add`` (``(m, e)`` the same on every row: per tensor, or per channel with rows
  of at most ``lanes`` values): one space row a cycle plus 4 (``RQ_STREAM``), plus 3 for a per-channel
  constant pair (``RQ_C0`` .. ``RQ_C2``);
* the lane-parallel path (a per-channel ``requant`` of wider rows, ``copy``, ``mul``, ``shiftgelu``, ``threshold``): per
  space row ``READ``, ``LATCH``, ``LATCH2``, ``WRITE`` (4) plus the function's states: ``requant`` 3 (``REQUANT``
  and ``REQUANT_WAIT`` for ``Requant``'s ``LATENCY`` of 2), ``shiftgelu`` ``lanes + 4`` (the row's lanes one per
  cycle into the per-element ShiftGELU, whose ``ELEMENT_LATENCY`` is 4), ``threshold`` ``2**b + 1``;
* row functions, per element row of ``n`` values over ``span`` space rows: ``ROW_READ`` and ``ROW_LATCH`` per space
  row, ``n`` feed cycles, the kernel's work between its last input and its first output, ``n`` output cycles and a
  ``ROW_WRITE`` per space row; I-LayerNorm's bias load (``BIAS_READ``, ``BIAS_LATCH`` per constant row and a
  cycle per lane) once per instruction. The kernel is built for the program's longest row (``max_row``, a power of
  two, at least 16); its dividers are sized by it, so the model takes the program's longest Shiftmax or I-LayerNorm
  row (``VectorWork.row_kernel``, from the planner) rounded up likewise, or this row's where none is recorded.

The DMA: the load DMA moves each DRAM row of a transfer as a segment (:func:`hw.perf.execute_queue.segment_cycles`:
two cycles for a row of one beat) plus the transfer's own cycles (:func:`hw.perf.execute_queue.load_cycles`), the
store DMA one element a cycle plus :data:`STORE_ROW_CYCLES` per row and :data:`STORE_TRANSFER_CYCLES` per
transfer; the backend moves a contiguous operand as rows of ``lanes`` elements (one per space row), and an element
row longer than the lanes and not a whole number of them as two transfers of its own, its full space rows and its
tail (:func:`rows_load_cycles`, :func:`rows_store_cycles`: an attention's 17 or 21 keys on 8 lanes). An attention
fold's instructions are a beat each on the read channel its loads use
(:data:`hw.perf.execute_queue.FETCH_BEAT_CYCLES`). Not modelled: the queues' dependency tokens' hand-over cycles
and the layer barrier (docs/RTL.md, whole models, measures what remains).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from hw.perf import execute_queue as eq
from hw.perf.execute_queue import (
    FETCH_BEAT_CYCLES,
    STORE_ROW_CYCLES,
    STORE_TRANSFER_CYCLES,
    TRANSFER_CYCLES,
    VEC_ISSUE_CYCLES,
)

__all__ = ["LAYER_CYCLES", "TRANSFER_CYCLES", "STORE_ROW_CYCLES", "MIN_ROW", "CONFIG_CYCLES", "PROBABILITY_BITS",
           "DIGIT_BITS", "VECTOR_LAYERS", "Block", "Machine", "stream_requant_cycles", "lane_cycles",
           "ilayernorm_cycles", "variance_bits", "shiftmax_cycles", "load_cycles", "store_cycles", "pipeline_cycles",
           "block_rows", "row_kernel_size", "layer_cycles", "threshold_cycles", "transposed_load_cycles",
           "transposed_copy_cycles", "rope_cycles",
           "matmul_layer_cycles", "attention_cycles", "topk_cycles"]

MIN_ROW = 16
"""The shortest ``max_row`` the top level is built with (``codesign.rtl_system.longest_row``)."""
LAYER_CYCLES = 0
"""Cycles a layer's barrier (drain, trace mark, seeds) adds beyond its blocks."""
CONFIG_CYCLES = 4
"""Cycles a ``CONFIG`` takes on the execute queue: the queue takes it, the vector unit writes the register
(``IDLE``, ``DONE``), the queue retires it."""
_LN_IN_BITS = 24  # hw.rtl.system.vec: I-LayerNorm's widest input
_LN_NEWTON_STEPS = 10  # hw.rtl.ilayernorm.NEWTON_STEPS
_LN_FACTOR_CYCLES = 31  # hw.rtl.ilayernorm.FACTOR_CYCLES
_SHIFTMAX_DIV_CYCLES = 16  # hw.rtl.shiftmax.DIV_CYCLES
_GELU_LATENCY = 4  # hw.rtl.shiftgelu.ELEMENT_LATENCY
_LANE_BASE = 4  # READ, LATCH, LATCH2, WRITE
_REQUANT_STATES = 3  # REQUANT, then REQUANT_WAIT for Requant's LATENCY of 2


def _span(n: int, lanes: int) -> int:
    return -(-n // lanes)


def stream_requant_cycles(space_rows: int, const_pair: bool = False) -> int:
    """Cycles of a streaming ``VEC requant`` / ``requant_add`` over ``space_rows`` space rows, issue included."""
    return space_rows + 4 + (3 if const_pair else 0) + VEC_ISSUE_CYCLES


def lane_cycles(fn: str, space_rows: int, lanes: int, out_bits: int = 8) -> int:
    """Cycles of a lane-parallel ``VEC`` (``fn``: ``requant``, ``copy``, ``mul``, ``shiftgelu`` or ``threshold`` to
    ``out_bits``) over ``space_rows`` space rows of ``lanes`` lanes, issue included."""
    extra = {"requant": _REQUANT_STATES, "copy": 0, "mul": 0, "shiftgelu": lanes + _GELU_LATENCY,
             "threshold": (1 << out_bits) + 1}[fn]
    return space_rows * (_LANE_BASE + extra) + VEC_ISSUE_CYCLES


def row_kernel_size(n: int) -> int:
    """The ``max_row`` a row kernel is built for when its longest row has ``n`` values."""
    return max(MIN_ROW, 1 << (max(n, 1) - 1).bit_length())


def variance_bits(c: int, in_bits: int, eps: bool = False) -> int:
    """Bits of I-LayerNorm's ``sum((x - mean)**2)`` over ``c`` channels of ``in_bits``-bit differences, one more
    with an ``eps`` input (the sum plus an epsilon of up to as many bits): the cycles of one Newton step (one
    quotient bit a cycle). The same count as ``hw.rtl.ilayernorm.newton_bits`` (tests/test_vec_queue.py checks
    it), restated here because hw.perf does not import hw.rtl."""
    return max(1, (c * ((1 << in_bits) - 1) ** 2).bit_length()) + int(eps)


def ilayernorm_cycles(rows: int, n: int, lanes: int, max_row: int = 0) -> int:
    """Cycles of one ``VEC ilayernorm`` over ``rows`` element rows of ``n`` values, issue included, on a top level
    whose row kernels are built for ``max_row`` (the program's longest row; 0: this one's): its dividers' width,
    so a per-head norm of 16 values beside 64-value norms takes the 64-value kernel's Newton steps."""
    span = _span(n, lanes)
    newton = variance_bits(row_kernel_size(max(n, max_row)), _LN_IN_BITS, eps=True)  # the unit takes an epsilon
    kernel = _LN_IN_BITS + n + _LN_NEWTON_STEPS * newton + _LN_FACTOR_CYCLES
    per_row = 3 * span + 2 * n + kernel
    return 2 * span + n + rows * per_row + VEC_ISSUE_CYCLES


def shiftmax_cycles(rows: int, n: int, lanes: int) -> int:
    """Cycles of one ``VEC shiftmax`` over ``rows`` element rows of ``n`` values, issue included."""
    span = _span(n, lanes)
    return rows * (3 * span + 2 * n + n + _SHIFTMAX_DIV_CYCLES) + VEC_ISSUE_CYCLES


def load_cycles(space_rows: int, row_bytes: int) -> int:
    """Cycles of one ``LOAD`` of ``space_rows`` DRAM rows of ``row_bytes`` each (one segment a row, and the
    transfer's own cycles: :func:`hw.perf.execute_queue.load_cycles`)."""
    return eq.load_cycles(space_rows, row_bytes)


def store_cycles(space_rows: int, lanes: int) -> int:
    """Cycles of one ``STORE`` of ``space_rows`` DRAM rows of ``lanes`` elements each (:data:`STORE_ROW_CYCLES`
    per row, :data:`STORE_TRANSFER_CYCLES` per transfer)."""
    return space_rows * (lanes + STORE_ROW_CYCLES) + STORE_TRANSFER_CYCLES


def _split_rows(n: int, lanes: int) -> bool:
    """Whether an element row of ``n`` values moves as its own transfers (``compiler/backend/tiles.py``, ``_dma``):
    longer than the lanes and not a whole number of them, each element row is one transfer of its full space rows
    and one of its tail, rather than the whole block being one transfer of space rows."""
    return n > lanes and n % lanes != 0


def rows_load_cycles(rows: int, n: int, elem_bytes: int, lanes: int) -> int:
    """Load-queue cycles of ``rows`` contiguous element rows of ``n`` values into a space of ``lanes`` lanes, as the
    backend's ``_dma`` splits them: one ``LOAD`` of ``rows * span`` space rows, or per element row one ``LOAD`` of
    its full space rows and one of its tail, each instruction also a beat on the read channel."""
    span = _span(n, lanes)
    if not _split_rows(n, lanes):
        return load_cycles(rows * span, lanes * elem_bytes)
    full, tail = divmod(n, lanes)
    per_row = load_cycles(full, lanes * elem_bytes) + load_cycles(1, tail * elem_bytes) + 2 * FETCH_BEAT_CYCLES
    return rows * per_row


def rows_store_cycles(rows: int, n: int, lanes: int) -> int:
    """Store-queue cycles of ``rows`` element rows of ``n`` values from a space of ``lanes`` lanes, split as
    :func:`rows_load_cycles` splits loads."""
    if not _split_rows(n, lanes):
        return store_cycles(rows * _span(n, lanes), lanes)
    full, tail = divmod(n, lanes)
    return rows * (store_cycles(full, lanes) + store_cycles(1, tail))


def block_rows(rows: int, acc_span: int, sp_span: int, acc_rows: int, sp_rows: int) -> int:
    """Element rows per block of ``vector_layer``: the most that fit two halves of each space, ``acc_span`` /
    ``sp_span`` the space rows one element row takes there over all the layer's slots."""
    block = rows
    if acc_span:
        block = min(block, acc_rows // (2 * acc_span))
    if sp_span:
        block = min(block, sp_rows // (2 * sp_span))
    return max(1, block)


@dataclass(frozen=True)
class Block:
    """One row block's cycles on the three queues: ``load``, ``execute``, ``store``."""

    load: int
    execute: int
    store: int


def pipeline_cycles(blocks: Sequence[Block], lead: int = 0) -> int:
    """Cycles of ``blocks`` double-buffered on the three queues after ``lead`` cycles of the load queue (the
    constant table): block ``i``'s load waits for the execute of block ``i - 2`` (its buffer half), its execute for
    its load, the previous execute and the store of block ``i - 2`` (its staging half), its store for its execute
    and the previous store. Returns when the last store ends."""
    load_end: list[int] = []
    exe_end: list[int] = []
    store_end: list[int] = []
    for i, b in enumerate(blocks):
        start = max(load_end[-1] if load_end else lead, exe_end[i - 2] if i >= 2 else 0)
        load_end.append(start + b.load)
        start = max(load_end[i], exe_end[-1] if exe_end else 0, store_end[i - 2] if i >= 2 else 0)
        exe_end.append(start + b.execute)
        store_end.append(max(exe_end[i], store_end[-1] if store_end else 0) + b.store)
    return (store_end[-1] if store_end else lead) + LAYER_CYCLES


@dataclass(frozen=True)
class Machine:
    """What a vector layer's cycles depend on: ``lanes`` (the accumulator's lanes, ``gemm.cols``), ``width`` (the
    scratchpad's and the constant memory's lanes), ``acc_rows`` / ``sp_rows`` (the spaces' rows), ``in_bits`` (the
    scratchpad's element bits)."""

    lanes: int
    width: int
    acc_rows: int
    sp_rows: int
    in_bits: int = 8


VECTOR_LAYERS = ("requant", "requant_tensor", "add", "add_channel", "product", "layernorm", "gelu", "threshold")
"""The vector kinds :func:`layer_cycles` prices (the backend's ``_requant``, ``_residual``, ``_product``,
``_layernorm``, ``_gelu``, and ``_threshold``: a float island's ``quantize`` as threshold layers)."""


def layer_cycles(kind: str, rows: int, n: int, in_bits: int, out_bits: int, mach: Machine,
                 max_row: int = 0) -> int | None:
    """Cycles of one vector layer of ``rows`` element rows of ``n`` values as the backend emits it (module
    docstring): ``kind`` one of :data:`VECTOR_LAYERS` (``requant``: per channel, as the quantizer inserts them;
    ``requant_tensor``: one multiplier, streaming;
    ``add``: a residual add with per-tensor multipliers, one streaming ``requant_add``; ``add_channel``: with
    per-channel ones, each branch requantized to int32 in place on the lane-parallel path, then one streaming
    ``requant_add``; ``product``: two operands' lane-parallel ``VEC mul``, then a streaming ``requant`` of one
    multiplier), its DRAM input elements of
    ``in_bits`` and its output of ``out_bits``, ``max_row`` the program's longest row-kernel row
    (:func:`ilayernorm_cycles`); None for a kind it does not price."""
    if kind not in VECTOR_LAYERS or rows < 1 or n < 1:
        return None
    if kind == "threshold":
        return threshold_cycles(rows, n, in_bits, out_bits, mach)
    lanes, width = mach.lanes, mach.width
    span, span_w = _span(n, lanes), _span(n, width)
    out_sp = out_bits <= mach.in_bits and kind in ("requant", "requant_tensor")
    in_bytes = max(1, in_bits // 8)
    const = 0
    if kind in ("requant", "requant_tensor"):
        acc_span, sp_span = span, span_w if out_sp else 0
        if not out_sp:
            acc_span += span
        const = 2 * span_w if kind == "requant" else 0
    elif kind in ("add", "add_channel", "product"):
        acc_span, sp_span = 3 * span, 0
        const = 4 * span_w if kind == "add_channel" else 0
    else:
        acc_span, sp_span = 2 * span, 0
        const = span_w if kind == "layernorm" else 0
    block = block_rows(rows, acc_span, sp_span, mach.acc_rows, mach.sp_rows)
    blocks = []
    for r0 in range(0, rows, block):
        r = min(block, rows - r0)
        load = rows_load_cycles(r, n, in_bytes, lanes)
        if kind == "requant":
            exe = stream_requant_cycles(r, True) if span == 1 else lane_cycles("requant", r * span, lanes)
        elif kind == "requant_tensor":
            exe = stream_requant_cycles(r * span) + (2 * CONFIG_CYCLES if r0 == 0 else 0)
        elif kind == "add":
            load *= 2
            exe = stream_requant_cycles(r * span) + (4 * CONFIG_CYCLES if r0 == 0 else 0)
        elif kind == "add_channel":  # each branch requantized per channel in place, then a unit-multiplier add
            load *= 2
            exe = 2 * lane_cycles("requant", r * span, lanes) + stream_requant_cycles(r * span) + 4 * CONFIG_CYCLES
        elif kind == "product":  # the CONFIGs of its (m, e) once, then VEC mul and a streaming VEC requant
            load *= 2
            exe = lane_cycles("mul", r * span, lanes) + stream_requant_cycles(r * span) + \
                (2 * CONFIG_CYCLES if r0 == 0 else 0)
        elif kind == "layernorm":  # the CONFIG of its epsilon, then the VEC
            exe = ilayernorm_cycles(r, n, lanes, max_row) + (CONFIG_CYCLES if r0 == 0 else 0)
        else:
            exe = lane_cycles("shiftgelu", r * span, lanes) + (CONFIG_CYCLES if r0 == 0 else 0)
        store = rows_store_cycles(r, n, width) if out_sp else rows_store_cycles(r, n, lanes)
        blocks.append(Block(load, exe, store))
    return pipeline_cycles(blocks, load_cycles(const, width * 4))


def threshold_cycles(rows: int, n: int, in_bits: int, out_bits: int, mach: Machine) -> int:
    """Cycles of a float island's ``quantize`` to ``out_bits`` over ``rows`` x ``n`` values of ``in_bits``: one
    threshold layer per block of ``lanes`` columns (``compiler/backend/model.py``, ``_threshold``), each loading
    its table (a cap row and ``2**b - 1`` threshold rows of ``width`` int32 words), then its column block (one
    DRAM row of ``nb`` elements per row) through one ``VEC threshold`` (one space row per element row) and its
    store; the blocks run one after another, each its own layer."""
    lanes = mach.lanes
    total = 0
    for b0 in range(0, n, lanes):
        nb = min(lanes, n - b0)
        block = block_rows(rows, 1, 1 if out_bits <= mach.in_bits else 0, mach.acc_rows, mach.sp_rows)
        if out_bits > mach.in_bits:
            block = block_rows(rows, 2, 0, mach.acc_rows, mach.sp_rows)
        blocks = [Block(load_cycles(min(block, rows - r0), nb * max(1, in_bits // 8)),
                        lane_cycles("threshold", min(block, rows - r0), lanes, out_bits),
                        store_cycles(min(block, rows - r0), nb)) for r0 in range(0, rows, block)]
        total += pipeline_cycles(blocks, load_cycles(1 << out_bits, mach.width * 4))
    return total


def transposed_copy_cycles(rows: int, n: int, elem_bytes: int, mach: Machine) -> int:
    """Cycles of a device move whose ``rows`` x ``n`` result is its source turned around (an NLC value read as NCHW,
    MLP-Mixer's token mixing): one copy layer per block of ``lanes`` result columns (``compiler/backend/model.py``,
    ``_move``), each row block a transposing ``LOAD`` of the block's source rows, a ``VEC copy`` and a ``STORE``;
    the blocks run one after another, each its own layer."""
    lanes = mach.lanes
    block = block_rows(rows, 2, 0, mach.acc_rows, mach.sp_rows)  # two slots of one space row per element row
    total = 0
    for b0 in range(0, n, lanes):
        nb = min(lanes, n - b0)
        blocks = [Block(transposed_load_cycles(nb, r, elem_bytes), lane_cycles("copy", r, lanes), store_cycles(r, nb))
                  for r in (min(block, rows - r0) for r0 in range(0, rows, block))]
        total += pipeline_cycles(blocks, load_cycles(0, mach.width * 4))  # no table: as layer_cycles leads
    return total


PROBABILITY_BITS = 16
"""The bits of the attention's Shiftmax probabilities on the system (``compiler.simulate.kernels.softmax_bits``)."""
DIGIT_BITS = 7
"""Bits per probability digit (``compiler/backend/attention.py``, ``DIGIT_BITS``)."""
def transposed_load_cycles(rows: int, k: int, elem_bytes: int = 1) -> int:
    """Cycles of a transposing load of ``rows`` DRAM rows of ``k`` elements into ``k`` space rows
    (:func:`hw.perf.execute_queue.transposed_load_cycles`, :data:`TRANSFER_CYCLES` included)."""
    return eq.transposed_load_cycles(rows, k, elem_bytes, TRANSFER_CYCLES)


def matmul_layer_cycles(m: int, n: int, k: int, digits: int, rhs_transposed: bool, mach: Machine,
                        array_rows: int) -> int:
    """Cycles of ``compiler/backend/tiles.py``'s ``matmul_layer``: an ``m x k`` (``digits`` int8 digit operands,
    each transposed on its load) by ``k x n`` product, one fold of ``array_rows x lanes`` at a time (column folds
    outer), each fold loading its ``A`` digits and its ``B``, running a ``GEMM`` per digit with a streaming
    ``VEC requant`` (times ``2**7``) between them, and storing its int32 fold, double-buffered."""
    from hw.perf.execute_queue import gemm_fold_cycles

    lanes = mach.lanes
    blocks = []
    for n0 in range(0, n, lanes):
        nf = min(lanes, n - n0)
        for m0 in range(0, m, array_rows):
            mf = min(array_rows, m - m0)
            load = digits * transposed_load_cycles(mf, k)
            load += transposed_load_cycles(nf, k) if rhs_transposed else load_cycles(k, nf)
            # the fold's instructions on the read channel: its loads, GEMMs, requants and store
            load += FETCH_BEAT_CYCLES * (2 * digits + 1 + digits)
            exe = digits * gemm_fold_cycles(k, array_rows, lanes) + (digits - 1) * stream_requant_cycles(mf)
            blocks.append(Block(load, exe, store_cycles(mf, nf)))
    return pipeline_cycles(blocks) + (2 * CONFIG_CYCLES if digits > 1 else 0)


def attention_cycles(heads: int, sq: int, sk: int, dh: int, dv: int, masked: bool, mach: Machine,
                     array_rows: int) -> int:
    """Cycles of one integer attention op as ``compiler/backend/attention.py`` emits it: per head a ``Q K^T``
    :func:`matmul_layer_cycles` (``K`` transposed on its load) into int32 scores; one softmax vector layer over
    the ``heads * sq`` score rows (with a mask: its two int32 halves loaded and added by two streaming
    ``requant_add``; then ``VEC shiftmax`` and one ``VEC digit`` per 7-bit digit of the 16-bit probabilities,
    each digit stored as int8); per head the ``P V`` digit products."""
    lanes, width = mach.lanes, mach.width
    digits = -(-(PROBABILITY_BITS - 1) // DIGIT_BITS)
    total = heads * matmul_layer_cycles(sq, sk, dh, 1, True, mach, array_rows)
    rows, span, span_w = heads * sq, _span(sk, lanes), _span(sk, width)
    acc_span = (3 if masked else 1) * span
    block = block_rows(rows, acc_span, digits * span_w, mach.acc_rows, mach.sp_rows)
    blocks = []
    for r0 in range(0, rows, block):
        r = min(block, rows - r0)
        load = (3 if masked else 1) * rows_load_cycles(r, sk, 4, lanes)
        exe = shiftmax_cycles(r, sk, lanes) + digits * (lane_cycles("copy", r * span, lanes) + CONFIG_CYCLES)
        exe += 2 * CONFIG_CYCLES  # the Shiftmax registers
        if masked:
            exe += 2 * stream_requant_cycles(r * span) + 4 * CONFIG_CYCLES
        blocks.append(Block(load, exe, digits * rows_store_cycles(r, sk, width)))
    total += pipeline_cycles(blocks)
    total += heads * matmul_layer_cycles(sq, dv, sk, digits, False, mach, array_rows)
    return total


def topk_cycles(rows: int, n: int, k: int, lanes: int) -> int:
    """Cycles of one ``VEC topk`` choosing ``k`` of ``n`` logits in each of ``rows`` element rows on ``lanes`` lanes,
    issue included: per element row ``TK_READ`` and ``TK_LATCH`` per input space row (``ceil(n / lanes)``), one
    cycle per logit into the sorted slots (``TK_FEED``), then ``TK_INDEX`` and ``TK_LOGIT`` per output space row
    (``ceil(k / lanes)``: the indices at ``dst``, the logits at ``aux``)."""
    return rows * (2 * _span(n, lanes) + n + 2 * _span(k, lanes)) + VEC_ISSUE_CYCLES


def rope_cycles(rows: int, n: int, mach: Machine, array_rows: int) -> int:
    """Cycles of an integer rotary embedding over ``rows`` x ``n`` int8 values as ``compiler/backend/rope.py``
    emits it: the partner product ``x @ P`` (:func:`matmul_layer_cycles`, ``n x n``), then one vector layer whose
    row blocks load ``x`` (int8), ``x @ P`` (int32) and the two widened tables (int16) into four accumulator slots,
    run two ``VEC mul``, a streaming ``requant_add`` and a streaming ``requant`` (each block's six ``CONFIG`` s
    first: the unit multipliers, then the op's ``(m, e)``) and store the int8 result from the scratchpad."""
    lanes, width = mach.lanes, mach.width
    span, span_w = _span(n, lanes), _span(n, width)
    block = block_rows(rows, 4 * span, span_w, mach.acc_rows, mach.sp_rows)
    blocks = []
    for r0 in range(0, rows, block):
        r = min(block, rows - r0)
        load = sum(load_cycles(r * span, lanes * elem) for elem in (1, 4, 2, 2))
        exe = 2 * lane_cycles("mul", r * span, lanes) + 2 * stream_requant_cycles(r * span) + 6 * CONFIG_CYCLES
        blocks.append(Block(load, exe, store_cycles(r * span_w, width)))
    return matmul_layer_cycles(rows, n, n, 1, False, mach, array_rows) + pipeline_cycles(blocks)
