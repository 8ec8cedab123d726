"""``set-softmax``: choose how softmax is computed, on every attention op and standalone softmax op.

The choice is an attribute (``softmax`` on ``dataflow.attention``, ``approx`` on ``dataflow.softmax``) that both
consumers read: the functional simulator picks the kernel by it and ``compiler/schedule/lower.py`` prices the
vector unit by it (hw/targets/defaults.py). ``bits`` is the width of the softmax unit's output, written as the
``softmax_bits`` attribute: 0 keeps the default, 16 for the linear encodings (I-ViT's choice for ViT / DeiT; 8
loses attention mass on long rows) and 4 for ``log2q`` (RepQ-ViT's W4A4 setting).

``log2q`` quantizes probabilities for A.V and ``softmax-free`` replaces attention altogether, so standalone
softmax ops (MoE routers, classifier heads) keep their current approximation under those two.
"""

from __future__ import annotations

from dataclasses import dataclass

from xdsl.context import Context
from xdsl.dialects.builtin import IntegerAttr, ModuleOp, StringAttr, i64
from xdsl.passes import ModulePass

from compiler.dialect import dataflow as df
from hw.errors import InputError

__all__ = ["SetSoftmax"]

_ATTENTION_ONLY = ("log2q", "softmax-free")


def _check_soft(op: df.AttentionOp) -> None:
    """SOFT (compiler/numerics/softmax_free.py) takes the keys to be the queries, so it needs as many keys as
    queries; attention sinks need a softmax row to sit in."""
    if op.sinks_value() is not None:
        raise InputError(f"--softmax softmax-free: attention '{op.layer_name()}' has attention sinks, which an "
                         "attention without a softmax cannot hold")
    sq, sk = op.q.type.get_shape()[1], op.k.type.get_shape()[1]  # type: ignore[attr-defined]
    if sq != sk:
        raise InputError(f"--softmax softmax-free: attention '{op.layer_name()}' has {sq} queries and {sk} keys; "
                         "SOFT's Gaussian kernel takes the keys to be the queries (one sequence attending to itself), "
                         "so it cannot replace an attention over a pooled, reduced or other-length key sequence")


@dataclass(frozen=True)
class SetSoftmax(ModulePass):
    """Set the softmax approximation ``approx`` (one of dataflow.SOFTMAX_APPROX) and its output ``bits``."""

    name = "set-softmax"
    approx: str = "exact"
    bits: int = 0

    def apply(self, ctx: Context, op: ModuleOp) -> None:
        if self.approx not in df.SOFTMAX_APPROX:
            raise InputError(f"--softmax {self.approx}: unknown choice (valid: {', '.join(df.SOFTMAX_APPROX)})")
        if self.bits not in (0, 4, 8, 16):
            raise InputError(f"set-softmax: bits must be 4, 8 or 16 (0 = default), got {self.bits}")
        for inner in op.walk():
            if isinstance(inner, df.AttentionOp):
                if self.approx == "softmax-free":
                    _check_soft(inner)
                inner.softmax = StringAttr(self.approx)
            elif isinstance(inner, df.SoftmaxOp) and self.approx not in _ATTENTION_ONLY:
                inner.approx = StringAttr(self.approx)
            else:
                continue
            if self.bits:
                inner.attributes["softmax_bits"] = IntegerAttr(self.bits, i64)
