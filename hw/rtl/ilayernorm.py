"""I-ViT I-LayerNorm unit (``IntLayerNorm``), bit-exact with ``compiler.numerics.ilayernorm``.

``ILayerNorm(c, in_bits, bias_bits, eps)`` normalizes rows of ``c`` channels of signed ``in_bits`` integers.
Per row (the integer steps of :func:`compiler.numerics.ilayernorm`)::

    mean = round_half_even(sum(x) / c)
    y    = x - mean
    var  = sum(y * y) + eps_in                                  # eps_in = 0 without the eps port (I-ViT's)
    k    = 2**16;  10 times: k = (k + var // k) // 2          # I-ViT's integer Newton sqrt
    f    = (2**31 - 1) // k
    out  = ((y * f) >> 1) + bias[ch]                           # per-channel integer bias

With ``rms=1`` (or the ``rms`` port high, ``rms_port``) the mean is taken as 0: RMSNorm (T5, LLaMA), ``var =
sum(x * x) + eps_in`` (``compiler.numerics.ilayernorm`` with ``rms=True``); the mean division still runs, so the
cycles are the same.

``bias[ch] = floor((beta / gamma) / (sqrt(c) / 2**30))`` is computed on the host (the float part of
I-LayerNorm, like the per-channel out_scale ``sqrt(c) / 2**30 * gamma``) and loaded once through the
``bias`` port. The output is I-LayerNorm's integer before the next layer's requantization.

Ports (Verilog names; ``clk`` and the synchronous active-high ``rst`` as well):

``eps`` (in, unsigned :func:`var_bits`, only with ``eps=1``)
    the model's epsilon in variance units (``compiler.numerics.ilayernorm.eps_units``), held while a row is in
    flight; the Newton divisions then take one quotient bit more (:func:`newton_bits`).
``bias`` (in, stream, ``bias__ready`` always high)
    ``addr`` (channel) and ``value`` (signed ``bias_bits``): writes one channel's bias. Load all ``c``
    before the first row and between rows only.
``inputs`` (in, stream)
    ``x`` (signed ``in_bits``), one channel per beat; a row is ``c`` consecutive beats.
``outputs`` (out, stream)
    ``y`` (signed :func:`y_bits`, exact for every input) and ``last`` (a row's final channel).

Inside: the row is buffered while it is summed; three restoring dividers, one quotient bit per
cycle, compute the mean (``in_bits`` steps: ``(sum + c * 2**(in_bits-1)) // c``), each Newton step
(:func:`newton_bits` steps) and the factor (31 steps); a second walk squares and sums ``x - mean``; a third
multiplies and adds the bias. Rows do not overlap.

Timing (:func:`predicted_cycles`, from the edge accepting a row's first input to the edge handing over
its last output, inputs offered every cycle and outputs always taken)::

    rows * (3 * c + in_bits + NEWTON_STEPS * newton_bits(c, in_bits, eps) + FACTOR_CYCLES) - 1
"""

from __future__ import annotations

import math
from types import MappingProxyType

from amaranth.hdl import Const, Module, Mux, Signal, signed, unsigned
from amaranth.lib import data, stream, wiring
from amaranth.lib.memory import Memory
from amaranth.lib.wiring import In, Out

from hw.rtl._arith import SUM_MAX, SeqDivider, bits_for, check_count, sbits_for
from hw.rtl.kernel import KernelMixin, ParamSpec, VectorRole

__all__ = ["ILayerNorm", "predicted_cycles", "var_bits", "newton_bits", "y_bits", "NEWTON_STEPS", "NEWTON_K0",
           "FACTOR_CYCLES"]

NEWTON_STEPS = 10
"""I-ViT's fixed number of Newton steps."""
NEWTON_K0 = 1 << 16
"""I-ViT's starting guess of the square root."""
FACTOR_CYCLES = 31
"""Quotient bits of ``(2**31 - 1) // k`` (``k >= 1``): one per cycle."""


def var_bits(c: int, in_bits: int) -> int:
    """Bits of ``var = sum((x - mean)**2)``: ``|x - mean| <= 2**in_bits - 1`` over ``c`` channels.

    Also the cycles of one Newton step (its division takes one quotient bit per cycle).
    """
    return bits_for(c * ((1 << in_bits) - 1) ** 2)


def newton_bits(c: int, in_bits: int, eps: int = 0) -> int:
    """Bits of the Newton divisions' numerator, ``var`` plus the epsilon (below ``2**var_bits`` with the ``eps``
    port, so one bit more): the cycles of one Newton step."""
    return var_bits(c, in_bits) + (1 if eps else 0)


