"""The three instruction queues and their dependency-token FIFOs (docs/ISA.md, Dependency tokens).

A token carries no data, so each of the four token FIFOs (load -> execute, execute -> load, execute -> store,
store -> execute) is a counter of the tokens in it: a push adds one, a pop takes one, both in one cycle leave it
unchanged (VTA's FIFOs of 1-bit tokens hold the same information).

A :class:`QueueController` takes the next instruction of its queue once every token it pops is there, hands it
to its unit (``go``, one cycle, with ``instr`` held stable until the unit's ``done``), and pushes its tokens when
the unit is done. ``NOP`` completes without a unit. Instructions of one queue run strictly in order.
"""

from __future__ import annotations

from amaranth.hdl import Elaboratable, Module, Signal
from amaranth.lib import fifo

from hw.isa import Opcode
from hw.rtl.system.fields import opcode, pop_next, pop_prev, push_next, push_prev

__all__ = ["TOKEN_BITS", "TokenCounter", "QueueController"]

TOKEN_BITS = 8
"""Width of a token counter: up to 255 tokens in flight between two queues (a program seeds two per FIFO)."""


class TokenCounter(Elaboratable):
    """One dependency-token FIFO as a counter: ``push`` and ``pop`` are one-cycle strobes, ``any`` says a pop may go."""

    def __init__(self, name: str):
        self.push = Signal(name=f"{name}_push")
        self.pop = Signal(name=f"{name}_pop")
        self.count = Signal(TOKEN_BITS, name=f"{name}_count")
        self.any = Signal(name=f"{name}_any")

    def elaborate(self, platform):
        m = Module()
        m.d.comb += self.any.eq(self.count != 0)
        with m.If(self.push & ~self.pop):
            m.d.sync += self.count.eq(self.count + 1)
        with m.Elif(self.pop & ~self.push):
            m.d.sync += self.count.eq(self.count - 1)
        return m


class QueueController(Elaboratable):
    """Instruction FIFO of one queue (``depth`` words) plus the token handshake around its unit (module docstring).

    The fetch unit writes ``fifo.w_data`` / ``w_en``; the unit reads ``go`` and ``instr`` and answers ``done``.
    ``prev`` / ``next_`` are the neighbouring queues' token counters (None at the ends of the chain):
    ``pop_prev`` pops ``prev_in``, ``push_prev`` pushes ``prev_out`` and likewise for next.
    """

    def __init__(self, name: str, depth: int, prev_in: TokenCounter | None, prev_out: TokenCounter | None,
                 next_in: TokenCounter | None, next_out: TokenCounter | None):
        self.fifo = fifo.SyncFIFOBuffered(width=128, depth=depth)
        self.instr = Signal(128, name=f"{name}_instr")
        self.go = Signal(name=f"{name}_go")
        self.done = Signal(name=f"{name}_done")
        self.idle = Signal(name=f"{name}_idle")
        self.retire = Signal(name=f"{name}_retire")  # one cycle as ``instr`` completes (the trace marks watch it)
        self.prev_in, self.prev_out, self.next_in, self.next_out = prev_in, prev_out, next_in, next_out

    def elaborate(self, platform):
        m = Module()
        m.submodules.fifo = f = self.fifo
        head = f.r_data
        ready = f.r_rdy
        if self.prev_in is not None:
            ready = ready & (~pop_prev(head) | self.prev_in.any)
        if self.next_in is not None:
            ready = ready & (~pop_next(head) | self.next_in.any)
        busy = Signal()
        is_nop = opcode(self.instr) == Opcode.NOP
        m.d.comb += self.idle.eq(~busy)
        m.d.sync += self.go.eq(0)
        with m.If(~busy):
            with m.If(ready):
                m.d.comb += f.r_en.eq(1)
                if self.prev_in is not None:
                    m.d.comb += self.prev_in.pop.eq(pop_prev(head))
                if self.next_in is not None:
                    m.d.comb += self.next_in.pop.eq(pop_next(head))
                m.d.sync += [self.instr.eq(head), busy.eq(1), self.go.eq(opcode(head) != Opcode.NOP)]
        with m.Elif(self.done | is_nop):
            m.d.sync += busy.eq(0)
            m.d.comb += self.retire.eq(1)
            if self.prev_out is not None:
                m.d.comb += self.prev_out.push.eq(push_prev(self.instr))
            if self.next_out is not None:
                m.d.comb += self.next_out.push.eq(push_next(self.instr))
        return m
