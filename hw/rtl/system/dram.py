"""A simulation-only AXI4 slave RAM in Amaranth, and the simulation top level that wires it to ``cds1_system``.

cocotbext-axi's ``AxiRam`` (the trusted reference, ``tb_system``'s ``axiram`` mode) runs Python coroutines on every
clock edge, which caps Verilator at a few thousand cycles per second. :class:`AxiDram` answers the same AXI4
transactions in the simulated netlist itself, so a run spends Python only to load the image before ``start`` and to
read DRAM back after ``done`` (one word per cycle through a debug port, ``dbg_*``).

Timing (all in clock cycles; one 16-byte beat per cycle each way, 16 B/cycle of read and of write bandwidth):

* reads: AR is accepted while fewer than ``max_reads`` bursts wait (AR pipelining); the first R beat of a burst is
  valid ``read_latency`` cycles after the edge that accepted its AR (at least 2), later beats follow back to back
  while ``rready`` is high, and bursts are answered in order (so IDs need no reordering), the next one starting on
  the cycle after the previous one's last beat if its latency has passed;
* writes: one burst at a time; W beats are taken one per cycle right after AW, and ``BVALID`` rises
  ``write_latency`` cycles after the last W beat (at least 1).

The storage itself is a small hand-written Verilog module (:data:`STORAGE_VERILOG`, ``cds1_dram_storage``, an
``Instance`` here, appended to the emitted Verilog by ``hw/rtl/system/emit.py``) rather than an Amaranth
``Memory``: Amaranth writes a memory's initial contents bit by bit through Yosys into one assignment per word,
which for a 1 MiB DRAM cost about 40 s of Python, 40 s of Yosys and most of a 250 s Verilator build; the module
zeroes its words with one loop. Its ports behave as Amaranth's synchronous, non-transparent read ports and
byte-enabled write ports do.

The defaults (:data:`AXIRAM_READ_LATENCY`, :data:`AXIRAM_WRITE_LATENCY`) are what ``AxiRam`` measures against the
same master; ``tests/test_rtl_system.py`` checks both memories give the same DRAM and ``cycles``.
"""

from __future__ import annotations

from dataclasses import dataclass

from amaranth.hdl import ClockSignal, Instance, Module, Signal
from amaranth.lib import data, fifo, wiring
from amaranth.lib.wiring import In, Out

from hw.errors import InputError
from hw.rtl.system.axi import ADDR_BITS, BEAT_BYTES, BEAT_LOG2, ID_BITS, axi4_signature
from hw.rtl.system.top import CYCLE_BITS, SystemConfig, SystemTop

__all__ = ["DramTiming", "AxiDram", "SimSystem", "AXIRAM_READ_LATENCY", "AXIRAM_WRITE_LATENCY", "STORAGE_MODULE",
           "STORAGE_VERILOG"]

AXIRAM_READ_LATENCY = 2
"""Cycles from an accepted AR to its first R beat in cocotbext-axi's ``AxiRam`` (measured: same ``cycles``)."""
AXIRAM_WRITE_LATENCY = 2
"""Cycles from the last W beat to ``BVALID`` in cocotbext-axi's ``AxiRam``."""
_TIME_BITS = 40

STORAGE_MODULE = "cds1_dram_storage"
"""The Verilog module holding the DRAM model's words (:data:`STORAGE_VERILOG`)."""
STORAGE_VERILOG = """
// The DRAM model's words (hw/rtl/system/dram.py): zeroed at time 0 by one loop; reads registered and
// non-transparent (a read sees the word before a same-cycle write), the AXI write port byte-enabled.
module cds1_dram_storage #(parameter WORDS = 4096, parameter ABITS = 12) (
  input clk,
  input [ABITS-1:0] dbg_addr, input [127:0] dbg_wdata, input dbg_we, output reg [127:0] dbg_rdata,
  input [ABITS-1:0] rd_addr, output reg [127:0] rd_data,
  input [ABITS-1:0] wr_addr, input [127:0] wr_data, input [15:0] wr_en
);
  reg [127:0] mem [0:WORDS-1];
  integer i, b;
  initial begin
    for (i = 0; i < WORDS; i = i + 1) mem[i] = 128'd0;
    dbg_rdata = 128'd0;
    rd_data = 128'd0;
  end
  always @(posedge clk) begin
    dbg_rdata <= mem[dbg_addr];
    rd_data <= mem[rd_addr];
    if (dbg_we) mem[dbg_addr] <= dbg_wdata;
    for (b = 0; b < 16; b = b + 1)
      if (wr_en[b]) mem[wr_addr][8 * b +: 8] <= wr_data[8 * b +: 8];
  end
endmodule
"""


