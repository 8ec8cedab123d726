"""I-ViT ShiftGELU unit (``IntGELU``, n = 23), bit-exact with ``compiler.numerics.shiftgelu``.

``ShiftGelu(n, in_bits, out_bits, x0_bits)`` applies GELU(x) ~= x * sigmoid(1.702 x) to rows of ``n``
signed ``in_bits`` values, using the row max as I-ViT does. Per row, with ``x0 = floor(-1 / (1.702 *
scale))`` (a configuration input) and ``m = max(x)``::

    e     = shift_exp(x - m, x0, 23)
    e_max = shift_exp(-m, x0, 23)                   # saturated to 2**31 (only min(., 2**31-1) matters)
    total = min(e + e_max, 2**31 - 1)
    sig   = (e * floor((2**31 - 1) / total)) >> (32 - out_bits)
    y     = x * sig                                 # out_scale = scale * 2**-(out_bits - 1)

Ports (Verilog names; ``clk`` and the synchronous active-high ``rst`` as well):

``x0`` (in, signed ``x0_bits + 1``)
    ``floor(-1 / (1.702 * scale))`` in ``[-(2**x0_bits - 1), -1]``; hold it stable while a row is in
    flight (:func:`x0_for_scale`).
``inputs`` (in, stream)
    ``x`` (signed ``in_bits``), one per beat; a row is ``n`` consecutive beats.
``outputs`` (out, stream)
    ``y`` (signed, :func:`y_bits` wide: exact for every input, including I-ViT's large-``x0`` corner
    where a sigmoid step exceeds ``2**(out_bits-1)``) and ``last`` (a row's final element).

Inside: the row is buffered while its max is found (``n`` load edges); then one element per cycle is
issued into a pipeline: the exponentials and ``total`` (issue register), an unrolled restoring divider
of the constant ``2**31 - 1`` by ``total`` (:data:`DIV_STAGES` registers, 4 quotient bits each, 3 in
the first), and the two multiplies (output register). A stalled output freezes the pipeline; loading
the next row overlaps the drain.

Timing (:func:`predicted_cycles`, from the edge accepting the first input to the edge handing over the
last output, inputs offered every cycle, outputs always taken)::

    2 * n * rows + LATENCY - 1,   LATENCY = DIV_STAGES + 2 = 10
"""

from __future__ import annotations

from amaranth.hdl import Module, Mux, Signal, signed, unsigned
from amaranth.lib import data, stream, wiring
from amaranth.lib.memory import Memory
from amaranth.lib.wiring import In, Out

from hw.rtl._arith import SUM_MAX, bits_for, check_count, long_div_steps, shift_exp
from hw.rtl.emit import KernelMixin, ParamSpec
from hw.rtl.shiftmax import x0_for_scale as _x0_for_scale

__all__ = ["ShiftGelu", "predicted_cycles", "x0_for_scale", "y_bits", "N_EXP", "DIV_STAGES", "LATENCY"]

N_EXP = 23
"""I-ViT's n for GELU."""
_CHUNKS = (3, 4, 4, 4, 4, 4, 4, 4)  # 31 quotient bits of (2**31 - 1) // total, per pipeline stage
DIV_STAGES = len(_CHUNKS)
"""Pipeline registers of the divider."""
LATENCY = DIV_STAGES + 2
"""Edges from issuing an element to handing over its output: issue register, divider, output register."""
_NEG_Q = 8  # e^(-max): q <= -9 means (r - 2 x0) << (23 - q) >= 2**31, saturated anyway


def x0_for_scale(scale: float, x0_bits: int = 16) -> int:
    """``floor(-1 / (scale * 1.702))`` in float64 (as ``compiler.numerics.shiftgelu``), checked to fit."""
    return _x0_for_scale(scale, x0_bits, "shiftgelu", factor=1.702)


def _sig_hi(out_bits: int, x0_bits: int) -> int:
    # e * q <= max(2**31 - 1, e): q = floor(D / total) <= D / e unless total clamps (then q = 1).
    e_hi = ((1 << x0_bits) - 1) << N_EXP
    return max(SUM_MAX, e_hi) >> (32 - out_bits)


def y_bits(in_bits: int, out_bits: int, x0_bits: int) -> int:
    """Width of the signed output ``y = x * sig``, exact for every input."""
    return in_bits + bits_for(_sig_hi(out_bits, x0_bits))


def input_layout(in_bits: int) -> data.StructLayout:
    """Payload of the ``inputs`` stream."""
    return data.StructLayout({"x": signed(in_bits)})


def output_layout(in_bits: int, out_bits: int, x0_bits: int) -> data.StructLayout:
    """Payload of the ``outputs`` stream (field order = bit order, LSB first)."""
    return data.StructLayout({"y": signed(y_bits(in_bits, out_bits, x0_bits)), "last": 1})


