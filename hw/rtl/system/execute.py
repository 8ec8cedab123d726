"""The execute unit: ``GEMM`` on the output-stationary systolic array (and, built with ``ws``, the weight-stationary
one); ``VEC`` and ``CONFIG`` on the vector unit (docs/ISA.md).

``GEMM`` (``dataflow`` 0, one fold, ``m <= rows``, ``n <= cols``): reads bias row ``bias_row`` of the constant
memory (one cycle), then streams ``k`` beats into ``hw.rtl.systolic.SystolicGemm``, beat ``i`` built from
scratchpad rows ``a_row + i`` (lanes ``< m``) and ``b_row + i`` (lanes ``< n``), lanes past ``m`` / ``n`` zeroed
so stale buffer contents never reach the array. Each of the array's ``rows`` result rows ``i < m`` is written one
cycle later into accumulator row ``c_row + i``, lanes ``< n``, plus the bias and (``accumulate``) the row's old
value, wrapping modulo ``2**acc_bits`` as the array does. Cycles: the array's ``predicted_cycles`` for one fold
plus about three (bias read, scratchpad read latency, accumulator write).

``GEMM`` (``dataflow`` 1, one fold, ``k <= rows``, ``n <= cols``; only when built with ``ws``): after the bias
read, ``rows`` load beats into ``hw.rtl.systolic_ws.SystolicGemmWs`` carry the weight tile bottom row first (beat
``t`` reads scratchpad row ``b_row + rows - 1 - t``; rows at or past ``k`` and lanes ``>= n`` zeroed), then ``m``
activation beats read rows ``a_row + i`` (lanes ``< k``). The array's ``m`` result rows are written at
``c_row + i`` exactly as the os results (bias, ``accumulate``), so a ``k`` longer than ``rows`` runs as several
``GEMM`` s whose partial sums add in the accumulator. Cycles: ``hw.rtl.systolic_ws.predicted_cycles`` for one fold
(``m + 2 * rows + cols - 2``) plus the same issue cycles as os.

``VEC`` and ``CONFIG`` go to ``hw.rtl.system.vec.VecUnit`` (its own memory ports and the configuration
registers), which this unit starts and waits for.

Not built, and refused by raising ``fault`` (the instruction then completes without effect, so the program
still drains): weight-stationary ``GEMM`` on a unit built without ``ws``, and the ``VEC`` functions ``VecUnit``
lists.
"""

from __future__ import annotations

from amaranth.hdl import Cat, Elaboratable, Module, Mux, Signal, signed

from hw.isa import Opcode
from hw.rtl.system.fields import field, opcode
from hw.rtl.system.vec import VecUnit
from hw.rtl.systolic import SystolicGemm
from hw.rtl.systolic_ws import SystolicGemmWs

__all__ = ["Execute"]

def _lane(value, index: int, bits: int):
    return value.word_select(index, bits).as_signed()


