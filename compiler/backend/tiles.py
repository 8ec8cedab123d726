"""Row-block vector layers and general matmul folds: the building blocks model.py assembles whole programs from.

Both follow the protocol of gemm.py (docs/ISA.md, Dependency tokens): every block (a row block of a vector layer,
an output fold of a matmul) has loads, execute instructions and stores. Its first load waits for a
buffer-free token from execute and its last pushes data-loaded; its first execute instruction waits for that and
for a staging-free token from store, its last gives both back; its first store waits for result-ready and its
last gives the staging half back. Blocks alternate between two halves of every space, and a layer is closed by
the drain + seed barrier of gemm.py, so consecutive layers may read each other's DRAM outputs.

DRAM operands are :class:`View` s (2-D strided windows of a region), so reshapes, splits, head slices and the
merge of attention heads are address patterns, not instructions.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from compiler.backend.gemm import ProgramBuilder
from compiler.backend.image import Region
from hw.errors import InputError
from hw.isa import Config, ConfigReg, Deps, Gemm, Instruction, Load, Space, Store, Vec, VecFn

__all__ = ["View", "Slot", "VecStep", "vector_layer", "matmul_layer", "layer_barrier"]


@dataclass(frozen=True)
class View:
    """``rows`` x ``cols`` elements of ``elem_bytes`` at byte address ``addr``, rows ``stride`` bytes apart;
    ``transposed``: its columns are ``stride`` bytes apart and its rows consecutive elements (an NCHW value read as
    ``[H*W, C]``), which only a transposing ``LOAD`` reads."""

    addr: int
    rows: int
    cols: int
    stride: int
    elem_bytes: int
    transposed: bool = False

    @classmethod
    def of(cls, region: Region) -> View:
        """A region as a 2-D view: its last axis the columns, every other axis folded into rows."""
        cols = region.shape[-1] if region.shape else 1
        rows = int(np.prod(region.shape[:-1], dtype=np.int64)) if len(region.shape) > 1 else 1
        return cls(region.addr, rows, cols, region.row_bytes, region.elem_bytes)

    def sub(self, r0: int, rows: int, c0: int, cols: int) -> View:
        if r0 < 0 or c0 < 0 or r0 + rows > self.rows or c0 + cols > self.cols:
            raise ValueError(f"window {rows}x{cols} at ({r0}, {c0}) is outside a {self.rows}x{self.cols} view")
        if self.transposed:
            return View(self.addr + c0 * self.stride + r0 * self.elem_bytes, rows, cols, self.stride, self.elem_bytes,
                        True)
        return View(self.addr + r0 * self.stride + c0 * self.elem_bytes, rows, cols, self.stride, self.elem_bytes)

    @property
    def elem_log2(self) -> int:
        return self.elem_bytes.bit_length() - 1


@dataclass(frozen=True)
class Slot:
    """A buffer of element rows ``n`` wide in ``space`` (each spans ``ceil(n / lanes)`` space rows)."""

    space: Space
    n: int


@dataclass(frozen=True)
class VecStep:
    """One ``VEC`` of a vector layer, from slot ``src`` to slot ``dst`` (``aux``: a slot, or a constant row)."""

    fn: VecFn
    src: int
    dst: int
    out_bits: int
    aux: int | None = None
    const_row: int | None = None
    configs: tuple[tuple[ConfigReg, int], ...] = ()


def layer_barrier(b: ProgramBuilder) -> None:
    """Start a layer: if another came before, wait until its stores are done (gemm.py's drain + seed)."""
    b.barrier()


def _lanes(b: ProgramBuilder, space: Space) -> int:
    return b.geometry.cols if space == Space.ACC else b.geometry.width


def _space_rows(b: ProgramBuilder, space: Space) -> int:
    g = b.geometry
    return {Space.SP: g.sp_rows, Space.ACC: g.acc_rows, Space.CONST: g.const_rows}[space]


def _dma(kind: type, b: ProgramBuilder, view: View, space: Space, row: int, where: str) -> list[Instruction]:
    """Move ``view`` to or from consecutive element rows at ``row`` of ``space`` (one element row spans
    ``ceil(cols / lanes)`` space rows): one 2-D transfer when the rows are contiguous, else one per element row."""
    lanes = _lanes(b, space)
    span = -(-view.cols // lanes)
    e = view.elem_log2
    if view.transposed:  # source rows become lanes: one transposing LOAD of a column block at most lanes wide
        if kind is not Load or view.cols > lanes:
            raise InputError(f"{where}: a transposed {view.rows}x{view.cols} window needs a transposing LOAD of at "
                             f"most {lanes} columns")
        return [Load(space=space, row=row, rows=view.cols, cols=view.rows, elem_log2=e, dram=view.addr,
                     stride=view.stride, transpose=1)]
    if view.cols <= lanes:
        return [kind(space=space, row=row, rows=view.rows, cols=view.cols, elem_log2=e, dram=view.addr,
                     stride=view.stride)]
    if view.cols % lanes == 0 and view.stride == view.cols * view.elem_bytes:
        return [kind(space=space, row=row, rows=view.rows * span, cols=lanes, elem_log2=e, dram=view.addr,
                     stride=lanes * view.elem_bytes)]
    out: list[Instruction] = []
    full, tail = divmod(view.cols, lanes)
    for r in range(view.rows):
        base = view.addr + r * view.stride
        if full:
            out.append(kind(space=space, row=row + r * span, rows=full, cols=lanes, elem_log2=e, dram=base,
                            stride=lanes * view.elem_bytes))
        if tail:
            out.append(kind(space=space, row=row + r * span + full, rows=1, cols=tail, elem_log2=e,
                            dram=base + full * lanes * view.elem_bytes, stride=view.stride))
    if len(out) > 4096:
        raise InputError(f"{where}: a {view.rows}x{view.cols} strided transfer needs {len(out)} DMA instructions")
    return out


def _flag(instrs: list[Instruction], first: Deps, last: Deps) -> list[Instruction]:
    """``instrs`` with ``first``'s flags on the first instruction and ``last``'s on the last (merged if one)."""
    out = list(instrs)

    def merge(i: Instruction, d: Deps) -> Instruction:
        old = i.deps
        return dataclasses.replace(i, deps=Deps(old.pop_prev or d.pop_prev, old.pop_next or d.pop_next,  # type: ignore
                                                old.push_prev or d.push_prev, old.push_next or d.push_next))

    out[0] = merge(out[0], first)
    out[-1] = merge(out[-1], last)
    return out


def _block(b: ProgramBuilder, loads: list[Instruction], execs: list[Instruction], stores: list[Instruction]) -> None:
    b.body.extend(_flag(loads, Deps(pop_next=True), Deps(push_next=True)))
    b.body.extend(_flag(execs, Deps(pop_prev=True, pop_next=True), Deps(push_prev=True, push_next=True)))
    b.body.extend(_flag(stores, Deps(pop_prev=True), Deps(push_prev=True)))


def _const_load(b: ProgramBuilder, name: str, table: np.ndarray | None) -> None:
    if table is None or not table.size:
        return
    g = b.geometry
    if table.shape[0] > g.const_rows:
        raise InputError(f"system backend, layer '{name}': its constant table needs {table.shape[0]} rows; the "
                         f"machine has {g.const_rows}")
    region = b.image.place(f"{name}.const", table.shape, 4)
    b.image.write(region.name, table)
    b.body.append(Load(space=Space.CONST, row=0, rows=table.shape[0], cols=table.shape[1], elem_log2=2,
                       dram=region.addr, stride=region.row_bytes))


def vector_layer(b: ProgramBuilder, name: str, rows: int, slots: Sequence[Slot], loads: Sequence[tuple[View, int]],
                 steps: Sequence[VecStep], stores: Sequence[tuple[int, View]], const_table: np.ndarray | None = None,
                 configs: Sequence[tuple[ConfigReg, int]] = ()) -> None:
    """``rows`` element rows through ``steps``: per row block, ``loads`` (view -> slot), the ``VEC`` s, ``stores``
    (slot -> view). Views cover all ``rows``; ``const_table`` (int32 rows of ``width`` words) sits at constant row 0
    for the layer; ``configs`` are written once before the first block."""
    where = f"system backend, layer '{name}'"
    spans = [-(-s.n // _lanes(b, s.space)) for s in slots]
    per_row = {sp: 0 for sp in Space}
    for s, span in zip(slots, spans):
        per_row[s.space] += span
    block = rows
    for sp in (Space.SP, Space.ACC):
        if per_row[sp]:
            block = min(block, _space_rows(b, sp) // (2 * per_row[sp]))
    if block < 1:
        raise InputError(f"{where}: one row in each of two buffer halves needs more scratchpad or accumulator rows "
                         f"than the machine has")
    offsets: list[int] = []
    used = {sp: 0 for sp in Space}
    for s, span in zip(slots, spans):
        offsets.append(used[s.space])
        used[s.space] += block * span
    layer_barrier(b)
    _const_load(b, name, const_table)
    for reg, value in configs:
        b.body.append(Config(reg=reg, value=int(value)))
    for i, r0 in enumerate(range(0, rows, block)):
        r = min(block, rows - r0)
        h = i % 2

        def base(slot: int, h: int = h) -> int:
            return offsets[slot] + h * used[slots[slot].space]

        lds: list[Instruction] = []
        for view, slot in loads:
            lds += _dma(Load, b, view.sub(r0, r, 0, view.cols), slots[slot].space, base(slot), where)
        exe: list[Instruction] = []
        for st in steps:
            exe += [Config(reg=reg, value=int(v)) for reg, v in st.configs]
            aux_space, aux = Space.SP, 0
            if st.aux is not None:
                aux_space, aux = slots[st.aux].space, base(st.aux)
            elif st.const_row is not None:
                aux_space, aux = Space.CONST, st.const_row
            exe.append(Vec(fn=st.fn, src_space=slots[st.src].space, src=base(st.src), dst_space=slots[st.dst].space,
                           dst=base(st.dst), rows=r, n=slots[st.src].n, out_log2=st.out_bits.bit_length() - 1,
                           aux_space=aux_space, aux=aux))
        sts: list[Instruction] = []
        for slot, view in stores:
            sts += _dma(Store, b, view.sub(r0, r, 0, view.cols), slots[slot].space, base(slot), where)
        _block(b, lds, exe, sts)


def matmul_layer(b: ProgramBuilder, name: str, a_digits: Sequence[View], rhs: View, rhs_transposed: bool, out: View,
                 digit_bits: int = 7) -> None:
    """``out (int32) = sum_d 2^(digit_bits * d) A_d @ B`` on the array, output stationary, double-buffered:
    ``a_digits`` from the most significant (each M x K, int8), ``B`` K x N (``rhs``) or its transpose N x K
    (``rhs_transposed``: the transposing LOAD makes it B's layout). Between digits the accumulator is scaled by
    ``2^digit_bits`` (``VEC requant`` with ``m = 2^digit_bits``, ``e = 0``), so operands wider than the array's
    lanes run as digit products (the attention's 16-bit probabilities times V)."""
    g = b.geometry
    where = f"system backend, layer '{name}'"
    m_dim, k_dim = a_digits[0].rows, a_digits[0].cols
    n_dim = rhs.rows if rhs_transposed else rhs.cols
    if (rhs.cols if rhs_transposed else rhs.rows) != k_dim:
        raise ValueError(f"{where}: K of A ({k_dim}) and B differ")
    if k_dim > 4096:
        raise InputError(f"{where}: K = {k_dim} exceeds the 4,096 beats one GEMM instruction streams")
    per_half = (len(a_digits) + 1) * k_dim
    if 2 * per_half > g.sp_rows or 2 * g.rows > g.acc_rows:
        raise InputError(f"{where}: two halves of {per_half} scratchpad rows do not fit the {g.sp_rows} the target "
                         f"has")
    layer_barrier(b)
    if len(a_digits) > 1:
        b.body += [Config(reg=ConfigReg.REQUANT_M, value=1 << digit_bits), Config(reg=ConfigReg.REQUANT_E, value=0)]
    fold = 0
    for n0 in range(0, n_dim, g.cols):
        n = min(g.cols, n_dim - n0)
        for m0 in range(0, m_dim, g.rows):
            m = min(g.rows, m_dim - m0)
            h = fold % 2
            base = h * per_half
            b_row = base + len(a_digits) * k_dim
            c_row = h * g.rows
            lds: list[Instruction] = []
            for d, a in enumerate(a_digits):
                lds.append(Load(space=Space.SP, row=base + d * k_dim, rows=m, cols=k_dim, elem_log2=a.elem_log2,
                                transpose=1, dram=a.addr + m0 * a.stride, stride=a.stride))
            if rhs_transposed:
                lds.append(Load(space=Space.SP, row=b_row, rows=n, cols=k_dim, elem_log2=rhs.elem_log2, transpose=1,
                                dram=rhs.addr + n0 * rhs.stride, stride=rhs.stride))
            else:
                lds.append(Load(space=Space.SP, row=b_row, rows=k_dim, cols=n, elem_log2=rhs.elem_log2,
                                dram=rhs.addr + n0 * rhs.elem_bytes, stride=rhs.stride))
            exe: list[Instruction] = []
            for d in range(len(a_digits)):
                if d:
                    exe.append(Vec(fn=VecFn.REQUANT, src_space=Space.ACC, src=c_row, dst_space=Space.ACC, dst=c_row,
                                   rows=m, n=n, out_log2=5))
                exe.append(Gemm(dataflow=0, accumulate=int(d > 0), a_row=base + d * k_dim, b_row=b_row, c_row=c_row,
                                m=m, n=n, k=k_dim))
            sts: list[Instruction] = [Store(space=Space.ACC, row=c_row, rows=m, cols=n, elem_log2=2,
                                            dram=out.addr + m0 * out.stride + n0 * 4, stride=out.stride)]
            _block(b, lds, exe, sts)
            fold += 1
