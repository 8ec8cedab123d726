"""Exact systolic-array timing: the closed form of SCALE-Sim v3's compute cycles for one GEMM.

A GEMM multiplies A (``m x k``) by B (``k x n``). ``rows`` x ``cols`` is the PE array, in SCALE-Sim's
terms ``ArrayHeight`` x ``ArrayWidth``. Each dataflow keeps one operand's dimensions spatial (one per
array axis, tiled into *folds* when larger than the array) and streams the third dimension through
the array in time, ``T`` cycles per fold:

======== ============ ============ ============ ===========================
dataflow on rows (Sr) on cols (Sc) streamed (T) cycles per fold
======== ============ ============ ============ ===========================
``os``   m            n            k            ``T + rows + cols - 2``
``ws``   k            n            m            ``T + 2*rows + cols - 2``
``is``   k            m            n            ``T + 2*rows + cols - 2``
======== ============ ============ ============ ===========================

``folds = ceil(Sr / rows) * ceil(Sc / cols)`` and ``cycles = folds * per_fold - 1``.

Why these terms (SCALE-Sim builds per-fold demand matrices and concatenates them, with no overlap
between folds, so the total is a plain product):

* ``T``: one operand vector enters the array per cycle.
* ``rows - 1`` and ``cols - 1``: the skew. Operands enter the array edge one cycle apart per row
  (per column), so the last PE starts ``rows - 1`` (``cols - 1``) cycles after the first; the same
  skew drains the results. Output stationary pays exactly these two fills per fold.
* Another ``rows`` for weight/input stationary: the stationary tile is shifted into the array one
  row per cycle before streaming starts (SCALE-Sim's "cycles for weights to load" prefix).
* ``- 1``: SCALE-Sim reports the index of the cycle of the last output write, counting from 0.
* A partial fold (a shape that does not divide the array) costs a full fold: its idle PEs are
  padded with null requests, so only mapping efficiency drops, never the cycle count.

For non-square arrays the formulas are exactly as above: ``rows`` and ``cols`` enter
asymmetrically (the stationary preload runs along the rows), so ``ws``/``is`` on 4x8 and 8x4
differ. SCALE-Sim's "Total Cycles" also counts memory stall cycles; in ``InterfaceBandwidth: CALC``
mode (which the oracle test and the figures of docs/SOURCES.md [18] use) the buffers never stall, and
these formulas equal the report exactly. With user-set DRAM bandwidths SCALE-Sim can add stalls
that no closed form in the GEMM shape captures.

Everything here is integer arithmetic on Python ints and answers in about a microsecond.
"""

from __future__ import annotations

from numbers import Integral

from hw.errors import InputError

__all__ = ["DATAFLOWS", "fold_counts", "fold_cycles", "systolic_cycles", "fold_overlap_cycles", "streamed_folds_cycles",
           "utilization"]

DATAFLOWS: tuple[str, ...] = ("os", "ws", "is")


def _check(fn: str, m: int, n: int, k: int, rows: int, cols: int, dataflow: str) -> None:
    for name, value in (("m", m), ("n", n), ("k", k), ("rows", rows), ("cols", cols)):
        if type(value) is int and value > 0:  # the common case, without the slower ABC check
            continue
        if isinstance(value, bool) or not isinstance(value, Integral) or value < 1:
            raise InputError(f"{fn}: {name} must be a positive integer, got {value!r}")
    if dataflow not in DATAFLOWS:
        raise InputError(f"{fn}: dataflow must be one of 'os', 'ws', 'is', got {dataflow!r}")


def _spatial_temporal(m: int, n: int, k: int, dataflow: str) -> tuple[int, int, int]:
    """(dimension on the rows, dimension on the cols, streamed dimension) for ``dataflow``."""
    if dataflow == "os":
        return m, n, k
    if dataflow == "ws":
        return k, n, m
    return k, m, n