@dataclass(frozen=True)
class DramTiming:
    """The simulated memory's timing (module docstring): ``read_latency`` and ``write_latency`` in cycles,
    ``max_reads`` read bursts accepted ahead of the one being answered, ``words`` 16-byte words of memory."""

    words: int = 4096
    read_latency: int = AXIRAM_READ_LATENCY
    write_latency: int = AXIRAM_WRITE_LATENCY
    max_reads: int = 8

    def check(self) -> None:
        limits = {"words": (1, 1 << (ADDR_BITS - BEAT_LOG2)), "read_latency": (2, 1 << 16),
                  "write_latency": (1, 1 << 16), "max_reads": (1, 256)}
        for name, (lo, hi) in limits.items():
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or not lo <= value <= hi:
                raise InputError(f"system DRAM model: {name}={value!r} must be an integer in [{lo}, {hi}]")

    def tag(self) -> str:
        return f"w{self.words}rl{self.read_latency}wl{self.write_latency}o{self.max_reads}"


_ReadBurst = data.StructLayout({"beat": ADDR_BITS - BEAT_LOG2, "len": 8, "id": ID_BITS, "ready": _TIME_BITS})


class AxiDram(wiring.Component):
    """AXI4 slave RAM of ``timing.words`` 16-byte words with the timing of :class:`DramTiming`; ``dbg_*`` is a
    debug port (write when ``dbg_we``, ``dbg_rdata`` is word ``dbg_addr`` of the cycle before) for the host."""

    def __init__(self, timing: DramTiming):
        timing.check()
        self.timing = timing
        self._addr_bits = max(1, (timing.words - 1).bit_length())
        super().__init__({
            "s_axi": In(axi4_signature()),
            "dbg_addr": In(self._addr_bits), "dbg_wdata": In(8 * BEAT_BYTES), "dbg_we": In(1),
            "dbg_rdata": Out(8 * BEAT_BYTES),
        })

    def elaborate(self, platform):
        m = Module()
        t, bus = self.timing, self.s_axi
        now = Signal(_TIME_BITS)
        m.d.sync += now.eq(now + 1)
        abits = self._addr_bits
        rd_addr, rd_data = Signal(abits), Signal(8 * BEAT_BYTES)
        wr_addr, wr_data, wr_en = Signal(abits), Signal(8 * BEAT_BYTES), Signal(BEAT_BYTES)
        # The debug port: the host loads the image and reads DRAM back through it while the system is idle.
        m.submodules.storage = Instance(
            STORAGE_MODULE, p_WORDS=t.words, p_ABITS=abits, i_clk=ClockSignal(),
            i_dbg_addr=self.dbg_addr, i_dbg_wdata=self.dbg_wdata, i_dbg_we=self.dbg_we, o_dbg_rdata=self.dbg_rdata,
            i_rd_addr=rd_addr, o_rd_data=rd_data, i_wr_addr=wr_addr, i_wr_data=wr_data, i_wr_en=wr_en)

        # Reads: accepted bursts wait in a FIFO with the cycle their first beat may go.
        m.submodules.ar_fifo = ar_fifo = fifo.SyncFIFO(width=_ReadBurst.size, depth=t.max_reads)
        incoming = Signal(_ReadBurst)
        m.d.comb += [
            incoming.beat.eq(bus.araddr >> BEAT_LOG2), incoming.len.eq(bus.arlen), incoming.id.eq(bus.arid),
            incoming.ready.eq(now + (t.read_latency - 1)),
            ar_fifo.w_data.eq(incoming), bus.arready.eq(ar_fifo.w_rdy), ar_fifo.w_en.eq(bus.arvalid),
        ]
        head = Signal(_ReadBurst)
        m.d.comb += head.eq(ar_fifo.r_data)
        active = Signal()
        cur = Signal(ADDR_BITS - BEAT_LOG2)
        left = Signal(8)
        rid = Signal(ID_BITS)
        fire = Signal()
        m.d.comb += [bus.rvalid.eq(active), bus.rdata.eq(rd_data), bus.rlast.eq(left == 0), bus.rid.eq(rid),
                     bus.rresp.eq(0), fire.eq(active & bus.rready)]
        free = ~active | (fire & (left == 0))
        start = Signal()
        m.d.comb += start.eq(free & ar_fifo.r_rdy & (now >= head.ready))
        m.d.comb += rd_addr.eq(cur)  # the word at `cur` (an address wraps at `words`, as a Memory's does)
        with m.If(start):
            m.d.comb += [ar_fifo.r_en.eq(1), rd_addr.eq(head.beat)]
            m.d.sync += [active.eq(1), cur.eq(head.beat), left.eq(head.len), rid.eq(head.id)]
        with m.Elif(fire):
            m.d.comb += rd_addr.eq(cur + 1)
            m.d.sync += [cur.eq(cur + 1), left.eq(left - 1)]
            with m.If(left == 0):
                m.d.sync += active.eq(0)

        # Writes: one burst at a time, W beats straight into memory, B after the latency.
        wcur = Signal(ADDR_BITS - BEAT_LOG2)
        bid = Signal(ID_BITS)
        b_at = Signal(_TIME_BITS)
        m.d.comb += [wr_addr.eq(wcur), wr_data.eq(bus.wdata), bus.bid.eq(bid), bus.bresp.eq(0)]
        with m.FSM(name="dram_write"):
            with m.State("AW"):
                m.d.comb += bus.awready.eq(1)
                with m.If(bus.awvalid):
                    m.d.sync += [wcur.eq(bus.awaddr >> BEAT_LOG2), bid.eq(bus.awid)]
                    m.next = "W"
            with m.State("W"):
                m.d.comb += bus.wready.eq(1)
                with m.If(bus.wvalid):
                    m.d.comb += wr_en.eq(bus.wstrb)
                    m.d.sync += wcur.eq(wcur + 1)
                    with m.If(bus.wlast):
                        m.d.sync += b_at.eq(now + t.write_latency)
                        m.next = "B"
            with m.State("B"):
                m.d.comb += bus.bvalid.eq(now >= b_at)
                with m.If(bus.bvalid & bus.bready):
                    m.next = "AW"
        return m


