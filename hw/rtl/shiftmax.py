"""I-ViT Shiftmax unit (``IntSoftmax``, n = 15), row-wise and bit-exact with ``compiler.numerics.shiftmax``.

``Shiftmax(n, in_bits, out_bits, x0_bits)`` normalizes rows of ``n`` signed ``in_bits`` scores. Per row
(the arithmetic of :func:`compiler.numerics.shiftmax`, every step an integer operation)::

    d   = x - max(x)
    e   = shift_exp(d, x0, 15)               # x0 = floor(-1 / scale), a configuration input
    sum = min(sum(e), 2**31 - 1)
    f   = floor((2**31 - 1) / sum)           # sequential divider, 16 quotient bits
    y   = (e * f) >> (32 - out_bits)         # out_scale 2**-(out_bits - 1)

Ports (Verilog names; ``clk`` and the synchronous active-high ``rst`` as well):

``x0`` (in, signed ``x0_bits + 1``)
    ``floor(-1 / scale)`` of the scores' scale, in ``[-(2**x0_bits - 1), -1]``; hold it stable while a
    row is in flight (:func:`x0_for_scale` computes and checks it).
``inputs`` (in, stream: ``inputs__valid``, ``inputs__ready``, ``inputs__payload``)
    One score per beat (``x``, signed ``in_bits``), a row is ``n`` consecutive beats.
``outputs`` (out, stream)
    ``y`` (unsigned ``out_bits``, in ``[0, 2**(out_bits-1) - 1]``) and ``last`` (set on a row's final
    element), one per beat, in input order.

Why ``x0_bits <= 16``: every ``e`` is below ``|x0| * 2**15 < 2**31``, so ``e * f <= 2**31 - 1`` and the
output fits ``out_bits - 1`` bits even when the sum clamps (I-ViT's tiny-scale corner).

Inside: the row is buffered (``n x in_bits`` memory with an asynchronous read port) while its max is
tracked; a second walk recomputes each ``e`` and sums it with saturation; a restoring divider takes
one quotient bit per cycle (the sum is at least ``2**15``, the max element's ``e``, so 16 bits); a
third walk recomputes ``e`` and multiplies. Rows do not overlap.

Timing (:func:`predicted_cycles`, counted from the edge accepting a row's first score to the edge
handing over its last output, inputs offered every cycle and outputs always taken): ``n`` load edges,
``n`` sum edges, :data:`DIV_CYCLES` divider edges, ``n`` output edges::

    rows * (3 * n + DIV_CYCLES) - 1
"""

from __future__ import annotations

import math

from amaranth.hdl import Module, Mux, Signal, signed, unsigned
from amaranth.lib import data, stream, wiring
from amaranth.lib.wiring import In, Out

from hw.errors import InputError
from hw.rtl._arith import SUM_MAX, RowMaxBuffer, SeqDivider, check_count, shift_exp
from hw.rtl.kernel import KernelMixin, ParamSpec, VectorRole

__all__ = ["Shiftmax", "predicted_cycles", "x0_for_scale", "N_EXP", "DIV_CYCLES"]

N_EXP = 15
"""I-ViT's n for softmax (exponentials carry 15 extra bits)."""
DIV_CYCLES = 16
"""Quotient bits of ``floor((2**31 - 1) / sum)`` with ``sum >= 2**15``: one per cycle."""


def input_layout(in_bits: int) -> data.StructLayout:
    """Payload of the ``inputs`` stream."""
    return data.StructLayout({"x": signed(in_bits)})


def output_layout(out_bits: int) -> data.StructLayout:
    """Payload of the ``outputs`` stream (field order = bit order, LSB first)."""
    return data.StructLayout({"y": unsigned(out_bits), "last": 1})


def x0_for_scale(scale: float, x0_bits: int = 16, kernel: str = "shiftmax", factor: float = 1.0) -> int:
    """``floor(-1 / (scale * factor))`` in float64 (as the numerics do), checked to fit ``x0_bits``."""
    s = float(scale)
    if not math.isfinite(s) or s <= 0.0:
        raise InputError(f"{kernel}: scale must be finite and > 0, got {scale!r}")
    x0 = math.floor(-1.0 / (s * factor) if factor != 1.0 else -1.0 / s)
    if x0 <= -(1 << x0_bits):
        folded = f" (times {factor:g})" if factor != 1.0 else ""
        raise InputError(
            f"{kernel}: scale {s!r}{folded} gives x0 = {x0}, beyond x0_bits={x0_bits} (|x0| must be < 2**{x0_bits})"
        )
    return x0


