"""Edge-MoE single-pass softmax unit, bit-exact with ``compiler.numerics.online_softmax``.

Edge-MoE walks each row of attention scores once, keeping a running max ``m`` and a running sum ``s``
of exponentials relative to it, stores only ``(1/s, m)`` per row, and normalizes in the A.V pass
that re-reads the scores. This unit is that hardware on the integer base-2 arithmetic of
:mod:`compiler.numerics.online_softmax` (the running max is an integer, so rescaling is a shift)::

    u = clamp(round_half_even(x * m_c / 2**e_c), int32)       # x * scale * log2(e) * 2**8
    c = ceil(u / 2**8)
    pass 1, per score (first score: new max with s = 0):
        if c > m:  s = (s >> (c - m)) + exp2_q15(u, c);  m = c
        else:      s = s + exp2_q15(u, m)
    r = (2**31 - 1) // s                                       # sequential divider, 17 quotient bits
    pass 2, per score:  y = (exp2_q15(u, m) * r) >> (32 - out_bits)

``(m_c, e_c) = compiler.numerics.dyadic(scale * log2(e) * 2**8)`` is computed on the host and held on
configuration ports; ``exp2_q15`` is base2's 17-entry table with linear interpolation.

Ports (Verilog names; ``clk`` and the synchronous active-high ``rst`` as well):

``m_c`` (in, unsigned 32, at most ``2**31``), ``e_c`` (in, unsigned 6, in ``[1, 62]``)
    The dyadic multiplier; hold them stable while a row is in flight (:func:`check_multiplier`).
``inputs`` (in, stream)
    ``x`` (signed ``in_bits``). Each row is sent TWICE: ``n`` beats for pass 1 (statistics; no output),
    then the same ``n`` scores again for pass 2, as Edge-MoE's A.V pass re-reads them.
``outputs`` (out, stream)
    ``y`` (unsigned ``out_bits``, in ``[0, 2**(out_bits-1) - 1]``) and ``last``, one per pass-2 beat.
``length`` (in, ``range(n + 1)``; only with ``length_port=True``)
    The row length in scores at run time, in ``[1, n]``, ``n`` being the longest row; hold it stable while a
    row is in flight (both passes). The system top level's ``VEC online_softmax`` (``hw/rtl/system/vec.py``).

The unit holds no row buffer: its state is ``(m, s)`` and then ``r``. The sum stays below ``2**31`` for
rows of up to ``2**15`` scores and is at least ``2**14`` (the max score's term), hence 17 quotient bits.

Timing (:func:`predicted_cycles`, from the edge accepting a row's first pass-1 score to the edge
handing over its last output, inputs offered every cycle and outputs always taken): ``n`` pass-1
edges, :data:`DIV_CYCLES` divider edges, ``n`` pass-2 edges, one output register::

    rows * (2 * n + DIV_CYCLES)
"""

from __future__ import annotations

from amaranth.hdl import Module, Mux, Signal, signed, unsigned
from amaranth.lib import data, stream, wiring
from amaranth.lib.wiring import In, Out

from hw.errors import InputError
from hw.rtl._arith import EXP2_FRAC_BITS, SUM_MAX, SeqDivider, check_count, exp2_q15, round_half_even_shr
from hw.rtl.kernel import KernelMixin, ParamSpec, VectorRole

__all__ = ["OnlineSoftmax", "predicted_cycles", "check_multiplier", "DIV_CYCLES", "OUTPUT_LATENCY"]

DIV_CYCLES = 17
"""Quotient bits of ``(2**31 - 1) // s`` with ``s >= 2**14``: one per cycle."""
OUTPUT_LATENCY = 1
"""Pass-2 outputs are registered: one edge from accepting a score to handing over its output."""


def check_multiplier(m_c: int, e_c: int) -> None:
    """``InputError`` unless ``(m_c, e_c)`` fits the configuration ports (``0 <= m_c <= 2**31``, ``1 <= e_c <= 62``).

    ``e_c < 1`` would mean ``scale * log2(e) * 256 >= 2**31``: no score scale is that large.
    """
    if not 0 <= m_c <= 1 << 31:
        raise InputError(f"online_softmax: multiplier m_c={m_c} is out of range [0, 2**31]")
    if not 1 <= e_c <= 62:
        raise InputError(f"online_softmax: shift e_c={e_c} is out of range [1, 62] "
                         "(score scale too large or too small)")


def input_layout(in_bits: int) -> data.StructLayout:
    """Payload of the ``inputs`` stream."""
    return data.StructLayout({"x": signed(in_bits)})


def output_layout(out_bits: int) -> data.StructLayout:
    """Payload of the ``outputs`` stream (field order = bit order, LSB first)."""
    return data.StructLayout({"y": unsigned(out_bits), "last": 1})


