"""The load DMA: ``LOAD`` (docs/ISA.md) as AXI4 read bursts into a space's rows, whole rows per write.

Every transfer is cut into *segments*, each a run of contiguous DRAM bytes read in bursts (cut at 4 KiB
boundaries, ``axi.burst_beats``) and gathered, one beat per cycle, into a buffer that is then shifted by the
segment's misalignment. Each element is sign-extended from its DRAM size and truncated to the space's element
width.

* A plain load has one segment per DRAM row ``r`` (``dram + r * stride``, ``cols << elem_log2`` bytes), written
  in one cycle into lanes ``< cols`` of row ``row + r``.
* A ``transpose`` load goes in chunks of :data:`CHUNK_BYTES` of each DRAM row: the chunk's segments of rows
  ``0 .. rows-1`` are stashed in a corner-turn buffer (``rows`` x 64 bytes), then each of its columns ``c`` is
  written in one cycle as lanes ``< rows`` of space row ``row + c``.

Requests run ahead of the data: an issuer walks the same segments and asks for their bursts (each at most
:data:`BURST_BEATS` beats, cut at 4 KiB) while up to :data:`MAX_READS` of them are in flight, so the memory's
latency is paid once per transfer rather than once per segment; the gatherer takes the beats in order and only
counts them per segment, filing each on its last beat. A plain load then costs about one cycle per beat, a
transposed one a cycle per beat plus one per space row written (the R channel waits while a chunk's columns are
written), each plus the memory's latency once. The
element widths never straddle a beat because elements are naturally aligned in DRAM (the backend's regions are
64-byte aligned and its strides whole elements).
"""

from __future__ import annotations

from amaranth.hdl import Cat, Elaboratable, Module, Mux, Signal, Value, signed

from hw.isa import Opcode
from hw.rtl.system.axi import ADDR_BITS, BEAT_BYTES, BEAT_LOG2, ReadClient, burst_beats
from hw.rtl.system.fields import field

__all__ = ["LoadDma", "SpacePort", "CHUNK_BYTES", "MAX_READS", "BURST_BEATS"]

MAX_READS = 8
"""Read bursts the load DMA keeps in flight: enough to cover a memory latency of several times a segment's beats."""
BURST_BEATS = 16
"""Longest burst the load DMA asks for (beats): a segment is cut into bursts of at most this (and at 4 KiB)."""

CHUNK_BYTES = 64
"""Bytes of each DRAM row a transposed load gathers per chunk: four beats per burst, 8 to 64 space rows per chunk."""


class SpacePort:
    """A write port of one space as the DMA sees it: ``lanes`` lanes of ``bits`` bits, per-lane enables."""

    def __init__(self, port, lanes: int, bits: int):
        self.port, self.lanes, self.bits = port, lanes, bits


def _field(word, name):
    return field(word, Opcode.LOAD, name)


