"""Lower ``ScatterND`` writes of a constant box to ``Slice`` / ``Concat`` before recognition.

``t[..., a:b] = x`` (and ``t[..., a:b].copy_(x)``) exports as ScatterND whose indices are a constant: every
coordinate of the box ``[a0:b0, .., ak-1:bk-1]`` of the data's first k axes, in row-major order. Such a write is a
data move: the result is the data's pieces around the box concatenated with the updates, axis by axis (nested for a
box bounded on several axes); pieces of constant data are constants. DeepSeek-V3's multi-head latent attention
builds its key this way (an empty tensor, the per-head part written into its first dims, the rotary part into the
rest), and a Concat is what the attention matcher (compiler/frontend/head_concat.py) reads.

Writing one slice after another leaves a Slice of a Concat that reads exactly one of its inputs (the first write
read back so that the second can keep it): that Slice is the input itself, so its readers are pointed there.
Nodes the rewrite leaves unread are dropped. Scatters with data-dependent indices (MoE routers), reductions,
duplicate or non-box indices stay ScatterND.
"""

from __future__ import annotations

import numpy as np

from compiler.frontend.graph import Graph, Node

__all__ = ["lower_box_scatters"]


def _box(graph: Graph, node: Node) -> list[tuple[int, int]] | None:
    """The [lo, hi) range per indexed axis if ``node`` writes a constant box in row-major order, else None."""
    if node.attrs.get("reduction", "none") not in ("none", b"none") or len(node.inputs) != 3:
        return None
    data, indices, updates = node.inputs
    idx = graph.constants.get(indices)
    shape = graph.shapes.get(data)
    if idx is None or shape is None or idx.ndim < 1 or graph.shapes.get(updates) is None:
        return None
    k = idx.shape[-1]
    if k == 0 or k > len(shape) or idx.size == 0:
        return None
    dims = np.array(shape[:k], dtype=np.int64)
    flat = idx.reshape(-1, k).astype(np.int64)
    flat = np.where(flat < 0, flat + dims, flat)
    if np.any(flat < 0) or np.any(flat >= dims):
        return None
    ranges = [(int(flat[:, j].min()), int(flat[:, j].max()) + 1) for j in range(k)]
    grid = np.stack(np.meshgrid(*[np.arange(lo, hi) for lo, hi in ranges], indexing="ij"), -1).reshape(-1, k)
    if grid.shape != flat.shape or not np.array_equal(grid, flat):
        return None
    return ranges


class _Emitter:
    """Builds the replacement nodes of one ScatterND, named after it."""

    def __init__(self, graph: Graph, node: Node) -> None:
        self.graph, self.node, self.nodes, self.count = graph, node, [], 0
        self.dtype = graph.dtypes.get(node.inputs[0], np.dtype(np.float32))

    def _name(self, what: str) -> str:
        self.count += 1
        return f"{self.node.name}/box_{what}_{self.count}"

    def const(self, value: np.ndarray, what: str) -> str:
        name = self._name(what)
        self.graph.constants[name] = value
        self.graph.shapes[name], self.graph.dtypes[name] = tuple(value.shape), value.dtype
        return name

    def op(self, op_type: str, inputs: list[str], shape: tuple[int, ...], attrs: dict | None = None,
           out: str | None = None) -> str:
        name = self._name(op_type.lower())
        out = out or f"{name}_output_0"
        self.graph.shapes[out], self.graph.dtypes[out] = shape, self.dtype
        self.nodes.append(Node(op_type, name, inputs, [out], attrs or {}))
        return out

    def slice(self, src: str, axis: int, lo: int, hi: int) -> str:
        """``src[.., lo:hi, ..]`` on ``axis``: a constant where ``src`` is one."""
        shape = list(self.graph.shapes[src])
        value = self.graph.constants.get(src)
        if value is not None:
            return self.const(np.ascontiguousarray(np.take(value, np.arange(lo, hi), axis=axis)), "piece")
        shape[axis] = hi - lo
        bounds = [self.const(np.array([v], dtype=np.int64), what) for v, what in
                  ((lo, "starts"), (hi, "ends"), (axis, "axes"))]
        return self.op("Slice", [src, *bounds], tuple(shape))

    def write(self, data: str, updates: str, ranges: list[tuple[int, int]], axis: int = 0) -> str:
        """``data`` with its box ``ranges`` (from ``axis`` on) replaced by ``updates`` (shaped as the box)."""
        shape = self.graph.shapes[data]
        while axis < len(ranges) and ranges[axis] == (0, shape[axis]):
            axis += 1
        if axis == len(ranges):
            return updates
        lo, hi = ranges[axis]
        middle = self.write(self.slice(data, axis, lo, hi), updates, ranges, axis + 1)
        parts = [p for p in (self.slice(data, axis, 0, lo) if lo else None, middle,
                             self.slice(data, axis, hi, shape[axis]) if hi < shape[axis] else None) if p]
        return self.op("Concat", parts, shape, {"axis": axis})


