"""Build the ``dataflow`` module from a folded ``Graph`` and its recognised matches.

Matched regions become one high-level op each; every other node becomes one generic op whose ``attrs`` keep the ONNX
op type, its attributes and its constant parameter inputs, so the functional simulator can still execute it
exactly. Weights go to a ``WeightStore`` and appear in the IR as ``dataflow.weight`` ops.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from xdsl.dialects import func
from xdsl.dialects.builtin import (
    AnyFloat,
    ArrayAttr,
    BFloat16Type,
    BoolAttr,
    DenseArrayBase,
    DictionaryAttr,
    Float16Type,
    FloatAttr,
    IntegerAttr,
    IntegerType,
    ModuleOp,
    StringAttr,
    TensorType,
    UnitAttr,
    f32,
    f64,
    i64,
)
from xdsl.ir import Attribute, Block, Operation, Region, SSAValue

from compiler.dialect import dataflow as df
from compiler.dialect.choices import LAYER_ATTR
from compiler.frontend.conv import emit_conv, zero_pads_into_convs
from compiler.frontend.dynamic_quant import fold_dynamic_quant
from compiler.frontend.graph import PARAM_INPUTS, Graph, Node
from compiler.frontend.onnx_activations import ELEMENTWISE_KINDS as ACTIVATION_KINDS
from compiler.frontend.onnx_ops import resize_refusal
from compiler.frontend.precision import BFLOAT16, weights_precision
from compiler.frontend.qdq import QDQ_RANGE_ATTR, strip_qdq
from compiler.frontend.recognize import Match, recognize
from hw.errors import InputError

__all__ = ["ImportResult", "WeightStore", "build_module", "element_type", "PATTERN_KINDS", "supported_onnx_ops"]

WeightStore = dict[str, np.ndarray]
PATTERN_KINDS = ("attention", "layernorm", "gelu", "gemm", "softmax", "moe")

_ELEMENTWISE = {
    "Add": "add", "Sub": "sub", "Mul": "mul", "Div": "div", "Pow": "pow", "Sqrt": "sqrt", "Reciprocal": "reciprocal",
    "Neg": "neg", "Abs": "abs", "Exp": "exp", "Log": "log", "Erf": "erf", "Tanh": "tanh", "Sigmoid": "sigmoid",
    "Relu": "relu", "Min": "min", "Max": "max", "Where": "where", "Equal": "equal", "Less": "less",
    "Greater": "greater", "Not": "not", "And": "and", "Or": "or", "Cast": "cast", "Clip": "clip",
    "Softplus": "softplus", "Identity": "identity", "Dropout": "identity", "Mod": "mod", "CastLike": "cast",
    "IsNaN": "isnan", "IsInf": "isinf", "LessOrEqual": "less_equal", "GreaterOrEqual": "greater_equal",
    "HardSigmoid": "hardsigmoid", "HardSwish": "hardswish",
    # rounding and trigonometry on index math the exporter did not fold (LongT5's transient-global block ids)
    "Floor": "floor", "Ceil": "ceil", "Round": "round", "Sign": "sign", "Cos": "cos", "Sin": "sin", "Xor": "xor",
    **ACTIVATION_KINDS,  # ELU, SELU, CELU, LeakyReLU, PReLU, Mish, ..., tan and the inverse trigonometric ops
}
_MOVE = {
    "Reshape": "reshape", "Transpose": "transpose", "Gather": "gather", "Slice": "slice", "Concat": "concat",
    "Split": "split", "Expand": "expand", "Squeeze": "squeeze", "Unsqueeze": "unsqueeze", "Flatten": "flatten",
    "Tile": "tile", "Trilu": "trilu", "Range": "range", "ConstantOfShape": "constant_of_shape", "CumSum": "cumsum",
    "GatherElements": "gather", "GatherND": "gather", "Pad": "pad",
    # updates written at constant indices (dynamo's slice_scatter of an in-place slice assignment: Funnel)
    "ScatterND": "scatter", "ScatterElements": "scatter",
    # interpolation of feature maps to another size (MobileViT's patch grid, Segformer-style decoders)
    "Resize": "resize",
    # a sort of a non-constant tensor (ViTMAE's argsort of its masking noise): values and indices, k a parameter
    "TopK": "sort",
}
_REDUCE = {"ReduceMean": "mean", "ReduceSum": "sum", "ReduceMax": "max", "ReduceMin": "min", "ReduceProd": "prod",
           "ArgMax": "argmax"}


def supported_onnx_ops() -> dict[str, set[str]]:
    """ONNX op types the frontend lowers, by how (for `codesign ops` and error messages)."""
    return {
        "high-level": {"MatMul", "Gemm", "Conv", "LayerNormalization", "Gelu", "Softmax", "Gather"},
        "element-wise": set(_ELEMENTWISE),
        "data movement": set(_MOVE),
        "reductions": set(_REDUCE),
        # rewritten into the ops above before recognition (compiler/frontend/einsum.py, pooling.py, batchnorm.py,
        # instancenorm.py, conv_transpose.py, col2im.py, reductions.py, compound_ops.py)
        "lowered to the above": {"Einsum", "AveragePool", "MaxPool", "BatchNormalization", "InstanceNormalization",
                                 "ConvTranspose", "Col2Im", "ReduceL2", "ReduceL1", "ReduceSumSquare", "Sum", "Mean",
                                 "LogSoftmax", "ReduceLogSumExp", "ReduceLogSum", "GlobalAveragePool",
                                 "GlobalMaxPool", "DepthToSpace", "SpaceToDepth", "LpNormalization", "ArgMin"},
        "folded when constant": {"Shape", "Size", "Constant", "ConstantOfShape", "Range", "EyeLike"},
        # onnxruntime's quantize_dynamic chains and QDQ pairs, imported as the float graph on the model's
        # dequantized weights (compiler/frontend/dynamic_quant.py, qdq.py)
        "quantized models": {"DynamicQuantizeLinear", "MatMulInteger", "ConvInteger", "QuantizeLinear",
                             "DequantizeLinear"},
    }


@dataclass
class ImportResult:
    """The module, its weights, and what the frontend recognised."""

    module: ModuleOp
    weights: WeightStore
    patterns: dict[str, int]
    input_names: list[str]
    output_names: list[str]
    source: str
    onnx_ops: dict[str, int] = field(default_factory=dict)
    batch: int = 1
    #: float ONNX tensor name -> the layer of the op that computed it at import (accuracy reports compare them).
    tensor_layers: dict[str, str] = field(default_factory=dict)
    #: What recognition left as generic ops and why (Graph.notes).
    notes: list[str] = field(default_factory=list)
    #: The float type the model's weights are in (compiler/frontend/precision.py): ``float32``, ``float16``, ...
    #: Recognised patterns compute in float32 whatever it is; generic ops in their operands' own type.
    precision: str = "float32"
    #: What the import rewrote that the user should know (Graph.import_notes).
    import_notes: list[str] = field(default_factory=list)
    #: The file holds quantized ops (Graph.quantized).
    quantized: bool = False


def element_type(dtype: np.dtype) -> Attribute:
    """The MLIR element type of a NumPy dtype."""
    kind = np.dtype(dtype)
    table: dict[Any, Attribute] = {
        np.dtype(np.float32): f32, np.dtype(np.float64): f64, np.dtype(np.float16): Float16Type(),
        BFLOAT16: BFloat16Type(),
        np.dtype(np.int64): i64, np.dtype(np.int32): IntegerType(32), np.dtype(np.int8): IntegerType(8),
        np.dtype(np.uint8): IntegerType(8), np.dtype(np.bool_): IntegerType(1), np.dtype(np.int16): IntegerType(16),
    }
    if kind not in table:
        raise InputError(f"unsupported tensor element type {kind}")
    return table[kind]


def _attr(value: Any) -> Attribute:
    if isinstance(value, bool):
        return BoolAttr.from_bool(value)
    if isinstance(value, (int, np.integer)):
        return IntegerAttr(int(value), i64)
    if isinstance(value, (float, np.floating)):
        return FloatAttr(float(value), f64)
    if isinstance(value, str):
        return StringAttr(value)
    if isinstance(value, np.ndarray):
        if value.dtype.kind in "iub":
            return DenseArrayBase.from_list(i64, [int(v) for v in value.reshape(-1)])
        return DenseArrayBase.from_list(f64, [float(v) for v in value.reshape(-1)])
    if isinstance(value, (list, tuple)):
        if all(isinstance(v, (int, np.integer)) for v in value):
            return DenseArrayBase.from_list(i64, [int(v) for v in value])
        if all(isinstance(v, (int, float, np.number)) for v in value):
            return DenseArrayBase.from_list(f64, [float(v) for v in value])
        return ArrayAttr([_attr(v) for v in value])
    raise TypeError(f"cannot store attribute value {value!r}")


def _layer_name(raw: str) -> str:
    return raw.strip("/").replace("/", ".") or raw


def _common_prefix(names: list[str]) -> str:
    parts = [_layer_name(n).split(".") for n in names if n]
    if not parts:
        return "op"
    prefix = os.path.commonprefix(parts)
    return ".".join(prefix) if prefix else _layer_name(names[-1])


class _Builder:
    def __init__(self, graph: Graph):
        self.g = graph
        self.block = Block()
        self.values: dict[str, SSAValue] = {}
        self.weights: WeightStore = {}
        self.names: set[str] = set()
        self.patterns: dict[str, int] = dict.fromkeys(PATTERN_KINDS, 0)

    def unique(self, name: str) -> str:
        base, i = name, 1
        while name in self.names:
            i += 1
            name = f"{base}_{i}"
        self.names.add(name)
        return name

    def ttype(self, name: str) -> TensorType:
        return TensorType(element_type(self.g.dtypes[name]), list(self.g.shapes[name]))

    def add(self, op: Operation) -> Operation:
        self.block.add_op(op)
        return op

    def weight(self, key: str, value: np.ndarray) -> SSAValue:
        if key in self.values:
            return self.values[key]
        self.weights[key] = value
        op = self.add(df.WeightOp(key, TensorType(element_type(value.dtype), list(value.shape))))
        self.values[key] = op.results[0]
        return op.results[0]

    def value(self, name: str) -> SSAValue:
        if name in self.values:
            return self.values[name]
        if name in self.g.constants:
            return self.weight(name, self.g.constants[name])
        raise InputError(f"{self.g.source}: tensor '{name}' is used before it is defined")

    def bind(self, name: str, op: Operation, index: int = 0) -> None:
        self.values[name] = op.results[index]


def _sortable(g: Graph, node: Node) -> bool:
    """A TopK the ``sort`` move runs: data and a constant k within the data's (known) axis, values and indices."""
    if len(node.inputs) != 2 or not g.is_const(node.inputs[1]) or len(node.outputs) != 2:
        return False
    shape = g.shapes.get(node.inputs[0])
    axis = node.attrs.get("axis", -1)
    k = g.constants[node.inputs[1]].reshape(-1)
    if not shape or not isinstance(axis, int) or not -len(shape) <= axis < len(shape) or k.size != 1:
        return False
    return 0 <= int(k[0]) <= shape[axis]


