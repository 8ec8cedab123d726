"""Lower ``dataflow`` ops to hardware tasks priced by a target model.

Execution model (stated, so reports can be read): ops run one after another as the dependency graph allows; every
activation an op reads or writes goes through off-chip memory, except tensors inside a fused group (``fuse`` pass)
and scores inside ``flash`` / ``edge-moe`` attention, which stay on chip; each weight is read from off-chip once per
inference. Views (reshape, squeeze, ...) cost nothing and forward their producer.

A GEMM's cost may include its array's readout (``Cost.detail["drain_cycles"]``, see hw/models/fpga.py); a plan
keeps the readout that lengthens it in ``LayerPlan.detail["drain_cycles"]`` so the report can show it apart. A plan
also keeps the work items its tasks run (``LayerPlan.works``): the report sizes the hardware to them (an FPGA's
vector lanes hold only the units the compile used).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from xdsl.dialects import func
from xdsl.dialects.builtin import IntegerAttr, IntegerType, ModuleOp, StringAttr, TensorType
from xdsl.ir import Operation, SSAValue

from compiler.dialect import dataflow as df
from hw.models.base import AcceleratorModel, Cost
from hw.perf.scheduler import Task
from hw.perf.workload import GemmWork, MoveWork, VectorWork, Work

__all__ = ["LayerPlan", "lower_module", "gemm_work", "tensor_bytes", "element_bits", "overlap_epilogue",
           "readout_detail", "FUSED_ATTR", "TILES_ATTR"]

FUSED_ATTR = "fused_into"
TILES_ATTR = "tiles"
_VIEWS = ("reshape", "flatten", "squeeze", "unsqueeze", "shape")
#: Generic element-wise kinds -> the vector cost class that prices them.
_CHEAP = ("add", "sub", "neg", "abs", "min", "max", "where", "equal", "less", "greater", "not", "and", "or", "cast",
          "identity", "clip", "relu", "mod", "isnan", "isinf", "less_equal", "greater_equal")
_TRANSCENDENTAL = ("exp", "log", "erf", "tanh", "sigmoid", "softplus", "sqrt", "reciprocal", "pow", "div")
#: Vector kinds whose units work row by row (a row = the last dimension): their work carries its row count.
_ROW_KINDS = ("softmax", "layernorm", "rmsnorm", "gelu", "requant")


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


def _numel(value: SSAValue) -> int:
    n = 1
    for d in value.type.get_shape():  # type: ignore[attr-defined]
        n *= d
    return n


class _Lowering:
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


def gemm_work(op: df.GemmOp) -> GemmWork:
    batch, m, n, k = op.mnk()
    return GemmWork(m=m, n=n, k=k, batch=batch, in_bits=element_bits(op.lhs), w_bits=element_bits(op.rhs),
                    acc_bits=element_bits(op.result) if element_bits(op.result) >= 16 else 32,
                    weights_static=isinstance(op.rhs.owner, df.WeightOp))


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
    return _numel(value) // shape[-1] if kind in _ROW_KINDS and shape and shape[-1] > 0 else 1


def overlap_epilogue(cost: Cost, extra: Cost) -> Cost:
    """``cost`` with an epilogue ``extra`` fused behind it: the epilogue runs on the vector lanes while the array
    works on the next fold, so the layer takes the longer of the two. The array's readout (``drain_cycles``) is
    kept only as far as it makes the layer longer than the epilogue and the array's own compute."""
    compute = max(cost.compute_cycles, extra.compute_cycles)
    detail = cost.detail
    drain = int(detail.get("drain_cycles", 0))
    if drain:
        detail = {**detail, "drain_cycles": compute - max(cost.compute_cycles - drain, extra.compute_cycles)}
    return Cost(unit=cost.unit, compute_cycles=compute, tiles=cost.tiles,
                onchip_bytes=cost.onchip_bytes + extra.onchip_bytes, detail=detail)


def readout_detail(*costs: Cost) -> dict[str, int]:
    """``{"drain_cycles": total}`` of costs run one after another, or ``{}`` when none has a readout."""
    drain = sum(int(c.detail.get("drain_cycles", 0)) for c in costs)
    return {"drain_cycles": drain} if drain else {}


def _softmax_cost_name(approx: str) -> str:
    return {"base2": "softermax", "log2q": "shiftmax", "softmax-free": "exact"}.get(approx, approx)


