"""ONNX Runtime's dynamically quantized models (``onnxruntime.quantization.quantize_dynamic``) as float graphs.

``quantize_dynamic`` (the usual way CPU deployments and transformers.js / Optimum exports quantize a transformer)
rewrites each MatMul ``x W`` and Conv ``x * W`` into

    DynamicQuantizeLinear(x) -> (xq uint8, xs, xz)      per tensor, per inference, from x's own min and max
    MatMulInteger(xq, Wq, xz, Wz) | ConvInteger(...)     int32 accumulators
    Cast(to=float) -> Mul(., Mul(xs, Ws))                the accumulators back to real units

and each Gather of an embedding table into ``Gather(Wq, ids) -> DequantizeLinear(., Ws, Wz)``; weights are int8 or
uint8 constants with their steps. As with QDQ models (compiler/frontend/qdq.py) the compiler recognises the float
graph: each chain becomes ``MatMul(x, (Wq - Wz) Ws)`` / ``Conv(x, (Wq - Wz) Ws)`` on the model's own dequantized
weights, so attention, GELU and the norms are found as in the model before quantization, and an embedding's
DequantizeLinear moves onto its constant table before the Gather (exactly equal: dequantizing is element-wise and
the Gather only picks rows).

What the float graph leaves out is DynamicQuantizeLinear's rounding of each activation to a uint8 grid whose step
the data sets at run time. There is no static range to carry over (a QDQ pair gives one, this does not), so
``--quant`` quantizes activations the compiler's way; without it the compile is float on int8-derived weights and
differs from onnxruntime's run of the model by that rounding (the report's accuracy section measures it, and the
report carries a note saying which GEMMs were rewritten). A chain that does not have exactly this shape is left
alone, so its ops are refused by name as unsupported rather than guessed at.
"""

from __future__ import annotations

import numpy as np

from compiler.frontend.graph import Graph, Node
from compiler.frontend.onnx_ops import run_node
from hw.errors import InputError

__all__ = ["fold_dynamic_quant"]

_INTEGER_OPS = {"MatMulInteger": "MatMul", "ConvInteger": "Conv"}
_FLOAT = 1  # TensorProto.FLOAT
_QUANT_DTYPES = (np.int8, np.uint8)


def _add_constant(graph: Graph, name: str, value: np.ndarray) -> str:
    """Store ``value`` as a new constant of ``graph`` under ``name`` (suffixed with ``_`` until no tensor has it)."""
    while name in graph.constants or name in graph.shapes:
        name += "_"
    graph.constants[name], graph.shapes[name], graph.dtypes[name] = value, value.shape, value.dtype
    return name


def _only_consumer(graph: Graph, users: dict[str, list[Node]], name: str) -> Node | None:
    """The single node reading ``name`` (None when several, none, or it is a graph output)."""
    readers = users.get(name, [])
    return readers[0] if len(readers) == 1 and name not in graph.outputs else None


def _weight_scale(scale: np.ndarray, op: str, channels: int) -> np.ndarray | None:
    """The weight's step as a factor on its output-channel axis: one number, or one per output channel (the last
    axis of a MatMul's [K, N] weight, the first of a Conv's [M, C, kh, kw]); None for any other shape."""
    if scale.size == 1:
        return scale.reshape(())
    flat = scale.reshape(-1)
    if flat.size != channels:
        return None
    if op == "MatMulInteger" and scale.shape == (channels,):
        return flat
    if op == "ConvInteger" and scale.shape in ((channels, 1, 1), (1, channels, 1, 1)):
        return flat.reshape(channels, 1, 1, 1)
    return None


def _zero_point(graph: Graph, node: Node, index: int, weight: np.ndarray, op: str) -> np.ndarray | None:
    """The weight's zero point shaped to broadcast on it (0 when omitted); None when not a constant of a usable
    shape."""
    name = node.inputs[index] if len(node.inputs) > index else ""
    if not name:
        return np.zeros((), np.int64)
    zp = graph.constants.get(name)
    if zp is None or zp.dtype != weight.dtype:
        return None
    if zp.size == 1:
        return zp.reshape(()).astype(np.int64)
    channels = weight.shape[-1] if op == "MatMulInteger" else weight.shape[0]
    if zp.reshape(-1).size != channels or zp.ndim != 1:
        return None
    flat = zp.astype(np.int64)
    return flat if op == "MatMulInteger" else flat.reshape(channels, 1, 1, 1)