def _k_bits(c: int, in_bits: int, eps: int) -> int:
    var_hi = c * ((1 << in_bits) - 1) ** 2 + (((1 << var_bits(c, in_bits)) - 1) if eps else 0)
    # k only falls after the first step, which is at least floor(sqrt(var)); one spare bit.
    k_hi = max(NEWTON_K0, (NEWTON_K0 + (var_hi >> 16)) // 2, math.isqrt(var_hi) + 1)
    return bits_for(k_hi) + 1


def y_bits(in_bits: int, bias_bits: int) -> int:
    """Width of the signed output ``((x - mean) * f >> 1) + bias``, exact for every input."""
    span = 1 << (in_bits + 30)
    bias = 1 << (bias_bits - 1)
    return sbits_for(-span - bias, span + bias)


def input_layout(in_bits: int) -> data.StructLayout:
    """Payload of the ``inputs`` stream."""
    return data.StructLayout({"x": signed(in_bits)})


def bias_layout(c: int, bias_bits: int) -> data.StructLayout:
    """Payload of the ``bias`` stream (field order = bit order, LSB first)."""
    return data.StructLayout({"addr": unsigned(bits_for(c - 1)), "value": signed(bias_bits)})


def output_layout(in_bits: int, bias_bits: int) -> data.StructLayout:
    """Payload of the ``outputs`` stream."""
    return data.StructLayout({"y": signed(y_bits(in_bits, bias_bits)), "last": 1})


class ILayerNorm(KernelMixin, wiring.Component):
    """Row-wise I-ViT I-LayerNorm over ``c`` channels (module docstring)."""

    KERNEL = "ilayernorm"
    PARAMS = {
        "c": ParamSpec(16, "channels per row (the normalized dimension)", lo=1, hi=4096),
        "in_bits": ParamSpec(8, "input width in bits, signed", lo=2, hi=24),
        "bias_bits": ParamSpec(32, "per-channel integer bias width in bits, signed", lo=2, hi=48),
        "eps": ParamSpec(0, "1: an eps input added to the variance (the model's epsilon); 0: I-ViT's, none",
                         choices=(0, 1)),
        "rms": ParamSpec(0, "1: RMSNorm (the mean taken as 0); 0: LayerNorm", choices=(0, 1)),
    }
    WORK = ("rows",)
    # The compiled I-LayerNorm adds the model's epsilon (compiler.numerics.ilayernorm.eps_units): the unit a
    # compiled design runs has the eps port.
    ROLES = (VectorRole("layernorm", "ilayernorm", fit="ilayernorm", fixed=MappingProxyType({"eps": 1})),)

    @classmethod
    def invocation_cycles(cls, params, work):
        return predicted_cycles(params["c"], params["in_bits"], work["rows"], params.get("eps", 0))

    @classmethod
    def cycles_formula(cls, params):
        return (f"rows * (3 * c + in_bits + {NEWTON_STEPS} * (var_bits + eps) + {FACTOR_CYCLES}) - 1, "
                "var_bits = bitlen(c * (2**in_bits - 1)**2)")

    def __init__(self, c: int = 16, in_bits: int = 8, bias_bits: int = 32, eps: int = 0, rms: int = 0, *,
                 length_port: bool = False, rms_port: bool = False):
        """``length_port``: add an input ``length`` (``[1, c]``, held while a row is in flight) that sets the
        channels per row at run time, ``c`` being the most (the system top level's ``VEC ilayernorm``; the
        dividers keep the step counts of ``c``, so a row takes the cycles of a ``c``-channel one in its middle).
        ``rms_port``: add a one-bit input ``rms`` (held while a row is in flight) that chooses RMSNorm at run time,
        instead of the ``rms`` parameter."""
        self.params = self.accept_params(c=c, in_bits=in_bits, bias_bits=bias_bits, eps=eps, rms=rms)
        self.c, self.in_bits, self.bias_bits, self.eps_port = c, in_bits, bias_bits, bool(eps)
        self.length_port, self.rms_port, self.rms_param = length_port, rms_port, bool(rms)
        ports = {
            "bias": In(stream.Signature(bias_layout(c, bias_bits))),
            "inputs": In(stream.Signature(input_layout(in_bits))),
            "outputs": Out(stream.Signature(output_layout(in_bits, bias_bits))),
        }
        if length_port:
            ports["length"] = In(range(c + 1))
        if eps:
            ports["eps"] = In(unsigned(var_bits(c, in_bits)))
        if rms_port:
            ports["rms"] = In(1)
        super().__init__(ports)

    def elaborate(self, platform):
        m = Module()
        c, in_bits = self.c, self.in_bits
        vbits, kbits = newton_bits(c, in_bits, self.eps_port), _k_bits(c, in_bits, self.eps_port)
        m.submodules.row = row = Memory(shape=signed(in_bits), depth=c, init=[])
        m.submodules.biases = biases = Memory(shape=signed(self.bias_bits), depth=c, init=[])
        wr, rd = row.write_port(), row.read_port(domain="comb")
        bias_wr, bias_rd = biases.write_port(), biases.read_port(domain="comb")
        m.d.comb += [
            self.bias.ready.eq(1),
            bias_wr.en.eq(self.bias.valid),
            bias_wr.addr.eq(self.bias.payload.addr),
            bias_wr.data.eq(self.bias.payload.value),
        ]
        idx = Signal(range(c), name="idx")
        channels = self.length if self.length_port else Const(c, bits_for(c))
        at_end = idx == channels - 1
        m.d.comb += [rd.addr.eq(idx), bias_rd.addr.eq(idx), wr.addr.eq(idx), wr.data.eq(self.inputs.payload.x)]

        half = 1 << (in_bits - 1)
        sum_bits = sbits_for(-c * half, c * (half - 1))
        total = Signal(signed(sum_bits), name="total")
        new_total = Signal(signed(sum_bits), name="new_total")
        m.d.comb += new_total.eq(Mux(idx == 0, 0, total) + self.inputs.payload.x)
        # (sum + c * half) // c: an unsigned division whose quotient is floor(sum / c) + half.
        div_mean = SeqDivider(m, "div_mean", bits_for(c * (2 * half - 1)), bits_for(c), in_bits)
        div_newton = SeqDivider(m, "div_newton", vbits, kbits, vbits)
        div_factor = SeqDivider(m, "div_factor", 31, kbits, FACTOR_CYCLES)

        mean = Signal(signed(in_bits), name="mean")
        twice_rem = div_mean.next_rem << 1
        up = (twice_rem > channels) | ((twice_rem == channels) & div_mean.next_quot[0])
        y = Signal(signed(in_bits + 1), name="y")
        m.d.comb += y.eq(rd.data - mean)
        var = Signal(unsigned(vbits), name="var")
        new_var = Signal(unsigned(vbits), name="new_var")
        m.d.comb += new_var.eq(Mux(idx == 0, 0, var) + y * y)
        with_eps = Signal(unsigned(vbits), name="var_eps")  # the row's sum plus the epsilon: what Newton divides
        m.d.comb += with_eps.eq(new_var + (self.eps if self.eps_port else 0))
        step = Signal(range(NEWTON_STEPS), name="newton_step")
        k_next = Signal(unsigned(kbits), name="k_next")
        m.d.comb += k_next.eq((div_newton.den + div_newton.next_quot) >> 1)
        factor = Signal(unsigned(31), name="factor")

        with m.FSM(name="phase"):
            with m.State("LOAD"):
                m.d.comb += self.inputs.ready.eq(1)
                with m.If(self.inputs.valid):
                    m.d.comb += wr.en.eq(1)
                    m.d.sync += [total.eq(new_total), idx.eq(idx + 1)]
                    with m.If(at_end):
                        m.d.sync += [idx.eq(0), div_mean.load(new_total + channels * half, channels)]
                        m.next = "MEAN"
            with m.State("MEAN"):
                m.d.sync += div_mean.step()
                with m.If(div_mean.last_step):
                    rms = self.rms if self.rms_port else Const(int(self.rms_param), 1)
                    m.d.sync += mean.eq(Mux(rms, 0, div_mean.next_quot - half + up))
                    m.next = "VARIANCE"
            with m.State("VARIANCE"):
                m.d.sync += [var.eq(new_var), idx.eq(idx + 1)]
                with m.If(at_end):
                    m.d.sync += [idx.eq(0), step.eq(0), var.eq(with_eps),
                                 div_newton.load(with_eps, Const(NEWTON_K0, kbits))]
                    m.next = "NEWTON"
            with m.State("NEWTON"):
                m.d.sync += div_newton.step()
                with m.If(div_newton.last_step):
                    m.d.sync += step.eq(step + 1)
                    with m.If(step == NEWTON_STEPS - 1):
                        m.d.sync += div_factor.load(SUM_MAX, k_next)
                        m.next = "FACTOR"
                    with m.Else():
                        m.d.sync += div_newton.load(var, k_next)
            with m.State("FACTOR"):
                div_factor.run_into(m, factor, "OUTPUT")
            with m.State("OUTPUT"):
                m.d.comb += [
                    self.outputs.valid.eq(1),
                    self.outputs.payload.y.eq(((y * factor) >> 1) + bias_rd.data),
                    self.outputs.payload.last.eq(at_end),
                ]
                with m.If(self.outputs.ready):
                    m.d.sync += idx.eq(idx + 1)
                    with m.If(at_end):
                        m.d.sync += idx.eq(0)
                        m.next = "LOAD"
        return m


def predicted_cycles(c: int, in_bits: int, rows: int = 1, eps: int = 0) -> int:
    """Cycles :class:`ILayerNorm` takes for ``rows`` rows of ``c`` channels, exactly.

    From the edge accepting the first input to the edge handing over the last output, inputs offered
    every cycle and outputs always accepted (biases loaded beforehand)::

        rows * (3 * c + in_bits + NEWTON_STEPS * newton_bits(c, in_bits, eps) + FACTOR_CYCLES) - 1

    Per row: ``c`` load edges, ``in_bits`` mean-division edges, ``c`` variance edges, 10 Newton
    divisions of ``newton_bits`` edges each (``var_bits``, one more with the ``eps`` port), 31
    factor-division edges and ``c`` output edges; the next row's first input is accepted on the edge
    after the previous row's last output.
    """
    check_count("ilayernorm", "c", c)
    check_count("ilayernorm", "in_bits", in_bits)
    check_count("ilayernorm", "rows", rows)
    per_row = 3 * c + in_bits + NEWTON_STEPS * newton_bits(c, in_bits, eps) + FACTOR_CYCLES
    return rows * per_row - 1
