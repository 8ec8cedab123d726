"""Integer GEMM layers as ``cds1`` programs: output-stationary folds, double-buffered, with a fused requant.

``C = X (M x K) @ W (K x N) + bias`` is cut into output folds of ``gemm.rows x gemm.cols`` (SCALE-Sim's and the
``systolic_gemm`` kernel's order: column folds outer, row folds inner). Per fold the load queue brings the fold's
``A`` columns (a transposed load: ``K`` scratchpad rows of up to ``rows`` lanes) and ``B`` rows (``K`` rows of up to
``cols`` lanes) into one half of the scratchpad; the execute queue runs one ``GEMM`` (the bias added on the way
into the accumulator) and, when the IR fuses a requant behind the product, one ``VEC requant`` into a scratchpad
staging half; the store queue writes the fold to DRAM. Two halves of every buffer let fold ``f + 1`` load while
fold ``f`` computes and fold ``f - 1`` stores; the dependency tokens (docs/ISA.md) are the only synchronisation.
When the scratchpad holds every row fold's ``A`` besides two halves of ``B``, ``A`` is loaded once and each column
fold's ``B`` once for all its row folds (only ``B`` is double-buffered then): every operand byte crosses DRAM once.

Layouts: ``X``, ``W`` and the output are row-major in DRAM; a table of per-fold constants (bias, requant
multipliers and shifts, one constant-memory row each) is loaded once at the start.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field

import numpy as np

from compiler.backend.gemm_ws import emit_ws, ws_plan
from compiler.backend.image import DramImage, Region
from compiler.backend.layer import CONST_PER_FOLD, GemmLayer, Prepared
from compiler.backend.machine import Geometry
from hw.errors import InputError
from hw.isa import Config, ConfigReg, Deps, Gemm, Halt, Instruction, Load, Nop, Program, Queue, Space, Store, Vec, VecFn

__all__ = ["GemmLayer", "LayerSpan", "Prepared", "ProgramBuilder"]

_CONST_PER_FOLD = CONST_PER_FOLD  # bias, m, e


@dataclass(frozen=True)
class LayerSpan:
    """The instructions one layer's code generator emitted: indices ``[first, end)`` of the finished program (its
    leading barrier included), and ``mark``, the trace entry of the mark ``NOP`` that completes after its last store
    (docs/ISA.md, NOP): the RTL's cycles of the layer are its mark's cycle minus the previous layer's."""

    name: str
    first: int
    end: int
    mark: int