class Shiftmax(KernelMixin, wiring.Component):
    """Row-wise I-ViT Shiftmax over ``n`` scores (module docstring)."""

    KERNEL = "shiftmax"
    PARAMS = {
        "n": ParamSpec(16, "row length in elements", lo=1, hi=4096),
        "in_bits": ParamSpec(16, "score width in bits, signed", lo=2, hi=32),
        "out_bits": ParamSpec(8, "output width in bits (out_scale 2**-(out_bits-1))", choices=(8, 16)),
        "x0_bits": ParamSpec(16, "|floor(-1/scale)| < 2**x0_bits", lo=1, hi=16),
    }
    WORK = ("rows",)
    ROLES = (VectorRole("softmax", "shiftmax", fit="shiftmax"),)

    @classmethod
    def invocation_cycles(cls, params, work):
        return predicted_cycles(params["n"], work["rows"])

    @classmethod
    def cycles_formula(cls, params):
        return f"rows * (3 * n + {DIV_CYCLES}) - 1"

    def __init__(self, n: int = 16, in_bits: int = 16, out_bits: int = 8, x0_bits: int = 16, *,
                 length_port: bool = False):
        """``length_port``: add an input ``length`` (``[1, n]``, held while a row is in flight) that sets the row
        length at run time, ``n`` being the longest row (the system top level's ``VEC shiftmax``)."""
        self.params = self.accept_params(n=n, in_bits=in_bits, out_bits=out_bits, x0_bits=x0_bits)
        self.n, self.in_bits, self.out_bits, self.x0_bits = n, in_bits, out_bits, x0_bits
        self.length_port = length_port
        ports = {
            "x0": In(signed(x0_bits + 1)),
            "inputs": In(stream.Signature(input_layout(in_bits))),
            "outputs": Out(stream.Signature(output_layout(out_bits))),
        }
        if length_port:
            ports["length"] = In(range(n + 1))
        super().__init__(ports)

    def elaborate(self, platform):
        m = Module()
        n, in_bits = self.n, self.in_bits
        buf = RowMaxBuffer(m, n, in_bits, self.inputs.payload.x, self.length if self.length_port else None)
        rd, idx, at_end, row_max = buf.rd, buf.idx, buf.at_end, buf.row_max
        total = Signal(unsigned(31), name="total")  # saturating sum of e, at most 2**31 - 1
        div = SeqDivider(m, "div", 31, 31, DIV_CYCLES)
        factor = Signal(unsigned(DIV_CYCLES), name="factor")

        # One shift-exponential, shared by the sum walk and the output walk.
        d = Signal(signed(in_bits + 1), name="d")
        m.d.comb += d.eq(rd.data - row_max)
        e, _ = shift_exp(m, d, self.x0, N_EXP, self.x0_bits, name="e")
        added = Signal(unsigned(32), name="added")
        m.d.comb += added.eq(Mux(idx == 0, 0, total) + e)
        new_total = Mux(added > SUM_MAX, SUM_MAX, added)

        with m.FSM(name="phase"):
            with m.State("LOAD"):
                buf.load(m, self.inputs.ready, self.inputs.valid, self.inputs.payload.x, "SUM")
            with m.State("SUM"):
                m.d.sync += [total.eq(new_total), idx.eq(idx + 1)]
                with m.If(at_end):
                    m.d.sync += [idx.eq(0), div.load(SUM_MAX, new_total)]
                    m.next = "DIVIDE"
            with m.State("DIVIDE"):
                div.run_into(m, factor, "OUTPUT")
            with m.State("OUTPUT"):
                m.d.comb += [
                    self.outputs.valid.eq(1),
                    self.outputs.payload.y.eq((e * factor) >> (32 - self.out_bits)),
                    self.outputs.payload.last.eq(at_end),
                ]
                with m.If(self.outputs.ready):
                    m.d.sync += idx.eq(idx + 1)
                    with m.If(at_end):
                        m.d.sync += idx.eq(0)
                        m.next = "LOAD"
        return m


def predicted_cycles(n: int, rows: int = 1) -> int:
    """Cycles :class:`Shiftmax` takes for ``rows`` rows of ``n`` scores, exactly.

    From the edge accepting the first score to the edge handing over the last output, inputs offered
    every cycle and outputs always accepted (an edge count)::

        rows * (3 * n + DIV_CYCLES) - 1

    Per row: ``n`` edges load the row, ``n`` sum the exponentials, ``DIV_CYCLES`` (16) divide, ``n``
    hand the outputs over (combinational output, no extra latency); the next row's first score is
    accepted on the edge after the previous row's last output, hence the single ``- 1``.
    """
    check_count("shiftmax", "n", n)
    check_count("shiftmax", "rows", rows)
    return rows * (3 * n + DIV_CYCLES) - 1

