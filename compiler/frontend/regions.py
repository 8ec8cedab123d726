"""Find small element-wise regions of a graph and check what they compute by running them.

Exporters spell GELU and LayerNorm in many ways (Erf or Tanh forms, x*x or Pow, Div or Reciprocal*Mul, constants on
either side). Matching every spelling structurally is a losing game; instead the frontend takes a candidate input
tensor, grows the region of element-wise nodes that depend only on it and on constants, and evaluates each candidate
output on random data against the function it should compute. A region that passes computes that function, whatever
its spelling.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable
from dataclasses import dataclass

import numpy as np

from compiler.frontend.graph import Graph, Node
from compiler.frontend.onnx_ops import run_node
from compiler.frontend.precision import float_cast, widen

__all__ = ["Region", "grow_region", "candidate_regions", "eval_region", "cone_tensors", "erf64"]

#: Ops a GELU / LayerNorm / RMSNorm region may contain.
REGION_OPS = frozenset({
    "Add", "Sub", "Mul", "Div", "Pow", "Sqrt", "Reciprocal", "Neg", "Erf", "Tanh", "ReduceMean", "Cast",
    "Sigmoid", "Exp", "Identity",
})
_MAX_REGION = 24


@dataclass
class Region:
    """Nodes computing ``output`` from ``input`` and constants only."""

    input: str
    output: str
    nodes: list[Node]


def grow_region(graph: Graph, x: str, consumers: dict[str, list[Node]], order: dict[int, int]) -> list[Node]:
    """Element-wise nodes (REGION_OPS) reachable from ``x`` whose non-constant inputs all come from the region."""
    inside = {x}
    region: list[Node] = []
    frontier = list(consumers.get(x, []))
    seen: set[int] = set()
    while frontier and len(region) < _MAX_REGION:
        frontier.sort(key=lambda n: order[id(n)])
        node = frontier.pop(0)
        if id(node) in seen or node.op_type not in REGION_OPS:
            continue
        if not all(not i or i in inside or graph.is_const(i) for i in node.inputs):
            continue
        seen.add(id(node))
        region.append(node)
        for out in node.outputs:
            inside.add(out)
            frontier.extend(consumers.get(out, []))
    region.sort(key=lambda n: order[id(n)])
    return region


def _ancestors(output: str, region: list[Node]) -> list[Node]:
    by_out = {o: n for n in region for o in n.outputs}
    need, stack, keep = set(), [output], []
    while stack:
        name = stack.pop()
        node = by_out.get(name)
        if node is None or id(node) in need:
            continue
        need.add(id(node))
        stack.extend(i for i in node.inputs if i)
    keep = [n for n in region if id(n) in need]
    return keep


def candidate_regions(graph: Graph, x: str, consumers: dict[str, list[Node]], order: dict[int, int],
                      must_contain: Callable[[list[Node]], bool]) -> Iterable[Region]:
    """Closed sub-regions of the region grown from ``x``, largest output first.

    A sub-region is closed when no tensor inside it, other than its output, is read outside it (so replacing it
    by one op loses nothing).
    """
    region = grow_region(graph, x, consumers, order)
    for node in reversed(region):
        out = node.outputs[0]
        nodes = _ancestors(out, region)
        if not must_contain(nodes):
            continue
        names = {o for n in nodes for o in n.outputs}
        closed = all(
            all(id(c) in {id(m) for m in nodes} for c in consumers.get(name, []))
            and name not in graph.outputs
            for name in names - {out}
        )
        if closed and all(i == x or i in names or graph.is_const(i) for n in nodes for i in n.inputs if i):
            yield Region(input=x, output=out, nodes=nodes)


def eval_region(graph: Graph, region: Region, x: np.ndarray) -> np.ndarray:
    """Run the region's nodes on ``x`` in float64 whatever float type the graph had (float32, float16, bfloat16),
    to judge the math, not rounding."""
    # Candidate regions that are not the function looked for may take sqrt of negatives: that only disqualifies them.
    with np.errstate(all="ignore"):
        return _eval_region(graph, region, x)


def _eval_region(graph: Graph, region: Region, x: np.ndarray) -> np.ndarray:
    values: dict[str, np.ndarray] = {region.input: x}
    for node in region.nodes:
        args = []
        for name in node.inputs:
            if not name:
                args.append(None)
            elif name in values:
                args.append(values[name])
            else:
                args.append(widen(graph.constants[name]))
        attrs = node.attrs
        if node.op_type == "Cast":
            # Keep the float64 evaluation: a Cast between float types (float32 <-> float16 / bfloat16 around a norm
            # computed in float32) would only add rounding noise. A Cast to any other type changes values: the
            # region is not a float function, and the caller skips it.
            if not float_cast(graph, node):
                raise ValueError(f"{node.describe()}: casts to or from a non-float type")
            values[node.outputs[0]] = args[0]
            continue
        if node.op_type == "Erf":
            values[node.outputs[0]] = erf64(args[0])
            continue
        for name, value in zip(node.outputs, run_node(node.op_type, args, attrs, len(node.outputs))):
            values[name] = value
    return values[region.output]


_ERF = np.frompyfunc(math.erf, 1, 1)


def erf64(x: np.ndarray) -> np.ndarray:
    """erf in float64 from the C library. Judging a region needs the function to within rounding, not the bits of
    the ONNX Erf kernel (torch's, which constant folding and the simulator keep); this spares the judge torch."""
    return np.asarray(_ERF(np.asarray(x, dtype=np.float64)), dtype=np.float64)


def cone_tensors(graph: Graph, start: str, producers: dict[str, Node], depth: int) -> list[str]:
    """Non-constant tensors reachable backwards from ``start`` through REGION_OPS nodes, nearest first."""
    out: list[str] = []
    level = [start]
    for _ in range(depth):
        nxt: list[str] = []
        for name in level:
            if name in out or graph.is_const(name):
                continue
            out.append(name)
            node = producers.get(name)
            if node is not None and node.op_type in REGION_OPS:
                nxt.extend(i for i in node.inputs if i and not graph.is_const(i))
        level = nxt
    return out
