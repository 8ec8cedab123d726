"""``set-gelu``: choose how GELU is computed (``approx`` of every ``dataflow.gelu``).

The simulator computes the op with the chosen kernel and the lowering prices it from the target's vector cost
table. ``exact`` leaves GELUs the exporter wrote in tanh form, and the x * sigmoid(1.702 x) form (CLIP's
``quick_gelu``), as they are (that is the model's own function).
"""

from __future__ import annotations

from dataclasses import dataclass

from xdsl.context import Context
from xdsl.dialects.builtin import ModuleOp, StringAttr
from xdsl.passes import ModulePass

from compiler.dialect import dataflow as df
from hw.errors import InputError

__all__ = ["SetGelu", "GELU_CHOICES"]

#: What users may choose (``tanh`` and ``sigmoid`` are only ever found in a model, not chosen).
GELU_CHOICES = tuple(a for a in df.GELU_APPROX if a not in ("tanh", "sigmoid"))


@dataclass(frozen=True)
class SetGelu(ModulePass):
    """Set every GELU's ``approx`` to ``approx`` (one of GELU_CHOICES)."""

    name = "set-gelu"
    approx: str = "exact"

    def apply(self, ctx: Context, op: ModuleOp) -> None:
        if self.approx not in GELU_CHOICES:
            raise InputError(f"--gelu {self.approx}: unknown choice (valid: {', '.join(GELU_CHOICES)})")
        for inner in op.walk():
            if isinstance(inner, df.GeluOp):
                if self.approx == df.GeluApprox.EXACT and inner.approx_choice() in (df.GeluApprox.TANH,
                                                                                    df.GeluApprox.SIGMOID):
                    continue
                inner.approx = StringAttr(self.approx)
