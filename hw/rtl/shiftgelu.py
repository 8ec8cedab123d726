"""I-ViT ShiftGELU unit (``IntGELU``, n = 23), bit-exact with ``compiler.numerics.shiftgelu``.

``ShiftGelu(n, in_bits, out_bits, x0_bits, per_element)`` applies GELU(x) ~= x * sigmoid(1.702 x) to rows
of ``n`` signed ``in_bits`` values. With ``x0 = floor(-1 / (1.702 * scale))`` (a configuration input) and
an offset ``m``::

    k     = max(0, bit_length(|x0| - 1) - 4)          # 0 while |x0| <= 16 (I-ViT as published)
    e     = shift_exp(x - m, x0, 23) >> k
    e_max = shift_exp(-m, x0, 23) >> k                # saturated to 2**31 (only min(., 2**31-1) matters)
    total = min(e + e_max, 2**31 - 1)
    sig   = (e * floor((2**31 - 1) / total)) >> (32 - out_bits)
    y     = x * sig                                 # out_scale = scale * 2**-(out_bits - 1)

``k`` keeps ``shift_exp(0) = |x0| << 23`` at or below ``2**27`` on fine input grids, where the published
``k = 0`` would clamp the sum and collapse the sigmoid (``compiler.numerics.shiftgelu`` says when); it comes
from a leading-one detector on ``|x0| - 1`` and a right shift of each exponential, with no change to the timing.

``per_element=0`` (default): ``m = max(row)``, I-ViT as published (``stabilizer="row"``, ``--gelu
shiftgelu-row``). ``per_element=1``: ``m = max(x, 0)`` per element (``stabilizer="element"``, ``--gelu
shiftgelu``): no row buffer and no max pass.

Ports (Verilog names; ``clk`` and the synchronous active-high ``rst`` as well):

``x0`` (in, signed ``x0_bits + 1``)
    ``floor(-1 / (1.702 * scale))`` in ``[-(2**x0_bits - 1), -1]``; hold it stable while a row is in
    flight (:func:`x0_for_scale`).
``inputs`` (in, stream)
    ``x`` (signed ``in_bits``), one per beat; a row is ``n`` consecutive beats.
``outputs`` (out, stream)
    ``y`` (signed, :func:`y_bits` = ``in_bits + out_bits - 1`` wide: with the shift ``k`` the sigmoid
    stays below ``2**(out_bits-1)`` at every ``x0``; I-ViT's ``k = 0`` exceeds it once ``|x0| >= 2**8``)
    and ``last`` (a row's final element).

Inside, row form: the row is buffered while its max is found (``n`` load edges); then one element per
cycle is issued into a pipeline: the exponentials and ``total`` (issue register), an unrolled restoring
divider of the constant ``2**31 - 1`` by ``total`` (:data:`DIV_STAGES` registers, 4 quotient bits each, 3
in the first), and the two multiplies (output register). A stalled output freezes the pipeline; loading
the next row overlaps the drain.

Per-element form: every accepted input beat is issued at once into the same kind of pipeline, and
``inputs.ready`` is the pipeline's enable (``outputs.ready`` or an empty output register). Two facts of
``m = max(x, 0)`` make it smaller: one of ``x - m`` and ``-m`` is 0 and the other is ``-|x|``, so one
shift exponential ``E = shift_exp(-|x|)`` serves both, next to the constant ``shift_exp(0) >> k = (-x0 * 2**23) >> k``
(``e`` is the one on ``x``'s side: ``E`` for ``x < 0``); and ``total >= shift_exp(0) >> k >= 2**23``, so the
quotient ``(2**31 - 1) // total`` is below ``2**8``: the divider starts from the remainder ``2**23 - 1``
and takes 8 quotient bits in :data:`ELEMENT_DIV_STAGES` registers (4 bits each).

Timing (:func:`predicted_cycles`, from the edge accepting the first input to the edge handing over the
last output, inputs offered every cycle, outputs always taken)::

    row form:          2 * n * rows + LATENCY - 1,       LATENCY = DIV_STAGES + 2 = 10
    per-element form:  n * rows + ELEMENT_LATENCY - 1,   ELEMENT_LATENCY = ELEMENT_DIV_STAGES + 2 = 4
"""

from __future__ import annotations

from types import MappingProxyType

from amaranth.hdl import Const, Module, Mux, Signal, Value, signed, unsigned
from amaranth.lib import data, stream, wiring
from amaranth.lib.wiring import In, Out

from hw.errors import InputError
from hw.rtl._arith import SUM_MAX, RowMaxBuffer, bits_for, check_count, long_div_steps, shift_exp
from hw.rtl.kernel import KernelMixin, ParamSpec, VectorRole
from hw.rtl.shiftmax import x0_for_scale as _x0_for_scale

