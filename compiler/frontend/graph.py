"""A light, mutable view of an ONNX graph for folding and pattern matching.

onnx.GraphProto is awkward to query (no producer/consumer maps, protobuf repeated fields) and slow to mutate, so the
frontend converts it once into plain Python objects: nodes with decoded attributes, constants as NumPy arrays,
static shapes and dtypes per tensor name.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

__all__ = ["Node", "Graph", "PARAM_INPUTS"]

#: Inputs (by position) that are shape-like parameters rather than data, per op type: a constant one is kept as an
#: attribute of the op (to_dialect), and one computed from the inputs' values makes the output's shape depend on data
#: where it sets that shape (onnx_loader names it so).
PARAM_INPUTS: dict[str, set[int]] = {
    "Reshape": {1}, "Expand": {1}, "Squeeze": {1}, "Unsqueeze": {1}, "Slice": {1, 2, 3, 4}, "Split": {1},
    "Tile": {1}, "Trilu": {1}, "CumSum": {1}, "ReduceMean": {1}, "ReduceSum": {1}, "ReduceMax": {1},
    "ReduceMin": {1}, "ReduceProd": {1}, "Clip": {1, 2}, "ConstantOfShape": {0}, "Pad": {1, 2, 3}, "TopK": {1},
    "Resize": {1, 2, 3},
}


@dataclass
class Node:
    """One ONNX node; ``inputs`` may contain ``""`` for omitted optional inputs."""

    op_type: str
    name: str
    inputs: list[str]
    outputs: list[str]
    attrs: dict[str, Any] = field(default_factory=dict)

    def describe(self) -> str:
        """``OpType 'node_name'`` for messages."""
        return f"{self.op_type} '{self.name}'"


@dataclass
class Graph:
    """Nodes in topological order plus everything known about each tensor name."""

    nodes: list[Node]
    inputs: list[str]
    outputs: list[str]
    constants: dict[str, np.ndarray]
    shapes: dict[str, tuple[int, ...]]
    dtypes: dict[str, np.dtype]
    source: str = "<model>"
    #: What recognition left as generic ops and why (a block that looked like an MoE but computes another routing):
    #: the compile goes on, and the report says so.
    notes: list[str] = field(default_factory=list)
    #: What the import rewrote on the way in that the user should know (a quantized model's integer GEMMs taken as
    #: float ones): the report lists them apart from recognition's notes.
    import_notes: list[str] = field(default_factory=list)
    #: The file holds quantized ops (QDQ pairs, integer GEMMs, QOperator or block-quantized ones): what onnxruntime
    #: runs as the accuracy reference is the quantized model, not a float one.
    quantized: bool = False

    def producers(self) -> dict[str, Node]:
        """Tensor name -> the node that produces it."""
        return {out: node for node in self.nodes for out in node.outputs if out}

    def consumers(self) -> dict[str, list[Node]]:
        """Tensor name -> nodes reading it (graph outputs are not nodes; check ``outputs`` separately)."""
        users: dict[str, list[Node]] = {}
        for node in self.nodes:
            for name in node.inputs:
                if name:
                    users.setdefault(name, []).append(node)
        return users

    def is_const(self, name: str) -> bool:
        """True for initializers and folded tensors."""
        return name in self.constants

    def scalar(self, name: str) -> float | None:
        """The value of a one-element constant, else None."""
        value = self.constants.get(name)
        if value is None or value.size != 1:
            return None
        return float(value.reshape(-1)[0])