class Execute(Elaboratable):
    """One execute-queue instruction per ``go`` (``instr`` held until ``done``). Memory ports are passed in:
    ``sp_a``, ``sp_b`` (scratchpad reads), ``acc_r``, ``acc_w``, ``const_r``; ``vec`` is the vector unit (a
    ``VecUnit`` with its own ports), elaborated here as a submodule. ``ws``: also build the weight-stationary
    array (module docstring); without it the Verilog is the os-only unit's, gate for gate."""

    def __init__(self, *, rows: int, cols: int, in_bits: int, acc_bits: int,
                 sp_a, sp_b, acc_r, acc_w, const_r, vec: VecUnit, ws: bool = False):
        self.rows, self.cols, self.in_bits, self.acc_bits = rows, cols, in_bits, acc_bits
        self.ws = ws
        self.sp_a, self.sp_b = sp_a, sp_b
        self.acc_r, self.acc_w, self.const_r = acc_r, acc_w, const_r
        self.vec = vec
        self.go = Signal()
        self.instr = Signal(128)
        self.done = Signal()
        self.fault = Signal()

    def elaborate(self, platform):
        m = Module()
        rows, cols, in_bits, acc_bits = self.rows, self.cols, self.in_bits, self.acc_bits
        m.submodules.array = array = SystolicGemm(rows, cols, in_bits, acc_bits)
        m.submodules.vec = vec = self.vec
        word = self.instr
        m.d.comb += vec.instr.eq(word)

        def g(name):
            return field(word, Opcode.GEMM, name)

        bias = [Signal(signed(acc_bits), name=f"bias{j}") for j in range(cols)]
        m.d.comb += self.const_r.addr.eq(g("bias_row"))

        # Operand feed, one beat per cycle the array takes: `idx` is the next beat to read, `fvalid` / `fidx`
        # describe the beat the read ports hold now.
        idx = Signal(16)
        fvalid = Signal()
        fidx = Signal(16)
        advance = Signal()
        feeding = Signal()
        ops = array.operands
        gm, gn, gk = g("m"), g("n"), g("k")
        a_data, b_data = self.sp_a.data, self.sp_b.data
        if self.ws:
            m.submodules.array_ws = ws_array = SystolicGemmWs(rows, cols, in_bits, acc_bits)
            ws_ops = ws_array.operands
            is_ws = Signal()
            m.d.comb += is_ws.eq(g("dataflow") == 1)
            beats = Mux(is_ws, rows + gm, gk)  # ws: rows weight-load beats, then m activation beats
            ready = Mux(is_ws, ws_ops.ready, ops.ready)
            # ws: load beat t reads weight row rows-1-t (bottom row first), activation beat t row t-rows
            kk = Signal(16)
            m.d.comb += kk.eq(rows - 1 - fidx)
            loading = Signal()
            m.d.comb += loading.eq(fidx < rows)
            m.d.comb += [
                self.sp_a.addr.eq(Mux(is_ws, g("a_row") + idx - rows, g("a_row") + idx)),
                self.sp_b.addr.eq(Mux(is_ws, g("b_row") + rows - 1 - idx, g("b_row") + idx)),
                ws_ops.valid.eq(feeding & fvalid & is_ws),
                ws_ops.payload.load.eq(loading),
                ws_ops.payload.last.eq(fidx == rows + gm - 1),
            ]
            m.d.comb += [ws_ops.payload.w[j].eq(Mux(loading & (kk < gk) & (j < gn), _lane(b_data, j, in_bits), 0))
                         for j in range(cols)]
            m.d.comb += [ws_ops.payload.a[i].eq(Mux(~loading & (i < gk), _lane(a_data, i, in_bits), 0))
                         for i in range(rows)]
        else:
            is_ws = None
            beats, ready = gk, ops.ready
        m.d.comb += advance.eq(feeding & (~fvalid | ready))
        with m.If(advance):
            m.d.sync += [fvalid.eq(idx < beats), fidx.eq(idx), idx.eq(idx + 1)]

        os_valid = feeding & fvalid if is_ws is None else feeding & fvalid & ~is_ws
        addrs = [] if is_ws is not None else [self.sp_a.addr.eq(g("a_row") + idx), self.sp_b.addr.eq(g("b_row") + idx)]
        m.d.comb += [
            *addrs, self.sp_a.en.eq(advance), self.sp_b.en.eq(advance),
            ops.payload.last.eq(fidx == gk - 1), ops.valid.eq(os_valid),
        ]
        m.d.comb += [ops.payload.a[i].eq(Mux(i < gm, _lane(a_data, i, in_bits), 0)) for i in range(rows)]
        m.d.comb += [ops.payload.b[j].eq(Mux(j < gn, _lane(b_data, j, in_bits), 0)) for j in range(cols)]

        # Results: one register stage, during which the accumulator row's old value is read.
        res = array.results
        res_in_valid, res_in_last, res_in_c = res.valid, res.payload.last, res.payload.c
        ri = Signal(range(rows + 1))
        if is_ws is not None:
            ws_res = ws_array.results
            m.d.comb += ws_res.ready.eq(1)
            res_in_valid = Mux(is_ws, ws_res.valid, res.valid)
            res_in_last = Mux(is_ws, ws_res.payload.last, res.payload.last)
            res_in_c = [Mux(is_ws, ws_res.payload.c[j], res.payload.c[j]) for j in range(cols)]
            ri = Signal(16)  # a ws fold has m result rows (up to 4,096)
        res_row = [Signal(signed(acc_bits), name=f"res{j}") for j in range(cols)]
        res_valid, res_last = Signal(), Signal()
        res_addr = Signal(16)
        m.d.comb += res.ready.eq(1)
        m.d.sync += [res_valid.eq(0), res_last.eq(0)]
        with m.If(res_in_valid):
            m.d.sync += [res_valid.eq(ri < gm), res_last.eq(res_in_last), res_addr.eq(g("c_row") + ri),
                         ri.eq(Mux(res_in_last, 0, ri + 1))]
            m.d.sync += [res_row[j].eq(res_in_c[j]) for j in range(cols)]
        old = [_lane(self.acc_r.data, j, acc_bits) for j in range(cols)]
        gemm_sum = [res_row[j] + Mux(g("bias"), bias[j], 0) + Mux(g("accumulate"), old[j], 0) for j in range(cols)]
        m.d.comb += self.acc_r.addr.eq(g("c_row") + ri)
        with m.If(res_valid):
            m.d.comb += [self.acc_w.addr.eq(res_addr), self.acc_w.en.eq(Cat(j < gn for j in range(cols))),
                         self.acc_w.data.eq(Cat(x[:acc_bits] for x in gemm_sum))]

        with m.FSM():
            with m.State("IDLE"):
                with m.If(self.go):
                    m.d.sync += [idx.eq(0), fvalid.eq(0), ri.eq(0)]
                    with m.Switch(opcode(word)):
                        with m.Case(Opcode.GEMM):
                            if self.ws:
                                m.next = "GEMM_BIAS"
                            else:
                                with m.If(g("dataflow") != 0):
                                    m.d.sync += self.fault.eq(1)
                                    m.next = "DONE"
                                with m.Else():
                                    m.next = "GEMM_BIAS"
                        with m.Case(Opcode.VEC, Opcode.CONFIG):
                            m.d.comb += vec.go.eq(1)
                            m.next = "VEC"
                        with m.Default():
                            m.next = "DONE"
            with m.State("GEMM_BIAS"):
                m.d.sync += [bias[j].eq(_lane(self.const_r.data, j, 32)) for j in range(cols)]
                m.next = "GEMM_RUN"
            with m.State("GEMM_RUN"):
                m.d.comb += feeding.eq(1)
                with m.If(res_last):
                    m.next = "DONE"
            with m.State("VEC"):
                with m.If(vec.done):
                    m.next = "DONE"
            with m.State("DONE"):
                m.d.comb += self.done.eq(1)
                m.next = "IDLE"
        return m
