"""Simulator kernel of ``dataflow.moe``: route -> dispatch -> experts -> combine, as the hardware orders it.

The block runs :func:`compiler.numerics.router.moe_reference` (float64, the routing semantics of the op's ``mode``)
on the real values of its operands and returns float32. The routing of the last sample is kept in the op's memo
(``ctx.memo(op)["routing"]``, a :class:`compiler.numerics.router.Routing`) and appended to ``["routings"]``, so an
observer (``Simulator.run(feeds, observer=...)``) can collect real routing traces: the ``route-moe`` pass does.
Importing this module registers the kernel.
"""

from __future__ import annotations

import numpy as np
from xdsl.ir import Operation

from compiler.dialect import dataflow as df
from compiler.numerics.router import Routing, moe_reference
from compiler.simulate.engine import SimContext, Tensor, register_kernel

__all__ = ["moe_kernel", "routing_of"]


def moe_kernel(op: Operation, ins: list[Tensor], ctx: SimContext) -> list[Tensor]:
    """One ``dataflow.moe`` on one sample (module docstring)."""
    assert isinstance(op, df.MoeOp)
    memo = ctx.memo(op)
    if "top_k" not in memo:
        memo.update(top_k=df.int_attr(op, "top_k"), mode=df.str_attr(op, "mode"),
                    cf=df.float_attr(op, "capacity_factor"),
                    renorm=bool(op.properties["renormalize"].value.data),  # type: ignore[attr-defined]
                    act=df.str_attr(op, "activation"), routings=[])
        names = ["input", "gate", "w1", "w2"] + [n for n, v in (("b1", op.b1), ("b2", op.b2)) if v is not None]
        memo["slots"] = {n: i for i, n in enumerate(names)}
    slots = memo["slots"]
    real = [t.real() for t in ins]
    y, routing = moe_reference(
        real[0], real[1], real[2], real[3], top_k=memo["top_k"], mode=memo["mode"],
        b1=real[slots["b1"]] if "b1" in slots else None, b2=real[slots["b2"]] if "b2" in slots else None,
        activation=memo["act"], capacity_factor=memo["cf"], renormalize=memo["renorm"])
    memo["routing"] = routing
    memo["routings"].append(routing)
    shape = tuple(op.result.type.get_shape())  # type: ignore[attr-defined]
    return [Tensor(y.reshape(shape).astype(np.float32))]


def routing_of(ctx: SimContext, op: Operation) -> Routing | None:
    """The routing ``op`` computed on the last simulated sample, or None."""
    return ctx.memo(op).get("routing")


register_kernel("dataflow.moe", moe_kernel)
