"""Instruction fetch and dispatch: reads the program over AXI in bursts and routes each word to its queue.

Words come :data:`FETCH_BEATS` per burst (16 bytes, one beat each; a burst never crosses 4 KiB) into a small
buffer, and are dispatched from it one per cycle. The read channel is shared with the load DMA, so the fetch unit
asks for a burst only when its buffer is empty and never holds the channel while it waits for room in a queue (a
fetch blocked on a full load queue would otherwise starve the load it waits for). ``HALT`` stops fetching (the
words after it in the buffer are dropped); the top level raises ``done`` once every queue has drained. An opcode
with no instruction (7..15) stops fetching too and raises ``fault``.
"""

from __future__ import annotations

from amaranth.hdl import Array, Elaboratable, Module, Signal

from hw.isa import Opcode, Queue
from hw.rtl.system.axi import ADDR_BITS, BEAT_BYTES, BEAT_LOG2, ReadClient, burst_beats
from hw.rtl.system.fields import field, opcode

__all__ = ["Fetch", "FETCH_BEATS"]

FETCH_BEATS = 8
"""Instruction words per fetch burst: the memory's latency is paid once per this many instructions."""


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
        pc = Signal(ADDR_BITS)  # byte address of the next burst
        buffer = Array(Signal(128, name=f"fetch_word{k}") for k in range(FETCH_BEATS))
        filled = Signal(range(FETCH_BEATS + 1))
        taken = Signal(range(FETCH_BEATS + 1))
        word = Signal(128)
        m.d.comb += word.eq(buffer[taken])
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
        beats = Signal(range(FETCH_BEATS + 1))
        m.d.comb += beats.eq(burst_beats(pc >> BEAT_LOG2, FETCH_BEATS))
        with m.FSM():
            with m.State("IDLE"):
                with m.If(self.start):
                    m.d.sync += [pc.eq(self.program_addr), self.halted.eq(0), self.fault.eq(0)]
                    m.next = "AR"
            with m.State("AR"):
                m.d.comb += [self.read.arvalid.eq(1), self.read.araddr.eq(pc), self.read.arlen.eq(beats - 1)]
                with m.If(self.read.arready):
                    m.d.sync += [pc.eq(pc + beats * BEAT_BYTES), filled.eq(0), taken.eq(0)]
                    m.next = "R"
            with m.State("R"):
                m.d.comb += self.read.rready.eq(1)
                with m.If(self.read.rvalid):
                    m.d.sync += [buffer[filled].eq(self.read.rdata), filled.eq(filled + 1)]
                    with m.If(self.read.rlast):
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
                                m.d.sync += taken.eq(taken + 1)
                                with m.If(taken == filled - 1):
                                    m.next = "AR"
        return m