@dataclass
class ProgramBuilder:
    """Accumulates the instructions and the DRAM image of a program, layer by layer; :meth:`end_layer` names the
    instructions emitted since the previous call as one layer (``layers``) and puts its trace mark behind it."""

    geometry: Geometry
    image: DramImage = field(default_factory=DramImage)
    body: list[Instruction] = field(default_factory=list)
    layers: list[LayerSpan] = field(default_factory=list)
    _pending: list[Instruction] = field(default_factory=list)

    def barrier(self) -> None:
        """Between two layers: drain (the previous layer's stores are done), its trace mark, then the seeds."""
        if self.body:
            self.body.extend(_DRAIN + self._pending + _SEED)
            self._pending = []

    def end_layer(self, name: str) -> None:
        """Name the instructions since the previous call as layer ``name`` (nothing when there are none)."""
        start = self.layers[-1].end - len(_SEED) if self.layers else 0
        if len(self.body) == start:
            return
        mark = len(self.layers)
        self.layers.append(LayerSpan(name, start + len(_SEED), len(self.body) + len(_SEED), mark))
        self._pending = [Nop(queue=Queue.EXECUTE, trace=1, mark=mark)]

    def gemm(self, layer: GemmLayer, x: Region | None = None) -> tuple[Region, Region]:
        """Emit ``layer``; its input is region ``x`` (placed as ``<name>.x`` if None). Returns (input, output).
        Output-stationary folds, or weight-stationary ones when the geometry's ``dataflow`` is ``"ws"``
        (``compiler/backend/gemm_ws.py``)."""
        g = self.geometry
        where = f"system backend, layer '{layer.name}'"
        if layer.k > 4096:
            raise InputError(f"{where}: K = {layer.k} exceeds the 4,096 beats one GEMM instruction streams")
        if g.dataflow == "ws":
            plan = ws_plan(g, layer)
            p = self.prepare(layer, x)
            emit_ws(self.body, g, layer, p, plan)
            return p.x, p.y
        need = 4 * layer.k + 2 * g.rows
        if need > g.sp_rows:
            raise InputError(f"{where}: K = {layer.k} needs {need} scratchpad rows (two halves of A and B and a "
                             f"staging fold); the target has {g.sp_rows}")
        if 4 * g.rows > g.acc_rows:
            raise InputError(f"{where}: two halves of {g.rows} accumulator rows and two staging folds do not fit "
                             f"the {g.acc_rows} the target has")
        p = self.prepare(layer, x)
        x, w, y, out_bits, out_bytes, stage_space = p.x, p.w, p.y, p.out_bits, p.out_bytes, p.stage_space
        m_dim, k_dim, n_dim, n_folds, per_channel = layer.m, layer.k, layer.n, p.n_folds, p.per_channel
        ins = self.body
        const_base = p.const_base
        n_row_folds = -(-m_dim // g.rows)
        # Operand reuse: when the scratchpad holds A for every row fold besides two halves of B and the staging
        # folds, A is loaded once (each row fold's A the first time it is used) and each column fold's B once for
        # all its row folds: every operand byte crosses DRAM once, as the schedule prices a GEMM whose tiles fit
        # (compiler/schedule/mapping.py: one tile of m, reread_bytes 0). Otherwise each fold loads both (the A
        # halves alternate with B's).
        reuse = (n_row_folds + 2) * k_dim + 2 * g.rows <= g.sp_rows
        half_sp = k_dim if reuse else 2 * k_dim
        a_base = 2 * k_dim if reuse else 0  # reuse: B halves first, then A per row fold
        stage_base = (n_row_folds + 2) * k_dim if reuse else 4 * k_dim
        fold = 0
        for j in range(n_folds):
            n0 = j * g.cols
            n = min(g.cols, n_dim - n0)
            hb = j % 2 if reuse else 0
            for i, m0 in enumerate(range(0, m_dim, g.rows)):
                m = min(g.rows, m_dim - m0)
                h = fold % 2
                if reuse:
                    a_row, b_row = a_base + i * k_dim, hb * half_sp
                else:
                    a_row, b_row = h * half_sp, h * half_sp + k_dim
                c_row = h * g.rows
                first, last = (i == 0, i == n_row_folds - 1) if reuse else (True, True)
                # load queue: the fold's operands into their rows once the array has released them (WAR token)
                loads: list[Instruction] = []
                if not reuse or j == 0:
                    loads.append(Load(space=Space.SP, row=a_row, rows=m, cols=k_dim, elem_log2=0, transpose=1,
                                      dram=x.addr + m0 * x.row_bytes, stride=x.row_bytes))
                if first:
                    loads.insert(0, Load(space=Space.SP, row=b_row, rows=k_dim, cols=n, elem_log2=0,
                                         dram=w.addr + n0, stride=w.row_bytes))
                if loads:
                    loads[0] = dataclasses.replace(loads[0], deps=Deps(pop_next=first))
                    loads[-1] = dataclasses.replace(loads[-1], deps=Deps(pop_next=loads[-1].deps.pop_next,
                                                                         push_next=True))
                ins.extend(loads)
                # a fold pops data-loaded when its loads pushed one; the column fold's last gives its B half back
                loaded = bool(loads)
                bias_row = const_base + _CONST_PER_FOLD * j
                if layer.requant is None:
                    # the product is the output: the accumulator half must have been stored (WAR from store)
                    ins.append(Gemm(dataflow=0, accumulate=0, a_row=a_row, b_row=b_row, c_row=c_row, m=m, n=n,
                                    k=k_dim, bias=int(layer.bias is not None), bias_row=bias_row,
                                    deps=Deps(pop_prev=loaded, pop_next=True, push_prev=last, push_next=True)))
                    ins.append(Store(space=Space.ACC, row=c_row, rows=m, cols=n, elem_log2=2,
                                     dram=y.addr + (m0 * n_dim + n0) * 4, stride=y.row_bytes,
                                     deps=Deps(pop_prev=True, push_prev=True)))
                else:
                    s_row = (stage_base if stage_space == Space.SP else 2 * g.rows) + h * g.rows
                    ins.append(Gemm(dataflow=0, accumulate=0, a_row=a_row, b_row=b_row, c_row=c_row, m=m, n=n,
                                    k=k_dim, bias=int(layer.bias is not None), bias_row=bias_row,
                                    deps=Deps(pop_prev=loaded, push_prev=last)))
                    ins.append(Vec(fn=VecFn.REQUANT, src_space=Space.ACC, src=c_row, dst_space=stage_space, dst=s_row,
                                   rows=m, n=n, out_log2=out_bits.bit_length() - 1,
                                   aux_space=Space.CONST if per_channel else Space.SP,
                                   aux=bias_row + 1 if per_channel else 0,
                                   deps=Deps(pop_next=True, push_next=True)))
                    ins.append(Store(space=stage_space, row=s_row, rows=m, cols=n, elem_log2=out_bytes.bit_length() - 1,
                                     dram=y.addr + (m0 * n_dim + n0) * out_bytes, stride=y.row_bytes,
                                     deps=Deps(pop_prev=True, push_prev=True)))
                fold += 1
        return x, y

    def prepare(self, layer: GemmLayer, x: Region | None) -> Prepared:
        """What both dataflows' code generators share: the layer's regions (input, weights, output) placed, its
        constant table (per column fold a bias row, a multiplier row and a shift row, lanes 0..cols-1) placed and
        written, then the barrier, the table's ``LOAD`` and a per-tensor requant's ``CONFIG`` s emitted."""
        g = self.geometry
        m_dim, k_dim, n_dim = layer.m, layer.k, layer.n
        where = f"system backend, layer '{layer.name}'"
        n_folds = -(-n_dim // g.cols)
        if n_folds * _CONST_PER_FOLD > g.const_rows:
            raise InputError(f"{where}: {n_folds} column folds need {n_folds * _CONST_PER_FOLD} constant rows; the "
                             f"machine has {g.const_rows}")
        img = self.image
        if x is None:
            x = img.place(f"{layer.name}.x", (m_dim, k_dim), 1)
        if x.shape != (m_dim, k_dim) or x.elem_bytes != 1:
            raise InputError(f"{where}: its input must be an M x K int8 region, got {x.shape}")
        w = img.place(f"{layer.name}.w", (k_dim, n_dim), 1)
        img.write(w.name, layer.weights)
        out_bits = 32 if layer.requant is None else layer.requant[2]
        if out_bits not in (8, 16, 32):
            raise InputError(f"{where}: a {out_bits}-bit output has no DRAM element size (8, 16 or 32 bits)")
        out_bytes = out_bits // 8
        # A requant's output waits in a staging half of the scratchpad when its lanes hold it, else of the
        # accumulator (the scratchpad holds in_bits values).
        stage_space = Space.SP if out_bits <= g.in_bits else Space.ACC
        y = img.place(f"{layer.name}.y", (m_dim, n_dim), out_bytes)

        table = np.zeros((n_folds * _CONST_PER_FOLD, g.width), np.int64)
        per_channel = False
        for j in range(n_folds):
            cols = slice(j * g.cols, min(n_dim, (j + 1) * g.cols))
            width = cols.stop - cols.start
            if layer.bias is not None:
                table[_CONST_PER_FOLD * j, :width] = layer.bias[cols]
            if layer.requant is not None:
                m, e, _ = layer.requant
                if np.ndim(m) and np.size(m) > 1:
                    per_channel = True
                    table[_CONST_PER_FOLD * j + 1, :width] = np.asarray(m)[cols]
                    table[_CONST_PER_FOLD * j + 2, :width] = np.asarray(e)[cols]
        const = img.place(f"{layer.name}.const", table.shape, 8)
        img.write(const.name, table)

        ins = self.body
        self.barrier()  # the previous layer's stores are done before this layer loads (docs/ISA.md)
        const_base = 0
        ins.append(Load(space=Space.CONST, row=const_base, rows=table.shape[0], cols=g.width, elem_log2=3,
                        dram=const.addr, stride=const.row_bytes))
        if layer.requant is not None and not per_channel:
            m, e, _ = layer.requant
            ins.append(Config(reg=ConfigReg.REQUANT_M, value=int(np.asarray(m).reshape(-1)[0])))
            ins.append(Config(reg=ConfigReg.REQUANT_E, value=int(np.asarray(e).reshape(-1)[0])))
        return Prepared(x, w, y, out_bits, out_bytes, stage_space, n_folds, per_channel, const_base)

    def finish(self) -> Program:
        """The program: token seeds (two buffer halves), the body, the drains, the last layer's mark, ``HALT``."""
        return Program((*_SEED, *self.body, *_DRAIN, *self._pending, Halt()), self.image.nbytes)


# One write-after-read token per buffer half (double buffering), given at the start of each layer and taken back
# at its end. The execute queue's drain completes only once every store of the layer has (it needs as many store
# tokens as were seeded back); it then hands the load queue one more token, which the load queue's drain waits for,
# so nothing the next layer loads (its constant table first) lands while this layer's last VEC still reads the
# constant memory or its last stores still read the scratchpad: the load queue's own drain tokens come from GEMMs,
# which finish before the VEC behind them.
_SEED: list[Instruction] = [Nop(queue=Queue.EXECUTE, deps=Deps(push_prev=True)),
                            Nop(queue=Queue.STORE, deps=Deps(push_prev=True))] * 2
_DRAIN: list[Instruction] = [*[Nop(queue=Queue.LOAD, deps=Deps(pop_next=True)),
                               Nop(queue=Queue.EXECUTE, deps=Deps(pop_next=True))] * 2,
                             Nop(queue=Queue.EXECUTE, deps=Deps(push_prev=True)),
                             Nop(queue=Queue.LOAD, deps=Deps(pop_next=True))]