def _lower(graph: Graph, node: Node) -> list[Node] | None:
    ranges = _box(graph, node)
    if ranges is None:
        return None
    data, _, updates = node.inputs
    shape = graph.shapes[data]
    box = tuple(hi - lo for lo, hi in ranges) + tuple(shape[len(ranges):])
    if int(np.prod(graph.shapes[updates])) != int(np.prod(box)):
        return None  # updates that do not fill the box: left to ScatterND (and its checks)
    emit = _Emitter(graph, node)
    if graph.shapes[updates] != box:
        updates = emit.op("Reshape", [updates, emit.const(np.array(box, dtype=np.int64), "shape")], box)
    out = emit.write(data, updates, ranges)
    if out == node.outputs[0]:
        return emit.nodes
    if emit.nodes and emit.nodes[-1].outputs[0] == out:  # the last node writes the ScatterND's output itself
        del graph.shapes[out]
        emit.nodes[-1].outputs[0] = node.outputs[0]
    else:  # the updates overwrite all of the data
        emit.nodes.append(Node("Identity", node.name, [out], [node.outputs[0]]))
    return emit.nodes


def _slice_bounds(graph: Graph, node: Node) -> tuple[int, int, int] | None:
    """(axis, start, end) of a Slice along one axis with step 1 and constant, in-range bounds."""
    args = [graph.constants.get(i) if i else None for i in node.inputs[1:]]
    shape = graph.shapes.get(node.inputs[0])
    if shape is None or len(args) < 2 or any(a is None for a in args[:2]) or \
            any(a is not None and a.size != 1 for a in args):
        return None
    axis = int(args[2].reshape(-1)[0]) % len(shape) if len(args) > 2 and args[2] is not None else 0
    if len(args) > 3 and args[3] is not None and int(args[3].reshape(-1)[0]) != 1:
        return None
    dim = shape[axis]
    start, end = (int(a.reshape(-1)[0]) for a in args[:2])  # type: ignore[union-attr]
    start, end = (min(max(v + dim if v < 0 else v, 0), dim) for v in (start, end))
    return axis, start, end


def _read_through(graph: Graph, producers: dict[str, Node]) -> dict[str, str]:
    """Slices that read exactly one input of a Concat (through Identity) along its axis: slice output -> input."""
    renamed: dict[str, str] = {}
    for node in graph.nodes:
        if node.op_type != "Slice" or node.outputs[0] in graph.outputs:
            continue
        bounds = _slice_bounds(graph, node)
        src = producers.get(node.inputs[0])
        while src is not None and src.op_type == "Identity":
            src = producers.get(src.inputs[0])
        if bounds is None or src is None or src.op_type != "Concat":
            continue
        rank = len(graph.shapes[src.outputs[0]])
        if int(src.attrs.get("axis", 0)) % rank != bounds[0]:
            continue
        at = 0
        for part in src.inputs:
            size = graph.shapes[part][bounds[0]]
            if (at, at + size) == bounds[1:]:
                renamed[node.outputs[0]] = renamed.get(part, part)
            at += size
    return renamed


def _dead(graph: Graph) -> set[int]:
    live = set(graph.outputs)
    dead: set[int] = set()
    for node in reversed(graph.nodes):
        if any(o in live for o in node.outputs if o):
            live.update(i for i in node.inputs if i)
        else:
            dead.add(id(node))
    return dead


def lower_box_scatters(graph: Graph) -> int:
    """Rewrite ``graph`` in place (module docstring); returns how many ScatterNDs were lowered."""
    if not any(n.op_type == "ScatterND" for n in graph.nodes):
        return 0
    before = _dead(graph)
    nodes: list[Node] = []
    lowered = 0
    for node in graph.nodes:
        new = _lower(graph, node) if node.op_type == "ScatterND" else None
        lowered += new is not None
        nodes += [node] if new is None else new
    if not lowered:
        return 0
    graph.nodes[:] = nodes
    renamed = _read_through(graph, graph.producers())
    for node in graph.nodes:
        node.inputs[:] = [renamed.get(i, i) for i in node.inputs]
    dead = _dead(graph) - before
    graph.nodes[:] = [n for n in graph.nodes if id(n) not in dead]
    return lowered