__all__ = ["ShiftGelu", "predicted_cycles", "x0_for_scale", "y_bits", "N_EXP", "E0_BITS", "DIV_STAGES", "LATENCY",
           "ELEMENT_DIV_STAGES", "ELEMENT_LATENCY"]

N_EXP = 23
"""I-ViT's n for GELU."""
_CHUNKS = (3, 4, 4, 4, 4, 4, 4, 4)  # 31 quotient bits of (2**31 - 1) // total, per pipeline stage
DIV_STAGES = len(_CHUNKS)
"""Pipeline registers of the row form's divider."""
LATENCY = DIV_STAGES + 2
"""Row form: edges from issuing an element to handing over its output: issue register, divider, output register."""
_QUOT_BITS_ELEMENT = 31 - N_EXP  # total >= 2**23, so (2**31 - 1) // total < 2**8
_ELEMENT_CHUNKS = (4, 4)
ELEMENT_DIV_STAGES = len(_ELEMENT_CHUNKS)
"""Pipeline registers of the per-element form's divider (8 quotient bits)."""
ELEMENT_LATENCY = ELEMENT_DIV_STAGES + 2
"""Per-element form: edges from accepting an element to handing over its output."""
_NEG_Q = 8  # e^(-max): q <= -9 means ((r - 2 x0) << (23 - q)) >> k >= 2**31 (|x0| > 2**(k + 3)), saturated
E0_BITS = 27
"""``shift_exp(0) = |x0| << 23`` is shifted right by ``k`` until it is at most ``2**E0_BITS`` (as
``compiler.numerics.shiftgelu.e_shift``): ``k = 0`` while ``|x0| <= 2**(E0_BITS - N_EXP) = 16``."""


def x0_for_scale(scale: float, x0_bits: int = 16) -> int:
    """``floor(-1 / (scale * 1.702))`` in float64 (as ``compiler.numerics.shiftgelu``), checked to fit."""
    return _x0_for_scale(scale, x0_bits, "shiftgelu", factor=1.702)


def _sig_hi(out_bits: int, x0_bits: int) -> int:
    # e * q <= max(2**31 - 1, e): q = floor(D / total) <= D / e unless total clamps (then q = 1). Both forms.
    # e <= shift_exp(0) >> k <= 2**E0_BITS < 2**31, so sig < 2**(out_bits - 1) at every x0.
    e_hi = min(((1 << x0_bits) - 1) << N_EXP, 1 << E0_BITS)
    return max(SUM_MAX, e_hi) >> (32 - out_bits)


def y_bits(in_bits: int, out_bits: int, x0_bits: int) -> int:
    """Width of the signed output ``y = x * sig``, exact for every input (both forms)."""
    return in_bits + bits_for(_sig_hi(out_bits, x0_bits))


def input_layout(in_bits: int) -> data.StructLayout:
    """Payload of the ``inputs`` stream."""
    return data.StructLayout({"x": signed(in_bits)})


def output_layout(in_bits: int, out_bits: int, x0_bits: int) -> data.StructLayout:
    """Payload of the ``outputs`` stream (field order = bit order, LSB first)."""
    return data.StructLayout({"y": signed(y_bits(in_bits, out_bits, x0_bits)), "last": 1})


