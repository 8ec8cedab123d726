"""``schedule``: plan every op's hardware work, price the plan on the target and run the event-driven scheduler.

Each scheduled op gets ``start`` and ``end`` attributes (cycles), each GEMM its ``mapping`` (the chosen dataflow,
orientation, loop order and tiles, ``compiler/schedule/mapping.py``, chosen for ``--mapping-objective``;
``--mapping fixed`` prices the model's own mapping); the full schedule and the per-layer plans go to the compile
context for the report.
"""

from __future__ import annotations

from dataclasses import dataclass

from xdsl.context import Context
from xdsl.dialects.builtin import IntegerAttr, ModuleOp, StringAttr, i64
from xdsl.passes import ModulePass

from compiler.dialect import dataflow as df
from compiler.dialect.choices import LAYER_ATTR
from compiler.schedule.lower import plan_module
from compiler.schedule.mapping import mapping_objective
from compiler.schedule.plan import schedule_plan
from compiler.schedule.target import resolve_model

__all__ = ["Schedule"]


@dataclass(frozen=True)
class Schedule(ModulePass):
    """Schedule the module on the compile's target (or ``target`` for ``codesign opt``)."""

    name = "schedule"
    target: str | None = None

    def apply(self, ctx: Context, op: ModuleOp) -> None:
        model = resolve_model(ctx, self.name, self.target)
        env = getattr(ctx, "env", None)
        mapping = str(env.options.get("mapping", "search")) if env is not None else "search"
        plans, result = schedule_plan(plan_module(op, env.weights if env is not None else None), model, mapping,
                                      mapping_objective(env.options if env is not None else {}))
        mapped = {p.name: str(p.detail["mapping"]) for p in plans if "mapping" in p.detail}
        span = {}
        for plan in plans:
            times = [result.task(t.name) for t in plan.tasks]
            if times:
                span[plan.name] = (min(t.start for t in times), max(t.end for t in times))
        for inner in op.walk():
            if inner.dialect_name() != "dataflow" or LAYER_ATTR not in inner.properties:
                continue
            layer = inner.properties[LAYER_ATTR]
            assert isinstance(layer, StringAttr)
            if layer.data in span and not isinstance(inner, df.WeightOp):
                start, end = span[layer.data]
                inner.attributes["start"] = IntegerAttr(start, i64)
                inner.attributes["end"] = IntegerAttr(end, i64)
                if layer.data in mapped and isinstance(inner, df.GemmOp):
                    inner.attributes["mapping"] = StringAttr(mapped[layer.data])
        if env is not None:
            env.plans, env.schedule = plans, result