class SimSystem(wiring.Component):
    """``cds1_system`` with its AXI master wired to an :class:`AxiDram` (Verilog module ``cds1_system_sim``):
    ``start``/``program_addr``/``done``/``fault``/``cycles``/``trace_*`` as the top level's, plus the memory's
    debug port."""

    def __init__(self, config: SystemConfig, timing: DramTiming):
        self.config, self.timing = config, timing
        self._dram = AxiDram(timing)
        addr_bits = self._dram._addr_bits
        super().__init__({
            "start": In(1), "program_addr": In(ADDR_BITS), "done": Out(1), "fault": Out(1),
            "cycles": Out(CYCLE_BITS), "trace_addr": In(range(config.trace_depth)), "trace_data": Out(CYCLE_BITS),
            "dbg_addr": In(addr_bits), "dbg_wdata": In(8 * BEAT_BYTES), "dbg_we": In(1),
            "dbg_rdata": Out(8 * BEAT_BYTES),
        })

    def elaborate(self, platform):
        m = Module()
        m.submodules.system = system = SystemTop(self.config)
        m.submodules.dram = dram = self._dram
        wiring.connect(m, system.m_axi, dram.s_axi)
        m.d.comb += [system.start.eq(self.start), system.program_addr.eq(self.program_addr),
                     self.done.eq(system.done), self.fault.eq(system.fault), self.cycles.eq(system.cycles),
                     system.trace_addr.eq(self.trace_addr), self.trace_data.eq(system.trace_data),
                     dram.dbg_addr.eq(self.dbg_addr), dram.dbg_wdata.eq(self.dbg_wdata),
                     dram.dbg_we.eq(self.dbg_we), self.dbg_rdata.eq(dram.dbg_rdata)]
        return m

