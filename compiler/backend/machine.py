"""A functional model of the ``cds1`` machine: runs a program on a DRAM image, instruction by instruction.

It is the reference the RTL top level will be checked against, and the check on the backend today: the values it
computes come from the same integer kernels the functional simulator runs (``compiler.simulate.intkernels``), so a
program whose outputs equal the simulator's has its tiles, addresses, layouts and dependency tokens right.

The three queues run in one of two legal orders (both respect every dependency token, docs/ISA.md):
``"loads_first"`` runs the load queue as far ahead as its tokens allow before anything else, so a missing
write-after-read token lets a load overwrite a buffer the array has not read yet; ``"compute_first"`` runs execute
and store ahead, so a missing read-after-write token lets the array read a buffer before its load. A program that
gives the same outputs in both orders has no token missing on its buffers.

Memories (``Geometry``): the scratchpad holds ``width`` lanes of ``in_bits`` signed values per row, the accumulator
``cols`` lanes of ``acc_bits``, the constant memory ``width`` 32-bit words (signed where a bias or shift is read,
unsigned where a multiplier is). Values are wrapped to the width of whatever holds them, as registers do.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import numpy as np

from compiler.simulate import intkernels as K
from hw.errors import InputError
from hw.isa import Config, ConfigReg, Gemm, Instruction, Load, Program, Queue, Space, Store, Vec, VecFn, queue_of
from hw.isa.memory import MemorySizes, memory_sizes

__all__ = ["Geometry", "Machine", "run_program"]

Order = Literal["loads_first", "compute_first"]

SIGMOID_BITS = 8
"""Width of ShiftGELU's sigmoid (I-ViT's IntGELU: ``compiler.simulate.approx.gelu_int`` feeds it 8)."""


@dataclass(frozen=True)
class Geometry(MemorySizes):
    """The machine's sizes (from the target YAML: ``gemm.rows/cols/in_bits/acc_bits`` and ``buffers``) and
    ``dataflow``, the target's ``gemm.dataflow``: ``"ws"`` makes the backend emit weight-stationary folds for its
    weight GEMMs (``compiler/backend/gemm_ws.py``); anything else output-stationary ones. The machine itself runs
    both whatever it says (each ``GEMM`` names its own)."""

    const_rows: int = 1024
    dataflow: str = "os"

    @classmethod
    def from_target(cls, target: object) -> Geometry:
        """The geometry of a target with a ``gemm`` array and ``buffers`` (``hw.isa.memory_sizes``)."""
        m = memory_sizes(target, "the system backend")
        dataflow = str(getattr(getattr(target, "gemm", None), "dataflow", "os"))
        return cls(m.rows, m.cols, m.in_bits, m.acc_bits, m.sp_rows, m.acc_rows, const_rows=4096, dataflow=dataflow)


def _wrap(x: np.ndarray, bits: int, signed: bool = True) -> np.ndarray:
    x = np.asarray(x, dtype=np.int64) & ((1 << bits) - 1) if bits < 64 else np.asarray(x, dtype=np.int64)
    if signed and bits < 64:
        x = np.where(x >= 1 << (bits - 1), x - (1 << bits), x)
    return x


class Machine:
    """Memories, configuration registers and the instruction semantics of docs/ISA.md."""

    def __init__(self, geometry: Geometry, dram: bytearray):
        self.g = geometry
        self.dram = dram
        self.spaces = {Space.SP: np.zeros((geometry.sp_rows, geometry.width), np.int64),
                       Space.ACC: np.zeros((geometry.acc_rows, geometry.cols), np.int64),
                       Space.CONST: np.zeros((geometry.const_rows, geometry.width), np.int64)}
        self.bits = {Space.SP: geometry.in_bits, Space.ACC: geometry.acc_bits, Space.CONST: 32}
        self.config: dict[ConfigReg, int] = {}

    # --- rows of a space ------------------------------------------------------------------------------------------

    def _span(self, space: Space, n: int) -> int:
        return -(-n // self.spaces[space].shape[1])

    def _rows(self, space: Space, row: int, count: int, n: int, where: str) -> np.ndarray:
        """``count`` element rows of ``n`` values from ``row`` (each spans ``ceil(n / lanes)`` space rows)."""
        mem = self.spaces[space]
        span = self._span(space, n)
        if row + count * span > mem.shape[0]:
            raise InputError(f"{where}: rows {row}..{row + count * span - 1} are beyond the {mem.shape[0]} rows of "
                             f"{space.name.lower()}")
        return mem[row:row + count * span].reshape(count, -1)[:, :n]

    def _put_rows(self, space: Space, row: int, values: np.ndarray, where: str) -> None:
        count, n = values.shape
        mem = self.spaces[space]
        span = self._span(space, n)
        if row + count * span > mem.shape[0]:
            raise InputError(f"{where}: rows {row}..{row + count * span - 1} are beyond the {mem.shape[0]} rows of "
                             f"{space.name.lower()}")
        view = mem[row:row + count * span].reshape(count, -1)
        view[:, :n] = _wrap(values, self.bits[space], signed=space != Space.CONST)

    # --- DRAM ------------------------------------------------------------------------------------------------------

    def _dram_rows(self, addr: int, rows: int, cols: int, elem: int, stride: int, where: str) -> np.ndarray:
        end = addr + (rows - 1) * stride + cols * elem
        if end > len(self.dram):
            raise InputError(f"{where}: DRAM bytes up to {end} are beyond the {len(self.dram)}-byte image")
        return self._window(addr, rows, cols, elem, stride).astype(np.int64)

    def _window(self, addr: int, rows: int, cols: int, elem: int, stride: int) -> np.ndarray:
        """The 2-D strided window of DRAM a transfer touches, as a view into the image (rows may overlap)."""
        return np.ndarray((rows, cols), np.dtype(f"<i{elem}"), buffer=self.dram, offset=addr, strides=(stride, elem))

    def _dram_store(self, values: np.ndarray, addr: int, elem: int, stride: int, where: str) -> None:
        rows, cols = values.shape
        end = addr + (rows - 1) * stride + cols * elem
        if end > len(self.dram):
            raise InputError(f"{where}: DRAM bytes up to {end} are beyond the {len(self.dram)}-byte image")
        raw = _wrap(values, 8 * elem).astype(np.dtype(f"<i{elem}"))
        if stride >= cols * elem or rows == 1:
            self._window(addr, rows, cols, elem, stride)[...] = raw
            return
        for r in range(rows):  # overlapping rows: later rows win, as the DMA writes them in order
            start = addr + r * stride
            self.dram[start:start + cols * elem] = raw[r].tobytes()

    # --- instructions ----------------------------------------------------------------------------------------------

    def execute(self, instr: Instruction, where: str) -> None:
        """Run one instruction (its dependency tokens are the caller's: :func:`run_program`)."""
        if isinstance(instr, (Load, Store)) and not instr.transpose and instr.cols > self.spaces[instr.space].shape[1]:
            raise InputError(f"{where}: {instr.cols} elements per row exceed the {self.spaces[instr.space].shape[1]} "
                             f"lanes of {instr.space.name.lower()} (docs/ISA.md, LOAD and STORE)")
        if isinstance(instr, Load):
            data = self._dram_rows(instr.dram, instr.rows, instr.cols, 1 << instr.elem_log2, instr.stride, where)
            if instr.transpose:
                if instr.rows > self.spaces[instr.space].shape[1]:
                    raise InputError(f"{where}: a transposed load of {instr.rows} rows needs as many lanes; "
                                     f"{instr.space.name.lower()} has {self.spaces[instr.space].shape[1]}")
                data = data.T
            self._put_rows(instr.space, instr.row, data, where)
        elif isinstance(instr, Store):
            data = self._rows(instr.space, instr.row, instr.rows, instr.cols, where)
            self._dram_store(data, instr.dram, 1 << instr.elem_log2, instr.stride, where)
        elif isinstance(instr, Gemm):
            self._gemm(instr, where)
        elif isinstance(instr, Vec):
            self._vec(instr, where)
        elif isinstance(instr, Config):
            self.config[instr.reg] = instr.value

    def _gemm(self, g: Gemm, where: str) -> None:
        geo = self.g
        if g.dataflow == 0:
            if g.m > geo.rows or g.n > geo.cols:
                raise InputError(f"{where}: an output-stationary fold is at most {geo.rows} x {geo.cols}, got "
                                 f"{g.m} x {g.n}")
            a = self._rows(Space.SP, g.a_row, g.k, g.m, where).T  # stored transposed: row i is A[:, i]
        else:
            if g.k > geo.rows or g.n > geo.cols:
                raise InputError(f"{where}: a weight-stationary fold holds at most {geo.rows} x {geo.cols} weights, "
                                 f"got {g.k} x {g.n}")
            a = self._rows(Space.SP, g.a_row, g.m, g.k, where)
        b = self._rows(Space.SP, g.b_row, g.k, g.n, where)
        c = a @ b
        if g.accumulate:
            c = c + self._rows(Space.ACC, g.c_row, g.m, g.n, where)
        if g.bias:
            c = c + _wrap(self._rows(Space.CONST, g.bias_row, 1, g.n, where), 32)
        self._put_rows(Space.ACC, g.c_row, c, where)

    def _reg(self, reg: ConfigReg, where: str) -> int:
        if reg not in self.config:
            raise InputError(f"{where}: reads configuration register {reg.name.lower()} before any CONFIG set it")
        return self.config[reg]

    def _vec(self, v: Vec, where: str) -> None:
        x = self._rows(v.src_space, v.src, v.rows, v.n, where)
        if v.fn == VecFn.TOPK:
            self._topk(x, v, where)
            return
        out_bits = 1 << v.out_log2
        if v.fn == VecFn.REQUANT:
            if v.aux_space == Space.CONST:  # per-channel (m, e): a row of multipliers, then a row of shifts
                span = self._span(Space.CONST, v.n)
                m = self._rows(Space.CONST, v.aux, 1, v.n, where)[0]
                e = _wrap(self._rows(Space.CONST, v.aux + span, 1, v.n, where)[0], 32)
                y = K.requantize(x, m, e, out_bits)
            else:
                y = K.requantize(x, self._reg(ConfigReg.REQUANT_M, where), self._reg(ConfigReg.REQUANT_E, where),
                                 out_bits)
        elif v.fn == VecFn.REQUANT_ADD:
            ident = self._rows(v.aux_space, v.aux, v.rows, v.n, where)
            y = K.requantize_add(x, self._reg(ConfigReg.REQUANT_M, where), self._reg(ConfigReg.REQUANT_E, where),
                                 ident, self._reg(ConfigReg.RESIDUAL_M, where),
                                 self._reg(ConfigReg.RESIDUAL_E, where), out_bits)
        elif v.fn == VecFn.SHIFTMAX:
            shifted = np.right_shift(x, self._reg(ConfigReg.SHIFTMAX_SHIFT, where))
            y = K.shiftmax_x0(shifted, self._reg(ConfigReg.SHIFTMAX_X0, where), out_bits)
        elif v.fn == VecFn.ONLINE_SOFTMAX:
            y = K.online_softmax_me(x, self._reg(ConfigReg.SOFTMAX_M, where), self._reg(ConfigReg.SOFTMAX_E, where),
                                    out_bits)
        elif v.fn == VecFn.SHIFTGELU:
            y = K.shiftgelu_x0(x, self._reg(ConfigReg.SHIFTGELU_X0, where), SIGMOID_BITS)
        elif v.fn == VecFn.ILAYERNORM:
            # layernorm_rms resets to 0 on the top level (LayerNorm): a program of LayerNorms never sets it
            y = (K.ilayernorm_core(x, self._reg(ConfigReg.LAYERNORM_EPS, where),
                                   bool(self.config.get(ConfigReg.LAYERNORM_RMS, 0)))
                 + _wrap(self._rows(Space.CONST, v.aux, 1, v.n, where), 32))
        elif v.fn == VecFn.THRESHOLD:
            y = self._threshold(x, v, out_bits, where)
        elif v.fn == VecFn.DIGIT:
            y = np.right_shift(x, self._reg(ConfigReg.DIGIT_SHIFT, where)) & ((1 << (self.g.in_bits - 1)) - 1)
        elif v.fn == VecFn.COPY:
            y = x
        elif v.fn == VecFn.MUL:
            if v.aux_space == Space.CONST:
                raise InputError(f"{where}: VEC mul reads its second factor's rows at aux; the constant memory holds "
                                 "words, not data rows")
            product = x * self._rows(v.aux_space, v.aux, v.rows, v.n, where)  # |x|, |aux| < 2^31: fits int64
            y = np.clip(product, -(1 << (out_bits - 1)), (1 << (out_bits - 1)) - 1)
        else:
            raise InputError(f"{where}: the machine model has no VEC {v.fn.name.lower()} yet")
        self._put_rows(v.dst_space, v.dst, y, where)

    def _topk(self, x: np.ndarray, v: Vec, where: str) -> None:
        """``VEC topk`` (docs/ISA.md): per element row the ``k = topk_k`` best experts' indices (best first, ties to
        the lower index) into ``k``-element rows at ``dst``, their logits into ``k``-element rows at ``aux``."""
        k = self._reg(ConfigReg.TOPK_K, where)
        if not 1 <= k <= v.n:
            raise InputError(f"{where}: VEC topk needs 1 <= topk_k <= n = {v.n}, got topk_k = {k}")
        if v.aux_space == Space.CONST:
            raise InputError(f"{where}: VEC topk writes its logits at aux; the constant memory is not writable")
        span_in = self._span(v.src_space, v.n)
        out = {"dst": (v.dst_space, v.dst), "aux": (v.aux_space, v.aux)}
        spans = {name: self._span(space, k) for name, (space, _) in out.items()}
        for name, (space, row) in out.items():
            end = row + v.rows * spans[name]
            # element row r's outputs may overwrite input rows already read (in place: row == src), never those of
            # a later row: unsafe iff some output row lands past row 0's input and before the input's end
            if space == v.src_space and v.rows > 1 and row + spans[name] > v.src + span_in and \
                    row < v.src + v.rows * span_in:
                raise InputError(f"{where}: VEC topk's {name} rows {row}..{end - 1} overwrite input rows "
                                 f"{v.src}..{v.src + v.rows * span_in - 1} before they are read")
        if v.dst_space == v.aux_space and v.dst < v.aux + v.rows * spans["aux"] and \
                v.aux < v.dst + v.rows * spans["dst"]:
            raise InputError(f"{where}: VEC topk's dst rows from {v.dst} and aux rows from {v.aux} overlap")
        experts, logits = K.topk(x, k)
        self._put_rows(v.dst_space, v.dst, experts, where)
        self._put_rows(v.aux_space, v.aux, logits, where)

    def _threshold(self, x: np.ndarray, v: Vec, out_bits: int, where: str) -> np.ndarray:
        """``min(lo + #{l : x >= t_l}, cap)`` per channel: ``aux`` holds the cap row, then ``2^out_bits - 1``
        threshold rows in ascending level order (docs/ISA.md, VEC threshold)."""
        levels = (1 << out_bits) - 1
        table = _wrap(self._rows(Space.CONST, v.aux, levels + 1, v.n, where), 32)
        cap, thresholds = table[0], table[1:]
        if (np.diff(thresholds, axis=0) < 0).any():
            raise InputError(f"{where}: VEC threshold's table at constant row {v.aux} does not ascend per channel")
        count = np.empty(x.shape, np.int64)
        for c in range(v.n):  # thresholds ascend per channel (the backend's tables are monotone): a sorted search
            count[:, c] = np.searchsorted(thresholds[:, c], x[:, c], side="right")
        return np.minimum(count - (1 << (out_bits - 1)), cap)


def run_program(program: Program, machine: Machine, order: Order = "loads_first") -> None:
    """Run ``program`` on ``machine`` honouring its dependency tokens (the FIFOs start empty: a program seeds them
    itself with ``NOP`` s), in the given legal ``order`` (module docstring). ``InputError`` on a deadlock."""
    queues: dict[Queue, list[tuple[int, Instruction]]] = {q: [] for q in Queue}
    for i, instr in enumerate(program.instructions):
        q = queue_of(instr)
        if q is not None:
            queues[q].append((i, instr))
    tokens = {(a, b): 0 for a in Queue for b in Queue if abs(a - b) == 1}
    heads = {q: 0 for q in Queue}
    priority = [Queue.LOAD, Queue.EXECUTE, Queue.STORE] if order == "loads_first" else \
        [Queue.STORE, Queue.EXECUTE, Queue.LOAD]

    def step(q: Queue) -> bool:
        if heads[q] >= len(queues[q]):
            return False
        index, instr = queues[q][heads[q]]
        d = instr.deps
        want = ([(Queue(q - 1), q)] if d.pop_prev else []) + ([(Queue(q + 1), q)] if d.pop_next else [])
        if any(tokens[k] == 0 for k in want):
            return False
        for k in want:
            tokens[k] -= 1
        machine.execute(instr, f"instruction {index} ({type(instr).__name__.upper()})")
        if d.push_prev:
            tokens[(q, Queue(q - 1))] += 1
        if d.push_next:
            tokens[(q, Queue(q + 1))] += 1
        heads[q] += 1
        return True

    moved = True
    while moved:
        moved = False
        for q in priority:
            while step(q):
                moved = True
            if moved:
                break
    stuck = [queues[q][heads[q]][0] for q in Queue if heads[q] < len(queues[q])]
    if stuck:
        raise InputError(f"program: instruction {min(stuck)} waits for a dependency token that is never pushed")
