"""Output-stationary integer systolic GEMM array whose folds stream: the next fold's operands enter while the
previous fold's results drain.

``SystolicGemmStream(rows, cols, in_bits, acc_bits)`` has the ports, payloads, host-side streaming order and
arithmetic of :class:`hw.rtl.systolic.SystolicGemm` (same ``operands`` / ``results`` streams, same
``operand_beats`` / ``assemble_results``), and differs only in timing. The plain array pays the skew
(``rows + cols - 2`` input cycles) after every fold, because a PE's accumulator is read out from the array's
corner; here each PE has a *shadow* register that takes the fold's sum at the PE's last MAC (the Gemmini / TPU
double-buffered output), so the PE's accumulator starts the next fold on the very next beat. The shadow tile is
read out on its own path, skewed like the MACs: lane ``j`` of row ``i`` is read the cycle after PE ``(i, j)``
made its last MAC, and ``cols - 1 - j`` de-skew registers line the lanes up into one result row. Row ``i`` of a
fold whose last beat was accepted in cycle ``L`` is offered in cycle ``L + cols + i``.

Why a fold must span ``rows`` cycles: the ``results`` port hands over one row per cycle, so a fold's ``rows``
result rows take ``rows`` cycles. A beat with ``last`` set is therefore not accepted until ``rows`` cycles after
the previous fold's last beat (``operands.ready`` is low for it; the beats before it enter freely). Folds of
``k >= rows`` never wait; shorter folds stretch to ``rows`` cycles each. (``operands.ready`` depends on
``payload.last``, which the source holds stable while ``valid``, as every stream's payload.)

A shadow value is read the cycle after it is written and overwritten no earlier than the next fold's last MAC
in the same PE, at least one cycle later, so no result is lost; backpressure on ``results`` freezes the whole
array for that cycle (``operands.ready`` goes low combinationally), as in the plain array.

Timing (:func:`predicted_cycles`): with operands offered every cycle and results always accepted, the cycles
from the edge that accepts the first operand beat to the edge that hands over the last result row are
``fold_overlap_cycles(m, n, k, rows, cols) + 1`` (``hw.perf.systolic``)::

    (folds - 1) * max(k, rows) + k + rows + cols - 2,    folds = ceil(m/rows) * ceil(n/cols)

against the plain array's ``folds * (k + rows + cols - 2) - 1 + rows``.
"""

from __future__ import annotations

from amaranth.hdl import Array, Module, Mux, Signal, signed
from amaranth.lib import data

from hw.perf.systolic import fold_overlap_cycles
from hw.rtl.systolic import SystolicGemm, _check_gemm, delayed_by, skewed_grid

__all__ = ["SystolicGemmStream", "predicted_cycles", "READOUT_CYCLES"]

READOUT_CYCLES = 1
"""Cycles ``predicted_cycles`` adds to the last MAC: the shadow pipeline hands the last row over one edge after
the last MAC (earlier rows left while the last fold's wavefront crossed the array)."""