def _fold_integer_gemm(graph: Graph, node: Node, producers: dict[str, Node], users: dict[str, list[Node]],
                       drop: set[int], replace: dict[int, Node]) -> bool:
    """Rewrite one MatMulInteger / ConvInteger chain (module docstring) into its float op; False if it is not one."""
    weight = graph.constants.get(node.inputs[1]) if len(node.inputs) > 1 else None
    quant = producers.get(node.inputs[0])
    if (weight is None or weight.dtype.type not in _QUANT_DTYPES or quant is None
            or quant.op_type != "DynamicQuantizeLinear" or quant.outputs[0] != node.inputs[0]
            or len(node.inputs) < 3 or node.inputs[2] != quant.outputs[2]):
        return False
    cast = _only_consumer(graph, users, node.outputs[0])
    if cast is None or cast.op_type != "Cast" or int(cast.attrs.get("to", 0)) != _FLOAT:
        return False
    mul = _only_consumer(graph, users, cast.outputs[0])
    if mul is None or mul.op_type != "Mul" or len(mul.inputs) != 2:
        return False
    other = mul.inputs[1] if mul.inputs[0] == cast.outputs[0] else mul.inputs[0]
    scales = producers.get(other)
    if (scales is None or scales.op_type != "Mul" or quant.outputs[1] not in scales.inputs
            or _only_consumer(graph, users, other) is not mul):
        return False
    w_scale_name = scales.inputs[1] if scales.inputs[0] == quant.outputs[1] else scales.inputs[0]
    w_scale = graph.constants.get(w_scale_name)
    op = node.op_type
    channels = weight.shape[-1] if op == "MatMulInteger" else weight.shape[0]
    step = None if w_scale is None else _weight_scale(w_scale, op, channels)
    zp = _zero_point(graph, node, 3, weight, op)
    if step is None or zp is None or step.dtype != np.float32:
        return False
    real = ((weight.astype(np.int64) - zp) * step).astype(np.float32)
    name = _add_constant(graph, f"{node.inputs[1]}_dequantized", real)
    attrs = dict(node.attrs) if op == "ConvInteger" else {}
    replace[id(mul)] = Node(_INTEGER_OPS[op], node.name, [quant.inputs[0], name], list(mul.outputs), attrs)
    drop.update((id(node), id(cast), id(scales)))
    return True


def _fold_table_dequant(graph: Graph, node: Node, producers: dict[str, Node], users: dict[str, list[Node]],
                        drop: set[int]) -> bool:
    """``DequantizeLinear(Gather(constant table, ids))`` -> ``Gather(dequantized table, ids)``; per-tensor steps
    only (a per-axis step would have to follow the Gather's axis)."""
    gather = producers.get(node.inputs[0])
    if gather is None or gather.op_type != "Gather" or _only_consumer(graph, users, gather.outputs[0]) is not node:
        return False
    table = graph.constants.get(gather.inputs[0])
    scale = graph.constants.get(node.inputs[1]) if len(node.inputs) > 1 else None
    zp_name = node.inputs[2] if len(node.inputs) > 2 else ""
    zp = graph.constants.get(zp_name) if zp_name else None
    if (table is None or scale is None or scale.size != 1 or (zp_name and (zp is None or zp.size != 1))
            or not np.issubdtype(table.dtype, np.integer)):
        return False
    real = run_node("DequantizeLinear", [table, scale, zp], {})[0]
    name = _add_constant(graph, f"{gather.inputs[0]}_dequantized", real)
    gather.inputs = [name, *gather.inputs[1:]]
    gather.outputs = list(node.outputs)
    drop.add(id(node))
    return True


def fold_dynamic_quant(graph: Graph) -> int:
    """Rewrite ``quantize_dynamic``'s integer chains and dequantized embedding gathers in place (module docstring);
    the number of GEMMs / convolutions rewritten. A note in ``graph.import_notes`` says what was done. An integer
    GEMM or a DynamicQuantizeLinear left over (another arrangement of them) is an ``InputError`` naming it."""
    if not any(n.op_type in _INTEGER_OPS or n.op_type == "DequantizeLinear" for n in graph.nodes):
        return 0
    producers, users = graph.producers(), graph.consumers()
    drop: set[int] = set()
    replace: dict[int, Node] = {}
    gemms = tables = 0
    for node in graph.nodes:
        if node.op_type in _INTEGER_OPS:
            gemms += _fold_integer_gemm(graph, node, producers, users, drop, replace)
        elif node.op_type == "DequantizeLinear" and not graph.is_const(node.inputs[0]):
            tables += _fold_table_dequant(graph, node, producers, users, drop)
    nodes = [replace.get(id(n), n) for n in graph.nodes if id(n) not in drop]
    used = {i for n in nodes for i in n.inputs} | set(graph.outputs)
    graph.nodes = [n for n in nodes if n.op_type != "DynamicQuantizeLinear" or any(o in used for o in n.outputs)]
    left = [n for n in graph.nodes if n.op_type in _INTEGER_OPS] or [
        n for n in graph.nodes if n.op_type == "DynamicQuantizeLinear"]
    if left:
        raise InputError(f"{graph.source}: cannot import {left[0].describe()}: integer GEMMs and convolutions import "
                         "only as onnxruntime quantize_dynamic writes them (DynamicQuantizeLinear -> MatMulInteger / "
                         "ConvInteger with a constant int8 or uint8 weight -> Cast to float -> Mul by the product of "
                         "the two steps); re-export the float model or quantize it with quantize_dynamic or QDQ")
    if gemms:
        graph.import_notes.append(f"{gemms} dynamically quantized MatMulInteger / ConvInteger op(s) (onnxruntime "
                           "quantize_dynamic) imported as float GEMMs on the model's dequantized int8 weights; their "
                           "per-inference activation rounding (DynamicQuantizeLinear) is not modelled: --quant sets "
                           "the compiler's own")
    if tables:
        graph.import_notes.append(f"{tables} dequantized embedding gather(s) imported as gathers of the dequantized "
                                  "table")
    return gemms
