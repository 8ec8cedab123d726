"""A whole compiled model as one ``cds1`` program: every integer op of the IR, in program order, on the machine.

The host split (docs/ISA.md, "Host split"): the ISA has no float instructions, so the host runs the float
*prologue* (ops whose inputs are model inputs or other prologue values: ViT's patch embedding in float, BERT's
and GPT-2's embedding sums, the attention masks) and writes its quantized results into the DRAM image as the
program's inputs; an attention's float mask is given on the scores' grid (compiler/backend/attention.py). The
program runs from there; where a float op reads a device integer for good (a final ``dequantize``), that integer
is a program output and the rest, the *epilogue*, runs on the host. A float island *between* integer ops (a
dequantize, pure movement, non-decreasing pointwise steps such as a ReLU, a quantize: GPT-2's QKV split, ViT's
class-token gather, OPT's FFN) runs on the device as a ``VEC threshold`` (compiler/backend/island.py). Any other
float op between integer ops, and any integer op with no code generator, is refused with one line naming the op and
node.

Per op: weight GEMMs with their fused requant are gemm.py's layers; requant, residual add (``requant_add``),
I-LayerNorm, ShiftGELU and device moves are row-block vector layers (tiles.py); attention is attention.py. Every
device value has a DRAM region named after its op, so each intermediate can be compared with the simulator's.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from xdsl.dialects import func
from xdsl.dialects.builtin import DictionaryAttr, IntegerType, ModuleOp, StringAttr, TensorType
from xdsl.ir import Operation, SSAValue

from compiler.backend.attention import AttentionPlan, emit_attention
from compiler.backend.constants import DesignScales, ilayernorm_config, per_tensor, shiftgelu_config
from compiler.backend.gemm import ProgramBuilder
from compiler.backend.image import Region
from compiler.backend.island import (
    column_constants,
    island_window,
    per_column_island,
    pointwise_step,
    threshold_table,
    trace_moves,
)
from compiler.backend.machine import Geometry
from compiler.backend.rope import emit_rope
from compiler.backend.select import fused_requant, gemm_layer
from compiler.backend.tiles import Slot, VecStep, View, vector_layer
from compiler.dialect import dataflow as df
from compiler.dialect.choices import GeluApprox, LayerNormApprox, LayerNormKind
from compiler.simulate.registry import SimContext, py_attr
from hw.errors import InputError
from hw.isa import ConfigReg, Program, Space, VecFn

__all__ = ["ModelProgram", "build_model_program"]


@dataclass
class ModelProgram:
    """A model's program and the host's side of it.

    ``inputs``: values the host prologue computes and writes before the run; ``masks``: per masked attention, its
    plan and the float mask value (None for causal only) the host quantizes (attention.host_mask_halves);
    ``outputs``: device values the host epilogue reads; ``regions``: every device value's region; ``host_ops``:
    the names of the ops the host runs."""

    builder: ProgramBuilder
    program: Program | None = None
    inputs: dict[SSAValue, Region] = field(default_factory=dict)
    masks: list[tuple[AttentionPlan, SSAValue | None]] = field(default_factory=list)
    outputs: dict[SSAValue, Region] = field(default_factory=dict)
    regions: dict[SSAValue, Region] = field(default_factory=dict)
    host_ops: list[str] = field(default_factory=list)


def _name(op: Operation) -> str:
    layer = op.properties.get("layer")
    return layer.data if isinstance(layer, StringAttr) else op.name


def _where(op: Operation) -> str:
    return f"system backend: {op.name} '{_name(op)}'"


def _shape(value: SSAValue) -> tuple[int, ...]:
    t = value.type
    assert isinstance(t, TensorType)
    return tuple(int(d) for d in t.get_shape())


def _attrs(op: Operation) -> dict[str, Any]:
    attr = op.properties.get("attrs")
    return py_attr(attr) if isinstance(attr, DictionaryAttr) else {}


def _quant(op: Operation) -> str | None:
    if isinstance(op, df.ElementwiseOp):
        return _attrs(op).get("quant")
    return None


def _is_integer(value: SSAValue) -> bool:
    """Whether ``value`` holds integers or booleans (a model input of token ids or a mask)."""
    el = value.type.get_element_type() if isinstance(value.type, TensorType) else None
    return isinstance(el, IntegerType)


def _out_space(g: Geometry, bits: int) -> Space:
    """Where a vector result of ``bits`` waits for its store: the scratchpad when its lanes hold it."""
    return Space.SP if bits <= g.in_bits else Space.ACC


def _const_rows(g: Geometry, values: np.ndarray) -> np.ndarray:
    """One element row of per-channel words as constant rows of ``width`` lanes (spanning as VEC reads it)."""
    v = np.asarray(values, np.int64).reshape(-1)
    span = -(-v.size // g.width)
    out = np.zeros(span * g.width, np.int64)
    out[:v.size] = v
    return out.reshape(span, g.width)


class _Walker:
    def __init__(self, module: ModuleOp, weights: Mapping[str, np.ndarray], scales: DesignScales, geo: Geometry):
        self.weights, self.scales, self.g = weights, scales, geo
        self.mp = ModelProgram(ProgramBuilder(geo))
        self.ctx = SimContext(weights=weights)
        self.kind: dict[SSAValue, str] = {}  # device | host | island | const
        # island float value -> (its device source, the dequantize's result, the moves from there)
        self.island: dict[SSAValue, tuple[SSAValue, SSAValue, list[Operation]]] = {}
        self.producer: dict[SSAValue, Operation] = {}
        self.done: set[Operation] = set()
        self.layernorm_rms = 0  # the layernorm_rms register as the program has left it (0 at reset)
        fn = next(op for op in module.walk() if isinstance(op, func.FuncOp))
        self.ops = list(fn.body.block.ops)
        self.position = {op: i for i, op in enumerate(self.ops)}
        for arg in fn.body.block.args:
            self.kind[arg] = "host"

    # --- regions ---------------------------------------------------------------------------------------------------

    def _place(self, value: SSAValue, name: str) -> Region:
        bits = df.int_bits(value)
        if bits not in (8, 16, 32):
            raise InputError(f"system backend: value of '{name}' is {value.type}; DRAM holds int8, int16, int32")
        region = self.mp.builder.image.place(name, _shape(value), bits // 8)
        self.mp.regions[value] = region
        self.kind[value] = "device"
        return region

    def _region(self, value: SSAValue, user: Operation) -> Region:
        kind = self.kind.get(value)
        if kind == "device":
            return self.mp.regions[value]
        producer = self.producer.get(value)
        culprit = producer if producer is not None else user
        if kind == "host" and producer is not None and df.int_bits(value) in (8, 16, 32):
            region = self._place(value, f"input.{_name(producer)}")  # the host prologue writes it
            self.mp.inputs[value] = region
            return region
        if kind == "const" and producer is not None and df.int_bits(value) in (8, 16, 32):  # a position table
            region = self._place(value, _name(producer))
            self.mp.builder.image.write(region.name, np.asarray(self.weights[region.name]).reshape(region.shape))
            return region
        raise InputError(f"{_where(culprit)}: runs on the host between integer ops that run on the device; the system "
                         f"backend runs float ops only before the first and after the last integer op "
                         f"(docs/ISA.md, Host split)")

    def _view(self, value: SSAValue, user: Operation) -> View:
        return View.of(self._region(value, user))

    # --- the walk --------------------------------------------------------------------------------------------------

    def _classify(self) -> None:
        """Mark the islands and, per integer op, whether the float prologue needs it (then the host runs it)."""
        self.category: dict[Operation, str] = {}
        index = self._index_ops()
        for op in self.ops:
            if isinstance(op, df.WeightOp):
                self.category[op] = "const"
            elif isinstance(op, func.ReturnOp):
                self.category[op] = "return"
            elif op in index:
                self.category[op] = "float"  # host work on integer inputs (ids, masks), none of the device's data
            elif _quant(op) in (None, "add", "mul") and all(df.int_bits(r) in (8, 16, 32) for r in op.results) \
                    and all(df.int_bits(v) in (8, 16, 32) or isinstance(v.owner, df.WeightOp)
                    or (isinstance(op, df.AttentionOp) and i == 3) for i, v in enumerate(op.operands)):
                self.category[op] = "int"
            else:
                self.category[op] = "float"
        for op in self.ops:
            if _quant(op) == "dequantize":
                members = self._island_members(op)
                for m in members or ():
                    self.category[m] = "island"
        # reverse program order is reverse topological order: what each op's results reach
        reaches_int: dict[Operation, bool] = {}
        reaches_boundary: dict[Operation, bool] = {}
        for op in reversed(self.ops):
            users = [u.operation for r in op.results for u in r.uses]
            reaches_int[op] = any(self.category.get(u) in ("int", "island") or reaches_int.get(u, False)
                                  for u in users)
            reaches_boundary[op] = any((self.category.get(u) == "float" and reaches_int.get(u, False))
                                       or reaches_boundary.get(u, False) for u in users)
        self.prologue = {op for op in self.ops if self.category[op] == "int" and reaches_boundary[op]}
        if not any(self.category[op] in ("int", "island") and op not in self.prologue for op in self.ops):
            first = next((op for op in self.ops if self.category[op] == "float"), None)
            culprit = f"{_where(first)}: " if first is not None else "system backend: "
            raise InputError(f"{culprit}the model has no integer ops for the device (compile with --quant int8)")
        # The prologue may hold integer embedding GEMMs (ViT's patch projection before its float class token and
        # position add); any other integer op feeding float work that feeds the device again is a float island
        # the device cannot run: refuse it rather than move the model's body to the host.
        between = [op for op in self.ops
                   if self.category[op] == "float" and reaches_int[op] and self._int_ancestors(op) - self._embedding]
        if between:  # name the float computation itself rather than the casts around it
            op = next((o for o in between if _quant(o) is None), between[0])
            raise InputError(f"{_where(op)}: a float op between integer ops; the system backend runs float ops "
                             f"only before and after the integer ops (docs/ISA.md, Host split)")

    def _index_ops(self) -> set[Operation]:
        """Generic ops that compute on the model's integer inputs and constants only (RoBERTa's position ids: a
        cumulative sum of the non-padding mask, in int32): index arithmetic the host runs before the device, not
        quantized data, whatever integer type its results have."""
        index: set[Operation] = set()
        for op in self.ops:
            if not isinstance(op, (df.ElementwiseOp, df.MoveOp, df.ReduceOp)) or _quant(op) is not None:
                continue
            if all(v.owner in index or isinstance(v.owner, df.WeightOp) or (
                    not isinstance(v.owner, Operation) and _is_integer(v)) for v in op.operands):
                index.add(op)
        return index

    @property
    def _embedding(self) -> set[Operation]:
        return {op for op in self.prologue if isinstance(op, (df.GemmOp, df.RequantOp))}

    def _int_ancestors(self, op: Operation) -> set[Operation]:
        seen: set[Operation] = set()
        stack = [op]
        while stack:
            for v in stack.pop().operands:
                owner = v.owner
                if isinstance(owner, Operation) and owner not in seen:
                    seen.add(owner)
                    stack.append(owner)
        return {o for o in seen if self.category.get(o) == "int"}

    def _island_members(self, dequant: Operation) -> list[Operation] | None:
        """The dequantize, the moves and the quantizes of an island starting at ``dequant``, or None if any use
        of its float values is something else (then it is float work for the host)."""
        members, frontier, off_axis = [dequant], [dequant], False
        while frontier:
            op = frontier.pop()
            for r in op.results:
                for use in r.uses:
                    user = use.operation
                    if user in members:
                        continue
                    if _quant(user) == "quantize":
                        members.append(user)
                    elif (isinstance(user, df.MoveOp) and all(isinstance(v.owner, df.WeightOp) or i == use.index
                                                              for i, v in enumerate(user.operands))) \
                            or pointwise_step(user, r, self.scales.consts, self.ctx) is not None:
                        members.append(user)
                        frontier.append(user)
                    elif pointwise_step(user, r, self.scales.consts, self.ctx, off_axis=True) is not None:
                        members.append(user)  # a per-channel constant off the last axis: the window decides
                        frontier.append(user)
                        off_axis = True
                    else:
                        return None
        members.sort(key=self.position.__getitem__)
        return members if not off_axis or per_column_island(members, self.scales.consts, self.ctx) else None

    def run(self) -> ModelProgram:
        self._classify()
        for op in self.ops:
            for r in op.results:
                self.producer[r] = op
            category = self.category[op]
            if category == "const":
                self.kind[op.results[0]] = "const"
            elif category == "return":
                for v in op.operands:
                    self._leave(v)
            elif op in self.done:
                continue
            elif category == "island" and self._island(op):
                self.mp.builder.end_layer(_name(op))
            elif category == "int" and op not in self.prologue:
                self._device(op)
                self.mp.builder.end_layer(_name(op))
            else:
                self._host(op)
        self.mp.program = self.mp.builder.finish()
        return self.mp

    def _island(self, op: Operation) -> bool:
        """Record an island's dequantize, moves and pointwise steps, emit its quantizes; False when its source is a
        host value."""
        if _quant(op) == "dequantize":
            if self.kind.get(op.operands[0]) != "device":
                return False
            self.kind[op.results[0]] = "island"
            self.island[op.results[0]] = (op.operands[0], op.results[0], [])
            return True
        island = next((v for v in op.operands if self.kind.get(v) == "island"), None)
        if island is None:
            return False
        if isinstance(op, df.MoveOp) or (isinstance(op, df.ElementwiseOp) and _quant(op) is None):
            source, root, chain = self.island[island]
            for r in op.results:
                self.kind[r] = "island"
                self.island[r] = (source, root, [*chain, op])
        else:
            self._threshold(op)
            return True
        return True  # no instructions: the threshold layers read the source's window

    def _leave(self, value: SSAValue) -> None:
        """``value`` is read by the host: a device value becomes an output; an island's source likewise."""
        if self.kind.get(value) == "device":
            self.mp.outputs[value] = self.mp.regions[value]
        elif self.kind.get(value) == "island":
            source = self.island[value][0]
            self.mp.outputs[source] = self.mp.regions[source]

    def _host(self, op: Operation) -> None:
        for v in op.operands:
            self._leave(v)
        for r in op.results:
            self.kind[r] = "host"
        self.mp.host_ops.append(_name(op))

    # --- device ops ------------------------------------------------------------------------------------------------

    def _device(self, op: Operation) -> None:
        if isinstance(op, df.GemmOp):
            self._gemm(op)
        elif isinstance(op, df.RequantOp):
            self._requant(op)
        elif isinstance(op, df.ElementwiseOp) and _quant(op) == "add":
            self._residual(op)
        elif isinstance(op, df.ElementwiseOp) and _quant(op) == "mul":
            self._product(op)
        elif isinstance(op, df.LayerNormOp):
            self._layernorm(op)
        elif isinstance(op, df.GeluOp):
            self._gelu(op)
        elif isinstance(op, df.AttentionOp):
            self._attention(op)
        elif isinstance(op, df.MoveOp):
            self._move(op)
        elif isinstance(op, df.RopeOp):
            self._rope(op)
        elif isinstance(op, df.MoeOp):
            raise InputError(f"{_where(op)}: an MoE block has no code generator: VEC topk computes its routing, but "
                             "its float64 combine weights and its data-dependent dispatch have no cds1 instructions "
                             "(docs/ISA.md, Host split)")
        else:
            raise InputError(f"{_where(op)}: no code generator for this op on the system backend (docs/ISA.md lists "
                             f"the units)")

    def _gemm(self, op: df.GemmOp) -> None:
        layer = gemm_layer(op, self.weights)
        x = self._region(op.lhs, op)
        b = self.mp.builder
        x2 = b.image.alias(f"{layer.name}.x", x, (layer.m, layer.k))
        _, y = b.gemm(layer, x2)
        rq = fused_requant(op)
        out = rq.result if rq is not None else op.result
        if rq is not None:
            self.done.add(rq)
        self.mp.regions[out] = b.image.alias(f"{layer.name}.out", y, _shape(out))
        self.kind[out] = "device"

    def _rows_cols(self, value: SSAValue) -> tuple[int, int]:
        shape = _shape(value)
        return int(np.prod(shape[:-1], dtype=np.int64)), shape[-1]

    def _requant(self, op: df.RequantOp) -> None:
        name = _name(op)
        me = np.asarray(self.weights[name], np.int64)
        bits = op.out_bits_value()
        src = self._view(op.operands[0], op)
        out = View.of(self._place(op.result, name))
        rows, n = self._rows_cols(op.result)
        step = VecStep(VecFn.REQUANT, 0, 1, bits)
        configs: list[tuple[ConfigReg, int]] = []
        table = None
        if me[0].size == 1:
            m, e = int(me[0].reshape(-1)[0]), int(me[1].reshape(-1)[0])
            configs = [(ConfigReg.REQUANT_M, m), (ConfigReg.REQUANT_E, e)]
        else:
            table = np.concatenate([_const_rows(self.g, me[0]), _const_rows(self.g, me[1])])
            step = VecStep(VecFn.REQUANT, 0, 1, bits, const_row=0)
        vector_layer(self.mp.builder, name, rows, [Slot(Space.ACC, n), Slot(_out_space(self.g, bits), n)],
                     [(src, 0)], [step], [(1, out)], table, configs)

    def _residual(self, op: df.ElementwiseOp) -> None:
        name = _name(op)
        me = np.asarray(self.weights[name], np.int64)
        bits = int(_attrs(op)["bits"])
        a, b = (self._view(v, op) for v in op.operands[:2])
        out = View.of(self._place(op.results[0], name))
        rows, n = self._rows_cols(op.results[0])
        slots = [Slot(Space.ACC, n), Slot(Space.ACC, n), Slot(_out_space(self.g, bits), n)]
        if me.shape[1] == 1:
            configs = [(ConfigReg.REQUANT_M, int(me[0, 0])), (ConfigReg.REQUANT_E, int(me[1, 0])),
                       (ConfigReg.RESIDUAL_M, int(me[2, 0])), (ConfigReg.RESIDUAL_E, int(me[3, 0]))]
            vector_layer(self.mp.builder, name, rows, slots, [(a, 0), (b, 1)],
                         [VecStep(VecFn.REQUANT_ADD, 0, 2, bits, aux=1)], [(2, out)], None, configs)
            return
        # Per-channel multipliers: each branch requantized per channel to int32 in place (saturating), then a
        # unit-multiplier saturating add. Exact when neither branch can leave int32 (|x| <= 2^(bits - 1) times
        # m / 2^e, rounded), and when one can but the other stays 2^(bits - 1) inside int32: a branch that
        # saturates is then beyond the output's range by more than the other can take back, so the output
        # saturates to the same side as the exact sum does (a GEMM's int32 accumulator on a finer output grid).
        bounds, ratios = [], []
        for i, v in enumerate(op.operands[:2]):
            ratios.append(float(np.max(me[2 * i].astype(np.float64) * np.exp2(-me[2 * i + 1].astype(np.float64)))))
            bounds.append(2.0 ** ((df.int_bits(v) or 32) - 1) * ratios[-1] + 1)
        wide = [i for i, bound in enumerate(bounds) if bound >= 2.0**31 - 1]
        if len(wide) == 2 or (wide and bounds[1 - wide[0]] + 2.0 ** (bits - 1) >= 2.0**31 - 1):
            i = wide[-1]
            raise InputError(f"{_where(op)}: operand {i} times its per-channel multiplier {ratios[i]:.3g} could "
                             f"leave int32 before the add")
        span = -(-n // self.g.width)
        table = np.concatenate([_const_rows(self.g, row) for row in me])
        unit = ((ConfigReg.REQUANT_M, 1), (ConfigReg.REQUANT_E, 0), (ConfigReg.RESIDUAL_M, 1),
                (ConfigReg.RESIDUAL_E, 0))
        steps = [VecStep(VecFn.REQUANT, 0, 0, 32, const_row=0), VecStep(VecFn.REQUANT, 1, 1, 32, const_row=2 * span),
                 VecStep(VecFn.REQUANT_ADD, 0, 2, bits, aux=1, configs=unit)]
        vector_layer(self.mp.builder, name, rows, slots, [(a, 0), (b, 1)], steps, [(2, out)], table)

    def _product(self, op: df.ElementwiseOp) -> None:
        """The quantizer's product of two integer activations: both loaded into accumulator slots, ``VEC mul`` (at
        most 2^30 for 16-bit operands: the 32-bit clamp never acts), then ``VEC requant`` by the op's ``(m, e)``."""
        name = _name(op)
        m, e = (int(v) for v in np.asarray(self.weights[name], np.int64).reshape(2))
        bits = int(_attrs(op)["bits"])
        widths = [df.int_bits(v) or 32 for v in op.operands[:2]]
        if sum(widths) > 32:
            raise InputError(f"{_where(op)}: a product of {widths[0]}- and {widths[1]}-bit integers can leave the "
                             "32-bit lanes of VEC mul")
        a, b = (self._view(v, op) for v in op.operands[:2])
        out = View.of(self._place(op.results[0], name))
        rows, n = self._rows_cols(op.results[0])
        slots = [Slot(Space.ACC, n), Slot(Space.ACC, n), Slot(_out_space(self.g, bits), n)]
        steps = [VecStep(VecFn.MUL, 0, 0, 32, aux=1), VecStep(VecFn.REQUANT, 0, 2, bits)]
        vector_layer(self.mp.builder, name, rows, slots, [(a, 0), (b, 1)], steps, [(2, out)], None,
                     [(ConfigReg.REQUANT_M, m), (ConfigReg.REQUANT_E, e)])

    def _layernorm(self, op: df.LayerNormOp) -> None:
        name = _name(op)
        if op.approx_choice() != LayerNormApprox.ILAYERNORM:
            raise InputError(f"{_where(op)}: only I-LayerNorm (--layernorm ilayernorm) has a vector unit here")
        config = ilayernorm_config(op, self.scales)
        bias = config["bias"]
        if bias is None:
            raise InputError(f"{_where(op)}: a computed gamma or beta has no constant bias row")
        if config["eps"] is None:
            raise InputError(f"{_where(op)}: a float input has no fixed epsilon in variance units (quantize it)")
        if int(np.abs(bias).max(initial=0)) >= 1 << 31:
            raise InputError(f"{_where(op)}: its integer bias does not fit the 32-bit constant words")
        src = self._view(op.operands[0], op)
        out = View.of(self._place(op.results[0], name))
        rows, n = self._rows_cols(op.results[0])
        configs = [(ConfigReg.LAYERNORM_EPS, config["eps"])]
        rms = int(op.norm_kind() == LayerNormKind.RMSNORM)
        if rms != self.layernorm_rms:  # the register resets to 0 (LayerNorm): written only where it changes
            configs.append((ConfigReg.LAYERNORM_RMS, rms))
            self.layernorm_rms = rms
        vector_layer(self.mp.builder, name, rows, [Slot(Space.ACC, n), Slot(Space.ACC, n)], [(src, 0)],
                     [VecStep(VecFn.ILAYERNORM, 0, 1, 32, const_row=0)], [(1, out)], _const_rows(self.g, bias),
                     configs)

    def _gelu(self, op: df.GeluOp) -> None:
        name = _name(op)
        if op.approx_choice() != GeluApprox.SHIFTGELU:
            raise InputError(f"{_where(op)}: only the per-element ShiftGELU (--gelu shiftgelu) has a vector unit here")
        scale = per_tensor(self.scales.scale(op.operands[0]))
        x0 = shiftgelu_config(scale, {"x0_bits": 29, "out_bits": 8})["x0"]
        src = self._view(op.operands[0], op)
        out = View.of(self._place(op.results[0], name))
        rows, n = self._rows_cols(op.results[0])
        vector_layer(self.mp.builder, name, rows, [Slot(Space.ACC, n), Slot(Space.ACC, n)], [(src, 0)],
                     [VecStep(VecFn.SHIFTGELU, 0, 1, 32)], [(1, out)], None, [(ConfigReg.SHIFTGELU_X0, x0)])

    def _rope(self, op: df.RopeOp) -> None:
        """A rotary embedding as a partner product and a vector layer (compiler/backend/rope.py)."""
        name = _name(op)
        tables = [self.scales.consts.get(v) for v in op.operands[1:3]]
        if any(t is None for t in tables) or name not in self.weights:
            raise InputError(f"{_where(op)}: computed cos / sin tables or a float rotation have no code generator "
                             "(the tables must be constants, the input int8)")
        cos_q, sin_q = (np.asarray(t.data, np.int64) for t in tables)  # type: ignore[union-attr]
        me = np.asarray(self.weights[name], np.int64).reshape(2)
        x = self._region(op.operands[0], op)
        out = self._place(op.results[0], name)
        emit_rope(self.mp.builder, name, x, out, cos_q, sin_q, op.style_value(), op.head_dim_value(),
                  (int(me[0]), int(me[1])), _out_space(self.g, 8))

    def _attention(self, op: df.AttentionOp) -> None:
        q, k, v = (self._region(x, op) for x in op.operands[:3])
        out = self._place(op.results[0], _name(op))
        plan = emit_attention(self.mp.builder, op, q, k, v, out, self.scales)
        if plan.mask is not None:
            self.mp.masks.append((plan, op.operands[3] if len(op.operands) > 3 else None))

    def _move(self, op: df.MoveOp) -> None:
        """A device move: an alias when it keeps the bytes in order, else one copy layer per result window."""
        source = op.operands[0]
        if any(self.kind.get(v) != "const" for v in op.operands[1:]):
            raise InputError(f"{_where(op)}: a move with computed indices has no code generator")
        src = self._region(source, op)
        traced = trace_moves([op], source, src.shape, self.scales.consts, self.ctx)
        for i, r in enumerate(op.results):
            idx = traced[r]
            name = f"{_name(op)}.{i}" if len(op.results) > 1 else _name(op)
            if idx.size == np.prod(src.shape) and np.array_equal(idx.reshape(-1), np.arange(idx.size)):
                self.mp.regions[r] = self.mp.builder.image.alias(name, src, _shape(r))
                self.kind[r] = "device"
                continue
            w = island_window(idx, src.shape[-1])
            if w is None:
                raise InputError(f"{_where(op)}: its element order is no 2-D DMA window of its input")
            view = View(src.addr + w.base * src.elem_bytes, w.rows, w.cols, w.pitch * src.elem_bytes, src.elem_bytes,
                        w.transposed)
            out = View.of(self._place(r, name))
            block = self.g.cols if w.transposed else w.cols  # a transposing LOAD fills at most the lanes
            for j, b0 in enumerate(range(0, w.cols, block)):
                nb = min(block, w.cols - b0)
                vector_layer(self.mp.builder, name if nb == w.cols else f"{name}.c{j}", w.rows,
                             [Slot(Space.ACC, nb), Slot(Space.ACC, nb)], [(view.sub(0, w.rows, b0, nb), 0)],
                             [VecStep(VecFn.COPY, 0, 1, 8 * src.elem_bytes)], [(1, out.sub(0, w.rows, b0, nb))])

    def _steps(self, quantize: Operation, chain: list[Operation], root: SSAValue, value: SSAValue, cols: int) -> list:
        """The island's pointwise steps, each constant bound per column of the window (island.column_constants)."""
        islands = {root, *(r for o in chain for r in o.results)}
        steps = []
        for o in chain:
            if not isinstance(o, df.ElementwiseOp):
                continue
            bind = column_constants(chain, o, value, self.scales.consts, self.ctx, cols, islands)
            if bind is None:
                raise InputError(f"{_where(o)}: its constant differs along the rows of the island it sits in (a "
                                 f"per-position table), so the float op before '{_name(quantize)}' is no per-column "
                                 "threshold function; the system backend runs float ops only before and after the "
                                 "integer ops (docs/ISA.md, Host split)")
            step = pointwise_step(o, next(v for v in o.operands if v in islands), self.scales.consts, self.ctx, bind)
            assert step is not None, "classified as a pointwise step"
            steps.append(step)
        return steps

    def _threshold(self, op: Operation) -> None:
        """A ``dequantize -> movement / pointwise steps -> quantize`` island as threshold layers, one per column
        block."""
        name = _name(op)
        value = op.operands[0]
        source, root, chain = self.island[value]
        src = self.mp.regions[source]
        idx = trace_moves(chain, root, src.shape, self.scales.consts, self.ctx)[value]
        window = island_window(idx, src.shape[-1])
        if window is None:
            raise InputError(f"{_where(op)}: the movement before it is no 2-D DMA window of its input")
        rows, cols = window.rows, window.cols
        c0 = window.base % src.shape[-1]
        attrs = _attrs(op)
        bits, s_out = int(attrs["bits"]), float(attrs["scale"])
        s_in = np.broadcast_to(np.asarray(self.scales.scale(source), np.float64), (src.shape[-1],))
        if window.transposed:  # each output column a source row: its scale must be the whole row's
            if not (s_in == s_in[0]).all():
                raise InputError(f"{_where(op)}: turns per-channel scales into rows of its window; a threshold table "
                                 "holds one function per column")
            s_in = np.full(cols, s_in[0])
        else:
            s_in = s_in[c0:c0 + cols]
        if not (s_in > 0).all():
            raise InputError(f"{_where(op)}: a non-positive input scale makes its quantization no threshold function")
        in_bits = 8 * src.elem_bytes
        table = threshold_table(s_in, s_out, bits, -(1 << (in_bits - 1)), (1 << (in_bits - 1)) - 1,
                                self._steps(op, chain, root, value, cols))
        view = View(src.addr + window.base * src.elem_bytes, rows, cols, window.pitch * src.elem_bytes,
                    src.elem_bytes, window.transposed)
        out = View.of(self._place(op.results[0], name))
        block = self.g.cols
        for j, b0 in enumerate(range(0, cols, block)):
            nb = min(block, cols - b0)
            const = np.zeros((table.shape[0], self.g.width), np.int64)
            const[:, :nb] = table[:, b0:b0 + nb]
            slots = [Slot(Space.ACC, nb), Slot(_out_space(self.g, bits), nb)]
            vector_layer(self.mp.builder, f"{name}.c{j}", rows, slots, [(view.sub(0, rows, b0, nb), 0)],
                         [VecStep(VecFn.THRESHOLD, 0, 1, bits, const_row=0)], [(1, out.sub(0, rows, b0, nb))], const)


def build_model_program(module: ModuleOp, weights: Mapping[str, np.ndarray], scales: DesignScales,
                        geometry: Geometry) -> ModelProgram:
    """The program of a compiled integer model (module docstring): ``scales`` from
    compiler.backend.constants.learn_scales of the same compile."""
    return _Walker(module, weights, scales, geometry).run()