class OnlineSoftmax(KernelMixin, wiring.Component):
    """Edge-MoE single-pass integer softmax over rows of ``n`` scores (module docstring)."""

    KERNEL = "online_softmax"
    PARAMS = {
        "n": ParamSpec(16, "row length in scores", lo=1, hi=4096),
        "in_bits": ParamSpec(32, "score width in bits, signed", lo=2, hi=32),
        "out_bits": ParamSpec(8, "output width in bits (out_scale 2**-(out_bits-1))", choices=(8, 16)),
    }
    WORK = ("rows",)
    ROLES = (VectorRole("softmax", "online", fit="online_softmax"),)

    @classmethod
    def invocation_cycles(cls, params, work):
        return predicted_cycles(params["n"], work["rows"])

    @classmethod
    def cycles_formula(cls, params):
        return f"rows * (2 * n + {DIV_CYCLES})"

    def __init__(self, n: int = 16, in_bits: int = 32, out_bits: int = 8, *, length_port: bool = False):
        """``length_port``: add an input ``length`` (scores, ``[1, n]``) that sets the row length at run time, ``n``
        being the longest row; without it every row has ``n`` scores."""
        self.params = self.accept_params(n=n, in_bits=in_bits, out_bits=out_bits)
        self.n, self.in_bits, self.out_bits = n, in_bits, out_bits
        self.length_port = length_port
        ports = {
            "m_c": In(unsigned(32)),
            "e_c": In(unsigned(6)),
            "inputs": In(stream.Signature(input_layout(in_bits))),
            "outputs": Out(stream.Signature(output_layout(out_bits))),
        }
        if length_port:
            ports["length"] = In(range(n + 1))
        super().__init__(ports)

    def elaborate(self, platform):
        m = Module()
        n = self.n
        idx = Signal(range(n), name="idx")
        at_end = (idx == self.length - 1) if self.length_port else (idx == n - 1)

        # x -> log2 domain (I-ViT's dyadic multiply with round half to even, clamped to int32).
        # At least 64 bits, so that every shift 1..62 leaves a sign bit and a guard bit.
        product = Signal(signed(max(self.in_bits + 33, 64)), name="product")
        m.d.comb += product.eq(self.inputs.payload.x * self.m_c)
        rounded = round_half_even_shr(m, product, self.e_c, "u_round")
        u = Signal(signed(32), name="u")
        m.d.comb += u.eq(Mux(rounded > SUM_MAX, SUM_MAX, Mux(rounded < -(1 << 31), -(1 << 31), rounded)))
        c = Signal(signed(32 - EXP2_FRAC_BITS + 1), name="c")
        m.d.comb += c.eq(-((-u) >> EXP2_FRAC_BITS))

        run_max = Signal(signed(c.shape().width), name="run_max")
        run_sum = Signal(unsigned(32), name="run_sum")
        pass1 = Signal()
        new_max = Signal(name="new_max")
        m.d.comb += new_max.eq(pass1 & ((idx == 0) | (c > run_max)))
        ref = Signal(signed(c.shape().width), name="ref")
        m.d.comb += ref.eq(Mux(new_max, c, run_max))
        e = exp2_q15(m, u, ref, "e")
        gap = Signal(signed(c.shape().width + 1), name="gap")
        m.d.comb += gap.eq(c - run_max)
        kept = Signal(unsigned(32), name="kept")
        m.d.comb += kept.eq(
            Mux(idx == 0, 0, Mux(new_max, Mux(gap >= 32, 0, run_sum >> gap[:6]), run_sum))
        )
        new_sum = Signal(unsigned(32), name="new_sum")
        m.d.comb += new_sum.eq(kept + e)

        div = SeqDivider(m, "div", 31, 32, DIV_CYCLES)
        recip = Signal(unsigned(DIV_CYCLES), name="recip")

        enable = Signal()
        out_valid = Signal()
        m.d.comb += [enable.eq(~out_valid | self.outputs.ready), self.outputs.valid.eq(out_valid)]
        with m.If(enable):
            m.d.sync += out_valid.eq(0)

        with m.FSM(name="phase"):
            with m.State("STATS"):
                m.d.comb += [pass1.eq(1), self.inputs.ready.eq(1)]
                with m.If(self.inputs.valid):
                    m.d.sync += [run_sum.eq(new_sum), run_max.eq(ref), idx.eq(idx + 1)]
                    with m.If(at_end):
                        m.d.sync += [idx.eq(0), div.load(SUM_MAX, new_sum)]
                        m.next = "DIVIDE"
            with m.State("DIVIDE"):
                div.run_into(m, recip, "NORMALIZE")
            with m.State("NORMALIZE"):
                m.d.comb += self.inputs.ready.eq(enable)
                with m.If(enable & self.inputs.valid):
                    m.d.sync += [
                        out_valid.eq(1),
                        self.outputs.payload.y.eq((e * recip) >> (32 - self.out_bits)),
                        self.outputs.payload.last.eq(at_end),
                        idx.eq(idx + 1),
                    ]
                    with m.If(at_end):
                        m.d.sync += idx.eq(0)
                        m.next = "STATS"
        return m


def predicted_cycles(n: int, rows: int = 1) -> int:
    """Cycles :class:`OnlineSoftmax` takes for ``rows`` rows of ``n`` scores (each sent twice), exactly.

    From the edge accepting the first pass-1 score to the edge handing over the last output, inputs
    offered every cycle and outputs always accepted::

        rows * (2 * n + DIV_CYCLES)

    Per row: ``n`` pass-1 edges, ``DIV_CYCLES`` (17) divider edges, ``n`` pass-2 edges; the next row's
    pass 1 starts on the edge after the last pass-2 score, which is also the edge its output
    (:data:`OUTPUT_LATENCY` = 1) is handed over, so rows add exactly ``2 n + 17`` each.
    """
    check_count("online_softmax", "n", n)
    check_count("online_softmax", "rows", rows)
    return rows * (2 * n + DIV_CYCLES)