def fold_counts(m: int, n: int, k: int, rows: int, cols: int, dataflow: str) -> tuple[int, int]:
    """Folds along the array rows and along the array cols (tiles, not cycles).

    ``os``: ``(ceil(m/rows), ceil(n/cols))``; ``ws``: ``(ceil(k/rows), ceil(n/cols))``;
    ``is``: ``(ceil(k/rows), ceil(m/cols))``. Their product is the number of array passes.
    """
    _check("fold_counts", m, n, k, rows, cols, dataflow)
    sr, sc, _ = _spatial_temporal(int(m), int(n), int(k), dataflow)
    return -(-sr // int(rows)), -(-sc // int(cols))


def fold_cycles(m: int, n: int, k: int, rows: int, cols: int, dataflow: str) -> int:
    """Cycles of one fold: ``k + rows + cols - 2`` (os), ``m + 2*rows + cols - 2`` (ws),
    ``n + 2*rows + cols - 2`` (is). See the module docstring for the fill/drain terms."""
    _check("fold_cycles", m, n, k, rows, cols, dataflow)
    _, _, t = _spatial_temporal(int(m), int(n), int(k), dataflow)
    preload = 0 if dataflow == "os" else int(rows)
    return t + preload + int(rows) + int(cols) - 2


def systolic_cycles(m: int, n: int, k: int, rows: int, cols: int, dataflow: str) -> int:
    """Compute cycles of an (m x k) by (k x n) GEMM on a rows x cols array, equal to SCALE-Sim v3.

    Returns ``folds * per_fold - 1`` cycles, the "Total Cycles" column of SCALE-Sim v3's
    COMPUTE_REPORT.csv (``InterfaceBandwidth: CALC``, so no stalls):

    * ``os``: ``ceil(m/rows) * ceil(n/cols) * (k + rows + cols - 2) - 1``
    * ``ws``: ``ceil(k/rows) * ceil(n/cols) * (m + 2*rows + cols - 2) - 1``
    * ``is``: ``ceil(k/rows) * ceil(m/cols) * (n + 2*rows + cols - 2) - 1``

    The ``rows - 1`` and ``cols - 1`` terms are the skewed fill and drain of each fold; ``ws`` and
    ``is`` add ``rows`` cycles to shift the stationary tile in. ``rows`` and ``cols`` are
    SCALE-Sim's ArrayHeight and ArrayWidth. Raises ``InputError`` for a non-positive or non-integer
    size or an unknown dataflow.
    """
    _check("systolic_cycles", m, n, k, rows, cols, dataflow)
    m, n, k, rows, cols = int(m), int(n), int(k), int(rows), int(cols)
    if dataflow == "os":
        return -(-m // rows) * -(-n // cols) * (k + rows + cols - 2) - 1
    if dataflow == "ws":
        return -(-k // rows) * -(-n // cols) * (m + 2 * rows + cols - 2) - 1
    return -(-k // rows) * -(-m // cols) * (n + 2 * rows + cols - 2) - 1


def streamed_folds_cycles(folds: int, k: int, rows: int, cols: int) -> int:
    """Cycles to the last MAC of ``folds`` output-stationary folds of ``k`` beats streamed back to back on a
    ``rows`` x ``cols`` array whose folds overlap (``hw.rtl.systolic_stream``): ``(folds - 1) * max(k, rows) + k +
    rows + cols - 3``. Each fold after the first adds ``max(k, rows)`` cycles, not SCALE-Sim's ``k + rows + cols -
    2``: its operands enter while the previous fold's results drain through shadow registers, and a fold shorter
    than ``rows`` waits for the previous one's ``rows`` result rows to leave the one-row-per-cycle port. The
    skew (``rows + cols - 2``) is paid once; ``- 1`` as in :func:`systolic_cycles` (the index of the last MAC's
    cycle). Not a SCALE-Sim count: SCALE-Sim never overlaps folds."""
    return (int(folds) - 1) * max(int(k), int(rows)) + int(k) + int(rows) + int(cols) - 3


def fold_overlap_cycles(m: int, n: int, k: int, rows: int, cols: int) -> int:
    """:func:`streamed_folds_cycles` of an (m x k) by (k x n) output-stationary GEMM, ``ceil(m/rows) *
    ceil(n/cols)`` folds: the compute count of the array with fold overlap (a target's ``gemm.fold_overlap``)."""
    _check("fold_overlap_cycles", m, n, k, rows, cols, "os")
    return streamed_folds_cycles(-(-int(m) // int(rows)) * -(-int(n) // int(cols)), k, rows, cols)


def utilization(m: int, n: int, k: int, rows: int, cols: int, dataflow: str) -> float:
    """Mapping efficiency as SCALE-Sim reports it, as a fraction in (0, 1] (SCALE-Sim prints %).

    The mean over folds of (PEs holding a mapped element) / (rows * cols), which sums in closed
    form to ``Sr * Sc / (rows * cols * folds)`` with ``Sr``, ``Sc`` the spatial dimensions
    (os: m, n; ws: k, n; is: k, m). It ignores fill and drain; for the share of PE-cycles doing
    MACs use ``m * n * k / (rows * cols * (systolic_cycles(...) + 1))``.
    """
    _check("utilization", m, n, k, rows, cols, dataflow)
    sr, sc, _ = _spatial_temporal(int(m), int(n), int(k), dataflow)
    row_folds, col_folds = -(-sr // rows), -(-sc // cols)
    return (sr * sc) / (int(rows) * int(cols) * row_folds * col_folds)
