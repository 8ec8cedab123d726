"""``canonicalize``: remove movement that cancels out and values nobody reads.

Exporters leave reshape/transpose pairs around every head split and patch embedding (ours adds one more around
Conv patchify), identity casts and dead constants. Removing them before costing matters: a transpose that is kept
is costed as a real on-chip reorder. A transpose that moves only size-1 axes is a reshape (the elements keep their
order) and becomes one, so a batch-first export prices as the same model exported sequence-first.
"""

from __future__ import annotations

from dataclasses import dataclass

from xdsl.context import Context
from xdsl.dialects.builtin import DenseArrayBase, DictionaryAttr, ModuleOp, StringAttr
from xdsl.passes import ModulePass
from xdsl.pattern_rewriter import (
    GreedyRewritePatternApplier,
    PatternRewriter,
    PatternRewriteWalker,
    RewritePattern,
    op_type_rewrite_pattern,
)

from compiler.dialect import dataflow as df

__all__ = ["Canonicalize"]

_VIEW_KINDS = ("reshape", "flatten", "squeeze", "unsqueeze")


def _kind(op: df.MoveOp | df.ElementwiseOp) -> str:
    return op.kind_value()


def _perm(op: df.MoveOp) -> list[int] | None:
    attrs = op.attrs
    if not isinstance(attrs, DictionaryAttr) or "perm" not in attrs.data:
        return None
    perm = attrs.data["perm"]
    assert isinstance(perm, DenseArrayBase)
    return [int(v) for v in perm.get_values()]


class _FoldViews(RewritePattern):
    """reshape(reshape(x)) -> reshape(x); a view to the same type -> x."""

    @op_type_rewrite_pattern
    def match_and_rewrite(self, op: df.MoveOp, rewriter: PatternRewriter) -> None:
        if _kind(op) not in _VIEW_KINDS or len(op.inputs) != 1:
            return
        src = op.inputs[0]
        if src.type == op.outputs[0].type:
            rewriter.replace_matched_op([], [src])
            return
        owner = src.owner
        if isinstance(owner, df.MoveOp) and _kind(owner) in _VIEW_KINDS and len(owner.inputs) == 1:
            new = df.MoveOp.create(
                operands=[owner.inputs[0]], result_types=[op.outputs[0].type],
                properties={"layer": op.layer, "kind": StringAttr("reshape"),
                            "attrs": _reshape_attrs(op)})
            rewriter.replace_matched_op(new)


def _reshape_attrs(op: df.MoveOp) -> DictionaryAttr:
    from xdsl.dialects.builtin import IntegerAttr, i64

    shape = list(op.outputs[0].type.get_shape())  # type: ignore[attr-defined]
    return DictionaryAttr({"onnx_op": StringAttr("Reshape"), "nin": IntegerAttr(2, i64),
                           "#1": DenseArrayBase.from_list(i64, shape)})


class _FoldTransposes(RewritePattern):
    """transpose(transpose(x)) -> x when the permutations cancel."""

    @op_type_rewrite_pattern
    def match_and_rewrite(self, op: df.MoveOp, rewriter: PatternRewriter) -> None:
        if _kind(op) != "transpose":
            return
        owner = op.inputs[0].owner
        if not isinstance(owner, df.MoveOp) or _kind(owner) != "transpose":
            return
        outer, inner = _perm(op), _perm(owner)
        if outer is None or inner is None or len(outer) != len(inner):
            return
        composed = [inner[p] for p in outer]
        if composed == list(range(len(composed))) and owner.inputs[0].type == op.outputs[0].type:
            rewriter.replace_matched_op([], [owner.inputs[0]])


class _TransposeAsView(RewritePattern):
    """A transpose that moves only size-1 axes -> a reshape: the elements stay in the same order in memory. A
    batch-first ``nn.MultiheadAttention`` transposes its (1, L, D) input to the sequence-first (L, 1, D) and back;
    kept, each transpose was costed as an on-chip reorder that the same layer exported sequence-first does not pay."""

    @op_type_rewrite_pattern
    def match_and_rewrite(self, op: df.MoveOp, rewriter: PatternRewriter) -> None:
        if _kind(op) != "transpose" or len(op.inputs) != 1:
            return
        perm = _perm(op)
        shape = list(op.inputs[0].type.get_shape())  # type: ignore[attr-defined]
        if perm is None or sorted(perm) != list(range(len(shape))):
            return
        moved = [p for p in perm if shape[p] != 1]
        if moved != sorted(moved):
            return
        rewriter.replace_matched_op(df.MoveOp.create(
            operands=[op.inputs[0]], result_types=[op.outputs[0].type],
            properties={"layer": op.layer, "kind": StringAttr("reshape"), "attrs": _reshape_attrs(op)}))


class _FoldIdentity(RewritePattern):
    """identity and same-type casts -> their input."""

    @op_type_rewrite_pattern
    def match_and_rewrite(self, op: df.ElementwiseOp, rewriter: PatternRewriter) -> None:
        if _kind(op) in ("identity", "cast") and len(op.inputs) == 1 and op.inputs[0].type == op.result.type:
            rewriter.replace_matched_op([], [op.inputs[0]])


class _DeadCode(RewritePattern):
    """Pure dataflow ops whose results nobody reads."""

    def match_and_rewrite(self, op, rewriter: PatternRewriter) -> None:  # type: ignore[override]
        if op.dialect_name() == "dataflow" and op.results and all(not r.uses for r in op.results):
            rewriter.erase_op(op)


@dataclass(frozen=True)
class Canonicalize(ModulePass):
    """Fold cancelling movement, size-1 transposes, identities and dead ops until nothing changes."""

    name = "canonicalize"

    def apply(self, ctx: Context, op: ModuleOp) -> None:
        PatternRewriteWalker(
            GreedyRewritePatternApplier([_FoldViews(), _FoldTransposes(), _TransposeAsView(), _FoldIdentity(),
                                         _DeadCode()]),
            walk_reverse=True,
        ).rewrite_module(op)