def _lower_attention(lw: _Lowering, op: df.AttentionOp) -> LayerPlan:
    name = df.str_attr(op, "layer")
    b, sq, _ = op.q.type.get_shape()  # type: ignore[attr-defined]
    sk = op.k.type.get_shape()[1]  # type: ignore[attr-defined]
    heads, dh = df.int_attr(op, "num_heads"), df.int_attr(op, "head_dim")
    dv = op.v.type.get_shape()[2] // df.kv_heads(op)  # type: ignore[attr-defined]
    bits = element_bits(op.q)
    algorithm = df.str_attr(op, "algorithm")
    softmax = df.str_attr(op, "softmax")
    score_bytes = -(-b * heads * sq * sk * bits // 8)
    qk = GemmWork(m=sq, n=sk, k=dh, batch=b * heads, in_bits=bits, w_bits=bits, weights_static=False)
    av = GemmWork(m=sq, n=dv, k=sk, batch=b * heads, in_bits=bits, w_bits=bits, weights_static=False)
    sm = VectorWork(kind="softmax", elements=b * heads * sq * sk, rows=b * heads * sq,
                    approx=_softmax_cost_name(softmax), bits=bits)
    c_qk, c_av, c_sm = lw.model.cost(qk), lw.model.cost(av), lw.model.cost(sm)
    inputs = [op.q, op.k, op.v] + ([op.mask] if op.mask is not None else [])
    deps = lw.deps(inputs)
    out_bytes = tensor_bytes(op.result)
    q_bytes, k_bytes, v_bytes = tensor_bytes(op.q), tensor_bytes(op.k), tensor_bytes(op.v)
    mask_bytes = tensor_bytes(op.mask) if op.mask is not None else 0
    plan = LayerPlan(name=name, op="attention", tasks=[], macs=qk.macs + av.macs)
    plan.macs_by_bits = {bits: qk.macs + av.macs}
    plan.onchip_bytes = c_qk.onchip_bytes + c_av.onchip_bytes + c_sm.onchip_bytes
    if softmax == "softmax-free":
        return _lower_soft(lw, op, plan, b=b, sq=sq, heads=heads, dh=dh, dv=dv, bits=bits,
                           bytes_in=q_bytes + v_bytes, bytes_out=out_bytes, deps=deps)
    if algorithm == "standard":
        # Scores are materialised: QK^T writes them, softmax reads and writes them, A.V reads them.
        t1 = lw.task(f"{name}.qk", c_qk, q_bytes + k_bytes, score_bytes, deps)
        t2 = lw.task(f"{name}.softmax", c_sm, score_bytes + mask_bytes, score_bytes, (t1.name,))
        t3 = lw.task(f"{name}.av", c_av, score_bytes + v_bytes, out_bytes, (t2.name,) + deps)
        plan.tasks = [t1, t2, t3]
        plan.works = [qk, sm, av]
        plan.detail["score_bytes_offchip"] = 4 * score_bytes
        plan.detail.update(readout_detail(c_qk, c_av))
    else:
        # flash / edge-moe: scores stay on chip; lanes, tiles and re-reads priced in compiler/schedule/attention.py.
        from compiler.schedule.attention import fused_attention

        fused, bytes_in, bytes_out, detail, works = fused_attention(
            lw.model, op, b=b, sq=sq, sk=sk, heads=heads, dh=dh, dv=dv, bits=bits,
            softmax_cost=_softmax_cost_name(softmax), q_bytes=q_bytes, k_bytes=k_bytes, v_bytes=v_bytes,
            mask_bytes=mask_bytes, out_bytes=out_bytes)
        plan.tasks = [lw.task(name, fused, bytes_in, bytes_out, deps)]
        plan.works = works
        plan.onchip_bytes = max(plan.onchip_bytes, fused.onchip_bytes)
        plan.detail.update(detail)
    plan.detail["score_bytes_standard"] = 4 * score_bytes
    if "passes" in c_qk.detail:
        plan.detail["passes"] = c_qk.detail["passes"]
    plan.bytes_offchip = sum(t.bytes_in + t.bytes_out for t in plan.tasks)
    return plan


def _lower_soft(lw: _Lowering, op: df.AttentionOp, plan: LayerPlan, *, b: int, sq: int, heads: int, dh: int,
                dv: int, bits: int, bytes_in: int, bytes_out: int, deps: tuple[str, ...]) -> LayerPlan:
    """SOFT (softmax-free) attention: m landmarks, Gaussian kernels, a Newton-Schulz pseudo-inverse, three products.

    Per head: K1 = exp(-|Q - L|^2 / 2) (an S x m x d product + S*m exponentials), K2 the same for L x L, 20
    Newton-Schulz iterations of two m x m x m products (plus the initial one), then K1 (pinv(K2) (K1^T V)). Nothing
    of size S x S exists, so no score traffic; the N x m kernels are small enough to stay on chip.
    """
    from compiler.numerics.softmax_free import NEWTON_ITERS
    from compiler.simulate.approx import soft_landmarks

    m = soft_landmarks(sq)
    batch = b * heads
    gemms = [
        GemmWork(m=sq, n=m, k=dh, batch=batch, in_bits=bits, w_bits=bits, weights_static=False),  # Q.L^T
        GemmWork(m=m, n=m, k=dh, batch=batch, in_bits=bits, w_bits=bits, weights_static=False),  # L.L^T
    ] + [GemmWork(m=m, n=m, k=m, batch=batch, in_bits=bits, w_bits=bits, weights_static=False)] * (2 * NEWTON_ITERS + 1) + [
        GemmWork(m=m, n=dv, k=sq, batch=batch, in_bits=bits, w_bits=bits, weights_static=False),  # K1^T V
        GemmWork(m=m, n=dv, k=m, batch=batch, in_bits=bits, w_bits=bits, weights_static=False),  # pinv . (K1^T V)
        GemmWork(m=sq, n=dv, k=m, batch=batch, in_bits=bits, w_bits=bits, weights_static=False),  # K1 . (...)
    ]
    exps = VectorWork(kind="softmax", elements=batch * (sq * m + m * m), rows=batch * (sq + m), approx="exact",
                      bits=bits)
    costs = [lw.model.cost(g) for g in gemms]
    c_exp = lw.model.cost(exps)
    cycles = sum(c.compute_cycles for c in costs) + c_exp.compute_cycles
    fused = Cost(unit=costs[0].unit, compute_cycles=cycles, tiles=1,
                 onchip_bytes=sum(c.onchip_bytes for c in costs) + c_exp.onchip_bytes)
    plan.tasks = [lw.task(plan.name, fused, bytes_in, bytes_out, deps)]
    plan.works = [*gemms, exps]
    plan.macs = sum(g.macs for g in gemms)
    plan.macs_by_bits = {bits: plan.macs}
    plan.onchip_bytes = fused.onchip_bytes
    plan.detail.update({"landmarks": m, "newton_iters": NEWTON_ITERS, "score_bytes_offchip": 0,
                        "score_bytes_standard": 4 * (-(-batch * sq * sq * bits // 8))})
    plan.detail.update(readout_detail(*costs))
    if "passes" in costs[0].detail:
        plan.detail["passes"] = costs[0].detail["passes"]
    plan.bytes_offchip = bytes_in + bytes_out
    return plan


def lower_module(module: ModuleOp, model: AcceleratorModel) -> list[LayerPlan]:
    """Tasks for every costed op of ``module``'s ``main`` function, in program order."""
    lw = _Lowering(model)
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
                lw.producer[r] = lw.producer.get(op.inputs[0]) if op.inputs else None
            continue
        if id(op) in fused_ops:
            continue
        name = df.str_attr(op, "layer")  # type: ignore[arg-type]
        group = fused_into.get(name, [])
        results = list(op.results)
        ins = list(op.operands)
        if isinstance(op, df.AttentionOp):
            plan = _lower_attention(lw, op)
            lw.add_plan(plan, results)
            continue
        if isinstance(op, df.MoeOp):
            from compiler.schedule.moe import lower_moe  # router -> dispatch -> experts -> combine

            lw.add_plan(lower_moe(lw, op), results)
            continue
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
                approx = _softmax_cost_name(approx)
            x = op.operands[0]
            work = VectorWork(kind=kind, elements=max(_numel(v) for v in op.results), rows=_vector_rows(kind, x),
                              approx=approx, bits=element_bits(x))
            op_name = op.name.split(".", 1)[1] + (("." + df.str_attr(op, "kind")) if isinstance(op, df.ElementwiseOp) else "")
        cost = model.cost(work)
        works = [work]
        for member in group:
            kind, approx = _vector_kind(member)
            y = member.results[0]
            works.append(VectorWork(kind=kind, elements=_numel(y), rows=_vector_rows(kind, y), approx=approx,
                                    bits=element_bits(y)))
            cost = overlap_epilogue(cost, model.cost(works[-1]))
        weights = lw.weight_bytes(ins) if not isinstance(op, df.EmbeddingOp) else 0
        act_in = lw.activation_bytes(ins)
        out = sum(tensor_bytes(r) for r in results)
        task = lw.task(name, cost, act_in + weights, out, lw.deps(ins), tiles)
        plan = LayerPlan(name=name, op=op_name + ("+" + "+".join(m.name.split(".", 1)[1] for m in group) if group else ""),
                         tasks=[task], bytes_offchip=act_in + weights + out, weight_bytes=weights,
                         onchip_bytes=cost.onchip_bytes, detail=dict(cost.detail), works=works)
        if isinstance(work, GemmWork):
            plan.macs = work.macs
            plan.macs_by_bits = {max(work.in_bits, work.w_bits): work.macs}
        lw.add_plan(plan, results)
        for member in group:
            for r in member.results:
                lw.producer[r] = task.name
    return lw.plans
