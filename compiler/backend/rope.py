"""An integer rotary embedding (``dataflow.rope``) as one partner product and one vector layer.

What compiler.simulate.rope.rope_int computes on an int8 ``x`` of ``[S, H * head_dim]`` with Q1.14 tables
``cos_q``, ``sin_q`` of ``[S, R]`` (``R`` the rotary dims of each head): per rotated element
``acc = x * cos_q + x[partner] * sin_q``, per pass-through element ``acc = x * 2^14``, then a per-tensor dyadic
requant ``(m, e)`` to int8. The system has no rotary unit, so the backend spells it with what it has:

* ``x[partner]`` is a column permutation, ``x @ P`` for a 0/1 matrix ``P`` (``rotate_half``: each head's halves
  swapped; ``interleaved``: pairs swapped; pass-through columns kept), run on the array by ``matmul_layer``: int8
  times 0/1 into int32 is exact, and any partner pattern is one constant;
* the tables widened to the whole row once, at build time: ``C`` holds ``cos_q`` in each head's rotated columns and
  ``2^14`` in its pass-through columns, ``S`` holds ``sin_q`` and ``0`` (both int16 in DRAM, sign-extended on
  their loads), so every column is ``x * C + x[partner] * S``;
* one vector layer per row block: two ``VEC mul`` (``x * C``, ``x[partner] * S``, at 32 bits: at most
  ``2^7 * 2^15``), a ``VEC requant_add`` with unit multipliers (the exact sum, at most ``2^23``) and the ``VEC
  requant`` of the op's ``(m, e)``: bit for bit the simulator's integers.
"""

from __future__ import annotations

import numpy as np

from compiler.backend.gemm import ProgramBuilder
from compiler.backend.image import Region
from compiler.backend.tiles import Slot, VecStep, View, matmul_layer, vector_layer
from compiler.simulate.rope import ROPE_FRAC_BITS, ROPE_OUT_BITS, rope_partner
from hw.errors import InputError
from hw.isa import ConfigReg, Space, VecFn

__all__ = ["emit_rope", "rope_constants"]


def rope_constants(cos_q: np.ndarray, sin_q: np.ndarray, style: str, head_dim: int, width: int
                   ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``(P, C, S)`` for rows of ``width`` = heads x ``head_dim`` values: the partner permutation ``P``
    (``[width, width]`` 0/1, ``(x @ P)[:, j] = x[:, partner(j)]``) and the tables widened to every column
    (``[positions, width]``; module docstring)."""
    positions, r = cos_q.shape
    heads = width // head_dim
    partner = np.arange(width)
    c = np.full((positions, width), 1 << ROPE_FRAC_BITS, np.int64)
    s = np.zeros((positions, width), np.int64)
    inner = rope_partner(style, r)
    for h in range(heads):
        base = h * head_dim
        partner[base:base + r] = base + inner
        c[:, base:base + r] = cos_q
        s[:, base:base + r] = sin_q
    p = np.zeros((width, width), np.int64)
    p[partner, np.arange(width)] = 1
    return p, c, s


def emit_rope(b: ProgramBuilder, name: str, x: Region, out: Region, cos_q: np.ndarray, sin_q: np.ndarray,
              style: str, head_dim: int, me: tuple[int, int], out_space: Space) -> None:
    """Emit the rotation of int8 ``x`` (``[1, S, width]``) into int8 ``out`` (module docstring); ``me`` the op's
    requant, ``out_space`` where an int8 row waits for its store."""
    where = f"system backend: dataflow.rope '{name}'"
    shape = x.shape
    if len(shape) != 3 or shape[0] != 1:
        raise InputError(f"{where}: only a batch of one [1, S, D] runs on the system backend, got {shape}")
    positions, width = shape[1], shape[2]
    if cos_q.shape[0] != positions or width % head_dim or cos_q.shape[1] > head_dim:
        raise InputError(f"{where}: tables of {cos_q.shape} do not match rows of {shape} with head_dim {head_dim}")
    p, c, s = rope_constants(np.asarray(cos_q, np.int64), np.asarray(sin_q, np.int64), style, head_dim, width)
    img = b.image
    regions = {}
    for key, values, elem in (("partner_matrix", p, 1), ("cos", c, 2), ("sin", s, 2)):
        regions[key] = img.place(f"{name}.{key}", values.shape, elem)
        img.write(regions[key].name, values)
    xv = View.of(img.alias(f"{name}.x", x, (positions, width)))
    partner = img.place(f"{name}.partner", (positions, width), 4)
    matmul_layer(b, f"{name}.partner", [xv], View.of(regions["partner_matrix"]), False, View.of(partner))
    unit = ((ConfigReg.REQUANT_M, 1), (ConfigReg.REQUANT_E, 0), (ConfigReg.RESIDUAL_M, 1), (ConfigReg.RESIDUAL_E, 0))
    steps = [VecStep(VecFn.MUL, 0, 0, 32, aux=2), VecStep(VecFn.MUL, 1, 1, 32, aux=3),
             VecStep(VecFn.REQUANT_ADD, 0, 0, 32, aux=1, configs=unit),
             VecStep(VecFn.REQUANT, 0, 4, ROPE_OUT_BITS,
                     configs=((ConfigReg.REQUANT_M, int(me[0])), (ConfigReg.REQUANT_E, int(me[1]))))]
    slots = [Slot(Space.ACC, width)] * 4 + [Slot(out_space, width)]
    loads = [(xv, 0), (View.of(partner), 1), (View.of(regions["cos"]), 2), (View.of(regions["sin"]), 3)]
    ov = View.of(img.alias(f"{name}.y", out, (positions, width)))
    vector_layer(b, name, positions, slots, loads, steps, [(4, ov)])
