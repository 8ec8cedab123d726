"""Lower ``dataflow`` ops to a hardware plan (``compiler/schedule/plan.py``): work items, traffic and dependencies.

Execution model (stated, so reports can be read): ops run one after another as the dependency graph allows; every
activation an op reads or writes goes through off-chip memory, except tensors inside a fused group (``fuse`` pass)
and scores inside ``flash`` / ``edge-moe`` attention, which stay on chip; each weight is read from off-chip once per
inference. Views (reshape, squeeze, ...) cost nothing and forward their producer.

``plan_module`` reads the IR and no target; ``plan.price`` prices the plan on a target model. A GEMM's cost may
include its array's readout (``Cost.detail["drain_cycles"]``, see hw/models/fpga.py); a priced layer keeps the
readout that lengthens it in ``LayerPlan.detail["drain_cycles"]`` so the report can show it apart. A layer also
keeps the work items its tasks run (``LayerPlan.works``): the report sizes the hardware to them (an FPGA's vector
lanes hold only the units the compile used).
"""

from __future__ import annotations

from functools import partial

from xdsl.dialects import func
from xdsl.dialects.builtin import IntegerAttr, ModuleOp, StringAttr
from xdsl.ir import Operation, SSAValue

from compiler.dialect import dataflow as df
from compiler.quant_groups import GROUP_ATTR, SCALE_BITS_ATTR, groups_of
from compiler.schedule.attention import plan_attention, softmax_cost_name
from compiler.schedule.moe import plan_moe
from compiler.schedule.plan import (
    CostFn,
    LayerPlan,
    Plan,
    PlannedLayer,
    TaskSpec,
    element_bits,
    numel,
    overlap_epilogue,
    price,
    priced_task,
    tensor_bytes,
)
from hw.models.base import AcceleratorModel, ceil_div
from hw.perf.workload import GemmWork, MoveWork, VectorWork, Work

__all__ = ["plan_module", "lower_module", "gemm_work", "group_scale_work", "FUSED_ATTR", "TILES_ATTR"]

FUSED_ATTR = "fused_into"
TILES_ATTR = "tiles"
_VIEWS = ("reshape", "flatten", "squeeze", "unsqueeze", "shape")
#: Generic element-wise kinds -> the vector cost class that prices them.
_CHEAP = ("add", "sub", "neg", "abs", "min", "max", "where", "equal", "less", "greater", "not", "and", "or", "cast",
          "identity", "clip", "relu", "mod", "isnan", "isinf", "less_equal", "greater_equal")
#: Vector kinds whose units work row by row (a row = the last dimension): their work carries its row count.
_ROW_KINDS = ("softmax", "layernorm", "rmsnorm", "gelu", "requant")


class _Producers:
    """Which task produces each SSA value, so a task depends on the tasks that wrote its inputs."""

    def __init__(self) -> None:
        self.task: dict[SSAValue, str | None] = {}

    def deps(self, values: list[SSAValue]) -> tuple[str, ...]:
        out: list[str] = []
        for v in values:
            task = self.task.get(v)
            if task is not None and task not in out:
                out.append(task)
        return tuple(out)

    def produced(self, layer: PlannedLayer, results: list[SSAValue]) -> None:
        last = layer.task_names[-1] if layer.task_names else None
        for r in results:
            self.task[r] = last


def _is_weight(v: SSAValue) -> bool:
    return isinstance(v.owner, df.WeightOp)


def gemm_work(op: df.GemmOp) -> GemmWork:
    batch, m, n, k = op.mnk()
    return GemmWork(m=m, n=n, k=k, batch=batch, in_bits=element_bits(op.lhs), w_bits=element_bits(op.rhs),
                    acc_bits=element_bits(op.result) if element_bits(op.result) >= 16 else 32,
                    weights_static=isinstance(op.rhs.owner, df.WeightOp))


