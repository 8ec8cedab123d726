"""onnxruntime's QOperator quantized format spelled out at load as the QDQ form compiler/frontend/qdq.py imports.

``onnxruntime.quantization.quantize_static(..., quant_format=QuantFormat.QOperator)`` writes each quantized op as
one integer op that reads uint8 / int8 tensors with their scales and zero points and writes a requantized one. Each
is rewritten here into ``DequantizeLinear`` on its quantized inputs -> the float standard op ->
``QuantizeLinear`` to its output name with the node's own output scale and zero point, which is what the QDQ format
writes for the same model. The weights' DequantizeLinears fold into float constants at load and ``strip_qdq``
removes the activation pairs keeping their ranges, so attention, GELU and the norms are recognised, ``--quant``
uses the model's own ranges and the accuracy section compares, exactly as for a QDQ export. The ops and their
definitions (onnxruntime's docs/ContribOperators.md; QLinearMatMul and QLinearConv in the ONNX spec):

- ``QLinearMatMul(a, as, az, b, bs, bz, ys, yz)`` = Q(MatMul(DQ a, DQ b)); b's scale may be per column;
- ``QLinearConv(x, xs, xz, w, ws, wz, ys, yz[, B])`` = Q(Conv(DQ x, DQ w, B xs ws)); w's scale may be per output
  channel, the int32 bias B is in steps of xs ws;
- ``QGemm(a, as, az, b, bs, bz[, C[, ys, yz]])`` = Q(Gemm(DQ a, DQ b, C alpha as bs)), float when ys is absent;
- ``QLinearAdd`` / ``QLinearMul(a, as, az, b, bs, bz, cs, cz)``; ``QLinearWhere(cond, x, xs, xz, y, ys, yz, zs, zz)``;
- ``QLinearSigmoid`` / ``QLinearLeakyRelu`` / ``QLinearSoftmax`` / ``QLinearAveragePool`` /
  ``QLinearGlobalAveragePool`` / ``QLinearReduceMean(x, xs, xz, ys, yz)``;
- ``QLinearConcat(ys, yz, x0, x0s, x0z, x1, ...)``.

Each is checked against onnxruntime running both forms (tests/test_frontend_qoperator.py): the integers agree but
for one step where its kernels round a tie or requantize in fixed point differently (about 1 % of a pooled or
int8-zero-point product's elements; none in the bert / vit / gpt2 tiny exports). Its CPU provider has no
QLinearReduceMean kernel, so that one expansion follows the definition alone.

The ops the format runs directly on the integer tensors (onnxruntime's quantization/operators/direct_q8.py and
registry.py: Transpose, Reshape, Squeeze, Unsqueeze, Flatten, Gather, MaxPool, Resize, Split, Pad, ...) keep the
input's scale and zero point; they are moved onto the dequantized float tensor with a QuantizeLinear of the same
parameters after them, as the QDQ format writes them, so ``strip_qdq`` meets only Q -> DQ pairs. A tensor's
parameters come from its producer or a consumer (an embedding table's, from the op reading the Gather) and travel
through such ops. Anything else is refused in one line naming the node: an activation quantized per axis, a
``channels_last`` pool, a standard op (other than Shape / Size) reading an integer tensor whose meaning is not
one of these; the contrib ops not expanded (QAttention, QEmbedLayerNormalization, QOrdered*, ...) are left for
``check_domains`` to refuse by name.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass
from typing import Any

import numpy as np
import onnx
from onnx import helper, numpy_helper

from compiler.frontend.opset_upgrade import default_opset
from compiler.frontend.ort_contrib import CONTRIB_DOMAIN
from hw.errors import InputError

__all__ = ["QOPERATOR_OPS", "expand_qoperator", "qoperator_note"]


@dataclass(frozen=True)
class _Signature:
    """Where a QOperator op keeps its operands: ``quantized`` (tensor, scale, zero point) input triples, ``weight``
    the index of the triple whose scale may be per channel (else -1), ``output`` the (scale, zero point) indices of
    the output's parameters, ``bias`` an int32 bias input in steps of the first two triples' scales (else -1),
    ``passthrough`` float inputs given to the float op as they are, ``attrs`` the attributes accepted."""

    float_op: str
    quantized: tuple[tuple[int, int, int], ...]
    output: tuple[int, int]
    attrs: frozenset[str] = frozenset()
    weight: int = -1
    bias: int = -1
    passthrough: tuple[int, ...] = ()


def _unary(op: str, *attrs: str) -> _Signature:
    return _Signature(op, ((0, 1, 2),), (3, 4), frozenset(attrs))


_POOL_ATTRS = ("auto_pad", "ceil_mode", "count_include_pad", "kernel_shape", "pads", "strides", "channels_last")
_CONV_ATTRS = ("auto_pad", "dilations", "group", "kernel_shape", "pads", "strides")
_SIGNATURES: dict[str, _Signature] = {
    "QLinearMatMul": _Signature("MatMul", ((0, 1, 2), (3, 4, 5)), (6, 7), weight=1),
    "QLinearConv": _Signature("Conv", ((0, 1, 2), (3, 4, 5)), (6, 7), frozenset(_CONV_ATTRS), weight=1, bias=8),
    "QGemm": _Signature("Gemm", ((0, 1, 2), (3, 4, 5)), (7, 8), frozenset({"alpha", "transA", "transB"}), weight=1,
                        bias=6),
    "QLinearAdd": _Signature("Add", ((0, 1, 2), (3, 4, 5)), (6, 7)),
    "QLinearMul": _Signature("Mul", ((0, 1, 2), (3, 4, 5)), (6, 7)),
    "QLinearWhere": _Signature("Where", ((1, 2, 3), (4, 5, 6)), (7, 8), passthrough=(0,)),
    "QLinearSigmoid": _unary("Sigmoid"),
    "QLinearLeakyRelu": _unary("LeakyRelu", "alpha"),
    "QLinearSoftmax": _unary("Softmax", "axis", "opset"),
    "QLinearAveragePool": _unary("AveragePool", *_POOL_ATTRS),
    "QLinearGlobalAveragePool": _unary("GlobalAveragePool", "channels_last"),
    "QLinearReduceMean": _unary("ReduceMean", "axes", "keepdims"),
}
#: Standard-domain ops among them (the ONNX spec's); the others are onnxruntime's ``com.microsoft`` contrib ops.
_STANDARD = frozenset({"QLinearMatMul", "QLinearConv"})
QOPERATOR_OPS = frozenset(_SIGNATURES) | {"QLinearConcat"}

#: Ops the format runs on integer tensors, keeping the input's parameters: op -> (data inputs, quantized outputs;
#: None for all of them). Shape and Size read only the shape and stay as they are.
_DIRECT: dict[str, tuple[tuple[int, ...], tuple[int, ...] | None]] = {
    **{op: ((0,), (0,)) for op in ("Transpose", "Reshape", "Squeeze", "Unsqueeze", "Flatten", "Identity", "Expand",
                                   "Tile", "DepthToSpace", "SpaceToDepth", "Slice", "Resize", "Gather",
                                   "GatherElements", "GatherND", "MaxPool", "TopK")},
    "Pad": ((0, 2), (0,)), "Split": ((0,), None), "Concat": ((), (0,)),
    "ArgMax": ((0,), ()), "ArgMin": ((0,), ()),  # int64 indices out: the dequantized tensor's (steps are positive)
}
_KEPT = frozenset({"Shape", "Size", "QuantizeLinear", "DequantizeLinear"})


def _standard(node: onnx.NodeProto) -> bool:
    return node.domain in ("", "ai.onnx")


def _expanded(node: onnx.NodeProto) -> bool:
    return node.op_type in QOPERATOR_OPS and (
        _standard(node) if node.op_type in _STANDARD else node.domain == CONTRIB_DOMAIN)


def _data_inputs(node: onnx.NodeProto) -> list[str]:
    ins, _ = _DIRECT[node.op_type]
    picked = list(node.input) if node.op_type == "Concat" else [node.input[i] for i in ins if i < len(node.input)]
    return [t for t in picked if t]


def _quantized_outputs(node: onnx.NodeProto) -> list[str]:
    _, outs = _DIRECT[node.op_type]
    picked = list(node.output) if outs is None else [node.output[i] for i in outs if i < len(node.output)]
    return [t for t in picked if t]


def _triples(node: onnx.NodeProto) -> list[tuple[int, int, int]]:
    """The node's quantized (tensor, scale, zero point) input indices."""
    if node.op_type == "QLinearConcat":
        return [(i, i + 1, i + 2) for i in range(2, len(node.input), 3)]
    return list(_SIGNATURES[node.op_type].quantized)


