"""The ``cds1`` system top level: fetch, three queues with dependency tokens, DMA, memories, array, requant.

Blocks (docs/RTL.md, System top level, draws them): ``Fetch`` reads instruction words over the AXI read channels
(shared with the load DMA through ``ReadArbiter``) and dispatches each into the load, execute or store queue
(``QueueController``: an instruction FIFO and the token handshake); four token counters link load -> execute ->
store; ``LoadDma`` (AXI reads -> scratchpad, accumulator or constant rows), ``Execute`` (``SystolicGemm`` and
``Requant``), ``StoreDma`` (scratchpad or accumulator rows -> AXI writes).

``start`` (one cycle, with ``program_addr``: the byte address of the first instruction word in the AXI space)
runs a program; ``done`` rises when ``HALT`` has been fetched and all three queues are empty and idle, and stays
high; ``cycles`` then holds the clock edges from ``start`` to ``done``. ``fault`` says an instruction the RTL does
not build yet was met (module docstrings of ``fetch`` and ``execute``).

Memories (``amaranth.lib.memory.Memory``, one row per address, per-lane write enables): the scratchpad
(``sp_rows`` rows of ``width = max(rows, cols)`` signed ``in_bits`` lanes), the accumulator (``acc_rows`` rows of
``cols`` signed ``acc_bits`` lanes) and the constant memory (``const_rows`` rows of ``width`` 32-bit words), as
docs/ISA.md sizes them. Each client has its own port (the load DMA writes every space, the store DMA reads the
scratchpad and accumulator, the execute unit reads two scratchpad rows per beat), so the queues never wait on one
another for a port: only their dependency tokens order them.
"""

from __future__ import annotations

from dataclasses import dataclass

from amaranth.hdl import Module, Signal, unsigned
from amaranth.lib import memory, wiring
from amaranth.lib.wiring import In, Out

from hw.errors import InputError
from hw.isa import Opcode, Queue
from hw.isa.memory import MemorySizes, memory_sizes
from hw.rtl.system.axi import ADDR_BITS, ReadArbiter, axi4_signature
from hw.rtl.system.dma_load import LoadDma, SpacePort
from hw.rtl.system.dma_store import SpaceReadPort, StoreDma
from hw.rtl.system.execute import Execute
from hw.rtl.system.fetch import Fetch
from hw.rtl.system.fields import field, opcode
from hw.rtl.system.queues import QueueController, TokenCounter
from hw.rtl.system.vec import MAX_ROW, VecUnit

__all__ = ["SystemConfig", "SystemTop", "CYCLE_BITS", "CONST_BITS"]

CYCLE_BITS = 48
"""Width of the cycle counter (a day at 1 GHz fits)."""
CONST_BITS = 32
"""Constant-memory word width (docs/ISA.md: bias values, requant multipliers and shifts)."""


@dataclass(frozen=True)
class SystemConfig(MemorySizes):
    """The top level's sizes (`MemorySizes`), each instruction queue's depth (words), the trace memory's entries,
    and ``max_row``: the longest element row (elements, ``VEC``'s ``n``) the vector unit's row kernels
    (``shiftmax``, ``ilayernorm``) are built for. Their row buffers and I-LayerNorm's dividers grow with it, so
    ``codesign rtl --system`` sizes it from the program; a longer row raises ``fault`` (``support.rtl_lacks``
    refuses it first). ``online_softmax`` keeps no row and takes rows of up to 4,096 whatever ``max_row``."""

    queue_depth: int = 16
    trace_depth: int = 256
    max_row: int = MAX_ROW
    ws_array: bool = False
    """True: the execute unit also builds the weight-stationary array (``hw.rtl.systolic_ws``) and runs
    ``GEMM dataflow=1``; False: output stationary only (a ws ``GEMM`` raises ``fault``). ``codesign rtl --system``
    sets it when the program has a ws ``GEMM``, so an os-only design's Verilog (and its cached builds) is
    unchanged."""

    def tag(self) -> str:
        """A file-name-safe name for this configuration (build folders)."""
        return (f"r{self.rows}c{self.cols}i{self.in_bits}a{self.acc_bits}sp{self.sp_rows}acc{self.acc_rows}"
                f"k{self.const_rows}q{self.queue_depth}t{self.trace_depth}m{self.max_row}"
                + ("ws" if self.ws_array else ""))

    def check(self) -> None:
        """``InputError`` naming the first size the RTL cannot build."""
        limits = {"rows": (1, 64), "cols": (1, 64), "sp_rows": (1, 65536), "acc_rows": (1, 65536),
                  "const_rows": (1, 65536), "queue_depth": (2, 1024),
                  "trace_depth": (1, 65536), "max_row": (1, MAX_ROW)}
        for name, (lo, hi) in limits.items():
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or not lo <= value <= hi:
                raise InputError(f"system RTL: {name}={value!r} must be an integer in [{lo}, {hi}]")
        if self.in_bits not in (4, 8):
            raise InputError(f"system RTL: in_bits={self.in_bits!r} is not supported (4 or 8)")
        if self.acc_bits not in (16, 32):
            raise InputError(f"system RTL: acc_bits={self.acc_bits!r} is not supported (16 or 32)")
        if not isinstance(self.ws_array, bool):
            raise InputError(f"system RTL: ws_array={self.ws_array!r} must be true or false")

    @classmethod
    def from_target(cls, target: object, *, queue_depth: int = 16, trace_depth: int = 256,
                    max_row: int = MAX_ROW, ws_array: bool = False) -> SystemConfig:
        """The sizes of a target with a ``gemm`` array and ``buffers`` (``hw.isa.memory_sizes``, the backend's rule)."""
        m = memory_sizes(target, "the system RTL")
        config = cls(m.rows, m.cols, m.in_bits, m.acc_bits, m.sp_rows, m.acc_rows, 4096, queue_depth, trace_depth,
                     max_row, ws_array)
        config.check()
        return config


