"""The execute queue's vector unit: ``VEC`` functions over scratchpad / accumulator rows, and ``CONFIG``.

One ``VEC`` processes ``rows`` element rows of ``n`` values; an element row spans ``span = ceil(n / lanes)``
consecutive space rows (docs/ISA.md), the last of them holding ``n - (span - 1) * lanes`` valid lanes. Lanes past
``n`` are never written, and every value is wrapped to its destination space's width on the write, as the machine
model's registers are (``compiler/backend/machine.py``). Two paths:

Lane-parallel functions walk the ``rows * span`` space rows one at a time: read row ``src + s`` (sign-extended to
32 bits), the residual row ``aux + s`` and constant rows ``aux + j``, ``aux + span + j`` (``j = s mod span``), run
the function on every lane at once, write row ``dst + s``:

* ``requant``: ``hw.rtl.requant.Requant`` (32-bit outputs), clamped to ``b = 1 << out_log2`` bits; ``(m, e)`` per
  tensor from ``requant_m`` / ``requant_e``, or per channel from constant rows ``aux + j`` and ``aux + span + j``;
* ``requant_add``: the same ``Requant`` with twice the lanes, the residual row on the upper half with
  ``residual_m`` / ``residual_e``, both branches summed, then clamped to ``b`` bits. Exact while each branch's
  rounded value fits 32 bits (the machine model sums unclamped branches);
* ``shiftgelu``: ``hw.rtl.shiftgelu.ShiftGelu`` in its per-element form (8-bit sigmoid, ``shiftgelu_x0``), the
  row's lanes streamed through it one per cycle;
* ``copy``; ``digit`` (``(x >> digit_shift) & (2**(in_bits - 1) - 1)``); ``mul`` (each lane times the aux
  row's, the 64-bit product clamped to ``b`` bits);
* ``threshold``: a linear scan of the ``2**b - 1`` threshold rows (one constant read per cycle, every lane
  compared at once), then ``min(count - 2**(b - 1), cap)`` with the cap row ``aux + j``; ``b <= 16``.

Row functions stream each element row's ``n`` values one per cycle into a kernel built for the longest row
(``max_row``, at most :data:`MAX_ROW`) with a run-time row length (``length_port``), and write its outputs back
lane by lane:

* ``shiftmax``: ``hw.rtl.shiftmax.Shiftmax`` on ``x >> shiftmax_shift`` with ``shiftmax_x0``; its 16-bit output
  shifted right by ``16 - b`` (the same floor as the kernel's ``>> (32 - b)``), ``b <= 16``;
* ``ilayernorm``: ``hw.rtl.ilayernorm.ILayerNorm`` (24-bit inputs: a wider value raises ``fault``), its bias
  memory written from constant rows ``aux .. aux + span - 1`` before the first row, its ``eps`` port from
  ``layernorm_eps`` (outside ``[0, 2**var_bits(max_row, 24))`` raises ``fault``), its ``rms`` port from
  ``layernorm_rms`` (nonzero: RMSNorm, the mean taken as 0; the register resets to 0);
* ``online_softmax``: ``hw.rtl.online_softmax.OnlineSoftmax`` with ``(m_c, e_c)`` from ``softmax_m`` /
  ``softmax_e`` (outside ``[0, 2**31]`` / ``[1, 62]``, values only a ``CONFIG`` can hold, raises ``fault``). It
  keeps no row: each element row's space rows are read twice, pass 1 streaming the row's statistics in, pass 2
  re-reading it for the outputs (one space row at a time, written before the next is read, so ``dst == src`` is
  safe); its 16-bit output shifted right by ``16 - b`` as Shiftmax's, ``b <= 16``. Built for :data:`MAX_ROW`
  whatever ``max_row`` (it has no row buffer: a longer row only widens a counter).

``topk`` (docs/ISA.md, VEC topk) reads each element row's space rows one at a time (``TK_READ``, ``TK_LATCH``) and
offers its valid lanes, one a cycle, to :data:`TOPK_SLOTS` sorted slots (``hw.rtl.topk_router.insert``: the
standalone router's slots, a strict ``>``, ties to the lower index; 32-bit logits, 12-bit expert indices), then
writes the first ``topk_k`` slots' indices at ``dst`` and their logits at ``aux`` (``TK_INDEX``, ``TK_LOGIT`` per
output space row, lanes past ``topk_k`` left alone) and empties the slots. An element row is read in full before
its outputs are written, so in place is safe. ``topk_k`` outside ``[1, min(n, TOPK_SLOTS)]`` raises ``fault``.

The widths named above, a ``shiftmax`` or ``ilayernorm`` on rows longer than ``max_row``, ``topk`` with its logits
bound for the constant memory, and any ``VEC`` touching the scratchpad when ``width != cols`` (the spans of the two
spaces would differ) raise ``fault`` and complete without effect.

``requant`` and ``requant_add`` whose ``(m, e)`` are the same for every row (per tensor, or per channel with
``n <= lanes``: the two constant rows read once first) stream: one row per cycle into ``Requant``, written
``LATENCY + 2`` cycles after its read, so ``rows * span + 4`` cycles (+3 for the constants), as the GEMM's old
fused requant streamed. Other cycles per space row on the lane-parallel path: 4 (read, two latches, write), plus
``requant``'s 3, ``shiftgelu``'s ``lanes + 4``, ``threshold``'s ``2**b + 1`` (``hw.perf.vec_queue`` prices each
``VEC`` so; tests/test_rtl_system_vec.py checks it against the top level). Row functions: about ``3 n`` per
element row plus the kernel's own (``shiftmax``: ``3 n + 16``; ``online_softmax``: ``2 n + 17`` and its two reads
of the row, about ``2 n + 6 span + 17`` in all; ``ilayernorm``: ``3 n + 24 + 10 * (var_bits(max_row, 24) + 1)
+ 31``, its dividers sized for ``max_row`` 24-bit channels and the epsilon: 61 bits at 4,096, 56 at 128), and
``ilayernorm``'s bias load of ``3 span + n`` once per instruction. ``topk``: ``2 span + n + 2 ceil(topk_k / lanes)``
per element row.
"""

