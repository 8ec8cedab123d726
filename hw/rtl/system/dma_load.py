"""The load DMA: ``LOAD`` (docs/ISA.md) as AXI4 read bursts into a space's rows.

Per DRAM row ``r`` (``dram + r * stride``) it reads the beats that cover the row's ``cols << elem_log2`` bytes, in
bursts cut at 4 KiB boundaries (``axi.burst_beats``). Each element is sign-extended from its DRAM size and
truncated to the space's element width. Two paths:

* a plain load gathers the row's beats (one per cycle), then writes the whole row, lanes ``< cols``, in one cycle:
  a row costs its beats plus the burst request, the memory's latency and one write;
* a ``transpose`` load walks the elements through the held beat, one per cycle, each into one lane: lane ``r`` of
  row ``row + c`` (the memories have per-lane write enables). A transposing buffer that writes whole rows is not
  built yet.

Elements must be naturally aligned in DRAM (the backend's regions are 64-byte aligned and its strides whole
elements), so none straddles a beat.
"""

from __future__ import annotations

from amaranth.hdl import Cat, Const, Elaboratable, Module, Mux, Signal, Value, signed

from hw.isa import Opcode
from hw.rtl.system.axi import ADDR_BITS, BEAT_BYTES, BEAT_LOG2, ReadClient, burst_beats
from hw.rtl.system.fields import field

__all__ = ["LoadDma", "SpacePort", "element_from_beat"]


class SpacePort:
    """A write port of one space as the DMA sees it: ``lanes`` lanes of ``bits`` bits, per-lane enables."""

    def __init__(self, port, lanes: int, bits: int):
        self.port, self.lanes, self.bits = port, lanes, bits


def element_from_beat(m: Module, beat, offset, elem_log2) -> Signal:
    """The signed element of ``1 << elem_log2`` bytes at byte ``offset`` of ``beat``, sign-extended to 64 bits."""
    value = Signal(signed(64))
    with m.Switch(elem_log2):
        for log2 in range(4):
            with m.Case(log2):
                bits = 8 << log2
                m.d.comb += value.eq(beat.word_select(offset[log2:BEAT_LOG2], bits).as_signed())
    return value


def _field(word, name):
    return field(word, Opcode.LOAD, name)


