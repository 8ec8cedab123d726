"""The execute unit: ``GEMM`` on the output-stationary systolic array, ``VEC requant`` on the requant kernel,
``CONFIG`` into the configuration registers (docs/ISA.md).

``GEMM`` (``dataflow`` 0, one fold, ``m <= rows``, ``n <= cols``): reads bias row ``bias_row`` of the constant
memory (one cycle), then streams ``k`` beats into ``hw.rtl.systolic.SystolicGemm``, beat ``i`` built from
scratchpad rows ``a_row + i`` (lanes ``< m``) and ``b_row + i`` (lanes ``< n``), lanes past ``m`` / ``n`` zeroed
so stale buffer contents never reach the array. Each of the array's ``rows`` result rows ``i < m`` is written one
cycle later into accumulator row ``c_row + i``, lanes ``< n``, plus the bias and (``accumulate``) the row's old
value, wrapping modulo ``2**acc_bits`` as the array does. Cycles: the array's ``predicted_cycles`` for one fold
plus about three (bias read, scratchpad read latency, accumulator write).

``VEC requant`` (source in the accumulator, ``n <= cols``): reads the per-channel multiplier and shift rows
``aux``, ``aux + 1`` of the constant memory when ``aux_space`` is ``const`` (else the ``requant_m`` /
``requant_e`` registers), streams ``rows`` accumulator rows through ``hw.rtl.requant.Requant`` (``cols`` lanes,
16-bit outputs, clamped again to ``4 << (out_log2 - 2)`` bits: clamping twice equals clamping once to the narrower
range) and writes lanes ``< n`` of ``dst`` rows of the scratchpad or accumulator.

Not built yet, and refused by raising ``fault`` (the instruction then completes without effect, so the program
still drains): weight-stationary ``GEMM``, every other ``VEC`` function, ``VEC requant`` with 32-bit outputs or a
source outside the accumulator. ``CONFIG`` registers other than ``requant_m`` / ``requant_e`` are accepted and
ignored, as no built unit reads them.
"""

from __future__ import annotations

from amaranth.hdl import Cat, Const, Elaboratable, Module, Mux, Signal, signed

from hw.isa import ConfigReg, Opcode, Space, VecFn
from hw.rtl.requant import M_BITS, Requant
from hw.rtl.system.fields import field, opcode
from hw.rtl.systolic import SystolicGemm

__all__ = ["Execute"]

_REQUANT_BITS = 16  # the requant kernel's widest output; narrower outputs are clamped again


def _lane(value, index: int, bits: int):
    return value.word_select(index, bits).as_signed()