def group_scale_work(op: Operation, work: GemmWork) -> tuple[VectorWork, int]:
    """A per-group-scaled GEMM's extra work (compiler/quant_groups.py): every group's partial sums leave the array
    and are multiplied by their group's integer multiplier and added into the output accumulator on the requant
    path, B x M x N x G multiply-adds in B x M x G rows of N; the G x N multipliers are weight bytes it loads."""
    group = op.attributes[GROUP_ATTR].value.data  # type: ignore[attr-defined]
    bits_attr = op.attributes.get(SCALE_BITS_ATTR)
    bits = bits_attr.value.data if isinstance(bits_attr, IntegerAttr) else 8
    g = groups_of(work.k, group)
    rescale = VectorWork(kind="requant", elements=work.batch * work.m * work.n * g, rows=work.batch * work.m * g,
                         approx="exact", bits=work.acc_bits)
    return rescale, ceil_div(g * work.n * bits, 8)


def _vector_kind(op: Operation) -> tuple[str, str]:
    if isinstance(op, df.GeluOp):
        approx = df.str_attr(op, "approx")
        return "gelu", "exact" if approx == "tanh" else approx
    if isinstance(op, df.LayerNormOp):
        kind = df.str_attr(op, "kind")
        return kind, df.str_attr(op, "approx") if kind == "layernorm" else "exact"
    if isinstance(op, df.SoftmaxOp):
        return "softmax", df.str_attr(op, "approx")
    if isinstance(op, df.RequantOp):
        return "requant", "exact"
    if isinstance(op, df.ReduceOp):
        return "add", "exact"
    if isinstance(op, df.ElementwiseOp):
        kind = df.str_attr(op, "kind")
        if kind in _CHEAP:
            return "add", "exact"
        if kind == "mul":
            return "mul", "exact"
        return "gelu", "exact"  # transcendental: a polynomial evaluation per element, priced like erf-GELU
    raise AssertionError(op.name)


def _vector_rows(kind: str, value: SSAValue) -> int:
    """Rows of the last dimension for row-wise kinds, else 1."""
    shape = value.type.get_shape()  # type: ignore[attr-defined]
    return numel(value) // shape[-1] if kind in _ROW_KINDS and shape and shape[-1] > 0 else 1


def plan_module(module: ModuleOp) -> Plan:
    """The hardware plan of every costed op of ``module``'s ``main`` function, in program order (reads no target)."""
    producers = _Producers()
    layers: list[PlannedLayer] = []
    fn = next(op for op in module.walk() if isinstance(op, func.FuncOp))
    fused_into: dict[str, list[Operation]] = {}
    for op in fn.body.walk():
        attr = op.attributes.get(FUSED_ATTR)
        if isinstance(attr, StringAttr):
            fused_into.setdefault(attr.data, []).append(op)
    fused_ops = {id(o) for ops in fused_into.values() for o in ops}
    for op in fn.body.block.ops:
        if isinstance(op, (df.WeightOp, func.ReturnOp)):
            continue
        if isinstance(op, df.MoveOp) and df.str_attr(op, "kind") in _VIEWS:
            for r in op.outputs:
                producers.task[r] = producers.task.get(op.inputs[0]) if op.inputs else None
            continue
        if id(op) in fused_ops:
            continue
        if isinstance(op, df.AttentionOp):
            inputs = [op.q, op.k, op.v] + ([op.mask] if op.mask is not None else [])
            layer = plan_attention(op, producers.deps(inputs))
        elif isinstance(op, df.MoeOp):
            layer = plan_moe(op, producers.deps([op.input]))
        else:
            layer = _plan_layer(op, fused_into.get(df.str_attr(op, "layer"), []), producers)  # type: ignore[arg-type]
            layers.append(layer)
            continue
        layers.append(layer)
        producers.produced(layer, list(op.results))
    return Plan(tuple(layers))