class LoadDma(Elaboratable):
    """Runs one ``LOAD`` per ``go`` (``instr`` held until ``done``, a one-cycle pulse)."""

    def __init__(self, spaces: list[SpacePort]):
        self.go = Signal()
        self.instr = Signal(128)
        self.done = Signal()
        self.read = ReadClient("load")
        self.spaces = spaces

    def elaborate(self, platform):
        m = Module()
        word = self.instr
        space, row0, rows = _field(word, "space"), _field(word, "row"), _field(word, "rows")
        cols, elem_log2 = _field(word, "cols"), _field(word, "elem_log2")
        transpose, dram, stride = _field(word, "transpose"), _field(word, "dram"), _field(word, "stride")

        r = Signal(16)
        c = Signal(13)
        row_addr = Signal(ADDR_BITS)
        ptr = Signal(ADDR_BITS)  # byte address of element c
        beat_index = Signal(ADDR_BITS - BEAT_LOG2)
        beats_left = Signal(16)
        beat = Signal(8 * BEAT_BYTES)
        beat_valid = Signal()
        beat_last = Signal()

        row_bytes = Signal(16)
        m.d.comb += row_bytes.eq(cols << elem_log2)
        row_beats = Signal(16)
        m.d.comb += row_beats.eq(((row_addr + row_bytes - 1) >> BEAT_LOG2) - (row_addr >> BEAT_LOG2) + 1)
        burst = Signal(16)
        m.d.comb += burst.eq(burst_beats(beat_index, beats_left))

        offset = ptr[:BEAT_LOG2]
        elem_bytes = Signal(4)
        m.d.comb += elem_bytes.eq(1 << elem_log2)
        value = element_from_beat(m, beat, offset, elem_log2)
        last_of_row = c == cols - 1
        release = Signal()
        m.d.comb += release.eq(beat_valid & (last_of_row | (offset + elem_bytes >= BEAT_BYTES)))

        # Whole rows (no transpose): the row's beats gathered, then every lane written at once.
        max_row_bytes = max(sp.lanes for sp in self.spaces) * 8
        buf_beats = max_row_bytes // BEAT_BYTES + 2  # a misaligned row touches one more beat
        row_buf = Signal(buf_beats * 8 * BEAT_BYTES)
        buf_count = Signal(range(buf_beats + 1))
        aligned = Signal(max_row_bytes * 8)
        m.d.comb += aligned.eq(row_buf >> (Value.cast(row_addr[:BEAT_LOG2]) * 8))
        row_write = Signal()

        # Lane writes: one element replicated over every lane with one lane enabled, or a whole row.
        write = Signal()
        lane = Mux(transpose, r, c)
        for index, sp in enumerate(self.spaces):
            port = sp.port
            row_lanes = []
            for j in range(sp.lanes):
                lane_value = Signal(signed(64), name=f"row{index}_lane{j}")
                with m.Switch(elem_log2):
                    for log2 in range(4):
                        bits = 8 << log2
                        with m.Case(log2):
                            m.d.comb += lane_value.eq(aligned[j * bits:(j + 1) * bits].as_signed())
                row_lanes.append(lane_value[:sp.bits])
            m.d.comb += [
                port.addr.eq(Mux(transpose, row0 + c, row0 + r)),
                port.data.eq(Mux(row_write, Cat(row_lanes), Cat(value[:sp.bits] for _ in range(sp.lanes)))),
            ]
            with m.If(write & (space == index)):
                lane_bits = max(1, (sp.lanes - 1).bit_length())
                m.d.comb += port.en.eq((Const(1, sp.lanes) << lane[:lane_bits])[:sp.lanes])
            with m.If(row_write & (space == index)):
                m.d.comb += port.en.eq(Cat(j < cols for j in range(sp.lanes)))

        with m.FSM():
            with m.State("IDLE"):
                with m.If(self.go):
                    m.d.sync += [r.eq(0), row_addr.eq(dram)]
                    m.next = "ROW"
            with m.State("ROW"):
                m.d.sync += [ptr.eq(row_addr), c.eq(0), beat_index.eq(row_addr >> BEAT_LOG2),
                             beats_left.eq(row_beats), buf_count.eq(0)]
                m.next = "AR"
            with m.State("AR"):
                m.d.comb += [self.read.arvalid.eq(1), self.read.araddr.eq(beat_index << BEAT_LOG2),
                             self.read.arlen.eq(burst - 1)]
                with m.If(self.read.arready):
                    m.d.sync += [beat_index.eq(beat_index + burst), beats_left.eq(beats_left - burst)]
                    m.next = "DATA"
                    with m.If(~transpose):
                        m.next = "ROW_DATA"
            with m.State("DATA"):
                m.d.comb += [self.read.rready.eq(~beat_valid | release), write.eq(beat_valid)]
                with m.If(beat_valid):
                    m.d.sync += [c.eq(c + 1), ptr.eq(ptr + elem_bytes)]
                with m.If(release):
                    m.d.sync += beat_valid.eq(0)
                    with m.If(beat_last):
                        with m.If(beats_left != 0):
                            m.next = "AR"
                        with m.Elif(r == rows - 1):
                            m.next = "DONE"
                        with m.Else():
                            m.d.sync += [r.eq(r + 1), row_addr.eq(row_addr + stride)]
                            m.next = "ROW"
                with m.If(self.read.rvalid & self.read.rready):
                    m.d.sync += [beat.eq(self.read.rdata), beat_valid.eq(1), beat_last.eq(self.read.rlast)]
            with m.State("ROW_DATA"):
                m.d.comb += self.read.rready.eq(1)
                with m.If(self.read.rvalid):
                    with m.Switch(buf_count):
                        for i in range(buf_beats):
                            with m.Case(i):
                                m.d.sync += row_buf.word_select(i, 8 * BEAT_BYTES).eq(self.read.rdata)
                    m.d.sync += buf_count.eq(buf_count + 1)
                    with m.If(self.read.rlast):
                        with m.If(beats_left != 0):
                            m.next = "AR"
                        with m.Else():
                            m.next = "ROW_WRITE"
            with m.State("ROW_WRITE"):
                m.d.comb += row_write.eq(1)
                with m.If(r == rows - 1):
                    m.next = "DONE"
                with m.Else():
                    m.d.sync += [r.eq(r + 1), row_addr.eq(row_addr + stride)]
                    m.next = "ROW"
            with m.State("DONE"):
                m.d.comb += self.done.eq(1)
                m.next = "IDLE"
        return m
