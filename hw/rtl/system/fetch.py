"""Instruction fetch and dispatch: reads the program word by word over AXI and routes each word to its queue.

One single-beat burst per instruction (16 bytes, one beat): the read channel is shared with the load DMA, so the
fetch unit never holds it while it waits for room in a queue (a fetch blocked on a full load queue would otherwise
starve the load it waits for). ``HALT`` stops fetching; the top level raises ``done`` once every queue has
drained. An opcode with no instruction (7..15) stops fetching too and raises ``fault``.
"""

from __future__ import annotations

from amaranth.hdl import Elaboratable, Module, Signal

from hw.isa import Opcode, Queue
from hw.rtl.system.axi import ADDR_BITS, BEAT_BYTES, ReadClient
from hw.rtl.system.fields import field, opcode

__all__ = ["Fetch"]


class Fetch(Elaboratable):
    """``start`` (one cycle) begins fetching at byte address ``program_addr``; ``queues[q]`` are the three
    instruction FIFOs (``w_data``, ``w_en``, ``w_rdy``) in :class:`hw.isa.Queue` order."""

    def __init__(self, queues):
        self.start = Signal()
        self.program_addr = Signal(ADDR_BITS)
        self.halted = Signal()
        self.fault = Signal()
        self.read = ReadClient("fetch")
        self.queues = queues

    def elaborate(self, platform):
        m = Module()
        pc = Signal(ADDR_BITS)
        word = Signal(128)
        op = opcode(word)
        target = Signal(2)
        with m.Switch(op):
            with m.Case(Opcode.LOAD):
                m.d.comb += target.eq(Queue.LOAD)
            with m.Case(Opcode.STORE):
                m.d.comb += target.eq(Queue.STORE)
            with m.Case(Opcode.NOP):
                m.d.comb += target.eq(field(word, Opcode.NOP, "queue"))
            with m.Default():
                m.d.comb += target.eq(Queue.EXECUTE)
        for q in self.queues:
            m.d.comb += q.w_data.eq(word)
        with m.FSM():
            with m.State("IDLE"):
                with m.If(self.start):
                    m.d.sync += [pc.eq(self.program_addr), self.halted.eq(0), self.fault.eq(0)]
                    m.next = "AR"
            with m.State("AR"):
                m.d.comb += [self.read.arvalid.eq(1), self.read.araddr.eq(pc), self.read.arlen.eq(0)]
                with m.If(self.read.arready):
                    m.next = "R"
            with m.State("R"):
                m.d.comb += self.read.rready.eq(1)
                with m.If(self.read.rvalid):
                    m.d.sync += word.eq(self.read.rdata)
                    m.next = "DISPATCH"
            with m.State("DISPATCH"):
                with m.If(op == Opcode.HALT):
                    m.d.sync += self.halted.eq(1)
                    m.next = "IDLE"
                with m.Elif(op > Opcode.NOP):
                    m.d.sync += [self.halted.eq(1), self.fault.eq(1)]
                    m.next = "IDLE"
                with m.Else():
                    for index, q in enumerate(self.queues):
                        with m.If(target == index):
                            m.d.comb += q.w_en.eq(1)
                            with m.If(q.w_rdy):
                                m.d.sync += pc.eq(pc + BEAT_BYTES)
                                m.next = "AR"
        return m