def _plan_layer(op: Operation, group: list[Operation], producers: _Producers) -> PlannedLayer:
    """One op and the element-wise epilogue ``group`` fused into it: one task."""
    name = df.str_attr(op, "layer")  # type: ignore[arg-type]
    results = list(op.results)
    ins = list(op.operands)
    # The group's external inputs (e.g. a residual) and final outputs replace the head op's own.
    inner = set(results)
    for member in group:
        ins += [v for v in member.operands if v not in inner]
        inner.update(member.results)
        results = list(member.results)
    tiles_attr = op.attributes.get(TILES_ATTR)
    tiles = tiles_attr.value.data if isinstance(tiles_attr, IntegerAttr) else None
    work: Work
    if isinstance(op, df.GemmOp):
        work = gemm_work(op)
        op_name = "gemm"
    elif isinstance(op, df.EmbeddingOp):
        work = MoveWork(kind="gather", bytes=tensor_bytes(op.result))
        op_name = "embedding"
        ins = [op.indices]  # only the gathered rows of the table are read
    elif isinstance(op, df.MoveOp):
        work = MoveWork(kind=df.str_attr(op, "kind"), bytes=sum(tensor_bytes(r) for r in op.outputs))
        op_name = "move." + df.str_attr(op, "kind")
    else:
        kind, approx = _vector_kind(op)
        if kind == "softmax":
            approx = softmax_cost_name(approx)
        x = op.operands[0]
        work = VectorWork(kind=kind, elements=max(numel(v) for v in op.results), rows=_vector_rows(kind, x),
                          approx=approx, bits=element_bits(x))
        op_name = op.name.split(".", 1)[1]
        if isinstance(op, df.ElementwiseOp):
            op_name += "." + df.str_attr(op, "kind")
    epilogue = []
    for member in group:
        kind, approx = _vector_kind(member)
        y = member.results[0]
        epilogue.append(VectorWork(kind=kind, elements=numel(y), rows=_vector_rows(kind, y), approx=approx,
                                   bits=element_bits(y)))
    weights = sum(tensor_bytes(v) for v in ins if _is_weight(v)) if not isinstance(op, df.EmbeddingOp) else 0
    if isinstance(work, GemmWork) and isinstance(op.attributes.get(GROUP_ATTR), IntegerAttr):
        rescale, scale_bytes = group_scale_work(op, work)
        epilogue.insert(0, rescale)
        weights += scale_bytes
        op_name += "+group-scale"
    act_in = sum(tensor_bytes(v) for v in ins if not _is_weight(v))
    out = sum(tensor_bytes(r) for r in results)
    spec = TaskSpec(name, act_in + weights, out, producers.deps(ins), tiles)
    if group:
        op_name += "+" + "+".join(m.name.split(".", 1)[1] for m in group)
    layer = PlannedLayer(name, (name,), partial(_price_layer, spec, op_name, work, tuple(epilogue), weights))
    producers.produced(layer, results)
    for member in group:
        producers.produced(layer, list(member.results))
    return layer


def _price_layer(spec: TaskSpec, op_name: str, work: Work, epilogue: tuple[VectorWork, ...], weights: int,
                 cost: CostFn) -> LayerPlan:
    c = cost(work)
    for extra in epilogue:
        c = overlap_epilogue(c, cost(extra))
    plan = LayerPlan(name=spec.name, op=op_name, tasks=[priced_task(spec, c)],
                     bytes_offchip=spec.bytes_in + spec.bytes_out, weight_bytes=weights, onchip_bytes=c.onchip_bytes,
                     detail=dict(c.detail), works=[work, *epilogue])
    if isinstance(work, GemmWork):
        plan.macs = work.macs
        plan.macs_by_bits = {max(work.in_bits, work.w_bits): work.macs}
    return plan


def lower_module(module: ModuleOp, model: AcceleratorModel) -> list[LayerPlan]:
    """``module``'s plan priced on ``model`` (``plan_module`` then ``plan.price``)."""
    return price(plan_module(module), model)
