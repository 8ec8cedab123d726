"""``set-layernorm``: choose how LayerNorm is computed (``approx`` of every ``dataflow.layernorm``).

RMSNorm ops take ``ilayernorm`` too (I-LayerNorm's integer steps with the mean taken as 0:
compiler/numerics/ilayernorm.py, ``rms``); they have no other integer variant and otherwise stay ``exact``.
"""

from __future__ import annotations

from dataclasses import dataclass

from xdsl.context import Context
from xdsl.dialects.builtin import ModuleOp, StringAttr
from xdsl.passes import ModulePass

from compiler.dialect import dataflow as df
from hw.errors import InputError

__all__ = ["SetLayernorm"]


@dataclass(frozen=True)
class SetLayernorm(ModulePass):
    """Set every LayerNorm's ``approx`` to ``approx`` (one of dataflow.LAYERNORM_APPROX)."""

    name = "set-layernorm"
    approx: str = "exact"

    def apply(self, ctx: Context, op: ModuleOp) -> None:
        if self.approx not in df.LAYERNORM_APPROX:
            raise InputError(f"--layernorm {self.approx}: unknown choice (valid: {', '.join(df.LAYERNORM_APPROX)})")
        for inner in op.walk():
            if isinstance(inner, df.LayerNormOp) and (inner.norm_kind() == df.LayerNormKind.LAYERNORM
                                                      or self.approx == df.LayerNormApprox.ILAYERNORM.value):
                inner.approx = StringAttr(self.approx)