def _generic_attrs(b: _Builder, node: Node, params: set[int]) -> tuple[list[SSAValue], DictionaryAttr]:
    entries: dict[str, Attribute] = {"onnx_op": StringAttr(node.op_type), "nin": IntegerAttr(len(node.inputs), i64)}
    for key, value in node.attrs.items():
        entries[key] = _attr(value)
    operands: list[SSAValue] = []
    for pos, name in enumerate(node.inputs):
        if not name:
            entries[f"#{pos}"] = StringAttr("")
        elif pos in params and b.g.is_const(name):
            entries[f"#{pos}"] = _attr(b.g.constants[name])
        else:
            operands.append(b.value(name))
    return operands, DictionaryAttr(entries)


def _emit_gemm(b: _Builder, node: Node, bias_add: Node | None = None) -> None:
    """A MatMul / Gemm as ``dataflow.gemm``; ``bias_add`` is a following Add of a constant [N] vector (see
    ``_fold_bias``) that becomes the GEMM's bias and whose output the GEMM then produces. Every other form (Gemm's
    ``transA``, an activation B with ``transB`` / ``alpha``, a C that is no [N] row, broadcast batch axes) was
    rewritten into this one by compiler/frontend/gemm_forms.py during recognition."""
    g = b.g
    name = b.unique(_layer_name(node.name))
    a, w = node.inputs[0], node.inputs[1]
    bias: SSAValue | None = None
    if node.op_type == "Gemm":
        alpha, beta = float(node.attrs.get("alpha", 1.0)), float(node.attrs.get("beta", 1.0))
        if g.is_const(w):
            value = g.constants[w]
            value = value.T if node.attrs.get("transB", 0) else value
            if alpha != 1.0:
                value = (value * alpha).astype(value.dtype)
            key = w + (".T" if node.attrs.get("transB", 0) else "") + (f".x{alpha:g}" if alpha != 1.0 else "")
            rhs = b.weight(key, np.ascontiguousarray(value))
        else:
            rhs = b.value(w)
        if len(node.inputs) > 2 and node.inputs[2]:
            c = node.inputs[2]
            n = g.shapes[node.outputs[0]][-1]
            value = (g.constants[c].reshape(n) * beta).astype(g.constants[c].dtype)
            bias = b.weight(c + (f".x{beta:g}" if beta != 1.0 else ""), value)
    else:
        rhs = b.value(w)
    out = node.outputs[0]
    if bias_add is not None:
        other = bias_add.inputs[1] if bias_add.inputs[0] == out else bias_add.inputs[0]
        bias = b.weight(other, g.constants[other].reshape(g.shapes[out][-1]))
        out = bias_add.outputs[0]
    lhs = b.value(a)
    lhs_shape = g.shapes[a]
    if len(lhs_shape) < 2:
        raise InputError(f"{g.source}: unsupported op {node.op_type} (node '{node.name}'): rank-1 operand")
    op = b.add(df.GemmOp(name, lhs, rhs, bias, b.ttype(out), f32))
    b.bind(out, op)
    b.patterns["gemm"] += 1


