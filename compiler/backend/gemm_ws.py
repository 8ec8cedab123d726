"""Integer GEMM layers as weight-stationary ``cds1`` programs (a target's ``gemm.dataflow: ws``).

``C = X (M x K) @ W (K x N) + bias`` is cut into *blocks* of ``mt`` output rows by ``gemm.cols`` columns (column
folds outer, row blocks inner, as ``gemm.py``'s folds); ``mt`` is all of ``M`` when two halves of it and two staging
halves fit the accumulator (``hw.perf.execute_queue_ws.ws_block_rows``). Per block the execute queue runs one
``GEMM dataflow=1`` per weight tile (``rows`` reduction rows of ``W``, the last one short): the tile stays in the
array while the block's ``mt`` activation rows stream through it, the first tile's products written into the
accumulator with the bias, the later tiles' added to them (``accumulate``), so the partial sums over ``K`` never
leave the accumulator. Then the fused ``VEC requant`` and the store, as in ``gemm.py``.

Scratchpad layout: ``W``'s column fold is ``K`` rows of up to ``cols`` lanes, exactly as the os program loads it
(tile ``t`` is rows ``t * rows ..``); ``X``'s row block is, per weight tile, ``mt`` rows of that tile's ``rows`` or
fewer elements (a plain, row-major load: no transposing load is needed, as the os program's ``A`` is). When the
scratchpad holds every row block's ``X`` besides two halves of ``W``, ``X`` is loaded once and each column fold's
``W`` once (every operand byte crosses DRAM once); otherwise each block loads both into alternating halves. The
dependency tokens are ``gemm.py``'s: a block's first ``GEMM`` waits for its loads, its last gives the buffer back;
in the program text each block's loads come before the previous block's ``GEMM`` s (see :func:`emit_ws`).

Only the weight GEMMs (``gemm.py``'s layers) run ws; the attention's products (``compiler/backend/attention.py``,
``tiles.matmul_layer``) stay output stationary.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

from compiler.backend.layer import CONST_PER_FOLD, GemmLayer, Prepared
from compiler.backend.machine import Geometry
from hw.errors import InputError
from hw.isa import Deps, Gemm, Instruction, Load, Space, Store, Vec, VecFn
from hw.perf.execute_queue_ws import ws_block_rows

__all__ = ["WsPlan", "ws_plan", "emit_ws"]


@dataclass(frozen=True)
class WsPlan:
    """How a layer is cut (:func:`ws_plan`): ``mt`` output rows per block, the weight ``tiles`` as ``(k0, kc)``
    (first reduction row, rows), ``a_rows`` scratchpad rows of one block's X, ``n_blocks`` row blocks, the
    scratchpad rows of the staging halves (``stage_sp``), whether X is loaded once (``reuse``), and ``need``, the
    scratchpad rows without reuse."""

    mt: int
    tiles: tuple[tuple[int, int], ...]
    a_rows: int
    n_blocks: int
    stage_sp: int
    reuse: bool
    need: int


def _with(instr: Instruction, **flags: bool) -> Instruction:
    """``instr`` with the given dependency flags set (those it has kept)."""
    d = instr.deps
    return dataclasses.replace(instr, deps=Deps(pop_prev=d.pop_prev or flags.get("pop_prev", False),  # type: ignore
                                                 pop_next=d.pop_next or flags.get("pop_next", False),
                                                 push_prev=d.push_prev or flags.get("push_prev", False),
                                                 push_next=d.push_next or flags.get("push_next", False)))


def ws_plan(g: Geometry, layer: GemmLayer) -> WsPlan:
    """``layer``'s blocks and buffers on machine ``g`` (module docstring); ``InputError`` naming the layer when
    they do not fit. Nothing is emitted, so the caller checks before it places anything."""
    where = f"system backend, layer '{layer.name}'"
    m_dim, k_dim = layer.m, layer.k
    mt = ws_block_rows(m_dim, g.acc_rows)
    tiles = tuple((k0, min(g.rows, k_dim - k0)) for k0 in range(0, k_dim, g.rows))
    a_rows = len(tiles) * mt  # scratchpad rows of one row block's X
    n_blocks = -(-m_dim // mt)
    out_bits = 32 if layer.requant is None else layer.requant[2]
    stage_sp = 2 * mt if layer.requant is not None and out_bits <= g.in_bits else 0
    stage_acc = 2 * mt if layer.requant is not None and out_bits > g.in_bits else 0
    if 2 * mt + stage_acc > g.acc_rows:
        raise InputError(f"{where}: two halves of {mt} accumulator rows and their staging do not fit the "
                         f"{g.acc_rows} the target has")
    reuse = 2 * k_dim + n_blocks * a_rows + stage_sp <= g.sp_rows
    need = 2 * (k_dim + a_rows) + stage_sp
    if not reuse and need > g.sp_rows:
        raise InputError(f"{where}: K = {k_dim} needs {need} scratchpad rows (two halves of X and W and a staging "
                         f"block); the target has {g.sp_rows}")
    return WsPlan(mt, tiles, a_rows, n_blocks, stage_sp, reuse, need)


def emit_ws(body: list[Instruction], g: Geometry, layer: GemmLayer, p: Prepared, plan: WsPlan) -> None:
    """Append ``layer``'s weight-stationary blocks to ``body`` (module docstring), its regions and constant table
    already placed and loaded (``p``: ``gemm.ProgramBuilder.prepare``), cut as ``plan`` says."""
    m_dim, k_dim, n_dim = layer.m, layer.k, layer.n
    mt, tiles, a_rows, n_blocks = plan.mt, plan.tiles, plan.a_rows, plan.n_blocks
    stage_sp, reuse, need = plan.stage_sp, plan.reuse, plan.need
    stage_base = 2 * k_dim + n_blocks * a_rows if reuse else need - stage_sp
    fold = 0
    blocks: list[tuple[list[Instruction], list[Instruction]]] = []  # per block: its loads, the rest
    for j, n0 in enumerate(range(0, n_dim, g.cols)):
        n = min(g.cols, n_dim - n0)
        for i, m0 in enumerate(range(0, m_dim, mt)):
            r = min(mt, m_dim - m0)
            h = fold % 2
            if reuse:
                b_row, a_row = (j % 2) * k_dim, 2 * k_dim + i * a_rows
            else:
                b_row = h * (k_dim + a_rows)
                a_row = b_row + k_dim
            c_row = h * mt
            first, last = (i == 0, i == n_blocks - 1) if reuse else (True, True)
            loads: list[Instruction] = []
            if not reuse or j == 0:
                loads += [Load(space=Space.SP, row=a_row + t * mt, rows=r, cols=kc, elem_log2=0,
                               dram=p.x.addr + m0 * p.x.row_bytes + k0, stride=p.x.row_bytes)
                          for t, (k0, kc) in enumerate(tiles)]
            if first:
                loads.insert(0, Load(space=Space.SP, row=b_row, rows=k_dim, cols=n, elem_log2=0, dram=p.w.addr + n0,
                                     stride=p.w.row_bytes))
            if loads:
                loads[0] = _with(loads[0], pop_next=first)
                loads[-1] = _with(loads[-1], push_next=True)
            rest: list[Instruction] = []
            bias_row = p.const_base + CONST_PER_FOLD * j
            gemms: list[Instruction] = [
                Gemm(dataflow=1, accumulate=int(t > 0), a_row=a_row + t * mt, b_row=b_row + k0, c_row=c_row, m=r,
                     n=n, k=kc, bias=int(layer.bias is not None and t == 0), bias_row=bias_row)
                for t, (k0, kc) in enumerate(tiles)]
            y_addr = p.y.addr + (m0 * n_dim + n0) * p.out_bytes
            if layer.requant is None:
                # the product is the output: the accumulator half must have been stored (WAR from store)
                gemms[0] = _with(gemms[0], pop_prev=bool(loads), pop_next=True)
                gemms[-1] = _with(gemms[-1], push_prev=last, push_next=True)
                rest.extend(gemms)
                rest.append(Store(space=Space.ACC, row=c_row, rows=r, cols=n, elem_log2=2, dram=y_addr,
                                    stride=p.y.row_bytes, deps=Deps(pop_prev=True, push_prev=True)))
            else:
                gemms[0] = _with(gemms[0], pop_prev=bool(loads))
                gemms[-1] = _with(gemms[-1], push_prev=last)
                rest.extend(gemms)
                s_row = (stage_base if p.stage_space == Space.SP else 2 * mt) + h * mt
                rest.append(Vec(fn=VecFn.REQUANT, src_space=Space.ACC, src=c_row, dst_space=p.stage_space,
                                  dst=s_row, rows=r, n=n, out_log2=p.out_bits.bit_length() - 1,
                                  aux_space=Space.CONST if p.per_channel else Space.SP,
                                  aux=bias_row + 1 if p.per_channel else 0, deps=Deps(pop_next=True, push_next=True)))
                rest.append(Store(space=p.stage_space, row=s_row, rows=r, cols=n,
                                    elem_log2=p.out_bytes.bit_length() - 1, dram=y_addr, stride=p.y.row_bytes,
                                    deps=Deps(pop_prev=True, push_prev=True)))
            blocks.append((loads, rest))
            fold += 1
    # Program order: each block's loads ahead of the previous block's GEMMs, so that fetch, which stalls on a full
    # execute queue (16 words; a block has ceil(K / rows) GEMMs), has handed the load queue the next column fold's
    # W before it waits behind this block's GEMMs. The queues' order, and so every token, is unchanged.
    body.extend(blocks[0][0])
    for f, (_, rest) in enumerate(blocks):
        if f + 1 < len(blocks):
            body.extend(blocks[f + 1][0])
        body.extend(rest)
