"""Dyadic requantization stage: ``y = clamp(round_half_even(acc * m / 2**e))``, lane-parallel.

This is I-ViT's fixed-point multiply (``fixedpoint_mul``), the integer step between a GEMM's int32
accumulators and the next layer's ``out_bits`` activations; the ratio of scales ``S_in / S_out`` is
given as the dyadic pair ``(m, e)`` (``compiler.numerics.dyadic``). It is bit-exact with
``compiler.numerics.requantize(acc, m, e, out_bits)`` for every value the ports can carry.

Ports (Verilog names; ``clk`` and the synchronous active-high ``rst`` as well):

``inputs`` (in, stream: ``inputs__valid``, ``inputs__ready``, ``inputs__payload``)
    One beat carries ``lanes`` values: ``acc`` (signed ``acc_bits`` each), ``m`` (unsigned 32-bit
    multiplier each, I-ViT's ``m_int``, at most ``2**31``), ``e`` (signed 8-bit shift each), then
    ``last`` (passed through). Each lane has its own ``(m, e)``, so a beat can hold one row of a
    GEMM output tile with per-output-channel scales. Payload bits, LSB first: ``acc`` lanes, ``m``
    lanes, ``e`` lanes, ``last``.
``outputs`` (out, stream)
    ``y`` (``lanes`` signed ``out_bits`` values) and ``last``.

Semantics per lane, with the exact 64-bit product ``p = acc * m``: for ``e >= 1``,
``round_half_even(p / 2**e)`` (shifts of 64 or more give 0, as ``|p| < 2**63``); for ``e <= 0``,
``p * 2**-e``; then clamp to ``[-2**(out_bits-1), 2**(out_bits-1) - 1]``. Rounding uses the guard
bit (bit ``e-1`` of ``p``), the sticky OR of the bits below it and the LSB of ``p >> e``.

Pipeline: two registered stages, the 32 x 32 multiply, then shift/round/clamp. A beat accepted at
one clock edge is handed over two edges later (:data:`LATENCY`) if ``outputs.ready`` is high; a
held output freezes both stages (``inputs.ready`` falls combinationally). One beat per cycle.
"""

from __future__ import annotations

from amaranth.hdl import Cat, Module, Mux, Signal, signed, unsigned
from amaranth.lib import data, stream, wiring
from amaranth.lib.wiring import In, Out

from hw.errors import InputError
from hw.rtl.kernel import KernelMixin, ParamSpec, VectorRole

__all__ = ["Requant", "predicted_cycles", "pack_inputs", "unpack_outputs", "LATENCY", "M_BITS", "E_BITS"]

LATENCY = 2
"""Clock edges from accepting a beat to handing over its result: multiply, then round and clamp."""
M_BITS = 32
"""Width of the unsigned multiplier ``m`` (I-ViT's ``m_int`` is at most ``2**31``)."""
E_BITS = 8
"""Width of the signed shift ``e``: ``[-128, 127]``."""


def input_layout(lanes: int, acc_bits: int) -> data.StructLayout:
    """Payload of the ``inputs`` stream (field order = bit order, LSB first)."""
    return data.StructLayout(
        {
            "acc": data.ArrayLayout(signed(acc_bits), lanes),
            "m": data.ArrayLayout(unsigned(M_BITS), lanes),
            "e": data.ArrayLayout(signed(E_BITS), lanes),
            "last": 1,
        }
    )


def output_layout(lanes: int, out_bits: int) -> data.StructLayout:
    """Payload of the ``outputs`` stream (field order = bit order, LSB first)."""
    return data.StructLayout({"y": data.ArrayLayout(signed(out_bits), lanes), "last": 1})