class Execute(Elaboratable):
    """One execute-queue instruction per ``go`` (``instr`` held until ``done``). Memory ports are passed in:
    ``sp_a``, ``sp_b`` (scratchpad reads), ``sp_w`` (scratchpad write, per-lane enables), ``acc_r``, ``acc_w``,
    ``const_r``."""

    def __init__(self, *, rows: int, cols: int, width: int, in_bits: int, acc_bits: int,
                 sp_a, sp_b, sp_w, acc_r, acc_w, const_r):
        self.rows, self.cols, self.width, self.in_bits, self.acc_bits = rows, cols, width, in_bits, acc_bits
        self.sp_a, self.sp_b, self.sp_w = sp_a, sp_b, sp_w
        self.acc_r, self.acc_w, self.const_r = acc_r, acc_w, const_r
        self.go = Signal()
        self.instr = Signal(128)
        self.done = Signal()
        self.fault = Signal()

    def elaborate(self, platform):
        m = Module()
        rows, cols, width, in_bits, acc_bits = self.rows, self.cols, self.width, self.in_bits, self.acc_bits
        m.submodules.array = array = SystolicGemm(rows, cols, in_bits, acc_bits)
        m.submodules.requant = rq = Requant(cols, acc_bits, _REQUANT_BITS)
        word = self.instr

        def g(name):
            return field(word, Opcode.GEMM, name)

        def v(name):
            return field(word, Opcode.VEC, name)

        is_gemm = opcode(word) == Opcode.GEMM
        rq_m = Signal(M_BITS)
        rq_e = Signal(signed(8))
        bias = [Signal(signed(acc_bits), name=f"bias{j}") for j in range(cols)]
        m_row = [Signal(M_BITS, name=f"m{j}") for j in range(cols)]
        e_row = [Signal(signed(8), name=f"e{j}") for j in range(cols)]

        # Constant reads: the bias row (GEMM), or the multiplier then shift row (VEC).
        pre_second = Signal()
        m.d.comb += self.const_r.addr.eq(Mux(is_gemm, g("bias_row"), v("aux") + pre_second))

        # Operand feed, one beat per cycle the consumer takes: `idx` is the next row to read, `fvalid` /
        # `fidx` describe the row the read ports hold now.
        idx = Signal(16)
        fvalid = Signal()
        fidx = Signal(16)
        count = Mux(is_gemm, g("k"), v("rows"))
        taking = Signal()
        advance = Signal()
        feeding = Signal()
        m.d.comb += advance.eq(feeding & (~fvalid | taking))
        with m.If(advance):
            m.d.sync += [fvalid.eq(idx < count), fidx.eq(idx), idx.eq(idx + 1)]

        # GEMM operands.
        a_data, b_data = self.sp_a.data, self.sp_b.data
        gm, gn = g("m"), g("n")
        ops = array.operands
        m.d.comb += [
            self.sp_a.addr.eq(g("a_row") + idx), self.sp_b.addr.eq(g("b_row") + idx),
            self.sp_a.en.eq(advance), self.sp_b.en.eq(advance),
            ops.payload.last.eq(fidx == g("k") - 1),
        ]
        m.d.comb += [ops.payload.a[i].eq(Mux(i < gm, _lane(a_data, i, in_bits), 0)) for i in range(rows)]
        m.d.comb += [ops.payload.b[j].eq(Mux(j < gn, _lane(b_data, j, in_bits), 0)) for j in range(cols)]

        # GEMM results: one register stage, during which the accumulator row's old value is read.
        res = array.results
        ri = Signal(range(rows + 1))
        res_row = [Signal(signed(acc_bits), name=f"res{j}") for j in range(cols)]
        res_valid, res_last = Signal(), Signal()
        res_addr = Signal(16)
        m.d.comb += res.ready.eq(1)
        m.d.sync += [res_valid.eq(0), res_last.eq(0)]
        with m.If(res.valid):
            m.d.sync += [res_valid.eq(ri < gm), res_last.eq(res.payload.last), res_addr.eq(g("c_row") + ri),
                         ri.eq(Mux(res.payload.last, 0, ri + 1))]
            m.d.sync += [res_row[j].eq(res.payload.c[j]) for j in range(cols)]
        old = [_lane(self.acc_r.data, j, acc_bits) for j in range(cols)]
        gemm_sum = [res_row[j] + Mux(g("bias"), bias[j], 0) + Mux(g("accumulate"), old[j], 0) for j in range(cols)]

        # Requant beats.
        inp = rq.inputs
        vn = v("n")
        per_channel = v("aux_space") == Space.CONST
        m.d.comb += [inp.payload.acc[j].eq(_lane(self.acc_r.data, j, acc_bits)) for j in range(cols)]
        m.d.comb += [inp.payload.m[j].eq(Mux(per_channel, m_row[j], rq_m)) for j in range(cols)]
        m.d.comb += [inp.payload.e[j].eq(Mux(per_channel, e_row[j], rq_e)) for j in range(cols)]
        m.d.comb += inp.payload.last.eq(fidx == v("rows") - 1)
        out = rq.outputs
        m.d.comb += out.ready.eq(1)
        oi = Signal(16)
        hi = Signal(signed(18))
        lo = Signal(signed(18))
        with m.Switch(v("out_log2")):
            for log2 in (2, 3, 4):
                with m.Case(log2):
                    bits = 1 << log2
                    m.d.comb += [hi.eq((1 << (bits - 1)) - 1), lo.eq(-(1 << (bits - 1)))]
        y = [Signal(signed(_REQUANT_BITS), name=f"y{j}") for j in range(cols)]
        for j in range(cols):
            raw = out.payload.y[j]
            m.d.comb += y[j].eq(Mux(raw > hi, hi, Mux(raw < lo, lo, raw)))

        # Accumulator read address: the GEMM's result row (for accumulate), or the requant source row.
        vec_running = Signal()
        m.d.comb += self.acc_r.addr.eq(Mux(is_gemm, g("c_row") + ri, v("src") + idx))
        m.d.comb += self.acc_r.en.eq(Mux(vec_running, advance, 1))
        m.d.comb += [inp.valid.eq(vec_running & fvalid), ops.valid.eq(~vec_running & feeding & fvalid)]
        m.d.comb += taking.eq(Mux(vec_running, inp.ready, ops.ready))

        # Writes: GEMM results or requant outputs into the accumulator; requant outputs into the scratchpad.
        n_mask_acc = Cat(Mux(is_gemm, j < gn, j < vn) for j in range(cols))
        to_sp = v("dst_space") == Space.SP
        with m.If(res_valid & is_gemm):
            m.d.comb += [self.acc_w.addr.eq(res_addr), self.acc_w.en.eq(n_mask_acc),
                         self.acc_w.data.eq(Cat(x[:acc_bits] for x in gemm_sum))]
        with m.Elif(vec_running & out.valid & ~to_sp):
            m.d.comb += [self.acc_w.addr.eq(v("dst") + oi), self.acc_w.en.eq(n_mask_acc),
                         self.acc_w.data.eq(Cat(_sext(yj, acc_bits) for yj in y))]
        with m.If(vec_running & out.valid & to_sp):
            m.d.comb += [self.sp_w.addr.eq(v("dst") + oi),
                         self.sp_w.en.eq(Cat((j < vn) if j < cols else Const(0, 1) for j in range(width))),
                         self.sp_w.data.eq(Cat(y[j][:in_bits] for j in range(cols)))]

        with m.FSM():
            with m.State("IDLE"):
                with m.If(self.go):
                    m.d.sync += [idx.eq(0), fvalid.eq(0), ri.eq(0), oi.eq(0)]
                    with m.Switch(opcode(word)):
                        with m.Case(Opcode.GEMM):
                            with m.If(g("dataflow") != 0):
                                m.d.sync += self.fault.eq(1)
                                m.next = "DONE"
                            with m.Else():
                                m.next = "GEMM_BIAS"
                        with m.Case(Opcode.VEC):
                            with m.If((v("fn") != VecFn.REQUANT) | (v("src_space") != Space.ACC) |
                                      (v("out_log2") > 4)):
                                m.d.sync += self.fault.eq(1)
                                m.next = "DONE"
                            with m.Else():
                                m.d.sync += pre_second.eq(1)
                                m.next = "VEC_M"
                        with m.Case(Opcode.CONFIG):
                            value = field(word, Opcode.CONFIG, "value")
                            with m.Switch(field(word, Opcode.CONFIG, "reg")):
                                with m.Case(ConfigReg.REQUANT_M):
                                    m.d.sync += rq_m.eq(value[:M_BITS])
                                with m.Case(ConfigReg.REQUANT_E):
                                    m.d.sync += rq_e.eq(value[:8])
                            m.next = "DONE"
                        with m.Default():
                            m.next = "DONE"
            with m.State("GEMM_BIAS"):
                m.d.sync += [bias[j].eq(_lane(self.const_r.data, j, 32)) for j in range(cols)]
                m.next = "GEMM_RUN"
            with m.State("GEMM_RUN"):
                m.d.comb += feeding.eq(1)
                with m.If(res_last):
                    m.next = "DONE"
            with m.State("VEC_M"):
                m.d.sync += [m_row[j].eq(self.const_r.data.word_select(j, 32)) for j in range(cols)]
                m.next = "VEC_E"
            with m.State("VEC_E"):
                m.d.sync += [e_row[j].eq(self.const_r.data.word_select(j, 32)[:8]) for j in range(cols)]
                m.d.sync += pre_second.eq(0)
                m.next = "VEC_RUN"
            with m.State("VEC_RUN"):
                m.d.comb += [feeding.eq(1), vec_running.eq(1)]
                with m.If(out.valid):
                    m.d.sync += oi.eq(oi + 1)
                    with m.If(out.payload.last):
                        m.next = "DONE"
            with m.State("DONE"):
                m.d.comb += self.done.eq(1)
                m.next = "IDLE"
        return m


def _sext(value, bits: int):
    """Signed ``value`` sign-extended (or truncated) to ``bits`` bits."""
    if bits <= len(value):
        return value[:bits]
    return Cat(value, *([value[-1]] * (bits - len(value))))