class ShiftGelu(KernelMixin, wiring.Component):
    """I-ViT ShiftGELU over rows of ``n`` values, row-max or per-element offset (module docstring)."""

    KERNEL = "shiftgelu"
    PARAMS = {
        "n": ParamSpec(16, "row length in elements (the max is per row; per_element=1: the `last` framing)",
                       lo=1, hi=4096),
        "in_bits": ParamSpec(8, "input width in bits, signed", lo=2, hi=32),
        "out_bits": ParamSpec(8, "sigmoid width b (sig scale 2**-(b-1))", choices=(8, 16)),
        "x0_bits": ParamSpec(16, "|floor(-1/(1.702*scale))| < 2**x0_bits", lo=1, hi=16),
        "per_element": ParamSpec(0, "offset m: 0 = row max (I-ViT), 1 = max(x, 0) per element (streaming)",
                                 choices=(0, 1)),
    }
    WORK = ("rows",)
    ROLES = (
        VectorRole("gelu", "shiftgelu", fit="shiftgelu", fixed=MappingProxyType({"per_element": 1})),
        VectorRole("gelu", "shiftgelu-row", fit="shiftgelu-row", fixed=MappingProxyType({"per_element": 0})),
    )

    @classmethod
    def invocation_cycles(cls, params, work):
        return predicted_cycles(params["n"], work["rows"], params["per_element"])

    @classmethod
    def cycles_formula(cls, params):
        if params["per_element"]:
            return f"n * rows + {ELEMENT_LATENCY} - 1"
        return f"2 * n * rows + {LATENCY} - 1"

    def __init__(self, n: int = 16, in_bits: int = 8, out_bits: int = 8, x0_bits: int = 16, per_element: int = 0):
        self.params = self.accept_params(n=n, in_bits=in_bits, out_bits=out_bits, x0_bits=x0_bits,
                                         per_element=per_element)
        self.n, self.in_bits, self.out_bits, self.x0_bits = n, in_bits, out_bits, x0_bits
        self.per_element = bool(per_element)
        super().__init__(
            {
                "x0": In(signed(x0_bits + 1)),
                "inputs": In(stream.Signature(input_layout(in_bits))),
                "outputs": Out(stream.Signature(output_layout(in_bits, out_bits, x0_bits))),
            }
        )

    def elaborate(self, platform):
        m = Module()
        k = self._e_shift(m)  # the exponentials' right shift, from x0
        enable = Signal()  # the pipeline advances: its output register is empty or being taken
        out_valid = Signal()
        m.d.comb += [enable.eq(~out_valid | self.outputs.ready), self.outputs.valid.eq(out_valid)]
        front = self._element_issue if self.per_element else self._row_issue
        issue, x, e, total, last = front(m, enable, k)
        if self.per_element:
            chunks, rem0 = _ELEMENT_CHUNKS, SUM_MAX >> _QUOT_BITS_ELEMENT
        else:
            chunks, rem0 = _CHUNKS, 0
        self._pipeline(m, enable, out_valid, issue, x, e, total, last, chunks, rem0)
        return m

    def _e_shift(self, m: Module) -> Signal:
        """``k = max(0, bit_length(|x0| - 1) - 4)``: a leading-one detector on ``|x0| - 1`` (x0 in [-(2**x0_bits - 1),
        -1], so ``k <= x0_bits - 4``)."""
        x0_bits = self.x0_bits
        lo = E0_BITS - N_EXP
        mag_m1 = Signal(unsigned(x0_bits), name="x0_mag_m1")
        m.d.comb += mag_m1.eq((-self.x0).as_unsigned()[:x0_bits] - 1)
        k = Signal(range(max(x0_bits - lo, 0) + 1), name="e_shift")
        value: Value = Const(0, k.shape())
        for i in range(lo, x0_bits):
            value = Mux(mag_m1 >= (1 << i), i - lo + 1, value)
        m.d.comb += k.eq(value)
        return k

    def _row_issue(self, m: Module, enable: Value, k: Value):
        """Row buffer, row max and the issue walk; both exponentials and ``total`` of the element issued."""
        n, in_bits, x0_bits = self.n, self.in_bits, self.x0_bits
        buf = RowMaxBuffer(m, n, in_bits, self.inputs.payload.x)
        rd, idx, at_end, row_max = buf.rd, buf.idx, buf.at_end, buf.row_max

        d = Signal(signed(in_bits + 1), name="d")
        m.d.comb += d.eq(rd.data - row_max)
        e_full, _ = shift_exp(m, d, self.x0, N_EXP, x0_bits, name="e_full")
        e = Signal(e_full.shape(), name="e")
        m.d.comb += e.eq(e_full >> k)
        neg_max = Signal(signed(in_bits + 1), name="neg_max")
        m.d.comb += neg_max.eq(-row_max)
        e_max_full, e_max_over = shift_exp(m, neg_max, self.x0, N_EXP, x0_bits, neg_q=_NEG_Q, name="e_max")
        e_max_raw = Signal(e_max_full.shape(), name="e_max_shifted")
        m.d.comb += e_max_raw.eq(e_max_full >> k)
        e_max = Signal(unsigned(32), name="e_max_sat")
        m.d.comb += e_max.eq(Mux(e_max_over | (e_max_raw >= (1 << 31)), 1 << 31, e_max_raw))
        summed = Signal(unsigned(e.shape().width + 1), name="summed")
        m.d.comb += summed.eq(e + e_max)
        total = Signal(unsigned(31), name="total")
        m.d.comb += total.eq(Mux(summed > SUM_MAX, SUM_MAX, summed))

        issue = Signal()
        with m.FSM(name="phase"):
            with m.State("LOAD"):
                buf.load(m, self.inputs.ready, self.inputs.valid, self.inputs.payload.x, "ISSUE")
            with m.State("ISSUE"):
                m.d.comb += issue.eq(1)
                with m.If(enable):
                    m.d.sync += idx.eq(idx + 1)
                    with m.If(at_end):
                        m.d.sync += idx.eq(0)
                        m.next = "LOAD"
        return issue, rd.data, e, total, at_end

    def _element_issue(self, m: Module, enable: Value, k: Value):
        """Each accepted beat is issued: ``e`` and ``total`` from one exponential of ``-|x|`` (module docstring)."""
        n, in_bits, x0_bits = self.n, self.in_bits, self.x0_bits
        x = self.inputs.payload.x
        idx = Signal(range(n), name="idx")  # position in the row, for `last`
        at_end = idx == n - 1
        m.d.comb += self.inputs.ready.eq(enable)
        with m.If(self.inputs.valid & enable):
            m.d.sync += idx.eq(Mux(at_end, 0, idx + 1))

        negative = x < 0
        neg_abs = Signal(signed(in_bits + 1), name="neg_abs")  # -|x| = min(x, 0) or -max(x, 0)
        m.d.comb += neg_abs.eq(Mux(negative, x, -x))
        e_abs_full, _ = shift_exp(m, neg_abs, self.x0, N_EXP, x0_bits, name="e_abs_full")
        e_abs = Signal(e_abs_full.shape(), name="e_abs")
        m.d.comb += e_abs.eq(e_abs_full >> k)
        e_zero = Signal(unsigned(x0_bits + N_EXP), name="e_zero")  # shift_exp(0) >> k = (-x0 << 23) >> k
        m.d.comb += e_zero.eq(((-self.x0).as_unsigned()[:x0_bits] << N_EXP) >> k)
        e = Signal(unsigned(max(e_abs.shape().width, e_zero.shape().width)), name="e")
        m.d.comb += e.eq(Mux(negative, e_abs, e_zero))  # shift_exp(x - m); the other term is shift_exp(-m)
        summed = Signal(unsigned(e.shape().width + 1), name="summed")
        m.d.comb += summed.eq(e_abs + e_zero)
        total = Signal(unsigned(31), name="total")
        m.d.comb += total.eq(Mux(summed > SUM_MAX, SUM_MAX, summed))
        return self.inputs.valid, x, e, total, at_end

    def _pipeline(self, m: Module, enable: Value, out_valid: Signal, issue: Value, x: Value, e: Value,
                  total: Value, last: Value, chunks: tuple[int, ...], rem0: int) -> None:
        """Issue register, one divider stage per chunk of quotient bits, the multiplies into the output register."""
        in_bits, x0_bits = self.in_bits, self.x0_bits
        quot_bits = sum(chunks)
        stage_layout = data.StructLayout(
            {"valid": 1, "last": 1, "x": signed(in_bits), "e": unsigned(e.shape().width), "den": unsigned(31),
             "rem": unsigned(32), "quot": unsigned(quot_bits)}
        )
        stages = [Signal(stage_layout, name=f"s{i}") for i in range(len(chunks) + 1)]
        with m.If(enable):
            m.d.sync += [
                stages[0].valid.eq(issue),
                stages[0].last.eq(last),
                stages[0].x.eq(x),
                stages[0].e.eq(e),
                stages[0].den.eq(total),
                stages[0].rem.eq(rem0),
                stages[0].quot.eq(0),
            ]
            for i, chunk in enumerate(chunks):
                src, dst = stages[i], stages[i + 1]
                rem, quot = long_div_steps(m, src.rem, src.quot, src.den, [1] * chunk, f"div{i}")
                m.d.sync += [
                    dst.valid.eq(src.valid), dst.last.eq(src.last), dst.x.eq(src.x), dst.e.eq(src.e),
                    dst.den.eq(src.den), dst.rem.eq(rem), dst.quot.eq(quot),
                ]
            done = stages[-1]
            sig = Signal(unsigned(bits_for(_sig_hi(self.out_bits, x0_bits))), name="sig")
            m.d.comb += sig.eq((done.e * done.quot) >> (32 - self.out_bits))
            m.d.sync += [
                out_valid.eq(done.valid),
                self.outputs.payload.last.eq(done.last),
                self.outputs.payload.y.eq(done.x * sig),
            ]


def predicted_cycles(n: int, rows: int = 1, per_element: int = 0) -> int:
    """Cycles :class:`ShiftGelu` takes for ``rows`` rows of ``n`` values, exactly.

    From the edge accepting the first input to the edge handing over the last output, inputs offered
    every cycle and outputs always accepted::

        per_element=0:  2 * n * rows + LATENCY - 1            (LATENCY = 10)
        per_element=1:  n * rows + ELEMENT_LATENCY - 1        (ELEMENT_LATENCY = 4)

    Row form: each row takes ``n`` load edges and ``n`` issue edges (the next row loads while this one
    drains); the last issued element leaves ``LATENCY`` edges after its issue edge. Per-element form: one
    element is accepted per edge, the last one leaves ``ELEMENT_LATENCY`` edges after its acceptance.
    """
    check_count("shiftgelu", "n", n)
    check_count("shiftgelu", "rows", rows)
    if per_element not in (0, 1):
        raise InputError(f"shiftgelu: per_element must be 0 or 1, got {per_element!r}")
    if per_element:
        return n * rows + ELEMENT_LATENCY - 1
    return 2 * n * rows + LATENCY - 1
