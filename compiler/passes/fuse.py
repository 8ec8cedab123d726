"""``fuse``: run element-wise epilogues (bias, GELU, residual add, requantisation) inside the producing GEMM.

A GEMM's output leaves the array one fold at a time; an element-wise op that is its only reader can be applied on
the way out by the vector lanes, so its input never goes to off-chip memory (Edge-MoE fuses fc1 + GELU this way).
Fused ops stay in the IR, marked ``fused_into = "<gemm layer>"``; the scheduler prices the group as one task.
"""

from __future__ import annotations

from dataclasses import dataclass

from xdsl.context import Context
from xdsl.dialects.builtin import ModuleOp, StringAttr
from xdsl.ir import Operation
from xdsl.passes import ModulePass

from compiler.dialect import dataflow as df
from compiler.schedule.lower import FUSED_ATTR

__all__ = ["Fuse"]

_EPILOGUE_KINDS = ("add", "sub", "mul", "relu", "clip", "cast")


def _fusable(op: Operation) -> bool:
    if isinstance(op, (df.GeluOp, df.RequantOp)):
        return True
    return isinstance(op, df.ElementwiseOp) and op.kind_value() in _EPILOGUE_KINDS


@dataclass(frozen=True)
class Fuse(ModulePass):
    """Mark single-use element-wise successors of GEMMs as fused into them."""

    name = "fuse"

    def apply(self, ctx: Context, op: ModuleOp) -> None:
        # head_of: op -> (its group's GEMM layer, that GEMM's position); ready: where in program order each op's
        # result exists (its own position, or its group's GEMM's for a fused op: the group runs as one task)
        head_of: dict[int, tuple[str, int]] = {}
        ready: dict[int, int] = {}
        for index, inner in enumerate(op.walk()):
            ready[id(inner)] = index
            if isinstance(inner, df.GemmOp):
                head_of[id(inner)] = (inner.layer_name(), index)
                continue
            if not _fusable(inner) or FUSED_ATTR in inner.attributes:
                continue
            for operand in inner.operands:
                owner = operand.owner
                if isinstance(owner, Operation) and id(owner) in head_of and operand.has_one_use() \
                        and owner.results[0].has_one_use():
                    head, start = head_of[id(owner)]
                    # The group runs as one task from its GEMM on: an epilogue whose other operand is computed
                    # after that GEMM (GeGLU's gelu(x W) * (x V), with x V computed later) cannot join it, or the
                    # group would read a value before its producer ran.
                    if any(isinstance(v.owner, Operation) and ready.get(id(v.owner), -1) > start
                           and v is not operand for v in inner.operands):
                        continue
                    inner.attributes[FUSED_ATTR] = StringAttr(head)
                    head_of[id(inner)] = (head, start)
                    ready[id(inner)] = start
                    break
