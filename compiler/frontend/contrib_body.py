"""One onnxruntime contrib node being rewritten into standard ONNX nodes: the builder its expansions write with.

compiler/frontend/ort_contrib.py (the fused transformer ops) and compiler/frontend/ort_gqa.py (GroupQueryAttention)
write their standard-op subgraphs through it: fresh tensor names under the node's name, constants in the node's
float type, and refusals that name the node.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import onnx
from onnx import helper, numpy_helper

from hw.errors import InputError

__all__ = ["CONTRIB_DOMAIN", "ContribBody", "Rewrite", "contrib_node", "model_dir", "rewrite_contrib"]

CONTRIB_DOMAIN = "com.microsoft"


def contrib_node(node: onnx.NodeProto, index: int, source: str) -> tuple[str, str, dict[str, Any]]:
    """(its name, or ``<op>_<index>`` for an unnamed one; the prefix of its refusals; its attributes) for a contrib
    node a load-time expansion rewrites."""
    name = node.name or f"{node.op_type}_{index}"
    where = f"{source}: unsupported {CONTRIB_DOMAIN}.{node.op_type} (node '{name}')"
    return name, where, {a.name: helper.get_attribute_value(a) for a in node.attribute}


#: Rewrites one contrib node (node, its name, its refusal prefix, its attributes) into standard nodes.
Rewrite = Callable[[onnx.NodeProto, str, str, dict[str, Any]], list[onnx.NodeProto]]


def model_dir(source: str) -> str:
    """The folder external data is read from: the model file's, or "" for a model not read from a file."""
    return str(Path(source).parent) if Path(source).is_file() else ""


def rewrite_contrib(model: onnx.ModelProto, op_type: str, source: str,
                    start: Callable[[onnx.GraphProto], Rewrite]) -> onnx.ModelProto:
    """``model`` with every ``com.microsoft`` node of ``op_type`` replaced by what ``start(graph)``'s rewrite makes of
    it (a copy, whose graph the rewrite may add initializers to; ``model`` itself when there is no such node)."""
    if not any(n.op_type == op_type and n.domain == CONTRIB_DOMAIN for n in model.graph.node):
        return model
    result = onnx.ModelProto()
    result.CopyFrom(model)
    rewrite = start(result.graph)
    nodes: list[onnx.NodeProto] = []
    for i, node in enumerate(result.graph.node):
        if node.op_type == op_type and node.domain == CONTRIB_DOMAIN:
            nodes += rewrite(node, *contrib_node(node, i, source))
        else:
            nodes.append(node)
    del result.graph.node[:]
    result.graph.node.extend(nodes)
    return result


class ContribBody:
    """The standard nodes one contrib node becomes; fresh tensor names are ``<node name>/<op>_<n>``."""

    def __init__(self, node: onnx.NodeProto, opset: int, where: str, dtype: np.dtype):
        self.node, self.opset, self.where, self.dtype = node, opset, where, dtype
        self.prefix = node.name or node.op_type
        self.nodes: list[onnx.NodeProto] = []
        self.attrs = {a.name: helper.get_attribute_value(a) for a in node.attribute}

    def refuse(self, what: str) -> InputError:
        return InputError(f"{self.where}: unsupported {CONTRIB_DOMAIN}.{self.node.op_type} (node "
                          f"'{self.prefix}'): {what}")

    def int_attr(self, name: str, default: int) -> int:
        value = self.attrs.get(name, default)
        if not isinstance(value, int):
            raise self.refuse(f"attribute {name} is not an integer")
        return value

    def float_attr(self, name: str, default: float) -> float:
        value = self.attrs.get(name, default)
        if not isinstance(value, (int, float)) or not math.isfinite(value):
            raise self.refuse(f"attribute {name} is not a finite float")
        return float(value)

    def input(self, i: int) -> str:
        return self.node.input[i] if i < len(self.node.input) else ""

    def output(self, i: int) -> str:
        return self.node.output[i] if i < len(self.node.output) else ""

    def op(self, op_type: str, inputs: list[str], out: str = "", **attrs: Any) -> str:
        name = f"{self.prefix}/{op_type}_{len(self.nodes)}"
        out = out or f"{name}_output"
        self.nodes.append(helper.make_node(op_type, inputs, [out], name=name, **attrs))
        return out

    def const(self, value: float | list[int] | np.ndarray, dtype: type | np.dtype | None = None) -> str:
        """A Constant; floats in the node's float type unless ``dtype`` says otherwise."""
        array = np.asarray(value, self.dtype if dtype is None else dtype)
        return self.op("Constant", [], value=numpy_helper.from_array(array, f"{self.prefix}/c{len(self.nodes)}"))

    def mean_last(self, x: str) -> str:
        """ReduceMean over the last axis, keepdims (axes an input from opset 18 on)."""
        if self.opset >= 18:
            return self.op("ReduceMean", [x, self.const([-1], np.int64)], keepdims=1)
        return self.op("ReduceMean", [x], axes=[-1], keepdims=1)

    def split(self, x: str, sizes: list[int], axis: int = -1) -> list[str]:
        """``x`` split into parts of ``sizes`` along ``axis`` (a Split node with one output per part)."""
        name = f"{self.prefix}/Split_{len(self.nodes)}"
        outs = [f"{name}_{i}" for i in range(len(sizes))]
        self.nodes.append(helper.make_node("Split", [x, self.const(sizes, np.int64)], outs, name=name, axis=axis))
        return outs

    def unsqueeze(self, x: str, axes: list[int]) -> str:
        return self.op("Unsqueeze", [x, self.const(axes, np.int64)])
