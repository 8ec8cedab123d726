"""What a lowering produces and the state its walk shares: ``LayerPlan`` and ``Lowering``.

Apart from compiler/schedule/lower.py so that the lowerings it hands ops to (moe.py) can build plans without
importing it back.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from xdsl.dialects.builtin import IntegerType, TensorType
from xdsl.ir import SSAValue

from compiler.dialect import dataflow as df
from hw.models.base import AcceleratorModel, Cost
from hw.perf.scheduler import Task
from hw.perf.workload import Work

__all__ = ["LayerPlan", "Lowering", "element_bits", "tensor_bytes", "numel"]


@dataclass
class LayerPlan:
    """One IR op as the report shows it: its tasks, MACs and traffic, and ``works``, the work items its tasks run
    (as the model priced them; a cost looked at but not run, e.g. the standard softmax of a flash attention, is not
    one)."""

    name: str
    op: str
    tasks: list[Task]
    macs: int = 0
    macs_by_bits: dict[int, int] = field(default_factory=dict)
    bytes_offchip: int = 0
    weight_bytes: int = 0
    onchip_bytes: int = 0
    detail: dict[str, Any] = field(default_factory=dict)
    works: list[Work] = field(default_factory=list)


def element_bits(value: SSAValue) -> int:
    """Bits of one element of a tensor value (i1 counts as 8: it is stored as a byte)."""
    el = value.type.get_element_type()  # type: ignore[attr-defined]
    width = el.width.data if isinstance(el, IntegerType) else el.bitwidth  # type: ignore[attr-defined]
    return max(8, width) if width == 1 else width


def tensor_bytes(value: SSAValue) -> int:
    """Bytes of a whole tensor value."""
    typ = value.type
    assert isinstance(typ, TensorType)
    n = 1
    for d in typ.get_shape():
        n *= d
    return -(-n * element_bits(value) // 8)


def numel(value: SSAValue) -> int:
    n = 1
    for d in value.type.get_shape():  # type: ignore[attr-defined]
        n *= d
    return n


class Lowering:
    """The state one walk over a module shares: the target model, the plans so far and the task that produced each
    value (a later op's dependencies)."""

    def __init__(self, model: AcceleratorModel):
        self.model = model
        self.plans: list[LayerPlan] = []
        self.producer: dict[SSAValue, str | None] = {}

    def deps(self, values: list[SSAValue]) -> tuple[str, ...]:
        out: list[str] = []
        for v in values:
            task = self.producer.get(v)
            if task is not None and task not in out:
                out.append(task)
        return tuple(out)

    def is_weight(self, v: SSAValue) -> bool:
        return isinstance(v.owner, df.WeightOp)

    def activation_bytes(self, values: list[SSAValue]) -> int:
        return sum(tensor_bytes(v) for v in values if not self.is_weight(v))

    def weight_bytes(self, values: list[SSAValue]) -> int:
        return sum(tensor_bytes(v) for v in values if self.is_weight(v))

    def task(self, name: str, cost: Cost, bytes_in: int, bytes_out: int, deps: tuple[str, ...],
             tiles: int | None = None) -> Task:
        return Task(name=name, unit=cost.unit, compute_cycles=cost.compute_cycles, bytes_in=bytes_in,
                    bytes_out=bytes_out, deps=deps, tiles=max(1, tiles if tiles is not None else cost.tiles))

    def add_plan(self, plan: LayerPlan, results: list[SSAValue]) -> None:
        self.plans.append(plan)
        last = plan.tasks[-1].name if plan.tasks else None
        for r in results:
            self.producer[r] = last