class ShiftGelu(KernelMixin, wiring.Component):
    """Row-wise I-ViT ShiftGELU over ``n`` values (module docstring)."""

    KERNEL = "shiftgelu"
    PARAMS = {
        "n": ParamSpec(16, "row length in elements (the max is per row)", lo=1, hi=4096),
        "in_bits": ParamSpec(8, "input width in bits, signed", lo=2, hi=32),
        "out_bits": ParamSpec(8, "sigmoid width b (sig scale 2**-(b-1))", choices=(8, 16)),
        "x0_bits": ParamSpec(16, "|floor(-1/(1.702*scale))| < 2**x0_bits", lo=1, hi=16),
    }

    def __init__(self, n: int = 16, in_bits: int = 8, out_bits: int = 8, x0_bits: int = 16):
        self.params = self.accept_params(n=n, in_bits=in_bits, out_bits=out_bits, x0_bits=x0_bits)
        self.n, self.in_bits, self.out_bits, self.x0_bits = n, in_bits, out_bits, x0_bits
        super().__init__(
            {
                "x0": In(signed(x0_bits + 1)),
                "inputs": In(stream.Signature(input_layout(in_bits))),
                "outputs": Out(stream.Signature(output_layout(in_bits, out_bits, x0_bits))),
            }
        )

    def elaborate(self, platform):
        m = Module()
        n, in_bits, x0_bits = self.n, self.in_bits, self.x0_bits
        m.submodules.row = row = Memory(shape=signed(in_bits), depth=n, init=[])
        wr = row.write_port()
        rd = row.read_port(domain="comb")
        idx = Signal(range(n), name="idx")
        at_end = idx == n - 1
        row_max = Signal(signed(in_bits), name="row_max")

        enable = Signal()
        out_valid = Signal()
        m.d.comb += [
            enable.eq(~out_valid | self.outputs.ready),
            self.outputs.valid.eq(out_valid),
            rd.addr.eq(idx),
            wr.addr.eq(idx),
            wr.data.eq(self.inputs.payload.x),
        ]

        # Issue: both exponentials and the clamped denominator.
        d = Signal(signed(in_bits + 1), name="d")
        m.d.comb += d.eq(rd.data - row_max)
        e, _ = shift_exp(m, d, self.x0, N_EXP, x0_bits, name="e")
        neg_max = Signal(signed(in_bits + 1), name="neg_max")
        m.d.comb += neg_max.eq(-row_max)
        e_max_raw, e_max_over = shift_exp(m, neg_max, self.x0, N_EXP, x0_bits, neg_q=_NEG_Q, name="e_max")
        e_max = Signal(unsigned(32), name="e_max_sat")
        m.d.comb += e_max.eq(Mux(e_max_over | (e_max_raw >= (1 << 31)), 1 << 31, e_max_raw))
        summed = Signal(unsigned(e.shape().width + 1), name="summed")
        m.d.comb += summed.eq(e + e_max)
        total = Signal(unsigned(31), name="total")
        m.d.comb += total.eq(Mux(summed > SUM_MAX, SUM_MAX, summed))

        issue = Signal()
        e_bits = e.shape().width
        stage_layout = data.StructLayout(
            {"valid": 1, "last": 1, "x": signed(in_bits), "e": unsigned(e_bits), "den": unsigned(31),
             "rem": unsigned(32), "quot": unsigned(31)}
        )
        stages = [Signal(stage_layout, name=f"s{i}") for i in range(DIV_STAGES + 1)]
        with m.If(enable):
            m.d.sync += [
                stages[0].valid.eq(issue),
                stages[0].last.eq(at_end),
                stages[0].x.eq(rd.data),
                stages[0].e.eq(e),
                stages[0].den.eq(total),
                stages[0].rem.eq(0),
                stages[0].quot.eq(0),
            ]
            for i, chunk in enumerate(_CHUNKS):
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

        with m.FSM(name="phase"):
            with m.State("LOAD"):
                m.d.comb += self.inputs.ready.eq(1)
                with m.If(self.inputs.valid):
                    x = self.inputs.payload.x
                    m.d.comb += wr.en.eq(1)
                    m.d.sync += [row_max.eq(Mux((idx == 0) | (x > row_max), x, row_max)), idx.eq(idx + 1)]
                    with m.If(at_end):
                        m.d.sync += idx.eq(0)
                        m.next = "ISSUE"
            with m.State("ISSUE"):
                m.d.comb += issue.eq(1)
                with m.If(enable):
                    m.d.sync += idx.eq(idx + 1)
                    with m.If(at_end):
                        m.d.sync += idx.eq(0)
                        m.next = "LOAD"
        return m


def predicted_cycles(n: int, rows: int = 1) -> int:
    """Cycles :class:`ShiftGelu` takes for ``rows`` rows of ``n`` values, exactly.

    From the edge accepting the first input to the edge handing over the last output, inputs offered
    every cycle and outputs always accepted::

        2 * n * rows + LATENCY - 1

    Each row takes ``n`` load edges and ``n`` issue edges (the next row loads while this one drains);
    the last issued element leaves ``LATENCY`` (10) edges after its issue edge.
    """
    check_count("shiftgelu", "n", n)
    check_count("shiftgelu", "rows", rows)
    return 2 * n * rows + LATENCY - 1

