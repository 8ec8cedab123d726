"""The AXI4 master port of the system top level, its burst arithmetic and the read-channel arbiter.

The port is a full AXI4 master (``m_axi``: AW, W, B, AR and R channels) with a 128-bit data bus, so one
instruction word is one beat. Every burst is INCR, full width (``AxSIZE`` = 4: 16 bytes) and aligned to a beat;
partial beats of a store are masked with ``WSTRB``. Bursts never cross a 4 KiB boundary (AXI4 forbids it) and are
at most 256 beats (``AxLEN`` is 8 bits), which :func:`burst_beats` enforces.

Two clients read (instruction fetch and the load DMA) and share AR/R through :class:`ReadArbiter`: each AR is
granted to the first requesting client (lower index wins a tie) and tagged with that client's index as ``ARID``;
several bursts may be in flight (the load DMA keeps up to :data:`hw.rtl.system.dma_load.MAX_READS`), and each R
beat goes to the client its ``RID`` names. A client only asks for a burst whose beats it will take, so no client's
R beats can block another's for long. The store DMA owns AW/W/B alone.
"""

from __future__ import annotations

from amaranth.hdl import Elaboratable, Module, Mux, Signal, Value
from amaranth.lib import wiring
from amaranth.lib.wiring import In, Out

__all__ = ["ADDR_BITS", "BEAT_BYTES", "BEAT_LOG2", "ID_BITS", "axi4_signature", "ReadClient", "ReadArbiter",
           "burst_beats"]

ADDR_BITS = 32
BEAT_BYTES = 16
"""Bytes per data beat (128 bits): one ``cds1`` instruction word."""
BEAT_LOG2 = 4
ID_BITS = 4
_BEATS_PER_4K = 4096 // BEAT_BYTES


def axi4_signature() -> wiring.Signature:
    """An AXI4 master's signals (from the master's side); Verilog names ``m_axi__awaddr`` ... as cocotbext-axi's
    ``AxiBus.from_prefix(dut, "m_axi_")`` expects."""
    return wiring.Signature({
        "awid": Out(ID_BITS), "awaddr": Out(ADDR_BITS), "awlen": Out(8), "awsize": Out(3), "awburst": Out(2),
        "awvalid": Out(1), "awready": In(1),
        "wdata": Out(8 * BEAT_BYTES), "wstrb": Out(BEAT_BYTES), "wlast": Out(1), "wvalid": Out(1), "wready": In(1),
        "bid": In(ID_BITS), "bresp": In(2), "bvalid": In(1), "bready": Out(1),
        "arid": Out(ID_BITS), "araddr": Out(ADDR_BITS), "arlen": Out(8), "arsize": Out(3), "arburst": Out(2),
        "arvalid": Out(1), "arready": In(1),
        "rid": In(ID_BITS), "rdata": In(8 * BEAT_BYTES), "rresp": In(2), "rlast": In(1), "rvalid": In(1),
        "rready": Out(1),
    })


def burst_beats(beat_index: Value, beats_left: Value) -> Value:
    """Beats of the next burst from beat number ``beat_index`` (byte address / 16) with ``beats_left`` to go: as
    many as remain, but never past the next 4 KiB boundary (which also caps it at 256 beats)."""
    to_boundary = _BEATS_PER_4K - Value.cast(beat_index[:8])
    return Mux(beats_left < to_boundary, beats_left, to_boundary)


class ReadClient:
    """One reader's view of AR/R (beat-aligned INCR bursts of ``arlen + 1`` beats)."""

    def __init__(self, name: str):
        self.araddr = Signal(ADDR_BITS, name=f"{name}_araddr")
        self.arlen = Signal(8, name=f"{name}_arlen")
        self.arvalid = Signal(name=f"{name}_arvalid")
        self.arready = Signal(name=f"{name}_arready")
        self.rdata = Signal(8 * BEAT_BYTES, name=f"{name}_rdata")
        self.rlast = Signal(name=f"{name}_rlast")
        self.rvalid = Signal(name=f"{name}_rvalid")
        self.rready = Signal(name=f"{name}_rready")


class ReadArbiter(Elaboratable):
    """Shares the master's AR/R among ``clients`` (lower index wins a tie); R beats routed by ``RID``."""

    def __init__(self, bus, clients: list[ReadClient]):
        if len(clients) > 1 << ID_BITS:
            raise ValueError(f"{len(clients)} read clients do not fit {ID_BITS} ID bits")
        self.bus = bus
        self.clients = clients

    def elaborate(self, platform):
        m = Module()
        bus, clients = self.bus, self.clients
        pick = Signal(range(max(2, len(clients))))
        for index in reversed(range(len(clients))):  # the lowest requesting index ends up in `pick`
            with m.If(clients[index].arvalid):
                m.d.comb += pick.eq(index)
        m.d.comb += [bus.arid.eq(pick), bus.arsize.eq(BEAT_LOG2), bus.arburst.eq(1)]
        for index, client in enumerate(clients):
            chosen = pick == index
            with m.If(chosen):
                m.d.comb += [bus.araddr.eq(client.araddr), bus.arlen.eq(client.arlen)]
            mine = bus.rid == index
            m.d.comb += [
                client.arready.eq(chosen & bus.arready),
                client.rvalid.eq(mine & bus.rvalid),
                client.rdata.eq(bus.rdata),
                client.rlast.eq(bus.rlast),
            ]
            with m.If(mine):
                m.d.comb += bus.rready.eq(client.rready)
        m.d.comb += bus.arvalid.eq(_any(c.arvalid for c in clients))
        return m


def _any(values) -> Value:
    out: Value = Value.cast(0)
    for value in values:
        out = out | value
    return out
