"""``tile``: record how many buffer-sized tiles each GEMM streams through, as the target's model decides.

The number comes from the target's buffer capacities (``hw.models``); it is written into the IR as ``tiles`` so the
decision is visible (``--print-ir-after tile``) and the scheduler overlaps tile loads with compute accordingly.
"""

from __future__ import annotations

from dataclasses import dataclass

from xdsl.context import Context
from xdsl.dialects.builtin import IntegerAttr, ModuleOp, i64
from xdsl.passes import ModulePass

from compiler.dialect import dataflow as df
from compiler.schedule.lower import TILES_ATTR, gemm_work
from compiler.schedule.target import resolve_model

__all__ = ["Tile"]


@dataclass(frozen=True)
class Tile(ModulePass):
    """Annotate every GEMM with ``tiles``; ``target`` overrides the compile's target (for ``codesign opt``)."""

    name = "tile"
    target: str | None = None

    def apply(self, ctx: Context, op: ModuleOp) -> None:
        model = resolve_model(ctx, self.name, self.target)
        for inner in op.walk():
            if isinstance(inner, df.GemmOp):
                inner.attributes[TILES_ATTR] = IntegerAttr(max(1, model.cost(gemm_work(inner)).tiles), i64)
