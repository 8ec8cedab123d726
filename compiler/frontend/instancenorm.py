"""Lower ``InstanceNormalization`` to a last-axis ``LayerNormalization`` and a per-channel Mul and Add.

InstanceNormalization normalises each (sample, channel) row over its spatial positions: on ``[N, C, *S]`` it is a
layer norm over the flattened ``S`` (``[N, C, prod(S)]``, last axis; no affine) followed by the per-channel scale
and bias broadcast over ``S`` (a ``[C, 1, ...]`` shape). torch's legacy exporter writes every ``GroupNorm`` this
way (a Reshape to ``[N, G, -1]``, an InstanceNormalization with unit scale and zero bias, the Reshape back and the
affine Mul / Add): wav2vec2's and HuBERT's first feature-extractor conv layer. After the rewrite it is the
``dataflow.layernorm`` the dialect, the integer I-LayerNorm and every target already run (a row per channel), so a
GroupNorm is recognised, quantised and priced as the layer norm over rows it is. Unit scales and zero biases
(the GroupNorm export's) add no Mul / Add. A scale or bias that is not a constant raises one `InputError` line
naming the node.
"""

from __future__ import annotations

import math

import numpy as np

from compiler.frontend.emitter import lower_each
from compiler.frontend.graph import Graph, Node
from hw.errors import InputError

__all__ = ["lower_instance_norms"]


def _const(graph: Graph, name: str, value: np.ndarray, dtype: np.dtype) -> str:
    graph.constants[name] = value.astype(dtype)
    graph.shapes[name], graph.dtypes[name] = value.shape, np.dtype(dtype)
    return name


def _tensor(graph: Graph, name: str, shape: tuple[int, ...], dtype: np.dtype) -> str:
    graph.shapes[name], graph.dtypes[name] = shape, dtype
    return name


def _lower(graph: Graph, node: Node) -> list[Node]:
    x, out = node.inputs[0], node.outputs[0]
    params = node.inputs[1:3]
    shape = graph.shapes.get(x)
    if len(params) != 2 or not all(graph.is_const(p) for p in params) or shape is None or len(shape) < 3:
        raise InputError(f"{graph.source}: unsupported op InstanceNormalization (node '{node.name}'): only constant "
                         "scale and bias on an [N, C, ...] input with static shape are supported")
    dtype = graph.dtypes.get(x, np.dtype(np.float32))
    scale, bias = (graph.constants[p].astype(np.float64).reshape(-1) for p in params)
    rows = (shape[0], shape[1], math.prod(shape[2:]))
    nodes: list[Node] = []
    src = x
    if len(shape) > 3:
        src = _tensor(graph, f"{node.name}/rows_output_0", rows, dtype)
        target = _const(graph, f"{node.name}/rows_shape", np.array(rows, np.int64), np.dtype(np.int64))
        nodes.append(Node("Reshape", f"{node.name}/rows", [x, target], [src]))
    tail = [(what, v) for what, v in (("scale", scale), ("shift", bias))
            if not np.array_equal(v, np.ones_like(v) if what == "scale" else np.zeros_like(v))]
    normed = out if len(shape) == 3 and not tail else _tensor(graph, f"{node.name}/normed_output_0", rows, dtype)
    ones = _const(graph, f"{node.name}/unit_scale", np.ones(rows[-1]), dtype)
    nodes.append(Node("LayerNormalization", node.name, [src, ones], [normed],
                      {"axis": -1, "epsilon": float(node.attrs.get("epsilon", 1e-5))}))
    if len(shape) > 3:
        back = out if not tail else _tensor(graph, f"{node.name}/back_output_0", shape, dtype)
        target = _const(graph, f"{node.name}/back_shape", np.array(shape, np.int64), np.dtype(np.int64))
        nodes.append(Node("Reshape", f"{node.name}/back", [normed, target], [back]))
        normed = back
    channel = (scale.size,) + (1,) * (len(shape) - 2)
    for i, (what, value) in enumerate(tail):
        result = out if i == len(tail) - 1 else _tensor(graph, f"{node.name}/{what}_output_0", shape, dtype)
        nodes.append(Node("Mul" if what == "scale" else "Add", f"{node.name}/{what}",
                          [normed, _const(graph, f"{node.name}/{what}", value.reshape(channel), dtype)], [result]))
        normed = result
    return nodes


def lower_instance_norms(graph: Graph) -> int:
    """Replace every InstanceNormalization of ``graph`` in place; returns how many were lowered."""
    return lower_each(graph, ("InstanceNormalization",), _lower)
