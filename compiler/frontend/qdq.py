"""Already-quantized ONNX models in QDQ form (QuantizeLinear -> DequantizeLinear around every tensor).

onnxruntime.quantization.quantize_static (QuantFormat.QDQ) writes a float graph with fake-quant pairs: weights as
``DequantizeLinear(int8 constant, scale, zero_point)``, activations as ``DequantizeLinear(QuantizeLinear(x))``.
The loader folds the weight DequantizeLinears into float constants (compiler/frontend/onnx_ops.py has both ops).
:func:`strip_qdq` removes the activation pairs before pattern recognition, so attention / GELU / LayerNorm are
recognised as in the float model, and keeps what the pairs said: the real range each tensor was quantized to,
max(|(q_min - zp) s|, |(q_max - zp) s|). The dialect builder writes it on the producing op as ``qdq_range`` and the
``quantize`` pass uses it instead of a calibrated range (the model's own calibration wins).
"""

from __future__ import annotations

import numpy as np

from compiler.frontend.graph import Graph, Node

__all__ = ["strip_qdq", "QDQ_RANGE_ATTR"]

#: Discardable attribute (f64) on an op whose result a QDQ pair quantized: the real range of that quantization.
QDQ_RANGE_ATTR = "qdq_range"


def _range(graph: Graph, q: Node) -> float | None:
    scale = graph.constants.get(q.inputs[1]) if len(q.inputs) > 1 else None
    if scale is None or scale.size != 1:
        return None  # per-axis activation quantization: leave the pair, the builder reports it by name
    zp = graph.constants.get(q.inputs[2]) if len(q.inputs) > 2 and q.inputs[2] else np.zeros((), np.uint8)
    if zp is None:
        return None
    info = np.iinfo(zp.dtype)
    s, z = float(scale.reshape(-1)[0]), int(zp.reshape(-1)[0])
    return max(abs((info.min - z) * s), abs((info.max - z) * s))


def strip_qdq(graph: Graph) -> dict[str, float]:
    """Remove QuantizeLinear -> DequantizeLinear pairs on activations in place; tensor name -> quantized range."""
    producers = graph.producers()
    ranges: dict[str, float] = {}
    rename: dict[str, str] = {}
    dropped: set[int] = set()
    for node in graph.nodes:
        if node.op_type != "DequantizeLinear" or graph.is_const(node.inputs[0]):
            continue
        q = producers.get(node.inputs[0])
        if q is None or q.op_type != "QuantizeLinear" or q.inputs[1:] != node.inputs[1:]:
            continue
        r = _range(graph, q)
        if r is None:
            continue
        src = rename.get(q.inputs[0], q.inputs[0])
        ranges[src] = max(ranges.get(src, 0.0), r)
        if node.outputs[0] in graph.outputs:  # keep the model's output name: the pair becomes an Identity
            node.op_type, node.inputs, node.attrs = "Identity", [src], {}
            continue
        rename[node.outputs[0]] = src
        dropped.add(id(node))
    if not rename:
        return ranges
    kept = []
    for node in graph.nodes:
        if id(node) in dropped:
            continue
        node.inputs = [rename.get(n, n) for n in node.inputs]
        kept.append(node)
    used = {n for node in kept for n in node.inputs} | set(graph.outputs)
    graph.nodes = [n for n in kept if n.op_type != "QuantizeLinear" or n.outputs[0] in used]
    return ranges