class Requant(KernelMixin, wiring.Component):
    """``lanes`` parallel dyadic requantizers, ``acc_bits`` in, ``out_bits`` out (module docstring)."""

    KERNEL = "requant"
    PARAMS = {
        "lanes": ParamSpec(4, "values per beat", lo=1, hi=256),
        "acc_bits": ParamSpec(32, "accumulator width in bits, signed", lo=2, hi=32),
        "out_bits": ParamSpec(8, "output width in bits, signed", choices=(4, 8, 16, 32)),
    }
    WORK = ("beats",)
    ROLES = (VectorRole("requant", "exact", fit="requant"),)

    @classmethod
    def invocation_cycles(cls, params, work):
        return predicted_cycles(work["beats"])

    @classmethod
    def cycles_formula(cls, params):
        return f"beats - 1 + {LATENCY}"

    def __init__(self, lanes: int = 4, acc_bits: int = 32, out_bits: int = 8):
        self.params = self.accept_params(lanes=lanes, acc_bits=acc_bits, out_bits=out_bits)
        self.lanes, self.acc_bits, self.out_bits = lanes, acc_bits, out_bits
        super().__init__(
            {
                "inputs": In(stream.Signature(input_layout(lanes, acc_bits))),
                "outputs": Out(stream.Signature(output_layout(lanes, out_bits))),
            }
        )

    def _round_clamp(self, m: Module, p: Signal, e: Signal, lane: int):
        """Combinational: clamp(round_half_even(p / 2**e)) for e >= 1, clamp(p * 2**-e) for e <= 0."""
        out_bits = self.out_bits
        lo, hi = -(1 << (out_bits - 1)), (1 << (out_bits - 1)) - 1
        # Right shifts: e >= 64 gives the same result as e = 64 (|p| < 2**63).
        guard_at = Signal(range(64), name=f"guard_at{lane}")  # e - 1, the guard bit's position
        m.d.comb += guard_at.eq(Mux(e >= 64, 63, Mux(e < 1, 0, e - 1)))
        guard_q = Signal(signed(64), name=f"guard_q{lane}")  # p >> (e - 1), arithmetic
        m.d.comb += guard_q.eq(p >> guard_at)
        sticky = Signal(name=f"sticky{lane}")
        m.d.comb += sticky.eq(Cat(p[b] & (b < guard_at) for b in range(63)).any())
        guard, lsb = guard_q[0], guard_q[1]
        rounded = Signal(signed(64), name=f"rounded{lane}")
        m.d.comb += rounded.eq((guard_q >> 1) + (guard & (sticky | lsb)))
        # Left shifts: beyond out_bits places any nonzero p saturates anyway.
        left_n = Signal(range(out_bits + 1), name=f"left_n{lane}")
        m.d.comb += left_n.eq(Mux(e < -out_bits, out_bits, Mux(e > 0, 0, -e)))
        shifted = Signal(signed(64 + out_bits), name=f"left{lane}")
        m.d.comb += shifted.eq(p << left_n)
        value = Signal(signed(64 + out_bits), name=f"scaled{lane}")
        m.d.comb += value.eq(Mux(e >= 1, rounded, shifted))
        return Mux(value > hi, hi, Mux(value < lo, lo, value))

    def elaborate(self, platform):
        m = Module()
        lanes = self.lanes
        enable = Signal()
        out_valid = Signal()
        m.d.comb += [
            enable.eq(~out_valid | self.outputs.ready),
            self.inputs.ready.eq(enable),
            self.outputs.valid.eq(out_valid),
        ]
        # Stage 1: the exact 64-bit products (signed acc times unsigned 32-bit m).
        s1_valid, s1_last = Signal(), Signal()
        prod = [Signal(signed(64), name=f"prod{i}") for i in range(lanes)]
        shift = [Signal(signed(E_BITS), name=f"shift{i}") for i in range(lanes)]
        payload = self.inputs.payload
        scaled = [self._round_clamp(m, prod[i], shift[i], i) for i in range(lanes)]
        with m.If(enable):
            m.d.sync += [s1_valid.eq(self.inputs.valid), s1_last.eq(payload.last)]
            for i in range(lanes):
                m.d.sync += [prod[i].eq(payload.acc[i] * payload.m[i]), shift[i].eq(payload.e[i])]
            # Stage 2: round, shift and clamp into the output register.
            m.d.sync += [out_valid.eq(s1_valid), self.outputs.payload.last.eq(s1_last)]
            m.d.sync += [self.outputs.payload.y[i].eq(scaled[i]) for i in range(lanes)]
        return m


def predicted_cycles(beats: int) -> int:
    """Cycles :class:`Requant` takes for ``beats`` back-to-back beats, exactly: ``beats - 1 + LATENCY``.

    Counted like :func:`hw.rtl.systolic.predicted_cycles`: from the edge accepting the first beat to
    the edge handing over the last result, inputs offered every cycle and outputs always accepted.
    """
    if isinstance(beats, bool) or not isinstance(beats, int) or beats < 1:
        raise InputError(f"requant: beats must be a positive integer, got {beats!r}")
    return beats - 1 + LATENCY


def _pack(values, bits: int) -> int:
    word, mask = 0, (1 << bits) - 1
    for index, value in enumerate(values):
        word |= (int(value) & mask) << (index * bits)
    return word


def pack_inputs(acc, m, e, last: bool, acc_bits: int) -> int:
    """The ``inputs__payload`` integer for one beat (lists of ``lanes`` ints each)."""
    lanes = len(acc)
    if not (len(m) == len(e) == lanes):
        raise ValueError("acc, m and e need one value per lane")
    return (
        _pack(acc, acc_bits)
        | _pack(m, M_BITS) << (lanes * acc_bits)
        | _pack(e, E_BITS) << (lanes * (acc_bits + M_BITS))
        | int(last) << (lanes * (acc_bits + M_BITS + E_BITS))
    )


def unpack_outputs(word: int, lanes: int, out_bits: int) -> tuple[list[int], bool]:
    """``(y_lanes, last)`` from an ``outputs__payload`` integer."""
    mask, sign = (1 << out_bits) - 1, 1 << (out_bits - 1)
    lanes_out = []
    for i in range(lanes):
        v = (word >> (i * out_bits)) & mask
        lanes_out.append(v - (1 << out_bits) if v & sign else v)
    return lanes_out, bool(word >> (lanes * out_bits) & 1)
