"""Weight-stationary integer systolic GEMM array, its host-side streaming order, and its exact timing.

``SystolicGemmWs(rows, cols, in_bits, acc_bits)`` computes ``C = A (M x K) @ B (K x N)`` in signed
integers for any ``M, N, K`` with SCALE-Sim's weight-stationary mapping: ``K`` lies on the array
rows and ``N`` on the columns, so the host cuts ``B`` into ``ceil(K/rows) * ceil(N/cols)`` weight
tiles (*folds*), in SCALE-Sim's order (column fold outer, row fold inner). Each fold loads its tile
into the PEs, then streams all ``M`` rows of ``A[:, k0:k0+rows]`` through the array.

Ports (Verilog names; ``clk`` and the synchronous active-high ``rst`` as well):

``operands`` (in, stream: ``operands__valid``, ``operands__ready``, ``operands__payload``)
    Per fold, ``rows`` *load* beats then ``M`` *activation* beats. Fields, LSB first: ``a``
    (``rows`` signed ``in_bits`` lanes), ``w`` (``cols`` lanes), ``load``, ``last``. A load beat
    (``load=1``) carries one row of the weight tile in ``w`` (``B[kk, n0:n0+cols]``), bottom row
    (``kk = k0+rows-1``) first, because rows enter at the top of the array and shift down one PE
    row per load beat. An activation beat carries ``A[mm, k0:k0+rows]`` in ``a``; ``last`` marks
    the fold's final one (``mm = M-1``). Lanes past the edge of ``A`` or ``B`` carry zeros.
``results`` (out, stream)
    ``M`` beats per fold: ``c`` (``cols`` signed ``acc_bits`` lanes, the fold's partial product
    ``A[mm, k0:k0+rows] @ B[k0:k0+rows, n0:n0+cols]``) and ``last`` (set on ``mm = M-1``). The
    same layout as ``systolic_gemm``'s results.

Partial sums of the ``ceil(K/rows)`` row folds are **added by the host** (:func:`assemble_results`,
in Python integers): the kernel needs no output buffer sized for ``M``, and the sum is exact. Each
partial is at most ``rows * 2**(2*in_bits - 2)`` in magnitude, so it is exact in ``acc_bits``
whenever ``acc_bits >= 2*in_bits - 1 + bitlen(rows)`` (with 32 bits: any array up to 256 rows);
a narrower ``acc_bits`` wraps the partials modulo ``2**acc_bits``.

Inside: PE ``(i, j)`` holds weight ``w[i][j]``. Lane ``i`` of ``a`` is delayed by ``i`` registers
and then one more per PE column, so PE ``(i, j)`` sees the activation accepted in cycle ``t`` in
cycle ``t + i + j`` (PE ``(0, 0)`` works on the accepted payload directly). Partial sums move down
the columns: ``p[i][j] <= p[i-1][j] + a * w[i][j]`` at the edge ending cycle ``t + i + j``. Column
``j``'s bottom sum is delayed ``cols - 1 - j`` more registers (the de-skew), so a whole result row
is registered at the edge ending ``t + rows + cols - 2`` and handed over on the next edge. Sums
wrap modulo ``2**acc_bits``.

Like SCALE-Sim's weight-stationary model, folds do not overlap: after a fold's last activation,
``operands.ready`` stays low for ``rows + cols - 2`` cycles while the skew drains (so the next
tile's load cannot change a weight still in use), so each fold occupies exactly
``rows + M + rows + cols - 2`` cycles of input. Backpressure on ``results`` freezes the whole array
for that cycle (``operands.ready`` goes low combinationally), so no result is lost.

Timing (:func:`predicted_cycles`): ``systolic_cycles(m, n, k, rows, cols, "ws") + 1``.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence

from amaranth.hdl import Module, Signal, signed
from amaranth.lib import data

from hw.perf.systolic import systolic_cycles
from hw.rtl.kernel import ParamSpec
from hw.rtl.systolic import SystolicGemm, _check_gemm, _pack, delayed_by, unpack_results

__all__ = [
    "SystolicGemmWs",
    "predicted_cycles",
    "fold_origins",
    "operand_beats",
    "assemble_results",
    "pack_operands",
    "unpack_results",
    "HANDOVER_CYCLES",
]

HANDOVER_CYCLES = 1
"""Edges from the last MAC (SCALE-Sim's last cycle) to the handover of the last result row: the
result leaves the array from registers, so it is taken on the edge after the one that wrote it."""


def operand_layout(rows: int, cols: int, in_bits: int) -> data.StructLayout:
    """Payload of the ``operands`` stream (field order = bit order, LSB first)."""
    return data.StructLayout(
        {
            "a": data.ArrayLayout(signed(in_bits), rows),
            "w": data.ArrayLayout(signed(in_bits), cols),
            "load": 1,
            "last": 1,
        }
    )


class SystolicGemmWs(SystolicGemm):
    """Weight-stationary ``rows x cols`` array of signed ``in_bits`` MACs into ``acc_bits`` (module docstring).

    Parameters, their checks and the ports' shape come from ``SystolicGemm``; only the operand payload (weight
    load beats) and the datapath differ.
    """

    KERNEL = "systolic_gemm_ws"
    PARAMS = {
        "rows": ParamSpec(4, "PE rows (reduction elements k per fold)", lo=1, hi=256),
        "cols": ParamSpec(4, "PE columns (output columns per fold)", lo=1, hi=256),
        "in_bits": ParamSpec(8, "operand width in bits, signed", choices=(4, 8)),
        "acc_bits": ParamSpec(32, "partial-sum width in bits, signed, wraps", lo=8, hi=64),
    }
    DATAFLOW = "ws"

    @classmethod
    def invocation_cycles(cls, params, work):
        return predicted_cycles(work["m"], work["n"], work["k"], params["rows"], params["cols"])

    @classmethod
    def cycles_formula(cls, params):
        return f"ceil(k/rows) * ceil(n/cols) * (m + 2 * rows + cols - 2) - 1 + {HANDOVER_CYCLES}"

    @classmethod
    def readout_cycles(cls, params):
        return HANDOVER_CYCLES
    operand_layout = staticmethod(operand_layout)

    def elaborate(self, platform):
        m = Module()
        rows, cols = self.rows, self.cols
        skew = rows + cols - 2  # cycles from PE (0, 0) to PE (rows-1, cols-1)

        # Freeze everything while a result is offered and not taken (as systolic_gemm does).
        enable = Signal()
        m.d.comb += enable.eq(~self.results.valid | self.results.ready)

        # Input gap after each fold's last activation: the skew drains before the next tile loads.
        gap = Signal(range(skew + 1))
        fire = Signal()
        payload = self.operands.payload
        m.d.comb += [
            self.operands.ready.eq(enable & (gap == 0)),
            fire.eq(self.operands.valid & self.operands.ready),
        ]
        with m.If(enable):
            if skew:
                with m.If(fire & ~payload.load & payload.last):
                    m.d.sync += gap.eq(skew)
                with m.Elif(gap != 0):
                    m.d.sync += gap.eq(gap - 1)

        # Stationary weights: a load beat enters PE row 0 and pushes every row one PE row down.
        w = [[Signal(signed(self.in_bits), name=f"w_{i}_{j}") for j in range(cols)] for i in range(rows)]
        with m.If(enable & fire & payload.load):
            for j in range(cols):
                m.d.sync += w[0][j].eq(payload.w[j])
                m.d.sync += [w[i][j].eq(w[i - 1][j]) for i in range(1, rows)]

        # Control delay line: ctl[d] is (valid, last) of the activation accepted d cycles ago; the
        # result row of the activation accepted in cycle t is offered in cycle t + skew + 1.
        ctl_layout = data.StructLayout({"valid": 1, "last": 1})
        ctl = [Signal(ctl_layout, name=f"ctl{d}") for d in range(skew + 2)]
        m.d.comb += [ctl[0].valid.eq(fire & ~payload.load), ctl[0].last.eq(payload.last)]
        with m.If(enable):
            m.d.sync += [ctl[d].eq(ctl[d - 1]) for d in range(1, skew + 2)]

        def delayed(value, depth: int, name: str):
            return delayed_by(m, enable, value, depth, name)

        # PEs run every enabled cycle; invalid beats make sums nobody reads (ctl gates the output).
        psum = [[Signal(signed(self.acc_bits), name=f"p_{i}_{j}") for j in range(cols)] for i in range(rows)]
        for i in range(rows):
            a_in = delayed(payload.a[i], i, f"a{i}")
            for j in range(cols):
                if j:
                    a_in = delayed(a_in, 1, f"a_{i}_{j - 1}")
                above = psum[i - 1][j] if i else 0
                with m.If(enable):
                    m.d.sync += psum[i][j].eq(above + a_in * w[i][j])

        m.d.comb += [
            self.results.valid.eq(ctl[skew + 1].valid),
            self.results.payload.last.eq(ctl[skew + 1].last),
        ]
        for j in range(cols):
            m.d.comb += self.results.payload.c[j].eq(delayed(psum[rows - 1][j], cols - 1 - j, f"out{j}"))
        return m


def predicted_cycles(m: int, n: int, k: int, rows: int, cols: int) -> int:
    """Cycles :class:`SystolicGemmWs` takes for an ``(m x k) @ (k x n)`` product, exactly.

    Counted from the clock edge that accepts the first operand beat (the first fold's first load
    beat) to the edge that hands over the last result row, with operands offered every cycle the
    array is ready and results always accepted::

        systolic_cycles(m, n, k, rows, cols, "ws") + 1
        = ceil(k/rows) * ceil(n/cols) * (m + 2*rows + cols - 2) - 1 + 1

    The first term is SCALE-Sim's weight-stationary count, cycle for cycle: per fold ``rows`` load
    beats (the stationary tile shifted in one row per cycle), ``m`` activation beats, and
    ``rows + cols - 2`` cycles of skew drain while ``operands.ready`` is low, with no overlap
    between folds. Its ``- 1``: PE ``(0, 0)`` works on a beat in the cycle it is accepted, so the
    last MAC (PE ``(rows-1, cols-1)``, last activation) lands on edge ``folds * per_fold - 1``.
    The extra term:

    * ``+ 1`` (``HANDOVER_CYCLES``): the last result row is offered from registers (the last PE's
      sum, the other columns' de-skew registers) and taken on the following edge. Earlier result
      rows leave under later beats, so no other term is per fold or per row.
    * ``+ 0`` handshake: ``operands.ready`` and ``results.valid`` are not registered.

    Input bubbles or results backpressure add their own cycles on top (not modelled).
    """
    _check_gemm(m, n, k, "systolic_gemm_ws")
    return systolic_cycles(m, n, k, rows, cols, "ws") + HANDOVER_CYCLES


# --- host side: the streaming order both the testbench and a driver use --------------------------


def fold_origins(k: int, n: int, rows: int, cols: int) -> list[tuple[int, int]]:
    """``(k0, n0)`` of each weight tile in streaming order: column fold outer, row fold inner
    (SCALE-Sim's WS fold loops), so the row folds of one output column block are adjacent."""
    return [(k0, n0) for n0 in range(0, n, cols) for k0 in range(0, k, rows)]


def operand_beats(
    a: Sequence[Sequence[int]], b: Sequence[Sequence[int]], rows: int, cols: int
) -> Iterator[tuple[list[int], list[int], bool, bool]]:
    """The ``(a_lanes, w_lanes, load, last)`` beats that feed ``A @ B`` to the array, in order.

    ``a`` is ``M`` rows of ``K`` ints, ``b`` is ``K`` rows of ``N`` ints; lanes past the matrix edge
    are zero. Per fold: ``rows`` load beats (bottom tile row first), then ``M`` activation beats.
    """
    m, k, n = len(a), len(b), len(b[0])
    zeros_a, zeros_w = [0] * rows, [0] * cols
    for k0, n0 in fold_origins(k, n, rows, cols):
        for i in reversed(range(rows)):
            kk = k0 + i
            w_lanes = [b[kk][n0 + j] if kk < k and n0 + j < n else 0 for j in range(cols)]
            yield zeros_a, w_lanes, True, False
        for mm in range(m):
            a_lanes = [a[mm][k0 + i] if k0 + i < k else 0 for i in range(rows)]
            yield a_lanes, zeros_w, False, mm == m - 1


def assemble_results(
    result_rows: Sequence[Sequence[int]], m: int, n: int, k: int, rows: int, cols: int
) -> list[list[int]]:
    """Rebuild ``C`` (``m x n``) from the result rows in the order the array produced them,
    adding the row folds' partial sums (Python integers, exact)."""
    origins = fold_origins(k, n, rows, cols)
    if len(result_rows) != len(origins) * m:
        raise ValueError(f"expected {len(origins) * m} result rows, got {len(result_rows)}")
    c = [[0] * n for _ in range(m)]
    for f, (_, n0) in enumerate(origins):
        for mm in range(m):
            row = result_rows[f * m + mm]
            for j in range(min(cols, n - n0)):
                c[mm][n0 + j] += row[j]
    return c


def pack_operands(a_lanes: Sequence[int], w_lanes: Sequence[int], load: bool, last: bool, in_bits: int) -> int:
    """The ``operands__payload`` integer for one beat (two's complement lanes, LSB first)."""
    lanes = (len(a_lanes) + len(w_lanes)) * in_bits
    return (
        _pack(a_lanes, in_bits)
        | _pack(w_lanes, in_bits) << (len(a_lanes) * in_bits)
        | int(load) << lanes
        | int(last) << (lanes + 1)
    )
