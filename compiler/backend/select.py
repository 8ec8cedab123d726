"""Instruction selection: which IR ops a ``cds1`` program runs, and the layer records the code generators take.

Today: an integer ``dataflow.gemm`` whose right operand is a weight (projections, FFN, classifier, patch
embeddings), with its bias and the ``dataflow.requant`` the ``fuse`` pass put behind it. Every other op is refused
with one line naming it, so nothing is silently left out of a program.
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np
from xdsl.dialects.builtin import StringAttr
from xdsl.ir import Operation

from compiler.backend.gemm import GemmLayer
from compiler.dialect import dataflow as df
from compiler.dialect.choices import LAYER_ATTR
from hw.errors import InputError

__all__ = ["gemm_layer", "fused_requant"]


def _name(op: Operation) -> str:
    layer = op.properties.get(LAYER_ATTR)
    return layer.data if isinstance(layer, StringAttr) else op.name


def fused_requant(op: df.GemmOp) -> df.RequantOp | None:
    """The requant the ``fuse`` pass fused behind ``op`` (its only use, marked ``fused_into`` the GEMM), or None."""
    uses = list(op.result.uses)
    if len(uses) != 1:
        return None
    user = uses[0].operation
    fused = user.attributes.get("fused_into")
    if isinstance(user, df.RequantOp) and isinstance(fused, StringAttr) and fused.data == _name(op):
        return user
    return None


def gemm_layer(op: Operation, weights: Mapping[str, np.ndarray]) -> GemmLayer:
    """The :class:`GemmLayer` of an integer GEMM with a weight operand (and its fused requant, if any)."""
    where = f"system backend: {op.name} '{_name(op)}'"
    if not isinstance(op, df.GemmOp):
        raise InputError(f"{where}: no code generator for this op yet (docs/ISA.md lists the units)")
    if df.int_bits(op.lhs) != 8 or df.int_bits(op.rhs) != 8:
        raise InputError(f"{where}: only int8 x int8 products run on the array (float or other widths are left)")
    rhs = op.rhs.owner
    if not isinstance(rhs, df.WeightOp):
        raise InputError(f"{where}: a product of two activations has no code generator yet")
    w = np.asarray(weights[rhs.layer_name()], dtype=np.int64)
    bias = None
    if op.bias is not None:
        b_owner = op.bias.owner
        if not isinstance(b_owner, df.WeightOp):
            raise InputError(f"{where}: a computed bias has no code generator")
        bias = np.asarray(weights[b_owner.layer_name()], dtype=np.int64).reshape(-1)
    _, m, _, _ = op.mnk()
    requant = None
    rq = fused_requant(op)
    if rq is not None:
        me = np.asarray(weights[rq.layer_name()], dtype=np.int64)
        requant = (me[0], me[1], rq.out_bits_value())
    return GemmLayer(_name(op), m, w, bias, requant)
