"""Top-k MoE router unit: the ``k`` largest of ``experts`` gate logits per token, Edge-MoE's way.

Edge-MoE scans the logits in expert order and keeps the best ``k`` with a strict ``>``, so equal
logits go to the lower expert index; this equals ``compiler.numerics.router.route``'s stable sort
(``experts``) and its selected logits. The combine weights (softmax probabilities) are not computed
here: the unit outputs the selected experts and their logits, ranked best first.

Ports (Verilog names; ``clk`` and the synchronous active-high ``rst`` as well):

``inputs`` (in, stream)
    ``logit`` (signed ``in_bits``), one per beat; a token is ``experts`` consecutive beats, expert 0
    first.
``outputs`` (out, stream)
    One beat per token: ``index`` (``k`` unsigned lanes, the chosen experts, best first) and ``score``
    (``k`` signed ``in_bits`` lanes, their logits). Lane ``i`` of ``index`` occupies the payload bits
    after lane ``i - 1``; ``score`` follows ``index``.

Inside: ``k`` sorted slots (valid, logit, index). A beat beats slot ``i`` when the slot is empty or the
logit is strictly greater; it is inserted at the first such slot and the slots below shift down. On a
token's last beat the updated slots go to the output register and the slots empty, so the next
token starts on the following edge. A held output freezes the unit.

Timing (:func:`predicted_cycles`, from the edge accepting the first logit to the edge handing over
the last token's result, inputs offered every cycle, outputs always taken)::

    tokens * experts
"""

from __future__ import annotations

from amaranth.hdl import Module, Signal, signed, unsigned
from amaranth.lib import data, stream, wiring
from amaranth.lib.wiring import In, Out

from hw.errors import InputError
from hw.rtl._arith import bits_for, check_count
from hw.rtl.kernel import KernelMixin, ParamSpec, VectorRole

__all__ = ["TopkRouter", "insert", "predicted_cycles", "slot_layout"]


def input_layout(in_bits: int) -> data.StructLayout:
    """Payload of the ``inputs`` stream."""
    return data.StructLayout({"logit": signed(in_bits)})


def output_layout(experts: int, k: int, in_bits: int) -> data.StructLayout:
    """Payload of the ``outputs`` stream (field order = bit order, LSB first)."""
    return data.StructLayout(
        {
            "index": data.ArrayLayout(unsigned(bits_for(experts - 1)), k),
            "score": data.ArrayLayout(signed(in_bits), k),
        }
    )


def slot_layout(score_bits: int, index_bits: int) -> data.StructLayout:
    """One of the ``k`` sorted slots: ``valid``, the kept logit (``score``, signed) and its expert (``index``)."""
    return data.StructLayout({"valid": 1, "score": signed(score_bits), "index": unsigned(index_bits)})


def insert(m: Module, slots: list, logit, index, name: str = "upd") -> list[Signal]:
    """The slots after offering them ``logit`` of expert ``index`` (combinational, signals ``{name}{i}``): it goes
    into the first slot that is empty or holds a strictly smaller logit, and the slots below shift down, so the
    slots stay sorted best first with ties to the earlier (lower) index. Shared with the system top level's
    ``VEC topk`` (``hw/rtl/system/vec.py``)."""
    beats = [~s.valid | (logit > s.score) for s in slots]
    updated = []
    for i, current in enumerate(slots):
        new = Signal(current.shape(), name=f"{name}{i}")
        incoming = [new.valid.eq(1), new.score.eq(logit), new.index.eq(index)]
        first_beaten = beats[i] if i == 0 else beats[i] & ~beats[i - 1]
        with m.If(first_beaten):
            m.d.comb += incoming
        with m.Elif(beats[i]):
            m.d.comb += new.eq(slots[i - 1])
        with m.Else():
            m.d.comb += new.eq(current)
        updated.append(new)
    return updated


class TopkRouter(KernelMixin, wiring.Component):
    """Top-``k`` of ``experts`` logits per token, ties to the lower index (module docstring)."""

    KERNEL = "topk_router"
    PARAMS = {
        "experts": ParamSpec(16, "gate logits per token (E)", lo=2, hi=256),
        "k": ParamSpec(2, "experts chosen per token", lo=1, hi=8),
        "in_bits": ParamSpec(16, "logit width in bits, signed", lo=2, hi=32),
    }
    WORK = ("tokens",)
    ROLES = (VectorRole("router", "exact", fit="topk_router"),)

    @classmethod
    def invocation_cycles(cls, params, work):
        return predicted_cycles(params["experts"], work["tokens"])

    @classmethod
    def cycles_formula(cls, params):
        return "tokens * experts"

    @classmethod
    def check_combination(cls, params: dict[str, int]) -> None:
        if params["k"] > params["experts"]:
            raise InputError(
                f"{cls.KERNEL}: parameter k={params['k']} exceeds experts={params['experts']}"
            )

    def __init__(self, experts: int = 16, k: int = 2, in_bits: int = 16):
        self.params = self.accept_params(experts=experts, k=k, in_bits=in_bits)
        self.experts, self.k, self.in_bits = experts, k, in_bits
        super().__init__(
            {
                "inputs": In(stream.Signature(input_layout(in_bits))),
                "outputs": Out(stream.Signature(output_layout(experts, k, in_bits))),
            }
        )

    def elaborate(self, platform):
        m = Module()
        k, in_bits = self.k, self.in_bits
        slot = slot_layout(in_bits, bits_for(self.experts - 1))
        slots = [Signal(slot, name=f"slot{i}") for i in range(k)]
        count = Signal(range(self.experts), name="count")
        logit = self.inputs.payload.logit
        updated = insert(m, slots, logit, count)

        enable = Signal()
        out_valid = Signal()
        m.d.comb += [
            enable.eq(~out_valid | self.outputs.ready),
            self.outputs.valid.eq(out_valid),
            self.inputs.ready.eq(enable),
        ]
        with m.If(enable):
            m.d.sync += out_valid.eq(0)
            with m.If(self.inputs.valid):
                m.d.sync += count.eq(count + 1)
                with m.If(count == self.experts - 1):
                    m.d.sync += [count.eq(0), out_valid.eq(1)]
                    m.d.sync += [s.valid.eq(0) for s in slots]
                    for i in range(k):
                        m.d.sync += [
                            self.outputs.payload.index[i].eq(updated[i].index),
                            self.outputs.payload.score[i].eq(updated[i].score),
                        ]
                with m.Else():
                    m.d.sync += [s.eq(u) for s, u in zip(slots, updated)]
        return m


def predicted_cycles(experts: int, tokens: int = 1) -> int:
    """Cycles :class:`TopkRouter` takes for ``tokens`` tokens of ``experts`` logits, exactly: ``tokens * experts``.

    From the edge accepting the first logit to the edge handing over the last result, inputs offered
    every cycle and outputs always accepted: one edge per logit, and the last token's result leaves one
    edge after its last logit (the output register), which is the ``- 1 + 1``.
    """
    check_count("topk_router", "experts", experts)
    check_count("topk_router", "tokens", tokens)
    return tokens * experts