def _fold_bias(b: _Builder, node: Node, consumers: dict[str, list[Node]]) -> Node | None:
    """A MatMul followed by an Add of a constant [N] vector: the Add to absorb as the GEMM's bias."""
    if node.op_type != "MatMul" or not b.g.is_const(node.inputs[1]):
        return None
    users = consumers.get(node.outputs[0], [])
    if len(users) != 1 or users[0].op_type != "Add" or node.outputs[0] in b.g.outputs:
        return None
    add = users[0]
    other = add.inputs[1] if add.inputs[0] == node.outputs[0] else add.inputs[0]
    n = b.g.shapes[node.outputs[0]][-1]
    if b.g.is_const(other) and b.g.constants[other].size == n:
        return add
    return None


def _emit_conv(b: _Builder, node: Node) -> None:
    """A Conv as unfold + GEMM (compiler/frontend/conv.py)."""
    emit_conv(b, node, b.unique(_layer_name(node.name)))


def _emit_match(b: _Builder, m: Match) -> None:
    name = b.unique(_common_prefix([n.name for n in m.nodes]))
    out_type = b.ttype(m.output)
    if m.kind == "attention":
        mask = m.operands["mask"]
        q_type = b.ttype(m.operand("q"))
        v_shape = b.g.shapes[m.operand("v")]
        heads, kv_heads = m.props["num_heads"], m.props.get("kv_heads", m.props["num_heads"])
        merged_type = TensorType(out_type.get_element_type(), [q_type.get_shape()[0], q_type.get_shape()[1],
                                                                v_shape[-1] // kv_heads * heads])
        extra: dict[str, Attribute] = {}
        if kv_heads != heads:
            extra["kv_heads"] = IntegerAttr(kv_heads, i64)
        if m.props.get("mask_kind"):
            extra["mask_kind"] = StringAttr(m.props["mask_kind"])
        if m.props.get("softcap") is not None:
            extra["softcap"] = FloatAttr(float(m.props["softcap"]), f64)
        if m.props.get("sinks") is not None:
            extra["sinks"] = DenseArrayBase.from_list(f64, [float(x) for x in m.props["sinks"]])
        if m.props.get("masked_rows_zero"):
            extra["masked_rows_zero"] = UnitAttr()
        if m.props.get("causal_first"):
            extra["causal_first"] = UnitAttr()
        op = b.add(df.AttentionOp.create(
            operands=[b.value(m.operand("q")), b.value(m.operand("k")), b.value(m.operand("v"))]
            + ([b.value(mask)] if mask else []),
            result_types=[merged_type],
            properties={"layer": StringAttr(name), "num_heads": IntegerAttr(m.props["num_heads"], i64),
                        "head_dim": IntegerAttr(m.props["head_dim"], i64),
                        "scale": FloatAttr(float(m.props["scale"]), f64),
                        "causal": BoolAttr.from_bool(m.props["causal"]),
                        "softmax": StringAttr("exact"), "algorithm": StringAttr("standard"),
                        "operandSegmentSizes": DenseArrayBase.from_list(IntegerType(32), [1, 1, 1, 1 if mask else 0]),
                        **extra}))
        b.patterns["attention"] += 1
        b.patterns["softmax"] += 1
        out_perm = m.props.get("out_perm")
        if out_perm:  # a sequence-first [S, B, D] or channels-first [B, D, S] export after the heads merge
            merged_type = TensorType(out_type.get_element_type(), [merged_type.get_shape()[p] for p in out_perm])
            op = b.add(df.MoveOp.create(
                operands=[op.results[0]], result_types=[merged_type],
                properties={"layer": StringAttr(name + ".layout"), "kind": StringAttr("transpose"),
                            "attrs": DictionaryAttr({"onnx_op": StringAttr("Transpose"), "nin": IntegerAttr(1, i64),
                                                     "perm": _attr(list(out_perm))})}))
        if merged_type != out_type:  # the export merged batch and sequence: [B*S, D]
            op = b.add(df.MoveOp.create(
                operands=[op.results[0]], result_types=[out_type],
                properties={"layer": StringAttr(name + ".flatten"), "kind": StringAttr("reshape"),
                            "attrs": DictionaryAttr({"onnx_op": StringAttr("Reshape"), "nin": IntegerAttr(2, i64),
                                                     "#1": _attr(list(out_type.get_shape()))})}))
    elif m.kind == "gelu":
        op = b.add(df.GeluOp.create(operands=[b.value(m.operand("input"))], result_types=[out_type],
                                    properties={"layer": StringAttr(name), "approx": StringAttr(m.props["approx"])}))
        b.patterns["gelu"] += 1
    elif m.kind == "layernorm":
        gname = m.operands["weight"] or name + ".gamma"
        weight = b.weight(gname, np.asarray(m.props["gamma"], dtype=np.float32))
        bias = None
        if m.props["beta"] is not None:
            bname = m.operands["bias"] or name + ".beta"
            bias = b.weight(bname, np.asarray(m.props["beta"], dtype=np.float32))
        op = b.add(_layernorm_op(name, b.value(m.operand("input")), weight, bias, out_type,
                                 m.props["epsilon"], m.props["kind"]))
        b.patterns["layernorm"] += 1
    elif m.kind == "moe":
        op = b.add(_moe_op(b, name, m, out_type))
        b.patterns["moe"] += 1
    else:  # pragma: no cover - recognize() only yields the kinds above
        raise AssertionError(m.kind)
    b.bind(m.output, op)


def _moe_op(b: _Builder, name: str, m: Match, out_type: Attribute) -> Operation:
    """A ``dataflow.moe`` for a recognised block (compiler/frontend/recognize_moe.py); stacked expert weights keep
    their ONNX names, unrolled ones are stacked under ``<layer>.w1`` ... ."""
    p = m.props
    weights = []
    for key in ("w1", "w2", "b1", "b2", "w3"):
        value = p.get(key)
        weights.append(None if value is None else b.weight(
            p.get(key + "_name") or f"{name}.{key}", np.ascontiguousarray(value, dtype=np.float32)))
    operands = [b.value(m.operand("input")), b.value(m.operand("gate"))] + [w for w in weights if w is not None]
    op = df.MoeOp.create(
        operands=operands, result_types=[out_type],
        properties={"layer": StringAttr(name), "num_experts": IntegerAttr(p["num_experts"], i64),
                    "top_k": IntegerAttr(p["top_k"], i64), "mode": StringAttr(p["mode"]),
                    "capacity_factor": FloatAttr(float(p["capacity_factor"]), f64),
                    "renormalize": BoolAttr.from_bool(bool(p["renormalize"])),
                    "activation": StringAttr(p["activation"]),
                    "operandSegmentSizes": DenseArrayBase.from_list(
                        IntegerType(32), [1, 1, 1, 1] + [0 if w is None else 1 for w in weights[2:]])})
    sc = p.get("scoring")
    if sc is not None:  # a sigmoid router (compiler/numerics/router.py Scoring)
        router: dict[str, Attribute] = {"groups": IntegerAttr(sc.groups, i64),
                                        "topk_groups": IntegerAttr(sc.topk_groups, i64),
                                        "scale": FloatAttr(float(sc.scale), f64)}
        if sc.bias is not None:
            router["bias"] = ArrayAttr([FloatAttr(float(v), f64) for v in sc.bias])
        op.attributes[df.ROUTER_ATTR] = DictionaryAttr(router)
    return op


def _layernorm_op(name: str, x: SSAValue, w: SSAValue, bias: SSAValue | None, out: Attribute, eps: float,
                  kind: str) -> Operation:
    return df.LayerNormOp.create(
        operands=[x, w] + ([bias] if bias is not None else []), result_types=[out],
        properties={"layer": StringAttr(name), "epsilon": FloatAttr(float(eps), f64), "kind": StringAttr(kind),
                    "approx": StringAttr("exact"),
                    "operandSegmentSizes": DenseArrayBase.from_list(IntegerType(32),
                                                                    [1, 1, 1 if bias is not None else 0])})


def _emit_node(b: _Builder, node: Node) -> None:
    g = b.g
    op_type = node.op_type
    if op_type in ("MatMul", "Gemm"):
        _emit_gemm(b, node)
        return
    if op_type == "Conv":
        _emit_conv(b, node)
        return
    name = b.unique(_layer_name(node.name))
    if op_type == "LayerNormalization":
        x, w = node.inputs[0], node.inputs[1]
        if node.attrs.get("axis", -1) not in (-1, len(g.shapes[x]) - 1) or not g.is_const(w):
            raise InputError(f"{g.source}: unsupported op LayerNormalization (node '{node.name}'): only last-axis "
                             "normalisation with constant scale is supported")
        bias = b.value(node.inputs[2]) if len(node.inputs) > 2 and node.inputs[2] else None
        op = b.add(_layernorm_op(name, b.value(x), b.value(w), bias, b.ttype(node.outputs[0]),
                                 float(node.attrs.get("epsilon", 1e-5)), "layernorm"))
        b.patterns["layernorm"] += 1
    elif op_type == "Gelu":
        approx = "tanh" if node.attrs.get("approximate", "none") == "tanh" else "exact"
        op = b.add(df.GeluOp.create(operands=[b.value(node.inputs[0])], result_types=[b.ttype(node.outputs[0])],
                                    properties={"layer": StringAttr(name), "approx": StringAttr(approx)}))
        b.patterns["gelu"] += 1
    elif op_type == "Rope":  # internal: a rotary embedding the recognizer fitted (compiler/frontend/rope.py)
        op = b.add(df.RopeOp.create(
            operands=[b.value(i) for i in node.inputs], result_types=[b.ttype(node.outputs[0])],
            properties={"layer": StringAttr(name), "style": StringAttr(node.attrs["style"]),
                        "head_dim": IntegerAttr(int(node.attrs["head_dim"]), i64),
                        "rotary_dim": IntegerAttr(int(node.attrs["rotary_dim"]), i64)}))
    elif op_type == "Softmax":
        op = b.add(df.SoftmaxOp.create(
            operands=[b.value(node.inputs[0])], result_types=[b.ttype(node.outputs[0])],
            properties={"layer": StringAttr(name), "axis": IntegerAttr(int(node.attrs.get("axis", -1)), i64),
                        "approx": StringAttr("exact")}))
        b.patterns["softmax"] += 1
    elif (op_type == "Gather" and g.is_const(node.inputs[0]) and not g.is_const(node.inputs[1])
          and len(g.shapes[node.inputs[0]]) == 2 and node.attrs.get("axis", 0) == 0):
        op = b.add(df.EmbeddingOp.create(
            operands=[b.value(node.inputs[0]), b.value(node.inputs[1])], result_types=[b.ttype(node.outputs[0])],
            properties={"layer": StringAttr(name)}))
    elif op_type == "TopK" and not _sortable(g, node):
        raise InputError(f"{g.source}: unsupported op TopK (node '{node.name}'): only a TopK with a constant k "
                         "within its axis and two outputs is lowered (a sort move)")
    elif op_type in _ELEMENTWISE or op_type in _MOVE or op_type in _REDUCE:
        if op_type == "Resize" and (why := resize_refusal(node.attrs, g.shapes[node.inputs[0]],
                                                          g.shapes[node.outputs[0]])):
            raise InputError(f"{g.source}: unsupported op Resize (node '{node.name}'): {why}")
        operands, attrs = _generic_attrs(b, node, PARAM_INPUTS.get(op_type, set()))
        results = [b.ttype(o) for o in node.outputs if o]
        if op_type in _ELEMENTWISE:
            op = b.add(df.ElementwiseOp.create(operands=operands, result_types=results, properties={
                "layer": StringAttr(name), "kind": StringAttr(_ELEMENTWISE[op_type]), "attrs": attrs}))
        elif op_type in _MOVE:
            op = b.add(df.MoveOp.create(operands=operands, result_types=results, properties={
                "layer": StringAttr(name), "kind": StringAttr(_MOVE[op_type]), "attrs": attrs}))
        else:
            axes = node.attrs.get("axes")
            if len(node.inputs) > 1 and node.inputs[1]:
                axes = [int(a) for a in g.constants[node.inputs[1]].reshape(-1)]
            if op_type == "ArgMax":
                axes = [int(node.attrs.get("axis", 0))]
            if not axes:  # none given or an empty axes tensor: every axis (noop_with_empty_axes: compound_ops.py)
                axes = list(range(len(g.shapes[node.inputs[0]])))
            op = b.add(df.ReduceOp.create(operands=[operands[0]], result_types=results, properties={
                "layer": StringAttr(name), "kind": StringAttr(_REDUCE[op_type]),
                "axes": ArrayAttr([IntegerAttr(int(a), i64) for a in axes]),
                "keepdims": BoolAttr.from_bool(bool(node.attrs.get("keepdims", 1)))}))
        for i, out in enumerate(o for o in node.outputs if o):
            b.bind(out, op, i)
        return
    else:
        raise InputError(
            f"{g.source}: unsupported op {op_type} (node '{node.name}'); supported ops are listed by "
            "`codesign ops` — re-export without it or open an issue with the model")
    b.bind(node.outputs[0], op)


def build_module(graph: Graph) -> ImportResult:
    """Recognise patterns in ``graph`` and build the ``dataflow`` module for it."""
    fold_dynamic_quant(graph)  # quantize_dynamic's integer GEMMs: the float graph on the dequantized weights
    qdq_ranges = strip_qdq(graph)  # QDQ models: recognise the float graph, keep the quantization ranges
    matches = recognize(graph)
    by_output = {m.output: m for m in matches}
    consumed = {id(n) for m in matches for n in m.nodes}
    b = _Builder(graph)
    arg_types = [b.ttype(n) for n in graph.inputs]
    for i, (name, typ) in enumerate(zip(graph.inputs, arg_types)):
        b.values[name] = b.block.insert_arg(typ, i)
    consumers = graph.consumers()
    for node in graph.nodes:  # data-dependent shapes (NonZero) are only allowed inside a recognised MoE block
        unknown = [o for o in node.outputs if o and o not in graph.shapes]
        if unknown and id(node) not in consumed:
            raise InputError(f"{graph.source}: cannot infer a static shape for '{unknown[0]}' of {node.describe()}: "
                             "it depends on data (NonZero) and is not inside a recognised MoE block")
    absorbed: dict[int, Node] = {}
    pre_pads = zero_pads_into_convs(graph, consumers)  # a zero Pad read only by a Conv becomes the Conv's padding
    for pad, _ in pre_pads.values():
        absorbed[id(pad)] = pad
    ops_hist: dict[str, int] = {}
    for node in graph.nodes:
        ops_hist[node.op_type] = ops_hist.get(node.op_type, 0) + 1
        if id(node) in absorbed:
            continue
        if id(node) in consumed:
            for out in node.outputs:
                if out in by_output:
                    _emit_match(b, by_output[out])
            continue
        bias_add = _fold_bias(b, node, consumers)
        if bias_add is not None:
            absorbed[id(bias_add)] = bias_add
            _emit_gemm(b, node, bias_add)
            continue
        if id(node) in pre_pads:
            emit_conv(b, node, b.unique(_layer_name(node.name)), pre_pads[id(node)])
            continue
        _emit_node(b, node)
    for name, value in qdq_ranges.items():
        owner = b.values[name].owner if name in b.values else None
        if isinstance(owner, Operation) and not isinstance(owner, df.WeightOp):
            owner.attributes[QDQ_RANGE_ATTR] = FloatAttr(value, f64)
    b.add(func.ReturnOp(*[b.value(o) for o in graph.outputs]))
    result_types = [b.values[o].type for o in graph.outputs]
    fn = func.FuncOp("main", (arg_types, result_types), Region(b.block))
    module = ModuleOp([fn])
    return ImportResult(module=module, weights=b.weights, patterns=b.patterns, input_names=list(graph.inputs),
                        output_names=list(graph.outputs), source=graph.source, onnx_ops=ops_hist,
                        batch=(int(graph.shapes[graph.inputs[0]][0])
                               if graph.inputs and graph.shapes[graph.inputs[0]] else 1),
                        tensor_layers=_tensor_layers(b.values), notes=list(graph.notes),
                        precision=weights_precision((v.dtype, v.size) for v in graph.constants.values()),
                        import_notes=list(graph.import_notes), quantized=graph.quantized)


def _tensor_layers(values: dict[str, SSAValue]) -> dict[str, str]:
    out = {}
    for name, value in values.items():
        owner = value.owner
        layer = owner.properties.get(LAYER_ATTR) if isinstance(owner, Operation) else None
        if (isinstance(layer, StringAttr) and isinstance(owner, Operation) and not isinstance(owner, df.WeightOp)
                and owner.results[0] is value
                and isinstance(value.type, TensorType) and isinstance(value.type.get_element_type(), AnyFloat)):
            out[name] = layer.data
    return out