def _element(m: Module, data: Value, index, elem_log2, name: str) -> Signal:
    """Element ``index`` of ``data`` (elements of ``1 << elem_log2`` bytes), sign-extended to 64 bits."""
    value = Signal(signed(64), name=name)
    with m.Switch(elem_log2):
        for log2 in range(4):
            with m.Case(log2):
                m.d.comb += value.eq(data.word_select(index, 8 << log2).as_signed())
    return value


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
        max_lanes = max(sp.lanes for sp in self.spaces)

        r = Signal(16)
        c0 = Signal(16)  # first column of a transposed chunk
        i = Signal(16)  # column within the chunk being written
        row_addr = Signal(ADDR_BITS)  # dram + r * stride
        row_bytes = Signal(16)
        m.d.comb += row_bytes.eq(cols << elem_log2)

        def segment(prefix: str, row_addr: Value, c0: Value) -> tuple[Signal, Signal]:
            """(first byte address, beats) of the segment at ``row_addr`` (chunk ``c0`` when transposed)."""
            chunk_left = Signal(16, name=f"{prefix}_chunk_left")
            seg_bytes = Signal(16, name=f"{prefix}_seg_bytes")
            addr = Signal(ADDR_BITS, name=f"{prefix}_seg_addr")
            beats = Signal(16, name=f"{prefix}_seg_beats")
            m.d.comb += [
                chunk_left.eq(row_bytes - (c0 << elem_log2)),
                addr.eq(row_addr + Mux(transpose, c0 << elem_log2, 0)),
                seg_bytes.eq(Mux(transpose, Mux(chunk_left < CHUNK_BYTES, chunk_left, CHUNK_BYTES), row_bytes)),
                beats.eq(((addr + seg_bytes - 1) >> BEAT_LOG2) - (addr >> BEAT_LOG2) + 1),
            ]
            return addr, beats

        next_seg_addr, seg_beats = segment("gather", row_addr, c0)

        # The issuer: its own walk over the segments, one burst per AR, while fewer than MAX_READS are in flight.
        ar_r = Signal(16)
        ar_c0 = Signal(16)
        ar_row_addr = Signal(ADDR_BITS)
        ar_open = Signal()  # a segment is being requested
        ar_busy = Signal()  # segments are left to request
        beat_index = Signal(ADDR_BITS - BEAT_LOG2)
        beats_left = Signal(16)
        in_flight = Signal(range(MAX_READS + 1))
        ar_seg_addr, ar_seg_beats = segment("issue", ar_row_addr, ar_c0)
        burst = Signal(16)
        m.d.comb += burst.eq(burst_beats(beat_index, Mux(beats_left < BURST_BEATS, beats_left, BURST_BEATS)))
        issue = Signal()
        m.d.comb += [self.read.araddr.eq(beat_index << BEAT_LOG2), self.read.arlen.eq(burst - 1),
                     self.read.arvalid.eq(ar_open & (in_flight < MAX_READS)),
                     issue.eq(self.read.arvalid & self.read.arready)]
        retire = self.read.rvalid & self.read.rready & self.read.rlast
        with m.If(issue & ~retire):
            m.d.sync += in_flight.eq(in_flight + 1)
        with m.Elif(retire & ~issue):
            m.d.sync += in_flight.eq(in_flight - 1)
        with m.If(self.go):
            m.d.sync += [ar_r.eq(0), ar_c0.eq(0), ar_row_addr.eq(dram), ar_busy.eq(1), ar_open.eq(0)]
        with m.Elif(ar_busy & ~ar_open):
            m.d.sync += [beat_index.eq(ar_seg_addr >> BEAT_LOG2), beats_left.eq(ar_seg_beats), ar_open.eq(1)]
        with m.Elif(issue):
            m.d.sync += [beat_index.eq(beat_index + burst), beats_left.eq(beats_left - burst)]
            with m.If(beats_left == burst):  # the segment's last burst: on to the next segment
                m.d.sync += ar_open.eq(0)
                with m.If(ar_r == rows - 1):
                    m.d.sync += [ar_r.eq(0), ar_row_addr.eq(dram)]
                    with m.If(~transpose | (ar_c0 + (CHUNK_BYTES >> elem_log2) >= cols)):
                        m.d.sync += ar_busy.eq(0)
                    with m.Else():
                        m.d.sync += ar_c0.eq(ar_c0 + (CHUNK_BYTES >> elem_log2))
                with m.Else():
                    m.d.sync += [ar_r.eq(ar_r + 1), ar_row_addr.eq(ar_row_addr + stride)]

        # Gathered beats (the one arriving now included, so a segment is filed on its last beat), aligned to the
        # segment's first byte.
        seg_max = max(max_lanes * 8, CHUNK_BYTES)
        buf_beats = seg_max // BEAT_BYTES + 2  # a misaligned segment touches one more beat
        gathered = Signal(buf_beats * 8 * BEAT_BYTES)
        count = Signal(range(buf_beats + 1))
        beat_in = Signal()
        m.d.comb += beat_in.eq(self.read.rvalid & self.read.rready)
        combined = Cat(Mux(beat_in & (count == k), self.read.rdata, gathered.word_select(k, 8 * BEAT_BYTES))
                       for k in range(buf_beats))
        aligned = Signal(seg_max * 8)
        m.d.comb += aligned.eq(combined >> (Value.cast(next_seg_addr[:BEAT_LOG2]) * 8))
        last_beat = Signal()
        m.d.comb += last_beat.eq(beat_in & (count == seg_beats - 1))

        # Corner-turn buffer of a transposed chunk: one CHUNK_BYTES row per DRAM row.
        corner = [Signal(CHUNK_BYTES * 8, name=f"corner{k}") for k in range(max_lanes)]
        chunk_elems = Signal(8)
        m.d.comb += chunk_elems.eq(CHUNK_BYTES >> elem_log2)
        last_column = (i == chunk_elems - 1) | (c0 + i == cols - 1)

        write_row = Signal()
        write_column = Signal()
        for index, sp in enumerate(self.spaces):
            port = sp.port
            lanes = range(sp.lanes)
            row_values = [_element(m, aligned, j, elem_log2, f"row{index}_lane{j}")[:sp.bits] for j in lanes]
            column_values = [_element(m, corner[k], i[:8], elem_log2, f"col{index}_lane{k}")[:sp.bits]
                             for k in lanes]
            m.d.comb += [
                port.addr.eq(Mux(transpose, row0 + c0 + i, row0 + r)),
                port.data.eq(Mux(transpose, Cat(column_values), Cat(row_values))),
            ]
            with m.If(write_row & (space == index)):
                m.d.comb += port.en.eq(Cat(j < cols for j in lanes))
            with m.If(write_column & (space == index)):
                m.d.comb += port.en.eq(Cat(k < rows for k in lanes))

        with m.FSM():
            with m.State("IDLE"):
                with m.If(self.go):
                    m.d.sync += [r.eq(0), c0.eq(0), row_addr.eq(dram), count.eq(0)]
                    m.next = "GATHER"
            with m.State("GATHER"):
                m.d.comb += self.read.rready.eq(1)
                with m.If(beat_in):
                    with m.Switch(count):
                        for k in range(buf_beats):
                            with m.Case(k):
                                m.d.sync += gathered.word_select(k, 8 * BEAT_BYTES).eq(self.read.rdata)
                    m.d.sync += count.eq(count + 1)
                with m.If(last_beat):
                    m.d.sync += count.eq(0)
                    with m.If(transpose):
                        with m.Switch(r):
                            for k in range(max_lanes):
                                with m.Case(k):
                                    m.d.sync += corner[k].eq(aligned[:CHUNK_BYTES * 8])
                    with m.Else():
                        m.d.comb += write_row.eq(1)
                    with m.If(r == rows - 1):
                        m.d.sync += i.eq(0)
                        with m.If(transpose):
                            m.next = "WRITE_COLUMNS"
                        with m.Else():
                            m.next = "DONE"
                    with m.Else():
                        m.d.sync += [r.eq(r + 1), row_addr.eq(row_addr + stride)]
            with m.State("WRITE_COLUMNS"):
                m.d.comb += write_column.eq(1)
                m.d.sync += i.eq(i + 1)
                with m.If(last_column):
                    with m.If(c0 + i == cols - 1):
                        m.next = "DONE"
                    with m.Else():
                        m.d.sync += [c0.eq(c0 + chunk_elems), r.eq(0), row_addr.eq(dram)]
                        m.next = "GATHER"
            with m.State("DONE"):
                m.d.comb += self.done.eq(1)
                m.next = "IDLE"
        return m