from __future__ import annotations

from amaranth.hdl import Array, Cat, Const, Elaboratable, Module, Mux, Signal, signed, unsigned

from hw.isa import ConfigReg, Opcode, Space, VecFn
from hw.rtl.ilayernorm import ILayerNorm, var_bits
from hw.rtl.online_softmax import OnlineSoftmax
from hw.rtl.requant import M_BITS, Requant
from hw.rtl.shiftgelu import ShiftGelu
from hw.rtl.shiftmax import Shiftmax
from hw.rtl.system.fields import field, opcode
from hw.rtl.topk_router import insert, slot_layout

__all__ = ["VecUnit", "REG_BITS", "MAX_ROW", "TOPK_SLOTS"]

MAX_ROW = 4096
"""The longest element row a row function can be built for: ``VEC``'s ``n`` field allows 4,096."""

TOPK_SLOTS = 8
"""The most experts ``VEC topk`` chooses per row on the top level (``hw.rtl.topk_router``'s largest ``k``): it
keeps that many sorted slots and writes the first ``topk_k`` of them; a larger ``topk_k`` raises ``fault``."""
_INDEX_BITS = 12  # an expert index: below VEC's longest row, 4,096

REG_BITS = 64
"""Width of a configuration register (``CONFIG``'s ``value`` field)."""
_X = 32  # every lane value inside the unit: the accumulator's widest lanes and the constant words
_SIGMOID_BITS = 8  # ShiftGELU's sigmoid width (compiler/backend/machine.py SIGMOID_BITS)
_X0_BITS = 16  # the ShiftGELU and Shiftmax kernels' |x0| bound
_LN_BITS = 24  # I-LayerNorm's widest input: accumulator rows must fit it (else fault)
_SHIFTMAX_BITS = 16  # Shiftmax's widest output; b-bit outputs are its value >> (16 - b), the same floor
_SOFTMAX_BITS = 16  # OnlineSoftmax's output width, narrowed the same way (its y = (e * r) >> (32 - b) floors too)
_M_C_MAX = 1 << 31  # OnlineSoftmax's multiplier bound (hw.rtl.online_softmax.check_multiplier)
_E_C_MIN, _E_C_MAX = 1, 62  # and its shift's


def _sext(value, bits: int):
    """Signed ``value`` sign-extended (or truncated) to ``bits`` bits."""
    if bits <= len(value):
        return value[:bits]
    return Cat(value, *([value[-1]] * (bits - len(value))))