def _output_params(node: onnx.NodeProto) -> tuple[int, int]:
    return (0, 1) if node.op_type == "QLinearConcat" else _SIGNATURES[node.op_type].output


class _Rewrite:
    """The rewrite of one model: tensors' quantization parameters, then the nodes in their new order."""

    def __init__(self, model: onnx.ModelProto, source: str):
        self.source = source
        self.opset = default_opset(model)
        # constant tensors by name, read on demand: weights may be stored externally (only their dims are needed)
        self.protos: dict[str, onnx.TensorProto] = {t.name: t for t in model.graph.initializer}
        for node in model.graph.node:
            if node.op_type == "Constant" and _standard(node) and node.attribute and node.attribute[0].name == "value":
                self.protos[node.output[0]] = node.attribute[0].t
        self.consts: dict[str, np.ndarray] = {}
        self.params: dict[str, tuple[str, str]] = {}
        self.new_inits: list[onnx.TensorProto] = []
        self.nodes: list[onnx.NodeProto] = []
        self.dequantized: dict[str, str] = {}

    def refuse(self, node: onnx.NodeProto, what: str) -> InputError:
        domain = "" if _standard(node) else f"{node.domain}."
        return InputError(f"{self.source}: unsupported {domain}{node.op_type} (node '{node.name}'): {what}")

    def _same(self, a: tuple[str, str], b: tuple[str, str]) -> bool:
        def value(name: str) -> np.ndarray | None:
            return self.value(name) if name else np.zeros((), np.uint8)

        for x, y in zip(a, b, strict=True):
            if x == y:
                continue
            vx, vy = value(x), value(y)
            if vx is None or vy is None or vx.dtype != vy.dtype or not np.array_equal(vx.reshape(-1), vy.reshape(-1)):
                return False
        return True

    def note(self, node: onnx.NodeProto, tensor: str, scale: str, zero: str) -> bool:
        """Record ``tensor``'s parameters; False when already known. Two different ones are refused."""
        if not tensor:
            return False
        known = self.params.get(tensor)
        if known is None:
            self.params[tensor] = (scale, zero)
            return True
        if not self._same(known, (scale, zero)):
            raise self.refuse(node, f"tensor '{tensor}' is read or written with two different quantization "
                                    "parameters")
        return False

    def collect(self, nodes: list[onnx.NodeProto]) -> None:
        """Every integer tensor's (scale, zero point) names: from its producer or a consumer, then through the ops
        that keep them (until nothing new is learnt)."""
        def arg(node: onnx.NodeProto, i: int) -> str:
            return node.input[i] if i < len(node.input) else ""

        for node in nodes:
            if _standard(node) and node.op_type == "QuantizeLinear":
                self.note(node, node.output[0] if node.output else "", arg(node, 1), arg(node, 2))
            elif _standard(node) and node.op_type == "DequantizeLinear":
                self.note(node, arg(node, 0), arg(node, 1), arg(node, 2))
            elif _expanded(node):
                for t, s, z in _triples(node):
                    self.note(node, arg(node, t), arg(node, s), arg(node, z))
                s, z = _output_params(node)
                if arg(node, s) and node.output:
                    self.note(node, node.output[0], arg(node, s), arg(node, z))
        direct = [n for n in nodes if _standard(n) and n.op_type in _DIRECT]
        changed = True
        while changed:
            changed = False
            for node in direct:
                group = _data_inputs(node) + _quantized_outputs(node)
                known = next((self.params[t] for t in group if t in self.params), None)
                if known is not None:  # both ways: an embedding table's from the op reading its Gather
                    for t in group:
                        changed |= self.note(node, t, *known)

    def value(self, name: str) -> np.ndarray | None:
        """A constant's value; None when ``name`` is computed, or stored externally or malformed (the loader
        reports a malformed initializer by name)."""
        if name not in self.consts:
            proto = self.protos.get(name)
            if proto is None or proto.data_location == onnx.TensorProto.EXTERNAL:
                return None
            try:
                self.consts[name] = numpy_helper.to_array(proto)
            except (ValueError, TypeError):
                return None
        return self.consts[name]

    def const(self, node: onnx.NodeProto, name: str, what: str) -> np.ndarray:
        value = self.value(name)
        if value is None:
            raise self.refuse(node, f"its {what} '{name}' is not a constant")
        return value

    def add_init(self, name: str, value: np.ndarray) -> str:
        while name in self.protos or name in self.consts:
            name += "_"
        self.consts[name] = value
        self.new_inits.append(numpy_helper.from_array(value, name))
        return name

    def emit(self, op: str, inputs: list[str], out: str, name: str, **attrs: Any) -> str:
        self.nodes.append(helper.make_node(op, inputs, [out], name=name, **attrs))
        return out

    def dequantize(self, node: onnx.NodeProto, tensor: str, per_channel_axis: int | None = None) -> str:
        """The float tensor of ``tensor`` (one DequantizeLinear per tensor); only a weight (``per_channel_axis``)
        may have a scale per channel."""
        if tensor in self.dequantized:
            return self.dequantized[tensor]
        scale, zero = self.params[tensor]
        size = self.const(node, scale, "scale").size
        attrs: dict[str, Any] = {}
        if size != 1:
            if per_channel_axis is None:
                raise self.refuse(node, f"'{tensor}' is quantized per axis ({size} scales; only weights may be, "
                                        "activations are quantized per tensor)")
            attrs["axis"] = per_channel_axis
        out = self.emit("DequantizeLinear", [tensor, scale, zero] if zero else [tensor, scale],
                        f"{tensor}/dequantized", f"{tensor}/DequantizeLinear", **attrs)
        self.dequantized[tensor] = out
        return out

    def quantize(self, node: onnx.NodeProto, value: str, tensor: str) -> None:
        scale, zero = self.params[tensor]
        size = self.const(node, scale, "output scale").size
        if size != 1:
            raise self.refuse(node, f"its output '{tensor}' is quantized per axis ({size} scales)")
        self.emit("QuantizeLinear", [value, scale, zero] if zero else [value, scale], tensor,
                  f"{tensor}/QuantizeLinear")

    def check(self, node: onnx.NodeProto, attrs: dict[str, Any]) -> None:
        """Refuse a QOperator node whose operands or attributes are not its op's (a hand-edited or truncated one)."""
        op = node.op_type
        sig = _SIGNATURES.get(op)
        allowed = sig.attrs if sig is not None else frozenset({"axis"})
        unknown = sorted(set(attrs) - allowed)
        if unknown:
            raise self.refuse(node, f"attribute {', '.join(unknown)} is not supported")
        missing = [i for t, sc, _ in _triples(node) for i in (t, sc) if i >= len(node.input) or not node.input[i]]
        out_scale = _output_params(node)[0]
        if op != "QGemm" and (out_scale >= len(node.input) or not node.input[out_scale]):
            missing.append(out_scale)  # only QGemm may write a float output
        if missing or (op == "QLinearConcat" and (len(node.input) < 5 or (len(node.input) - 2) % 3)):
            raise self.refuse(node, f"its {len(node.input)} inputs are not the op's (tensor, scale, zero point) "
                                    "operands")
        if len(node.output) != 1 or not node.output[0]:
            raise self.refuse(node, f"it has {len(node.output)} outputs (one is defined)")
        for name in ("channels_last", "opset", "transB"):
            if not isinstance(attrs.get(name, 0), int):
                raise self.refuse(node, f"attribute {name} is not an integer")
        if attrs.get("channels_last", 0):
            raise self.refuse(node, "channels_last=1 (only NCHW pooling is supported)")

    def expand(self, node: onnx.NodeProto) -> None:
        """One QLinear* / QGemm node as DequantizeLinear -> float op -> QuantizeLinear."""
        op = node.op_type
        sig = _SIGNATURES.get(op)
        attrs = {a.name: helper.get_attribute_value(a) for a in node.attribute}
        self.check(node, attrs)
        attrs.pop("channels_last", None)
        axis = None
        weight = self.protos.get(node.input[3]) if sig is not None and sig.weight >= 0 else None
        if weight is not None and weight.dims:  # a constant weight's scale may be per output channel
            axis = 0 if op == "QLinearConv" or attrs.get("transB", 0) else len(weight.dims) - 1
            channels = self.const(node, node.input[4], "weight scale").size
            if channels not in (1, weight.dims[axis]):
                raise self.refuse(node, f"its weight scale has {channels} values for {weight.dims[axis]} output "
                                        "channels")
        floats = [self.dequantize(node, node.input[t], axis if k == 1 else None)
                  for k, (t, _, _) in enumerate(_triples(node))]
        inputs = [node.input[i] for i in (sig.passthrough if sig else ())] + floats
        if sig is not None and sig.bias >= 0 and sig.bias < len(node.input) and node.input[sig.bias]:
            inputs.append(self.bias(node, sig.bias, float(attrs.get("alpha", 1.0))))
        float_op = sig.float_op if sig is not None else "Concat"
        coerced = op == "QLinearSoftmax" and attrs.pop("opset", 13) < 13 and attrs.get("axis", -1) != -1
        if op == "QLinearSoftmax":
            attrs.setdefault("axis", -1)
        if op == "QLinearReduceMean" and self.opset >= 18 and "axes" in attrs:
            inputs.append(self.add_init(f"{node.name}/axes", np.asarray(attrs.pop("axes"), np.int64)))
        scale, _ = _output_params(node)
        quantized = scale < len(node.input) and bool(node.input[scale])
        out = f"{node.output[0]}/float" if quantized else node.output[0]
        if coerced:  # opset < 13's Softmax: over the axes from ``axis`` on, flattened (ONNX Softmax-11); the loader
            # folds it back into one Softmax where ``axis`` is the last (compiler/frontend/normalize.py)
            shape = self.emit("Shape", inputs[:1], f"{out}/shape", f"{node.name}/Shape")
            flat = self.emit("Flatten", inputs[:1], f"{out}/flat", f"{node.name}/Flatten", axis=attrs["axis"])
            soft = self.emit("Softmax", [flat], f"{out}/flat_softmax", f"{node.name}/Softmax", axis=1)
            self.emit("Reshape", [soft, shape], out, f"{node.name}/Reshape")
        else:
            self.emit(float_op, inputs, out, f"{node.name}/{float_op}", **attrs)
        if quantized:
            self.quantize(node, out, node.output[0])

    def bias(self, node: onnx.NodeProto, index: int, alpha: float) -> str:
        """The int32 bias dequantized with its step: the input's scale times the weight's (per channel or not),
        times QGemm's ``alpha`` (its C "must be quantized with scale alpha / beta * a_scale * b_scale")."""
        step = (np.float32(alpha) * self.const(node, node.input[1], "input scale").astype(np.float32).reshape(-1)
                * self.const(node, node.input[4], "weight scale").astype(np.float32).reshape(-1))
        step = step.reshape(()) if step.size == 1 else step
        bias = self.protos.get(node.input[index])
        if step.size != 1 and (bias is None or list(bias.dims) != [step.size]):
            raise self.refuse(node, f"its bias '{node.input[index]}' is not a constant of the {step.size} output "
                                    "channels")
        scale = self.add_init(f"{node.input[index]}/scale", step)
        attrs = {"axis": 0} if step.size != 1 else {}
        return self.emit("DequantizeLinear", [node.input[index], scale], f"{node.input[index]}/dequantized",
                         f"{node.input[index]}/DequantizeLinear", **attrs)

    def move_direct(self, node: onnx.NodeProto) -> None:
        """An op run on integer tensors, moved onto their float values with a QuantizeLinear after it."""
        data = set(_data_inputs(node))
        inputs = [self.dequantize(node, t) if t in data else t for t in node.input]
        quantized = set(_quantized_outputs(node))
        outputs = [f"{t}/float" if t in quantized else t for t in node.output]
        moved = onnx.NodeProto()
        moved.CopyFrom(node)
        del moved.input[:], moved.output[:]
        moved.input.extend(inputs)
        moved.output.extend(outputs)
        self.nodes.append(moved)
        for t in node.output:
            if t in quantized:
                self.quantize(node, f"{t}/float", t)

    def run(self, nodes: list[onnx.NodeProto]) -> None:
        self.collect(nodes)
        for node in nodes:
            if _expanded(node):
                self.expand(node)
            elif not _standard(node) or node.op_type in _KEPT:
                self.nodes.append(node)  # contrib ops not expanded are check_domains' to refuse by name
            elif node.op_type in _DIRECT and any(t in self.params for t in _data_inputs(node)):
                self.move_direct(node)
            else:
                integer = next((t for t in node.input if t in self.params), None)
                if integer is not None:
                    raise self.refuse(node, f"it reads the quantized integer tensor '{integer}' directly (only "
                                            "QLinear* / QGemm ops and ops that keep the input's quantization, "
                                            "Transpose, Reshape, Gather, MaxPool, ..., are imported)")
                self.nodes.append(node)


