"""``set-attention``: choose the evaluation order of every ``dataflow.attention``: standard | edge-moe | flash.

``standard`` materialises the score matrix (QK^T, softmax, A.V as three steps through off-chip memory);
``edge-moe`` runs Edge-MoE's rotated-key order on ``lanes`` query lanes (the ``lanes`` property; default: the
target's ``attention.lanes``, 4 without a target); ``flash`` runs tiles of ``tile_q`` x ``tile_k`` (discardable
attributes; default: the largest tiles the target's buffers hold, compiler/schedule/attention.py). The choice is
visible in the IR (``--print-ir-after set-attention``), priced by compiler/schedule/attention.py and computed by the
simulator kernels of compiler/simulate/attention.py (registered by the simulator package itself). An attention with
sinks (gpt-oss) runs in every order: an online softmax takes each head's sink as one more key whose value is 0.
"""

from __future__ import annotations

from dataclasses import dataclass

from xdsl.context import Context
from xdsl.dialects.builtin import IntegerAttr, ModuleOp, StringAttr, i64
from xdsl.passes import ModulePass

from compiler.context import CompileEnv
from compiler.dialect import dataflow as df
from compiler.schedule.attention import (
    DEFAULT_LANES,
    TILE_K_ATTR,
    TILE_Q_ATTR,
    attention_buffers,
    choose_flash_tiles,
)
from compiler.schedule.plan import element_bits
from hw.errors import InputError
from hw.targets.schema import Target

__all__ = ["SetAttention"]


@dataclass(frozen=True)
class SetAttention(ModulePass):
    """Set ``algorithm`` (and ``lanes`` or tiles) on every attention op; ``target`` as for ``tile``."""

    name = "set-attention"
    algorithm: str = "standard"
    lanes: int | None = None
    tile_q: int | None = None
    tile_k: int | None = None
    target: str | None = None

    def _target(self, ctx: Context) -> Target | None:
        env = getattr(ctx, "env", None)
        if self.target is not None:
            from hw.targets import load_target

            return load_target(self.target)
        return env.target if isinstance(env, CompileEnv) else None

    def apply(self, ctx: Context, op: ModuleOp) -> None:
        if self.algorithm not in df.ATTENTION_ALGORITHMS:
            valid = ", ".join(df.ATTENTION_ALGORITHMS)
            raise InputError(f"--attention {self.algorithm}: unknown choice (valid: {valid})")
        for key, value in (("lanes", self.lanes), ("tile_q", self.tile_q), ("tile_k", self.tile_k)):
            if value is not None and value < 1:
                raise InputError(f"set-attention: {key} must be a positive integer, got {value}")
        target = self._target(ctx)
        for inner in op.walk():
            if not isinstance(inner, df.AttentionOp):
                continue
            inner.algorithm = StringAttr(self.algorithm)
            inner.lanes = None
            for key in (TILE_Q_ATTR, TILE_K_ATTR):
                inner.attributes.pop(key, None)
            if self.algorithm == "edge-moe":
                lanes = self.lanes or (target.attention_lanes() if target is not None else None) or DEFAULT_LANES
                inner.lanes = IntegerAttr(lanes, i64)
            elif self.algorithm == "flash":
                tq, tk = self._tiles(inner, target)
                inner.attributes[TILE_Q_ATTR] = IntegerAttr(tq, i64)
                inner.attributes[TILE_K_ATTR] = IntegerAttr(tk, i64)

    def _tiles(self, op: df.AttentionOp, target: Target | None) -> tuple[int, int]:
        dims = op.dims()
        sq, sk, dh, dv = dims.seq_q, dims.seq_k, dims.head_dim, dims.v_head_dim
        if self.tile_q is not None and self.tile_k is not None:
            return min(self.tile_q, sq), min(self.tile_k, sk)
        if target is None:
            raise InputError("set-attention{algorithm=flash} needs a target to size its tiles: give "
                             "set-attention{algorithm=flash target=fpga-u280} or tile_q=... tile_k=...")
        array = target.systolic_array()
        acc = array.acc_bits if array is not None else 32
        try:
            tq, tk = choose_flash_tiles(sq, sk, dh, dv, element_bits(op.q), acc, attention_buffers(target))
        except ValueError as err:
            raise InputError(f"{target.name}: {err}; enlarge buffers.act_kb / weight_kb / out_kb") from None
        return min(self.tile_q or tq, sq), min(self.tile_k or tk, sk)