class VecUnit(Elaboratable):
    """Runs one ``VEC`` or ``CONFIG`` per ``go`` (``instr`` held until ``done``). Ports (``amaranth.lib.memory``
    ports, passed in): ``sp_src``, ``sp_aux``, ``acc_src``, ``acc_aux`` and ``const_r`` (synchronous reads),
    ``sp_w`` and ``acc_w`` (per-lane write enables). ``max_row``: the longest row the row kernels take."""

    def __init__(self, *, cols: int, width: int, in_bits: int, acc_bits: int, max_row: int = MAX_ROW,
                 sp_src, sp_aux, acc_src, acc_aux, const_r, sp_w, acc_w):
        self.cols, self.width, self.in_bits, self.acc_bits = cols, width, in_bits, acc_bits
        self.max_row = max_row
        self.sp_src, self.sp_aux, self.acc_src, self.acc_aux = sp_src, sp_aux, acc_src, acc_aux
        self.const_r, self.sp_w, self.acc_w = const_r, sp_w, acc_w
        self.go = Signal()
        self.instr = Signal(128)
        self.done = Signal()
        self.fault = Signal()
        self.regs = {reg: Signal(signed(REG_BITS), name=f"cfg_{reg.name.lower()}") for reg in ConfigReg}

    def _row(self, port, lanes: int, bits: int) -> list:
        return [_sext(port.data.word_select(i, bits).as_signed(), _X).as_signed() for i in range(lanes)]

    def _topk_lanes(self, m: Module, slots, q) -> tuple[list[Signal], list[Signal], Signal]:
        """Output space row ``q`` of ``VEC topk``: per lane ``i`` slot ``q * lanes + i``'s index and logit, and
        whether the lane is written (``q * lanes + i < topk_k``)."""
        lanes, k = self.cols, self.regs[ConfigReg.TOPK_K]
        index = [Signal(signed(_X), name=f"tk_index{i}") for i in range(lanes)]
        score = [Signal(signed(_X), name=f"tk_score{i}") for i in range(lanes)]
        on = Signal(lanes)
        with m.Switch(q):
            for qq in range(-(-TOPK_SLOTS // lanes)):
                with m.Case(qq):
                    for i in range(min(lanes, TOPK_SLOTS - qq * lanes)):
                        sl = slots[qq * lanes + i]
                        m.d.comb += [index[i].eq(sl.index), score[i].eq(sl.score), on[i].eq(qq * lanes + i < k)]
        return index, score, on

    def _topk_states(self, m: Module, x, li, in_lanes, s, j, span, total, src_sp, aux_sp, to_sp, slots,
                     updated, count, base, q, spans, out) -> None:
        """``VEC topk``'s states (module docstring): each space row of an element row read (``TK_READ``,
        ``TK_LATCH``), its valid lanes offered to the slots one a cycle (``TK_FEED``), then per output space row
        ``q`` the indices written at ``dst + base + q`` (``TK_INDEX``) and the logits at ``aux + base + q``
        (``TK_LOGIT``), lanes ``q * lanes + i < topk_k`` only; the slots empty for the next element row."""
        lanes, in_bits, acc_bits = self.cols, self.in_bits, self.acc_bits
        index, score, on = out

        def write(row, values, sp) -> None:
            en = Cat(on, Const(0, self.width - lanes)) if self.width > lanes else on
            m.d.comb += [self.sp_w.addr.eq(row), self.acc_w.addr.eq(row),
                         self.sp_w.data.eq(Cat(val[:in_bits] for val in values)),
                         self.acc_w.data.eq(Cat(_sext(val, acc_bits) for val in values))]
            with m.If(sp):
                m.d.comb += self.sp_w.en.eq(en)
            with m.Else():
                m.d.comb += self.acc_w.en.eq(on)

        with m.State("TK_READ"):  # the ports read row s
            m.next = "TK_LATCH"
        with m.State("TK_LATCH"):
            m.d.sync += [x[i].eq(Mux(src_sp, self._row(self.sp_src, lanes, in_bits)[i],
                                     self._row(self.acc_src, lanes, acc_bits)[i])) for i in range(lanes)]
            m.d.sync += li.eq(0)
            m.next = "TK_FEED"
        with m.State("TK_FEED"):  # lane li of the row, expert `count`
            m.d.sync += [sl.eq(u) for sl, u in zip(slots, updated)]
            m.d.sync += [li.eq(li + 1), count.eq(count + 1)]
            with m.If(li == in_lanes - 1):
                m.d.sync += [s.eq(s + 1), j.eq(Mux(j == span - 1, 0, j + 1))]
                m.next = "TK_READ"
                with m.If(j == span - 1):
                    m.d.sync += q.eq(0)
                    m.next = "TK_INDEX"
        with m.State("TK_INDEX"):
            write(field(self.instr, Opcode.VEC, "dst") + base + q, index, to_sp)
            m.next = "TK_LOGIT"
        with m.State("TK_LOGIT"):
            write(field(self.instr, Opcode.VEC, "aux") + base + q, score, aux_sp)
            m.d.sync += q.eq(q + 1)
            m.next = "TK_INDEX"
            with m.If(q == spans - 1):
                m.d.sync += [base.eq(base + spans), count.eq(0), *[sl.valid.eq(0) for sl in slots]]
                m.next = "TK_READ"
                with m.If(s == total):
                    m.next = "DONE"

    def elaborate(self, platform):
        m = Module()
        lanes, width, in_bits, acc_bits = self.cols, self.width, self.in_bits, self.acc_bits
        word, regs = self.instr, self.regs

        def v(name):
            return field(word, Opcode.VEC, name)

        m.submodules.requant = rq = Requant(2 * lanes, _X, _X)
        m.submodules.shiftgelu = gelu = ShiftGelu(1, _X, _SIGMOID_BITS, _X0_BITS, per_element=1)
        max_row = self.max_row
        m.submodules.shiftmax = smax = Shiftmax(max_row, _X, _SHIFTMAX_BITS, _X0_BITS, length_port=True)
        m.submodules.ilayernorm = ln = ILayerNorm(max_row, _LN_BITS, _X, eps=1, length_port=True, rms_port=True)
        ln_eps = regs[ConfigReg.LAYERNORM_EPS]
        m.d.comb += ln.rms.eq(regs[ConfigReg.LAYERNORM_RMS] != 0)
        eps_bits = var_bits(max_row, _LN_BITS)
        m.submodules.online_softmax = osm = OnlineSoftmax(MAX_ROW, _X, _SOFTMAX_BITS, length_port=True)

        fn, n, rows = v("fn"), v("n"), v("rows")
        span = Signal(range(4096 + 1))
        last_lanes = Signal(range(lanes + 1))
        total = Signal(unsigned(30))
        s = Signal(unsigned(30))  # the space row in hand
        j = Signal(range(4096))  # its position in its element row
        out_bits = Signal(range(33))
        m.d.comb += out_bits.eq(Const(1, 6) << v("out_log2"))

        # Reads: every port addressed by the row in hand; constant rows by `caddr` (aux + j, aux + span + j, or
        # the threshold scan's running address).
        caddr = Signal(16)
        for port, base in ((self.sp_src, v("src")), (self.acc_src, v("src")),
                           (self.sp_aux, v("aux")), (self.acc_aux, v("aux"))):
            m.d.comb += port.addr.eq(base + s)
        m.d.comb += self.const_r.addr.eq(caddr)
        src_sp = v("src_space") == Space.SP
        aux_sp = v("aux_space") == Space.SP
        sp_x, acc_x = self._row(self.sp_src, lanes, in_bits), self._row(self.acc_src, lanes, acc_bits)
        sp_r, acc_r = self._row(self.sp_aux, lanes, in_bits), self._row(self.acc_aux, lanes, acc_bits)
        words = [self.const_r.data.word_select(i, _X) for i in range(lanes)]

        x = [Signal(signed(_X), name=f"x{i}") for i in range(lanes)]
        res = [Signal(signed(_X), name=f"r{i}") for i in range(lanes)]  # residual row (requant_add)
        c0 = [Signal(unsigned(_X), name=f"c0_{i}") for i in range(lanes)]  # constant row aux + j
        c1 = [Signal(unsigned(_X), name=f"c1_{i}") for i in range(lanes)]  # constant row aux + span + j
        y = [Signal(signed(_X), name=f"y{i}") for i in range(lanes)]

        # Clamp to the b-bit output range (requant, requant_add).
        hi = Signal(signed(_X + 2))
        lo = Signal(signed(_X + 2))
        with m.Switch(v("out_log2")):
            for log2 in (2, 3, 4, 5):
                with m.Case(log2):
                    bits = 1 << log2
                    m.d.comb += [hi.eq((1 << (bits - 1)) - 1), lo.eq(-(1 << (bits - 1)))]

        def clamp(value):
            return Mux(value > hi, hi, Mux(value < lo, lo, value))

        # Requant: lanes [0, lanes) the source with (m, e), [lanes, 2 lanes) the residual with (m_id, e_id).
        per_channel = v("aux_space") == Space.CONST
        inp = rq.inputs
        streaming = Signal()  # the requant fast path: rows straight from the read ports, one per cycle
        rd_valid, wr_valid = Signal(), Signal()  # a streamed row on the ports / its result in `y`
        for i in range(lanes):
            m.d.comb += [inp.payload.acc[i].eq(Mux(streaming, Mux(src_sp, sp_x[i], acc_x[i]), x[i])),
                         inp.payload.acc[lanes + i].eq(Mux(streaming, Mux(aux_sp, sp_r[i], acc_r[i]), res[i])),
                         inp.payload.m[i].eq(Mux(per_channel & (fn == VecFn.REQUANT), c0[i],
                                                 regs[ConfigReg.REQUANT_M][:M_BITS])),
                         inp.payload.e[i].eq(Mux(per_channel & (fn == VecFn.REQUANT), c1[i][:8],
                                                 regs[ConfigReg.REQUANT_E][:8])),
                         inp.payload.m[lanes + i].eq(regs[ConfigReg.RESIDUAL_M][:M_BITS]),
                         inp.payload.e[lanes + i].eq(regs[ConfigReg.RESIDUAL_E][:8])]
        m.d.comb += rq.outputs.ready.eq(1)
        rq_y = []
        for i in range(lanes):
            main, resid = rq.outputs.payload.y[i], rq.outputs.payload.y[lanes + i]
            rq_y.append(clamp(Mux(fn == VecFn.REQUANT_ADD, main + resid, main)))

        # ShiftGELU: the row's lanes one per cycle in (`gi`), the outputs back into `y` (`go_`).
        gi = Signal(range(lanes + 1))
        go_ = Signal(range(lanes + 1))
        m.d.comb += [gelu.x0.eq(regs[ConfigReg.SHIFTGELU_X0][:_X0_BITS + 1]), gelu.outputs.ready.eq(1)]
        m.d.comb += gelu.inputs.payload.x.eq(Array(x)[gi])

        # Threshold scan state.
        level = Signal(17)
        th_addr = Signal(16)  # the constant row of the level after the one being read
        cmp_valid = Signal()
        count = [Signal(17, name=f"count{i}") for i in range(lanes)]
        levels = Signal(17)
        m.d.comb += levels.eq((Const(1, 17) << out_bits) - 1)

        # Writes: the result row into dst + s, lanes < n on an element row's last space row.
        # (`ws`, `wj`: the space row written next and its position; row functions write behind their reads.)
        ws = Signal(unsigned(30))
        wj = Signal(range(4096))
        lane_on = Cat((wj != span - 1) | (i < last_lanes) for i in range(lanes))
        writing = Signal()
        to_sp = v("dst_space") == Space.SP
        with m.If(writing):
            m.d.sync += [ws.eq(ws + 1), wj.eq(Mux(wj == span - 1, 0, wj + 1))]
        m.d.comb += [self.sp_w.addr.eq(v("dst") + ws), self.acc_w.addr.eq(v("dst") + ws),
                     self.sp_w.data.eq(Cat(yi[:in_bits] for yi in y)),
                     self.acc_w.data.eq(Cat(_sext(yi, acc_bits) for yi in y))]
        with m.If(writing & to_sp):
            m.d.comb += self.sp_w.en.eq(Cat(lane_on, Const(0, width - lanes)) if width > lanes else lane_on)
        with m.If(writing & ~to_sp):
            m.d.comb += self.acc_w.en.eq(lane_on)

        # Row functions: the element row's valid lanes one per cycle into the kernel (`li`), its outputs back into
        # `y` lane by lane (`lo_`), each space row written once its lanes are in.
        li = Signal(range(lanes + 1))
        lo_ = Signal(range(lanes + 1))
        in_lanes = Mux(j == span - 1, last_lanes, lanes)
        out_lanes = Mux(wj == span - 1, last_lanes, lanes)

        is_tk = fn == VecFn.TOPK
        topk_k = regs[ConfigReg.TOPK_K]
        # topk: TOPK_SLOTS sorted slots offered one logit a cycle (`tk_count` its expert index), then written out
        tk_slots = [Signal(slot_layout(_X, _INDEX_BITS), name=f"tk_slot{i}") for i in range(TOPK_SLOTS)]
        tk_count = Signal(_INDEX_BITS)
        tk_updated = insert(m, tk_slots, Array(x)[li], tk_count, name="tk_upd")
        tk_base = Signal(16)  # the first output space row of the element row in hand, after dst (and aux)
        tk_q = Signal(range(TOPK_SLOTS + 1))  # the output space row being written within it
        tk_spans = Signal(range(TOPK_SLOTS + 1))  # output space rows per element row: ceil(topk_k / lanes)
        tk_k = Signal(4)  # topk_k's low bits: at most TOPK_SLOTS when it runs
        m.d.comb += [tk_k.eq(topk_k), tk_spans.eq((tk_k + (lanes - 1)) // lanes)]
        tk_out = self._topk_lanes(m, tk_slots, tk_q)
        shifted = Signal(signed(_X))
        m.d.comb += shifted.eq(Array(x)[li] >> regs[ConfigReg.SHIFTMAX_SHIFT][:6])
        m.d.comb += [smax.x0.eq(regs[ConfigReg.SHIFTMAX_X0][:_X0_BITS + 1]), smax.length.eq(n),
                     smax.inputs.payload.x.eq(shifted), ln.length.eq(n), ln.inputs.payload.x.eq(Array(x)[li]),
                     ln.eps.eq(ln_eps[:eps_bits])]
        is_ln = fn == VecFn.ILAYERNORM
        is_os = fn == VecFn.ONLINE_SOFTMAX
        is_sm = ~is_ln & ~is_os
        soft_m, soft_e = regs[ConfigReg.SOFTMAX_M], regs[ConfigReg.SOFTMAX_E]
        m.d.comb += [osm.m_c.eq(soft_m[:32]), osm.e_c.eq(soft_e[:6]), osm.length.eq(n),
                     osm.inputs.payload.x.eq(Array(x)[li])]
        feed, take = Signal(), Signal()
        pass2 = Signal()  # online_softmax: the element row's second read (outputs), after its statistics pass
        m.d.comb += [smax.inputs.valid.eq(feed & is_sm), ln.inputs.valid.eq(feed & is_ln),
                     osm.inputs.valid.eq(feed & is_os),
                     smax.outputs.ready.eq(take & is_sm), ln.outputs.ready.eq(take & is_ln),
                     osm.outputs.ready.eq(take & is_os)]
        in_ready = Mux(is_ln, ln.inputs.ready, Mux(is_os, osm.inputs.ready, smax.inputs.ready))
        out_valid = Mux(is_ln, ln.outputs.valid, Mux(is_os, osm.outputs.valid, smax.outputs.valid))
        row_out = Signal(signed(_X))
        narrow = (_SHIFTMAX_BITS - out_bits)[:5]
        m.d.comb += row_out.eq(Mux(is_ln, ln.outputs.payload.y[:_X],
                                   Mux(is_os, osm.outputs.payload.y >> narrow, smax.outputs.payload.y >> narrow)))
        ln_lo, ln_hi = -(1 << (_LN_BITS - 1)), (1 << (_LN_BITS - 1)) - 1
        too_wide = is_ln & ((Array(x)[li] < ln_lo) | (Array(x)[li] > ln_hi))
        # I-LayerNorm's bias words: constant rows aux .. aux + span - 1 into the kernel, lane by lane (`li`).
        m.d.comb += [ln.bias.payload.addr.eq(j * lanes + li), ln.bias.payload.value.eq(Array(c0)[li])]

        ln_ok = is_ln & (n <= max_row) & (ln_eps >= 0) & (ln_eps < (1 << eps_bits))
        built = (is_tk & (topk_k >= 1) & (topk_k <= n) & (topk_k <= TOPK_SLOTS)) | \
            (fn == VecFn.REQUANT) | (fn == VecFn.REQUANT_ADD) | (fn == VecFn.COPY) | (fn == VecFn.DIGIT) | \
            (fn == VecFn.SHIFTGELU) | (fn == VecFn.MUL) | ((fn == VecFn.THRESHOLD) & (v("out_log2") <= 4)) | \
            ((fn == VecFn.SHIFTMAX) & (v("out_log2") <= 4) & (n <= max_row)) | ln_ok | \
            (is_os & (v("out_log2") <= 4) & (soft_m >= 0) & (soft_m <= _M_C_MAX) & (soft_e >= _E_C_MIN) &
             (soft_e <= _E_C_MAX))
        aux_data = (fn == VecFn.REQUANT_ADD) | (fn == VecFn.MUL) | is_tk  # aux holds data rows, not words
        touches_sp = src_sp | (v("dst_space") == Space.SP) | (aux_data & aux_sp)
        spaces_ok = (v("src_space") != Space.CONST) & (v("dst_space") != Space.CONST) & \
            (~aux_data | (v("aux_space") != Space.CONST))
        if width != lanes:
            spaces_ok = spaces_ok & ~touches_sp

        with m.FSM():
            with m.State("IDLE"):
                with m.If(self.go):
                    with m.Switch(opcode(word)):
                        with m.Case(Opcode.CONFIG):
                            value = field(word, Opcode.CONFIG, "value")
                            with m.Switch(field(word, Opcode.CONFIG, "reg")):
                                for reg in ConfigReg:
                                    with m.Case(reg):
                                        m.d.sync += regs[reg].eq(value)
                            m.next = "DONE"
                        with m.Case(Opcode.VEC):
                            with m.If(built & spaces_ok):
                                m.next = "SETUP"
                            with m.Else():
                                m.d.sync += self.fault.eq(1)
                                m.next = "DONE"
                        with m.Default():
                            m.next = "DONE"
            with m.State("SETUP"):
                spans = (n + lanes - 1) // lanes
                m.d.sync += [span.eq(spans), total.eq(rows * spans), last_lanes.eq(n - (spans - 1) * lanes),
                             s.eq(0), j.eq(0), ws.eq(0), wj.eq(0)]
                # requant / requant_add stream when (m, e) do not change along the rows: per tensor, or per
                # channel with rows of at most `lanes` values (one constant pair for every row, read first)
                rq_fn = (fn == VecFn.REQUANT) | (fn == VecFn.REQUANT_ADD)
                const_pair = per_channel & (fn == VecFn.REQUANT)
                m.d.sync += [rd_valid.eq(0), wr_valid.eq(0)]
                m.d.sync += pass2.eq(0)
                m.d.sync += [tk_count.eq(0), tk_base.eq(0), *[sl.valid.eq(0) for sl in tk_slots]]
                with m.If(is_tk):
                    m.next = "TK_READ"
                with m.Elif((fn == VecFn.SHIFTMAX) | is_os):
                    m.next = "ROW_READ"
                with m.Elif(is_ln):
                    m.next = "BIAS_READ"
                with m.Elif(rq_fn & const_pair & (spans == 1)):
                    m.next = "RQ_C0"
                with m.Elif(rq_fn & ~const_pair):
                    m.next = "RQ_STREAM"
                with m.Else():
                    m.next = "READ"
            with m.State("BIAS_READ"):
                m.d.comb += caddr.eq(v("aux") + j)
                m.next = "BIAS_LATCH"
            with m.State("BIAS_LATCH"):
                m.d.sync += [c0[i].eq(words[i]) for i in range(lanes)]
                m.d.sync += li.eq(0)
                m.next = "BIAS_FEED"
            with m.State("BIAS_FEED"):
                m.d.comb += ln.bias.valid.eq(1)
                m.d.sync += li.eq(li + 1)
                with m.If(li == in_lanes - 1):
                    m.d.sync += j.eq(Mux(j == span - 1, 0, j + 1))
                    m.next = "ROW_READ"
                    with m.If(j != span - 1):
                        m.next = "BIAS_READ"
            with m.State("ROW_READ"):  # the ports read row s
                m.next = "ROW_LATCH"
            with m.State("ROW_LATCH"):
                m.d.sync += [x[i].eq(Mux(src_sp, sp_x[i], acc_x[i])) for i in range(lanes)]
                m.d.sync += [li.eq(0), lo_.eq(0)]
                m.next = "ROW_FEED"
                with m.If(pass2):
                    m.next = "OS_NORMALIZE"
            with m.State("ROW_FEED"):  # the kernel's LOAD phase takes one element per cycle
                m.d.comb += feed.eq(1)
                with m.If(too_wide):  # beyond the kernel's inputs: refuse rather than answer wrongly
                    m.d.sync += self.fault.eq(1)
                with m.If(in_ready):
                    m.d.sync += li.eq(li + 1)
                    with m.If(li == in_lanes - 1):
                        m.d.sync += [s.eq(s + 1), j.eq(Mux(j == span - 1, 0, j + 1))]
                        with m.If(j == span - 1):
                            m.d.sync += lo_.eq(0)
                            m.next = "ROW_OUT"
                            with m.If(is_os):  # statistics in: back to the element row's first space row
                                m.d.sync += [pass2.eq(1), s.eq(s + 1 - span)]
                                m.next = "ROW_READ"
                        with m.Else():
                            m.next = "ROW_READ"
            def collect(then: str) -> None:
                """A row kernel's next output into lane ``lo_`` of ``y``; after the space row's last, state ``then``."""
                with m.If(out_valid):
                    for i in range(lanes):
                        with m.If(lo_ == i):
                            m.d.sync += y[i].eq(row_out)
                    m.d.sync += lo_.eq(lo_ + 1)
                    with m.If(lo_ == out_lanes - 1):
                        m.next = then

            with m.State("ROW_OUT"):
                m.d.comb += take.eq(1)
                collect("ROW_WRITE")
            with m.State("ROW_WRITE"):
                m.d.comb += writing.eq(1)
                m.d.sync += lo_.eq(0)
                with m.If(ws + 1 == total):
                    m.next = "DONE"
                with m.Elif(wj == span - 1):
                    m.next = "ROW_READ"
                with m.Else():
                    m.next = "ROW_OUT"
            with m.State("OS_NORMALIZE"):  # online_softmax pass 2: lanes in, each output one cycle behind
                m.d.comb += [feed.eq(li < in_lanes), take.eq(1)]
                with m.If((li < in_lanes) & in_ready):
                    m.d.sync += li.eq(li + 1)
                collect("OS_WRITE")
            with m.State("OS_WRITE"):  # the space row read in pass 2, written before the next is read
                m.d.comb += writing.eq(1)
                m.d.sync += [s.eq(s + 1), j.eq(Mux(j == span - 1, 0, j + 1))]
                with m.If(j == span - 1):
                    m.d.sync += pass2.eq(0)
                with m.If(ws + 1 == total):
                    m.next = "DONE"
                with m.Else():
                    m.next = "ROW_READ"
            with m.State("RQ_C0"):  # the constant row of the multipliers (aux), then of the shifts (aux + 1)
                m.d.comb += caddr.eq(v("aux"))
                m.next = "RQ_C1"
            with m.State("RQ_C1"):
                m.d.sync += [c0[i].eq(words[i]) for i in range(lanes)]
                m.d.comb += caddr.eq(v("aux") + 1)
                m.next = "RQ_C2"
            with m.State("RQ_C2"):
                m.d.sync += [c1[i].eq(words[i]) for i in range(lanes)]
                m.next = "RQ_STREAM"
            with m.State("RQ_STREAM"):
                # one row a cycle: address row s, its data on the ports a cycle later goes into Requant, whose
                # result (LATENCY cycles on) is latched into `y` and written the cycle after; reads run ahead of
                # writes, so an in-place requant reads every row before it is overwritten
                m.d.comb += [streaming.eq(1), inp.valid.eq(rd_valid), writing.eq(wr_valid)]
                m.d.sync += [rd_valid.eq(s < total), wr_valid.eq(rq.outputs.valid)]
                with m.If(s < total):
                    m.d.sync += s.eq(s + 1)
                with m.If(rq.outputs.valid):
                    m.d.sync += [y[i].eq(rq_y[i]) for i in range(lanes)]
                with m.If(wr_valid & (ws + 1 == total)):
                    m.next = "DONE"
            with m.State("READ"):  # the ports read row s, constant row aux + j
                m.d.comb += caddr.eq(v("aux") + j)
                m.next = "LATCH"
            with m.State("LATCH"):
                m.d.sync += [x[i].eq(Mux(src_sp, sp_x[i], acc_x[i])) for i in range(lanes)]
                m.d.sync += [res[i].eq(Mux(aux_sp, sp_r[i], acc_r[i])) for i in range(lanes)]
                m.d.sync += [c0[i].eq(words[i]) for i in range(lanes)]
                m.d.comb += caddr.eq(v("aux") + span + j)
                m.next = "LATCH2"
            with m.State("LATCH2"):
                m.d.sync += [c1[i].eq(words[i]) for i in range(lanes)]
                with m.Switch(fn):
                    with m.Case(VecFn.REQUANT, VecFn.REQUANT_ADD):
                        m.next = "REQUANT"
                    with m.Case(VecFn.SHIFTGELU):
                        m.d.sync += [gi.eq(0), go_.eq(0)]
                        m.next = "GELU"
                    with m.Case(VecFn.THRESHOLD):
                        m.d.sync += [level.eq(1), cmp_valid.eq(0), *[ci.eq(0) for ci in count]]
                        m.next = "THRESHOLD"
                    with m.Case(VecFn.MUL):  # the lanes' products with the aux row's, clamped to b bits
                        m.d.sync += [y[i].eq(clamp(x[i] * res[i])) for i in range(lanes)]
                        m.next = "WRITE"
                    with m.Case(VecFn.DIGIT):
                        shift = regs[ConfigReg.DIGIT_SHIFT][:6]
                        mask = (1 << (in_bits - 1)) - 1
                        m.d.sync += [y[i].eq((x[i] >> shift) & mask) for i in range(lanes)]
                        m.next = "WRITE"
                    with m.Default():  # copy
                        m.d.sync += [y[i].eq(x[i]) for i in range(lanes)]
                        m.next = "WRITE"
            with m.State("REQUANT"):
                m.d.comb += inp.valid.eq(1)
                with m.If(inp.ready):
                    m.next = "REQUANT_WAIT"
            with m.State("REQUANT_WAIT"):
                with m.If(rq.outputs.valid):
                    m.d.sync += [y[i].eq(rq_y[i]) for i in range(lanes)]
                    m.next = "WRITE"
            with m.State("GELU"):
                m.d.comb += gelu.inputs.valid.eq(gi < lanes)
                with m.If((gi < lanes) & gelu.inputs.ready):
                    m.d.sync += gi.eq(gi + 1)
                with m.If(gelu.outputs.valid):
                    for i in range(lanes):
                        with m.If(go_ == i):
                            m.d.sync += y[i].eq(gelu.outputs.payload.y[:_X])
                    m.d.sync += go_.eq(go_ + 1)
                    with m.If(go_ == lanes - 1):
                        m.next = "WRITE"
            with m.State("THRESHOLD"):  # constant row of `level` read each cycle, compared the next
                m.d.comb += caddr.eq(Mux(level == 1, v("aux") + span + j, th_addr))
                m.d.sync += cmp_valid.eq(level <= levels)
                with m.If(level <= levels):
                    m.d.sync += [level.eq(level + 1), th_addr.eq(caddr + span)]
                with m.If(cmp_valid):
                    m.d.sync += [count[i].eq(count[i] + (x[i] >= words[i].as_signed())) for i in range(lanes)]
                with m.If((level > levels) & ~cmp_valid):
                    half = (Const(1, 17) << (out_bits - 1).as_unsigned()[:5])[:17]
                    for i in range(lanes):
                        q = Signal(signed(19), name=f"q{i}")
                        m.d.comb += q.eq(count[i] - half)
                        cap = c0[i].as_signed()
                        m.d.sync += y[i].eq(Mux(q < cap, q, cap))
                    m.next = "WRITE"
            with m.State("WRITE"):
                m.d.comb += writing.eq(1)
                m.d.sync += [s.eq(s + 1), j.eq(Mux(j == span - 1, 0, j + 1))]
                with m.If(s + 1 == total):
                    m.next = "DONE"
                with m.Else():
                    m.next = "READ"
            self._topk_states(m, x, li, in_lanes, s, j, span, total, src_sp, aux_sp, to_sp, tk_slots,
                              tk_updated, tk_count, tk_base, tk_q, tk_spans, tk_out)
            with m.State("DONE"):
                m.d.comb += self.done.eq(1)
                m.next = "IDLE"
        return m