class SystolicGemmStream(SystolicGemm):
    """Output-stationary ``rows x cols`` array whose folds stream (module docstring)."""

    KERNEL = "systolic_gemm_stream"
    # Not the registry's os array: targets choose it with ``gemm.fold_overlap`` (hw/models/fpga.py).
    DATAFLOW = None

    @classmethod
    def invocation_cycles(cls, params, work):
        return predicted_cycles(work["m"], work["n"], work["k"], params["rows"], params["cols"])

    @classmethod
    def cycles_formula(cls, params):
        return "(ceil(m/rows) * ceil(n/cols) - 1) * max(k, rows) + k + rows + cols - 2"

    @classmethod
    def readout_cycles(cls, params):
        return READOUT_CYCLES

    def elaborate(self, platform):
        m = Module()
        rows, cols = self.rows, self.cols

        enable = Signal()
        m.d.comb += enable.eq(~self.results.valid | self.results.ready)

        # Enabled cycles since the last accepted fold-closing beat, saturating at rows: a closing beat needs rows.
        since = Signal(range(rows + 1), init=rows)
        first = Signal(init=1)
        fire = Signal()
        payload = self.operands.payload
        m.d.comb += [
            self.operands.ready.eq(enable & (~payload.last | (since == rows))),
            fire.eq(self.operands.valid & self.operands.ready),
        ]
        with m.If(enable):
            with m.If(fire & payload.last):
                m.d.sync += since.eq(1)
            with m.Elif(since != rows):
                m.d.sync += since.eq(since + 1)
            with m.If(fire):
                m.d.sync += first.eq(payload.last)

        def delayed(value, depth: int, name: str):
            return delayed_by(m, enable, value, depth, name)

        ctl, a_in, b_in = skewed_grid(m, enable, fire, first, payload, rows, cols)
        acc = [[Signal(signed(self.acc_bits), name=f"acc_{i}_{j}") for j in range(cols)] for i in range(rows)]
        shadow = [[Signal(signed(self.acc_bits), name=f"shadow_{i}_{j}") for j in range(cols)] for i in range(rows)]
        for i in range(rows):
            for j in range(cols):
                c = ctl[i + j]
                total = Signal(signed(self.acc_bits), name=f"sum_{i}_{j}")
                m.d.comb += total.eq(Mux(c.first, 0, acc[i][j]) + a_in[i][j] * b_in[i][j])
                with m.If(enable & c.valid):
                    m.d.sync += acc[i][j].eq(total)
                    with m.If(c.last):
                        m.d.sync += shadow[i][j].eq(total)

        # Read pipeline: rd[0] walks rows 0..rows-1 from the cycle after a fold's last beat; rd[j] is rd[0]
        # delayed j cycles and reads lane j of its row, the cycle after PE (row, j) wrote its shadow.
        rd_layout = data.StructLayout({"valid": 1, "row": range(rows)})
        rd = [Signal(rd_layout, name=f"rd{j}") for j in range(cols)]
        with m.If(enable):
            with m.If(fire & payload.last):
                m.d.sync += [rd[0].valid.eq(1), rd[0].row.eq(0)]
            with m.Elif(rd[0].valid & (rd[0].row == rows - 1)):
                m.d.sync += rd[0].valid.eq(0)
            with m.Elif(rd[0].valid):
                m.d.sync += rd[0].row.eq(rd[0].row + 1)
            m.d.sync += [rd[j].eq(rd[j - 1]) for j in range(1, cols)]
        for j in range(cols):
            column = Array(shadow[i][j] for i in range(rows))
            lane = Signal(signed(self.acc_bits), name=f"lane{j}")
            m.d.comb += lane.eq(column[rd[j].row])
            # Lane j is read j cycles before the last lane; that many registers line it up.
            m.d.comb += self.results.payload.c[j].eq(delayed(lane, cols - 1 - j, f"lane{j}"))
        m.d.comb += [
            self.results.valid.eq(rd[cols - 1].valid),
            self.results.payload.last.eq(rd[cols - 1].row == rows - 1),
        ]
        return m


def predicted_cycles(m: int, n: int, k: int, rows: int, cols: int) -> int:
    """Cycles :class:`SystolicGemmStream` takes for an ``(m x k) @ (k x n)`` product, exactly.

    Counted as :func:`hw.rtl.systolic.predicted_cycles` counts (the first accepting edge to the edge handing over
    the last result row, operands offered every cycle the array is ready, results always taken)::

        fold_overlap_cycles(m, n, k, rows, cols) + 1
        = (folds - 1) * max(k, rows) + k + rows + cols - 2

    Fold ``f``'s last beat is accepted in cycle ``L_f``: ``L_0 = k - 1`` and ``L_{f+1} = L_f + max(k, rows)``
    (a fold of ``k`` beats right after the previous one, its last beat held until ``rows`` cycles have passed);
    the last fold's last row leaves in cycle ``L + rows - 1 + cols``.
    """
    _check_gemm(m, n, k, SystolicGemmStream.KERNEL)
    return fold_overlap_cycles(m, n, k, rows, cols) + READOUT_CYCLES
