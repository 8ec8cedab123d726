"""Lower ``dataflow`` ops to a hardware plan (``compiler/schedule/plan.py``): work items, traffic and dependencies.

Execution model (stated, so reports can be read): ops run one after another as the dependency graph allows; every
activation an op reads or writes goes through off-chip memory, except tensors inside a fused group (``fuse`` pass)
and scores inside ``flash`` / ``edge-moe`` attention, which stay on chip; each weight is read from off-chip once per
inference. Views (reshape, squeeze, ...) cost nothing and forward their producer; so do the moves of a KV cache
kept in place (compiler/frontend/kv_cache.py: the cache is read by attention and its new rows written by the
projections).

``plan_module`` reads the IR and no target; ``plan.price`` prices the plan on a target model. A GEMM's cost may
include its array's readout (``Cost.detail["drain_cycles"]``, see hw/models/fpga.py); a priced layer keeps the
readout that lengthens it in ``LayerPlan.detail["drain_cycles"]`` so the report can show it apart. A layer also
keeps the work items its tasks run (``LayerPlan.works``): the report sizes the hardware to them (an FPGA's vector
lanes hold only the units the compile used).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import replace
from functools import partial
from typing import Any

import numpy as np
from xdsl.dialects import func
from xdsl.dialects.builtin import DictionaryAttr, IntegerAttr, IntegerType, ModuleOp, StringAttr, TensorType
from xdsl.ir import Operation, SSAValue

from compiler.dialect import dataflow as df
from compiler.dialect.choices import PIECEWISE_LINEAR_KINDS
from compiler.quant_format import PER_TOKEN_ATTR
from compiler.quant_groups import GROUP_ATTR, SCALE_BITS_ATTR, groups_of
from compiler.schedule.attention import plan_attention, softmax_cost_name
from compiler.schedule.kv_cache import kv_role
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
    serial_epilogue,
    tensor_bytes,
)
from hw.models.base import AcceleratorModel, Cost, ceil_div
from hw.perf.execute_queue import BEAT_BYTES, store_cycles
from hw.perf.workload import GemmWork, MoveWork, VectorWork, Work

__all__ = ["plan_module", "lower_module", "price_layer", "gemm_work", "group_scale_work", "FUSED_ATTR", "TILES_ATTR"]

FUSED_ATTR = "fused_into"
TILES_ATTR = "tiles"
_VIEWS = ("reshape", "flatten", "squeeze", "unsqueeze", "shape")
#: Generic element-wise kinds -> the vector cost class that prices them.
_CHEAP = ("add", "sub", "neg", "abs", "min", "max", "where", "equal", "less", "greater", "not", "and", "or", "cast",
          "identity", "clip", "relu", "mod", "isnan", "isinf", "less_equal", "greater_equal",
          "floor", "ceil", "round", "sign", "xor")
#: Vector kinds whose units work row by row (a row = the last dimension): their work carries its row count.
_ROW_KINDS = ("softmax", "layernorm", "rmsnorm", "gelu", "requant")


class _Producers:
    """Which task produces each SSA value, so a task depends on the tasks that wrote its inputs."""

    def __init__(self) -> None:
        self.task: dict[SSAValue, str | None] = {}
        #: Tasks that write their results in row order, row tile by row tile (GEMMs and vector work, not attention,
        #: MoE or moves that reorder), so a consumer may stream them.
        self.ordered: set[str] = set()

    def stream(self, values: list[SSAValue]) -> tuple[str, ...]:
        """The ordered producers of ``values`` (each read by its consumer in row order)."""
        out: list[str] = []
        for v in values:
            task = self.task.get(v)
            if task is not None and task in self.ordered and task not in out:
                out.append(task)
        return tuple(out)

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
    # a per-token GEMM reads a 16-bit input but multiplies its int8 codes (the row quantizer sits in front)
    in_bits = 8 if PER_TOKEN_ATTR in op.attributes else element_bits(op.lhs)
    return GemmWork(m=m, n=n, k=k, batch=batch, in_bits=in_bits, w_bits=element_bits(op.rhs),
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
        approx = op.approx_choice()
        return "gelu", "exact" if approx in (df.GeluApprox.TANH, df.GeluApprox.SIGMOID) else approx.value
    if isinstance(op, df.LayerNormOp):
        kind, approx = op.norm_kind(), op.approx_choice()
        if approx == df.LayerNormApprox.ILAYERNORM:  # an RMSNorm too: the I-LayerNorm unit with the mean taken as 0
            return df.LayerNormKind.LAYERNORM.value, approx.value
        return kind.value, approx.value if kind == df.LayerNormKind.LAYERNORM else "exact"
    if isinstance(op, df.SoftmaxOp):
        return "softmax", op.approx_choice().value
    if isinstance(op, df.RequantOp):
        return "requant", "exact"
    if isinstance(op, df.ReduceOp):
        return "add", "exact"
    if isinstance(op, df.RopeOp):
        return "mul", "exact"
    if isinstance(op, df.ElementwiseOp):
        kind = op.kind_value()
        if kind in _CHEAP:
            return "add", "exact"
        if kind in PIECEWISE_LINEAR_KINDS:  # a multiply-add and a clamp or select (and a mul)
            return "mul", "exact"
        return "gelu", "exact"  # transcendental: a polynomial evaluation per element, priced like erf-GELU
    raise AssertionError(op.name)


def rope_work(op: df.RopeOp) -> tuple[VectorWork, list[VectorWork]]:
    """A rotary embedding's vector work: per rotated element a multiply-add pair (x * cos, then x[partner] * sin
    added), the two multiplies as the main work and the add as its epilogue; its cos / sin tables are read as the
    op's weights (table traffic), the pass-through dims only move with the input and output. Both are tagged
    ``rope`` with the rows and their length: the system top level runs the op as one layer of its own
    (``hw.perf.vec_queue.rope_cycles``)."""
    shape = _shape_of(op.input)
    tokens = numel(op.input) // shape[-1]
    rotated = tokens * (shape[-1] // op.head_dim_value()) * op.rotary_dim_value()
    bits = element_bits(op.input)
    return (VectorWork(kind="mul", elements=2 * rotated, rows=tokens, approx="exact", bits=bits,
                       row_length=shape[-1], quant="rope"),
            [VectorWork(kind="add", elements=rotated, approx="exact", bits=bits, quant="rope")])


def _shape_of(value: SSAValue) -> tuple[int, ...]:
    return tuple(value.type.get_shape())  # type: ignore[attr-defined]


def _vector_rows(kind: str, value: SSAValue) -> int:
    """Rows of the last dimension for row-wise kinds, else 1."""
    shape = value.type.get_shape()  # type: ignore[attr-defined]
    return numel(value) // shape[-1] if kind in _ROW_KINDS and shape and shape[-1] > 0 else 1


def plan_module(module: ModuleOp, weights: Mapping[str, Any] | None = None) -> Plan:
    """The hardware plan of every costed op of ``module``'s ``main`` function, in program order (reads no target).

    ``weights`` (the compile's WeightStore) lets attention see its constant mask (fully masked tiles are skipped)."""
    producers = _Producers()
    layers: list[PlannedLayer] = []
    fn = next(op for op in module.walk() if isinstance(op, func.FuncOp))
    fused_into: dict[str, list[Operation]] = {}
    for op in fn.body.walk():
        attr = op.attributes.get(FUSED_ATTR)
        if isinstance(attr, StringAttr):
            fused_into.setdefault(attr.data, []).append(op)
    fused_ops = {id(o) for ops in fused_into.values() for o in ops}
    row_kernel = _longest_row(list(fn.body.block.ops))
    for op in fn.body.block.ops:
        if isinstance(op, (df.WeightOp, func.ReturnOp)):
            continue
        if isinstance(op, df.MoveOp) and op.kind_value() in _VIEWS:
            for r in op.outputs:
                producers.task[r] = producers.task.get(op.inputs[0]) if op.inputs else None
            continue
        if isinstance(op, df.MoveOp) and kv_role(op) is not None:  # a KV cache kept in place: a view of its rows
            deps = producers.deps(list(op.inputs))
            for r in op.outputs:
                producers.task[r] = deps[0] if deps else None
            continue
        if id(op) in fused_ops:
            continue
        if isinstance(op, df.AttentionOp):
            inputs = [op.q, op.k, op.v] + ([op.mask] if op.mask is not None else [])
            layer = plan_attention(op, producers.deps(inputs), weights)
        elif isinstance(op, df.MoeOp):
            layer = plan_moe(op, producers.deps([op.input]))
        else:
            group = fused_into.get(df.layer_of(op), [])
            layers.append(replace(_plan_layer(op, group, producers, weights, row_kernel), ops=(op, *group)))
            continue
        layers.append(replace(layer, ops=(op,)))
        producers.produced(layer, list(op.results))
    return Plan(tuple(layers))


def _longest_row(ops: Sequence[Operation]) -> int:
    """The longest row of the program's Shiftmax (an attention's keys) and I-LayerNorm ops: the system top level
    builds its row kernels for it (``codesign.rtl_system.longest_row``), I-LayerNorm's dividers included."""
    rows = [op.k.type.get_shape()[1] for op in ops if isinstance(op, df.AttentionOp)  # type: ignore[attr-defined]
            and op.softmax_choice() == df.SoftmaxApprox.SHIFTMAX]
    rows += [_row_length(op.results[0]) for op in ops if isinstance(op, df.LayerNormOp)
             and op.approx_choice() == df.LayerNormApprox.ILAYERNORM]
    return max(rows, default=0)


def _plan_layer(op: Operation, group: list[Operation], producers: _Producers,
                store: Mapping[str, Any] | None = None, row_kernel: int = 0) -> PlannedLayer:
    """One op and the element-wise epilogue ``group`` fused into it: one task (``store``: the compile's
    WeightStore, where a residual add's multipliers say whether they are per channel; ``row_kernel``: the
    program's longest row-kernel row, :func:`_longest_row`, which an I-LayerNorm's cycles on the system depend on)."""
    name = df.layer_of(op)
    results: list[SSAValue] = list(op.results)
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
    prologue: tuple[VectorWork, ...] = ()
    epilogue = []
    if isinstance(op, df.GemmOp):
        work = gemm_work(op)
        op_name = "gemm"
        if PER_TOKEN_ATTR in op.attributes:  # a row max and a per-row step in front, a per-row requant behind
            x, y = op.lhs, op.result
            prologue = (VectorWork(kind="rowquant", elements=numel(x), rows=_rows(x), bits=element_bits(x)),)
            epilogue.append(VectorWork(kind="requant", elements=numel(y), rows=_rows(y), bits=32))
            op_name = "rowquant+gemm"
    elif isinstance(op, df.EmbeddingOp):
        work = MoveWork(kind="gather", bytes=tensor_bytes(op.result))
        op_name = "embedding"
        ins = [op.indices]  # only the gathered rows of the table are read
    elif isinstance(op, df.MoveOp):
        work = _move_work(op)
        op_name = "move." + op.kind_value()
    else:
        kind, approx = _vector_kind(op)
        if kind == "softmax":
            approx = softmax_cost_name(approx)
        x = op.operands[0]
        work = VectorWork(kind=kind, elements=max(numel(v) for v in op.results), rows=_vector_rows(kind, x),
                          approx=approx, bits=element_bits(x), row_length=_row_length(op.results[0]),
                          in_bits=_widest(op.operands), out_bits=element_bits(op.results[0]),
                          quant=_quant_of(op, store), row_kernel=row_kernel if kind == "layernorm" else 0)
        op_name = op.name.split(".", 1)[1]
        if isinstance(op, df.ElementwiseOp):
            op_name += "." + op.kind_value()
    if isinstance(op, df.RopeOp):
        work, epilogue = rope_work(op)
    for member in group:
        kind, approx = _vector_kind(member)
        y = member.results[0]
        epilogue.append(VectorWork(kind=kind, elements=numel(y), rows=_vector_rows(kind, y), approx=approx,
                                   bits=element_bits(y), row_length=_row_length(y),
                                   in_bits=_widest(member.operands), out_bits=element_bits(y),
                                   quant=_quant_of(member, store)))
    weights = sum(tensor_bytes(v) for v in ins if _is_weight(v)) if not isinstance(op, df.EmbeddingOp) else 0
    if isinstance(work, GemmWork) and isinstance(op.attributes.get(GROUP_ATTR), IntegerAttr):
        rescale, scale_bytes = group_scale_work(op, work)
        epilogue.insert(0, rescale)
        weights += scale_bytes
        op_name += "+group-scale"
    act_in = sum(tensor_bytes(v) for v in ins if not _is_weight(v))
    out = sum(tensor_bytes(r) for r in results)
    deps = producers.deps(ins)
    stream: tuple[str, ...] = ()
    rows = 1
    if isinstance(op, (df.GemmOp, df.GeluOp, df.LayerNormOp, df.SoftmaxOp, df.RequantOp, df.ElementwiseOp)):
        rows = _rows(results[0])
        stream = producers.stream(_streamed_operands(op, group))
        stream = tuple(d for d in stream if d in deps)
        producers.ordered.add(name)
    spec = TaskSpec(name, act_in + weights, out, deps, tiles, stream, rows)
    if group:
        op_name += "+" + "+".join(m.name.split(".", 1)[1] for m in group)
    layer = PlannedLayer(name, (name,), partial(price_layer, spec, op_name, work, tuple(epilogue), weights,
                                                prologue=prologue))
    producers.produced(layer, results)
    for member in group:
        producers.produced(layer, list(member.results))
    return layer


def _move_work(op: df.MoveOp) -> MoveWork:
    """A move's work: an island member's, or a transpose of integers that moves the last axis (``transposed``:
    the system turns it around on a transposing ``LOAD``, compiler/backend/model.py ``_move``)."""
    work = MoveWork(kind=op.kind_value(), bytes=sum(tensor_bytes(r) for r in op.outputs),
                    quant="island_member" if _in_island(op) else "")
    attrs = op.properties.get("attrs")
    perm = attrs.data.get("perm") if isinstance(attrs, DictionaryAttr) else None
    out = op.results[0]
    if work.quant or work.kind != "transpose" or perm is None or not isinstance(out.type, TensorType) \
            or not isinstance(out.type.get_element_type(), IntegerType):
        return work
    order = [int(p) for p in perm.get_values()]  # type: ignore[attr-defined]
    if not order or order[-1] == len(order) - 1:
        return work
    return replace(work, quant="transposed", rows=_rows(out), row_length=_row_length(out), bits=element_bits(out))


def _widest(values: Sequence[SSAValue]) -> int:
    """The widest element bits among the tensor ``values`` (what a vector layer's loads move per element)."""
    return max((element_bits(v) for v in values if isinstance(v.type, TensorType)), default=0)


def _quant_attr(op: Operation | None) -> str:
    attr = op.properties.get("attrs") if isinstance(op, df.ElementwiseOp) else None
    quant = attr.data.get("quant") if isinstance(attr, DictionaryAttr) else None
    return quant.data if isinstance(quant, StringAttr) else ""


def _quant_of(op: Operation, store: Mapping[str, Any] | None = None) -> str:
    """An integer op's role (``VectorWork.quant``): ``tensor`` (a requant whose multiplier the compile's weight
    ``store`` holds once for the tensor), ``add`` (an integer residual add; ``add_channel`` where ``store`` holds
    its multipliers per channel), ``mul`` (an integer product of two activations), ``island`` (a ``quantize``
    closing a ``dequantize`` -> moves and pointwise steps -> ``quantize`` island; ``island_member`` the island's
    ``dequantize``, moves and steps: :func:`_in_island`), else ""."""
    if _in_island(op):
        return "island_member"
    if isinstance(op, df.RequantOp):  # the quantizer's per-channel requant8c, or one multiplier for the tensor
        me = store.get(df.layer_of(op)) if store is not None else None
        return "tensor" if me is not None and np.size(np.asarray(me)[0]) == 1 else ""
    quant = _quant_attr(op)
    if quant == "mul":  # the quantizer's product of two integer activations
        return quant
    if quant == "add":
        me = store.get(df.layer_of(op)) if store is not None else None
        return "add_channel" if me is not None and np.ndim(me) == 2 and np.shape(me)[1] > 1 else quant
    if quant != "quantize" or not op.operands:
        return ""
    source = _island_source(op.operands[0].owner)
    return "island" if isinstance(source, Operation) and _quant_attr(source) == "dequantize" else ""


def _island_operand(op: Operation) -> SSAValue | None:
    """The one operand through which ``op`` passes a float island on: a move's first operand, or an element-wise
    step's only operand that is no weight (a ReLU, a constant scale; compiler/backend/island.py checks that it is
    non-decreasing, or refuses the model); None for other ops."""
    if isinstance(op, df.MoveOp) and op.operands:
        return op.operands[0]
    if isinstance(op, df.ElementwiseOp) and not _quant_attr(op):
        live = list(dict.fromkeys(v for v in op.operands if not isinstance(v.owner, df.WeightOp)))  # x * x: one
        return live[0] if len(live) == 1 else None
    return None


def _island_source(op: Any) -> Any:
    """``op``'s producer chain followed back through moves and element-wise steps (:func:`_island_operand`)."""
    while isinstance(op, Operation) and (operand := _island_operand(op)) is not None:
        op = operand.owner
    return op


def _in_island(op: Operation) -> bool:
    """Whether ``op`` is the ``dequantize``, a move or a pointwise step of a float island (``dequantize`` -> moves
    and steps -> ``quantize`` s, as ``compiler/backend/model.py`` finds them): its source through those is a
    ``dequantize`` and its values reach only them and ``quantize`` s. The system top level runs no instruction for
    them (the quantizes' threshold layers read the integer source through a DMA window)."""
    source = _island_source(op)
    if not (isinstance(source, df.ElementwiseOp) and _quant_attr(source) == "dequantize"):
        return False
    frontier = [op]
    while frontier:
        for result in frontier.pop().results:
            for use in result.uses:
                user = use.operation
                if _island_operand(user) is use.operation.operands[use.index]:
                    frontier.append(user)
                elif _quant_attr(user) != "quantize":
                    return False
    return True


def _row_length(value: SSAValue) -> int:
    """Values per row of a tensor (its last dimension), 0 for a scalar."""
    shape = value.type.get_shape()  # type: ignore[attr-defined]
    return int(shape[-1]) if shape and shape[-1] > 0 else 0


def _rows(value: SSAValue) -> int:
    """Rows of a tensor in row-major order: every dimension but the last (tokens x batch for activations)."""
    shape = value.type.get_shape()  # type: ignore[attr-defined]
    return max(1, numel(value) // shape[-1]) if shape and shape[-1] > 0 else 1


def _streamed_operands(op: Operation, group: list[Operation]) -> list[SSAValue]:
    """The operands ``op`` reads in row order, so that it may read them row tile by row tile while their producer
    runs: a GEMM's left operand (its right one is needed whole), and every operand of row-wise and element-wise
    work that has the result's shape (a broadcast one is needed whole). The fused epilogue's operands (a residual)
    are read at the output tiles of the GEMM, so the GEMM waits for them whole."""
    if group:
        return [op.lhs] if isinstance(op, df.GemmOp) else []
    if isinstance(op, df.GemmOp):
        return [op.lhs]
    size = numel(op.results[0])
    return [v for v in op.operands if isinstance(v.type, TensorType) and numel(v) == size]


def price_layer(spec: TaskSpec, op_name: str, work: Work, epilogue: tuple[VectorWork, ...], weights: int,
                cost: CostFn, prologue: tuple[VectorWork, ...] = ()) -> LayerPlan:
    """One layer (``work``, the ``epilogue`` fused behind it, the ``prologue`` in front, ``weights`` bytes of
    weights among ``spec.bytes_in``) priced with ``cost``: its one task and the report's figures. The epilogue
    runs beside the array (:func:`overlap_epilogue`), or after it on the same queue where the GEMM's cost says
    ``execute_queue`` (:func:`serial_epilogue`; the first requant runs per fold, as the system's program fuses it),
    whose task then moves the bus bytes of that program's loads and stores (:func:`_execute_queue_spec`)."""
    c = cost(work)
    queue = isinstance(work, GemmWork) and bool(c.detail.get("execute_queue"))
    for index, extra in enumerate(epilogue):
        if queue:
            fused = int(c.detail["fused_requant_cycles"]) if index == 0 and extra.kind == "requant" else None
            e = cost(extra)
            if fused is None and e.detail.get("execute_queue") and not c.detail.get("epilogue_queued"):
                c = _store_barrier(c, work)
            c = serial_epilogue(c, e, fused)
            if fused is None and e.detail.get("execute_queue"):
                c = replace(c, detail={**c.detail, "epilogue_queued": True})
        else:
            c = overlap_epilogue(c, cost(extra))
    for first in prologue:  # in series: a row's codes need its max, i.e. the whole row, before the array starts
        p = cost(first)
        c = Cost(unit=c.unit, compute_cycles=c.compute_cycles + p.compute_cycles, tiles=c.tiles,
                 onchip_bytes=c.onchip_bytes + p.onchip_bytes,
                 detail={**c.detail, "prologue_cycles": int(c.detail.get("prologue_cycles", 0)) + p.compute_cycles})
    queued = bool(c.detail.get("execute_queue"))
    if isinstance(work, GemmWork) and c.detail.get("reread_bytes") and not queued:  # the mapping re-reads an operand
        spec = replace(spec, bytes_in=spec.bytes_in + int(c.detail["reread_bytes"]) * work.batch)
    offchip = spec.bytes_in + spec.bytes_out  # the report's bytes: the tensors' own, and the re-reads
    if isinstance(work, GemmWork) and queue:  # the task moves the program's bus bytes; the report keeps the tensors'
        spec = _execute_queue_spec(spec, work, weights, c)
    elif queued:  # a vector layer on the system: its row blocks' DMA is in its cycles
        spec = replace(spec, bytes_in=0, bytes_out=0, tiles=None, stream=())
    task = priced_task(spec, c, getattr(cost, "stream_buffer", None))
    plan = LayerPlan(name=spec.name, op=op_name, tasks=[task],
                     bytes_offchip=offchip, weight_bytes=weights, onchip_bytes=c.onchip_bytes,
                     detail=dict(c.detail), works=[*prologue, work, *epilogue])
    if task.stream and task.unit == "vector":  # its double-buffered row tiles, held next to the GEMM's buffers
        plan.detail["stream_buffer_bytes"] = 2 * -(-(task.bytes_in + task.bytes_out) // task.tiles)
    if isinstance(work, GemmWork):
        plan.macs = work.macs
        plan.macs_by_bits = {max(work.in_bits, work.w_bits): work.macs}
    return plan


def _store_barrier(cost: Cost, work: Work) -> Cost:
    """``cost`` of a GEMM on the system top level up to the first vector layer queued behind it: that layer starts
    after the GEMM's stores (a layer barrier, compiler/backend/tiles.py), so the GEMM's part lasts at least its store
    DMA's cycles (``hw.perf.execute_queue.store_cycles``). A GEMM with a short reduction (``k`` near the array's
    edge) is store-bound: each fold's rows are stored one element a cycle while the next fold computes."""
    assert isinstance(work, GemmWork)
    d = cost.detail
    store = work.batch * store_cycles(work.m, work.n, int(d["array_rows"]), int(d["array_cols"]))
    wait = max(0, store - cost.compute_cycles)
    if not wait:
        return cost
    return replace(cost, compute_cycles=cost.compute_cycles + wait, detail={**d, "store_wait_cycles": wait})


def _execute_queue_spec(spec: TaskSpec, work: GemmWork, weights: int, cost: Cost) -> TaskSpec:
    """``spec`` of a GEMM layer on the system top level (``gemm.execute_queue``): its loads as the program moves
    them in bus bytes (``cost.detail["load_bus_bytes"]``, what the first fold needs, ``lead_bus_bytes``, with the
    first tile) plus the epilogue's other inputs (a residual) as they are, its output in the store DMA's bus bytes
    (``hw.perf.execute_queue.store_cycles``, 16 bytes a cycle), one tile per fold (the cost's). The report's
    off-chip bytes stay the tensors' own."""
    d = cost.detail
    rows, cols = int(d["array_rows"]), int(d["array_cols"])
    a_bytes = work.batch * -(-work.m * work.k * work.in_bits // 8)
    # the epilogue's other inputs (a residual): loaded by its own vector layer where the cost prices it so
    others = 0 if d.get("epilogue_queued") else max(0, spec.bytes_in - weights - a_bytes)
    store = work.batch * BEAT_BYTES * store_cycles(work.m, work.n, rows, cols)
    return replace(spec, bytes_in=int(d["load_bus_bytes"]) + others, bytes_out=store, tiles=None,
                   lead_bytes_in=int(d["lead_bus_bytes"]))


def lower_module(module: ModuleOp, model: AcceleratorModel) -> list[LayerPlan]:
    """``module``'s plan priced on ``model`` (``plan_module`` then ``plan.price``)."""
    return price(plan_module(module), model)