def expand_qoperator(model: onnx.ModelProto, source: str) -> onnx.ModelProto:
    """``model`` with its QOperator ops (``QOPERATOR_OPS``) spelled out in QDQ form and the ops between them moved
    onto float tensors (a copy; ``model`` itself when it has no such op)."""
    graph = model.graph
    if not any(_expanded(n) for n in graph.node):
        return model
    nodes = []
    for i, node in enumerate(graph.node):
        if not node.name:
            node = onnx.NodeProto()
            node.CopyFrom(graph.node[i])
            node.name = f"{node.op_type}_{i}"
        nodes.append(node)
    rewrite = _Rewrite(model, source)
    rewrite.run(nodes)
    result = onnx.ModelProto()
    result.CopyFrom(model)
    del result.graph.node[:]
    result.graph.node.extend(rewrite.nodes)
    result.graph.initializer.extend(rewrite.new_inits)
    return result


def qoperator_note(model: onnx.ModelProto) -> str | None:
    """The report's import note for a QOperator model: which ops were spelled out in QDQ form (None when none)."""
    counts = Counter(n.op_type for n in model.graph.node if _expanded(n))
    if not counts:
        return None
    ops = ", ".join(f"{count} {op}" for op, count in sorted(counts.items()))
    return (f"{counts.total()} QOperator op(s) ({ops}) imported in QDQ form: DequantizeLinear -> float op -> "
            "QuantizeLinear with the model's own scales, kept as its ranges")
