"""The store DMA: ``STORE`` (docs/ISA.md) as AXI4 write bursts, one element per cycle out of a space's rows.

Per row ``r`` it reads space row ``row + r`` once (sign-extending each lane from the space's width), then packs
lanes ``0 .. cols-1`` one per cycle at their byte offsets into a 16-byte beat with ``WSTRB`` marking the bytes it
wrote; the low ``8 << elem_log2`` bits of each value go to DRAM. A beat leaves when its last byte is filled or the
row ends, so a row starting or ending mid-beat writes only its own bytes. Each burst (cut at 4 KiB boundaries)
waits for its write response before the next starts, so when ``done`` rises every byte is in DRAM and a later
``LOAD`` of it (after the tokens say so) reads the new values.
"""

from __future__ import annotations

from amaranth.hdl import Elaboratable, Module, Signal, Value, signed

from hw.isa import Opcode
from hw.rtl.system.axi import ADDR_BITS, BEAT_BYTES, BEAT_LOG2, burst_beats
from hw.rtl.system.fields import field

__all__ = ["StoreDma", "SpaceReadPort"]


class SpaceReadPort:
    """A read port of one space as the store DMA sees it: ``lanes`` signed lanes of ``bits`` bits."""

    def __init__(self, port, lanes: int, bits: int):
        self.port, self.lanes, self.bits = port, lanes, bits


def _field(word, name):
    return field(word, Opcode.STORE, name)


class StoreDma(Elaboratable):
    """Runs one ``STORE`` per ``go`` on the write channels of ``bus`` (``instr`` held until ``done``)."""

    def __init__(self, bus, spaces: list[SpaceReadPort]):
        self.go = Signal()
        self.instr = Signal(128)
        self.done = Signal()
        self.bus = bus
        self.spaces = spaces

    def elaborate(self, platform):
        m = Module()
        bus, word = self.bus, self.instr
        space, row0, rows = _field(word, "space"), _field(word, "row"), _field(word, "rows")
        cols, elem_log2 = _field(word, "cols"), _field(word, "elem_log2")
        dram, stride = _field(word, "dram"), _field(word, "stride")

        r = Signal(16)
        c = Signal(13)
        row_addr = Signal(ADDR_BITS)
        ptr = Signal(ADDR_BITS)
        beat_index = Signal(ADDR_BITS - BEAT_LOG2)
        beats_left = Signal(16)
        burst_left = Signal(16)
        data = Signal(8 * BEAT_BYTES)
        strb = Signal(BEAT_BYTES)

        row_bytes = Signal(16)
        m.d.comb += row_bytes.eq(cols << elem_log2)
        row_beats = Signal(16)
        m.d.comb += row_beats.eq(((row_addr + row_bytes - 1) >> BEAT_LOG2) - (row_addr >> BEAT_LOG2) + 1)
        burst = Signal(16)
        m.d.comb += burst.eq(burst_beats(beat_index, beats_left))

        # The row being stored, captured from each space's read port the cycle after its address.
        value = Signal(signed(64))
        held = []
        for index, sp in enumerate(self.spaces):
            m.d.comb += sp.port.addr.eq(row0 + r)
            row = Signal(sp.lanes * sp.bits, name=f"store_row{index}")
            held.append(row)
            with m.If(space == index):
                m.d.comb += value.eq(row.word_select(c[:max(1, (sp.lanes - 1).bit_length())], sp.bits).as_signed())

        offset = Value.cast(ptr[:BEAT_LOG2])
        elem_bytes = Signal(4)
        m.d.comb += elem_bytes.eq(1 << elem_log2)
        masked = Signal(64)
        byte_mask = Signal(8)
        with m.Switch(elem_log2):
            for log2 in range(4):
                with m.Case(log2):
                    m.d.comb += [masked.eq(value[:8 << log2]), byte_mask.eq((1 << (1 << log2)) - 1)]
        merged_data = Signal.like(data)
        merged_strb = Signal.like(strb)
        m.d.comb += [merged_data.eq(data | (masked << (offset * 8))),
                     merged_strb.eq(strb | (byte_mask << offset))]
        end_of_beat = (c == cols - 1) | (offset + elem_bytes >= BEAT_BYTES)

        m.d.comb += [bus.awid.eq(0), bus.awsize.eq(BEAT_LOG2), bus.awburst.eq(1), bus.bready.eq(0)]
        with m.FSM():
            with m.State("IDLE"):
                with m.If(self.go):
                    m.d.sync += [r.eq(0), row_addr.eq(dram)]
                    m.next = "ROW"
            with m.State("ROW"):  # the read ports see row0 + r now
                m.next = "CAPTURE"
            with m.State("CAPTURE"):
                m.d.sync += [h.eq(sp.port.data) for h, sp in zip(held, self.spaces)]
                m.d.sync += [ptr.eq(row_addr), c.eq(0), beat_index.eq(row_addr >> BEAT_LOG2),
                             beats_left.eq(row_beats), data.eq(0), strb.eq(0)]
                m.next = "AW"
            with m.State("AW"):
                m.d.comb += [bus.awvalid.eq(1), bus.awaddr.eq(beat_index << BEAT_LOG2), bus.awlen.eq(burst - 1)]
                with m.If(bus.awready):
                    m.d.sync += [beat_index.eq(beat_index + burst), beats_left.eq(beats_left - burst),
                                 burst_left.eq(burst)]
                    m.next = "W"
            with m.State("W"):
                with m.If(end_of_beat):
                    m.d.comb += [bus.wvalid.eq(1), bus.wdata.eq(merged_data), bus.wstrb.eq(merged_strb),
                                 bus.wlast.eq(burst_left == 1)]
                    with m.If(bus.wready):
                        m.d.sync += [data.eq(0), strb.eq(0), c.eq(c + 1), ptr.eq(ptr + elem_bytes),
                                     burst_left.eq(burst_left - 1)]
                        with m.If(burst_left == 1):
                            m.next = "B"
                with m.Else():
                    m.d.sync += [data.eq(merged_data), strb.eq(merged_strb), c.eq(c + 1),
                                 ptr.eq(ptr + elem_bytes)]
            with m.State("B"):
                m.d.comb += bus.bready.eq(1)
                with m.If(bus.bvalid):
                    with m.If(beats_left != 0):
                        m.next = "AW"
                    with m.Elif(r == rows - 1):
                        m.next = "DONE"
                    with m.Else():
                        m.d.sync += [r.eq(r + 1), row_addr.eq(row_addr + stride)]
                        m.next = "ROW"
            with m.State("DONE"):
                m.d.comb += self.done.eq(1)
                m.next = "IDLE"
        return m