class SystemTop(wiring.Component):
    """The accelerator that runs ``cds1`` programs (module docstring). Verilog module ``cds1_system``."""

    def __init__(self, config: SystemConfig):
        config.check()
        self.config = config
        super().__init__({
            "start": In(1),
            "program_addr": In(ADDR_BITS),
            "done": Out(1),
            "fault": Out(1),
            "cycles": Out(CYCLE_BITS),
            "trace_addr": In(range(config.trace_depth)),
            "trace_data": Out(CYCLE_BITS),
            "m_axi": Out(axi4_signature()),
        })

    def elaborate(self, platform):
        m = Module()
        c = self.config
        width = c.width
        sp = memory.Memory(shape=unsigned(width * c.in_bits), depth=c.sp_rows, init=[])
        acc = memory.Memory(shape=unsigned(c.cols * c.acc_bits), depth=c.acc_rows, init=[])
        const = memory.Memory(shape=unsigned(width * CONST_BITS), depth=c.const_rows, init=[])
        m.submodules.sp, m.submodules.acc, m.submodules.const = sp, acc, const

        load_ports = [SpacePort(sp.write_port(granularity=c.in_bits), width, c.in_bits),
                      SpacePort(acc.write_port(granularity=c.acc_bits), c.cols, c.acc_bits),
                      SpacePort(const.write_port(granularity=CONST_BITS), width, CONST_BITS)]
        store_ports = [SpaceReadPort(sp.read_port(), width, c.in_bits),
                       SpaceReadPort(acc.read_port(), c.cols, c.acc_bits)]
        vec = VecUnit(cols=c.cols, width=width, in_bits=c.in_bits, acc_bits=c.acc_bits, max_row=c.max_row,
                      sp_src=sp.read_port(), sp_aux=sp.read_port(), acc_src=acc.read_port(),
                      acc_aux=acc.read_port(), const_r=const.read_port(),
                      sp_w=sp.write_port(granularity=c.in_bits), acc_w=acc.write_port(granularity=c.acc_bits))
        m.submodules.execute = execute = Execute(
            rows=c.rows, cols=c.cols, in_bits=c.in_bits, acc_bits=c.acc_bits, ws=c.ws_array,
            sp_a=sp.read_port(), sp_b=sp.read_port(), acc_r=acc.read_port(),
            acc_w=acc.write_port(granularity=c.acc_bits), const_r=const.read_port(), vec=vec)
        m.submodules.load = load = LoadDma(load_ports)
        m.submodules.store = store = StoreDma(self.m_axi, store_ports)

        # Dependency tokens: <from>_<to> counters along load -> execute -> store.
        tokens = {name: TokenCounter(name) for name in ("l2e", "e2l", "e2s", "s2e")}
        for name, counter in tokens.items():
            m.submodules[f"tok_{name}"] = counter
        t = tokens
        queues = {
            Queue.LOAD: QueueController("loadq", c.queue_depth, None, None, t["e2l"], t["l2e"]),
            Queue.EXECUTE: QueueController("execq", c.queue_depth, t["l2e"], t["e2l"], t["s2e"], t["e2s"]),
            Queue.STORE: QueueController("storeq", c.queue_depth, t["e2s"], t["s2e"], None, None),
        }
        for q, ctl in queues.items():
            m.submodules[f"queue_{q.name.lower()}"] = ctl
        for ctl, unit in ((queues[Queue.LOAD], load), (queues[Queue.EXECUTE], execute), (queues[Queue.STORE], store)):
            m.d.comb += [unit.go.eq(ctl.go), unit.instr.eq(ctl.instr), ctl.done.eq(unit.done)]

        m.submodules.fetch = fetch = Fetch([queues[q].fifo for q in Queue])
        m.submodules.arbiter = ReadArbiter(self.m_axi, [fetch.read, load.read])
        m.d.comb += [fetch.start.eq(self.start), fetch.program_addr.eq(self.program_addr),
                     self.fault.eq(fetch.fault | execute.fault | vec.fault)]

        # Trace marks (docs/ISA.md, NOP): a traced execute-queue NOP latches the cycle count at its completion into
        # entry ``mark``; the host reads the entries through trace_addr / trace_data (one cycle later) after done.
        trace = memory.Memory(shape=unsigned(CYCLE_BITS), depth=c.trace_depth, init=[])
        m.submodules.trace = trace
        trace_w, trace_r = trace.write_port(), trace.read_port()
        execq = queues[Queue.EXECUTE]
        mark = field(execq.instr, Opcode.NOP, "mark")
        m.d.comb += [trace_w.addr.eq(mark), trace_w.data.eq(self.cycles),
                     trace_w.en.eq(execq.retire & (opcode(execq.instr) == Opcode.NOP)
                                   & field(execq.instr, Opcode.NOP, "trace") & (mark < c.trace_depth)),
                     trace_r.addr.eq(self.trace_addr), self.trace_data.eq(trace_r.data)]

        drained = fetch.halted
        for ctl in queues.values():
            drained = drained & ctl.idle & ~ctl.fifo.r_rdy
        running = Signal()
        with m.If(self.start):
            m.d.sync += [running.eq(1), self.cycles.eq(0), self.done.eq(0)]
        with m.Elif(running):
            m.d.sync += self.cycles.eq(self.cycles + 1)
            with m.If(drained):
                m.d.sync += [running.eq(0), self.done.eq(1)]
        return m
