"""Lower ONNX ops that are compositions of ops the dialect has, before recognition.

Each rewrite computes the tensor the ONNX operator specification (onnx/onnx ``docs/Operators.md``) defines, with
nodes the dialect already lowers, so no op kind, simulator kernel or cost entry is needed for them:

* ``Sum`` / ``Mean`` (any input count) and ``Max`` / ``Min`` with one or more than two inputs -> a chain of binary
  ops (``Mean``: the sum divided by the count); two-input ``Max`` / ``Min`` are binary element-wise ops already;
* ``LogSoftmax(x)`` -> ``(x - m) - Log(ReduceSum(Exp(x - m)))`` with ``m = ReduceMax(x)`` over the axis (the
  max-shifted form every runtime uses, exact where ``Log(Softmax(x))`` underflows);
* ``ReduceLogSumExp`` -> ``Log(ReduceSum(Exp(x - m))) + m``, ``ReduceLogSum`` -> ``Log(ReduceSum(x))``;
* ``GlobalAveragePool`` / ``GlobalMaxPool`` -> ``ReduceMean`` / ``ReduceMax`` over every spatial axis, kept;
* ``DepthToSpace`` / ``SpaceToDepth`` in DCR or CRD order (pixel shuffle, unshuffle) -> Reshape, Transpose, Reshape;
* ``LpNormalization`` -> ``x / max(ReduceL1(x), tiny)`` or the same with ``ReduceL2`` over its axis;
* ``ArgMin(x)`` -> ``ArgMax(-x)``; ``select_last_index`` -> ``n - 1 - ArgMax`` of the axis reversed (a step -1 Slice);
* ``LayerNormalization`` over several trailing axes -> Reshape, last-axis LayerNormalization, Reshape;
* ``MatMul`` with a rank-1 operand -> the vector as a [K, 1] column or [1, K] row, MatMul, Reshape;
* ``Dropout`` with its mask output read (inference) -> Identity, the mask a constant of ones;
* a ``Reduce*`` with ``noop_with_empty_axes`` and no axes -> Identity;
* ``GatherND`` of constant indices that each name one entry of the first axis (``batch_dims`` 0, last index dim 1:
  dynamo's ``x[..., -2, :]`` on a moved axis, Falcon's fused QKV) -> ``Gather`` on axis 0, which the fused-projection
  split (compiler/frontend/fused_proj.py) reads.
"""

from __future__ import annotations

import numpy as np

from compiler.frontend.graph import Graph, Node
from hw.errors import InputError

__all__ = ["lower_compound_ops"]

_VARIADIC = {"Sum": "Add", "Mean": "Add", "Max": "Max", "Min": "Min"}
_GLOBAL_POOLS = {"GlobalAveragePool": "ReduceMean", "GlobalMaxPool": "ReduceMax"}


class _Emit:
    """Nodes replacing ``node``, each tensor named after it with its shape and ``node``'s input dtype."""

    def __init__(self, graph: Graph, node: Node) -> None:
        self.graph, self.node, self.nodes = graph, node, []
        self.dtype = graph.dtypes.get(node.inputs[0], np.dtype(np.float32))

    def tensor(self, tag: str, shape: tuple[int, ...]) -> str:
        name = f"{self.node.name}/{tag}_output_0"
        self.graph.shapes[name], self.graph.dtypes[name] = tuple(shape), self.dtype
        return name

    def const(self, tag: str, value: np.ndarray) -> str:
        name = f"{self.node.name}/{tag}"
        self.graph.constants[name] = value
        self.graph.shapes[name], self.graph.dtypes[name] = tuple(value.shape), value.dtype
        return name

    def add(self, op: str, tag: str, inputs: list[str], out: str, attrs: dict | None = None) -> str:
        self.nodes.append(Node(op, f"{self.node.name}/{tag}", inputs, [out], attrs or {}))
        return out


def _variadic(e: _Emit) -> None:
    node, g = e.node, e.graph
    args = [i for i in node.inputs if i]
    out = node.outputs[0]
    if len(args) == 1 and node.op_type != "Mean":
        e.add("Identity", "copy", args, out)
        return
    acc = args[0]
    for k, arg in enumerate(args[1:]):
        last = k == len(args) - 2 and node.op_type != "Mean"
        shape = g.shapes[out] if last else tuple(np.broadcast_shapes(g.shapes[acc], g.shapes[arg]))
        acc = e.add(_VARIADIC[node.op_type], f"acc{k}", [acc, arg], out if last else e.tensor(f"acc{k}", shape))
    if node.op_type == "Mean":
        e.add("Div", "mean", [acc, e.const("count", np.array(len(args), dtype=e.dtype))], out)


def _axes_input(e: _Emit, node: Node) -> list[str]:
    """The axes operand of a reduction (an attribute before opset 18, the second input from it on)."""
    if len(node.inputs) > 1 and node.inputs[1]:
        return [node.inputs[1]]
    axes = node.attrs.get("axes")
    return [] if axes is None else [e.const("axes", np.array(axes, dtype=np.int64))]


def _kept_shape(shape: tuple[int, ...], axes: list[int] | None) -> tuple[int, ...]:
    reduced = set(range(len(shape))) if not axes else {a % len(shape) for a in axes}
    return tuple(1 if i in reduced else d for i, d in enumerate(shape))


def _log_sum_exp(e: _Emit) -> None:
    node, g = e.node, e.graph
    x, out = node.inputs[0], node.outputs[0]
    shape = g.shapes[x]
    if node.op_type == "LogSoftmax":
        axis = int(node.attrs.get("axis", -1)) % len(shape)
        axes, keep = [e.const("axes", np.array([axis], dtype=np.int64))], True
        kept = _kept_shape(shape, [axis])
    else:
        axes = _axes_input(e, node)
        keep = bool(node.attrs.get("keepdims", 1))
        listed = [int(a) for a in g.constants[axes[0]].reshape(-1)] if axes else None
        if not listed and node.attrs.get("noop_with_empty_axes", 0):
            raise InputError(f"{g.source}: unsupported op {node.op_type} (node '{node.name}'): "
                             "noop_with_empty_axes with no axes is not lowered")
        kept = _kept_shape(shape, listed)
    if node.op_type == "ReduceLogSum":
        total = e.add("ReduceSum", "sum", [x, *axes], e.tensor("sum", g.shapes[out]), {"keepdims": int(keep)})
        e.add("Log", "log", [total], out)
        return
    m = e.add("ReduceMax", "max", [x, *axes], e.tensor("max", kept), {"keepdims": 1})
    shifted = e.add("Sub", "shift", [x, m], e.tensor("shift", shape))
    exp = e.add("Exp", "exp", [shifted], e.tensor("exp", shape))
    total = e.add("ReduceSum", "sum", [exp, *axes], e.tensor("sum", kept), {"keepdims": 1})
    log = e.add("Log", "log", [total], e.tensor("log", kept))
    if node.op_type == "LogSoftmax":
        e.add("Sub", "out", [shifted, log], out)
        return
    if keep:
        e.add("Add", "out", [log, m], out)
        return
    lse = e.add("Add", "lse", [log, m], e.tensor("lse", kept))
    e.add("Reshape", "out", [lse, e.const("shape", np.array(g.shapes[out], dtype=np.int64))], out)


def _global_pool(e: _Emit) -> None:
    node, g = e.node, e.graph
    rank = len(g.shapes[node.inputs[0]])
    axes = e.const("axes", np.arange(2, rank, dtype=np.int64))
    e.add(_GLOBAL_POOLS[node.op_type], "reduce", [node.inputs[0], axes], node.outputs[0], {"keepdims": 1})


def _lp_normalization(e: _Emit) -> None:
    """LpNormalization(x, axis, p) = x / ReduceLp(x) over ``axis`` (no epsilon, as ONNX defines it; an all-zero
    slice gives zeros); the ReduceL1 / ReduceL2 is lowered after this (compiler/frontend/reductions.py)."""
    node, g = e.node, e.graph
    x, shape = node.inputs[0], g.shapes[node.inputs[0]]
    p, axis = int(node.attrs.get("p", 2)), int(node.attrs.get("axis", -1)) % len(shape)
    if p not in (1, 2):
        raise InputError(f"{g.source}: LpNormalization (node '{node.name}'): p must be 1 or 2 (is {p})")
    kept = tuple(1 if i == axis else d for i, d in enumerate(shape))
    norm = e.add(f"ReduceL{p}", "norm", [x, e.const("axes", np.array([axis], dtype=np.int64))],
                 e.tensor("norm", kept), {"keepdims": 1})
    # an all-zero slice normalizes to zeros, as onnxruntime and the spec's reference compute (0 / 0 would be NaN)
    tiny = np.array(np.finfo(e.dtype if e.dtype.kind == "f" else np.float32).tiny, dtype=e.dtype)
    safe = e.add("Max", "nonzero", [norm, e.const("tiny", tiny)], e.tensor("nonzero", kept))
    e.add("Div", "normalized", [x, safe], node.outputs[0])


def _layernorm_axes(e: _Emit) -> None:
    """LayerNormalization over the axes from ``axis`` on (``nn.LayerNorm([C, H, W])``): those axes viewed as one, the
    scale and bias flattened alike, a last-axis LayerNormalization, the input's shape back. Its optional Mean and
    InvStdDev outputs (training statistics) are not computed: one line naming the node."""
    node, g = e.node, e.graph
    x, shape = node.inputs[0], g.shapes[node.inputs[0]]
    if any(node.outputs[1:]):
        raise InputError(f"{g.source}: LayerNormalization (node '{node.name}'): its Mean / InvStdDev outputs "
                         "(training statistics) are not computed; export the model in eval mode")
    axis = int(node.attrs.get("axis", -1)) % len(shape)
    params = [i for i in node.inputs[1:] if i]
    if axis == len(shape) - 1 or any(not g.is_const(i) for i in params):
        e.nodes.append(node)  # already last-axis (or a non-constant scale: refused where it is emitted)
        return
    inner = int(np.prod(shape[axis:]))
    flat = e.add("Reshape", "flat", [x, e.const("flat_shape", np.array([*shape[:axis], inner], np.int64))],
                 e.tensor("flat", (*shape[:axis], inner)))
    flat_params = [e.const(f"param{k}", np.ascontiguousarray(np.broadcast_to(g.constants[p], shape[axis:]))
                           .reshape(inner)) for k, p in enumerate(params)]
    normed = e.add("LayerNormalization", "last_axis", [flat, *flat_params], e.tensor("normed", (*shape[:axis], inner)),
                   {**node.attrs, "axis": -1})
    e.add("Reshape", "unflat", [normed, e.const("shape", np.array(shape, np.int64))], node.outputs[0])


def _arg_extreme(e: _Emit) -> None:
    """ArgMin(x) -> ArgMax(-x) (the first index of the smallest is the first of the largest of -x); with
    ``select_last_index``, the axis reversed by a Slice of step -1 first and the index mirrored after:
    n - 1 - ArgMax(reversed x)."""
    node, g = e.node, e.graph
    x, shape = node.inputs[0], g.shapes[node.inputs[0]]
    axis = int(node.attrs.get("axis", 0)) % len(shape)
    keep = int(node.attrs.get("keepdims", 1))
    if node.op_type == "ArgMin":
        x = e.add("Neg", "negated", [x], e.tensor("negated", shape))
    if not int(node.attrs.get("select_last_index", 0)):
        e.add("ArgMax", "argmax", [x], node.outputs[0], {"axis": axis, "keepdims": keep})
        return
    n = shape[axis]
    flipped = e.add("Slice", "reversed", [x, e.const("starts", np.array([n - 1], np.int64)),
                                          e.const("ends", np.array([-n - 1], np.int64)),
                                          e.const("axes", np.array([axis], np.int64)),
                                          e.const("steps", np.array([-1], np.int64))], e.tensor("reversed", shape))
    out_shape = g.shapes[node.outputs[0]]
    first = e.add("ArgMax", "argmax", [flipped], f"{node.name}/argmax_output_0", {"axis": axis, "keepdims": keep})
    g.shapes[first], g.dtypes[first] = tuple(out_shape), np.dtype(np.int64)
    e.add("Sub", "mirrored", [e.const("last", np.array(n - 1, np.int64)), first], node.outputs[0])


def _matmul_vector(e: _Emit) -> None:
    """MatMul with a rank-1 operand, as ONNX (NumPy) defines it: a vector on the right is a [K, 1] column whose
    output axis is dropped, on the left a [1, K] row; the product of two is a scalar. The GEMM reads the matrix form
    and a Reshape drops the axis."""
    node, g = e.node, e.graph
    a, b = node.inputs
    sa, sb = g.shapes[a], g.shapes[b]
    if len(sb) == 1:
        b = e.add("Reshape", "column", [b, e.const("column_shape", np.array([sb[0], 1], np.int64))],
                  e.tensor("column", (sb[0], 1)))
        sb = (sb[0], 1)
    if len(sa) == 1:
        a = e.add("Reshape", "row", [a, e.const("row_shape", np.array([1, sa[0]], np.int64))],
                  e.tensor("row", (1, sa[0])))
        sa = (1, sa[0])
    shape = tuple(np.broadcast_shapes(sa[:-2], sb[:-2])) + (sa[-2], sb[-1])
    product = e.add("MatMul", "matrix", [a, b], e.tensor("matrix", shape))
    out = g.shapes[node.outputs[0]]
    e.add("Reshape", "vector", [product, e.const("vector_shape", np.array(out, np.int64))], node.outputs[0])


def _dropout(e: _Emit) -> None:
    """Inference Dropout with its mask output read: the identity, and the mask a constant of ones. In training mode
    (a true ``training_mode`` input and a nonzero ratio) it draws random elements: one line naming the node."""
    node, g = e.node, e.graph
    ratio = node.inputs[1] if len(node.inputs) > 1 and node.inputs[1] else None
    mode = node.inputs[2] if len(node.inputs) > 2 and node.inputs[2] else None
    training = mode is not None and (not g.is_const(mode) or bool(g.constants[mode].reshape(-1)[0]))
    if training and not (ratio is not None and g.is_const(ratio) and float(g.constants[ratio].reshape(-1)[0]) == 0):
        raise InputError(f"{g.source}: Dropout (node '{node.name}') in training mode draws random elements; export "
                         "the model in eval mode")
    e.add("Identity", "copy", [node.inputs[0]], node.outputs[0])
    mask = node.outputs[1]
    g.constants[mask] = np.ones(g.shapes[node.inputs[0]], dtype=bool)
    g.shapes[mask], g.dtypes[mask] = tuple(g.shapes[node.inputs[0]]), np.dtype(bool)


def _no_axes(graph: Graph, node: Node) -> bool:
    """Whether a Reduce* node names no axes: no ``axes`` input or attribute, or an empty constant one."""
    if len(node.inputs) > 1 and node.inputs[1]:
        return graph.is_const(node.inputs[1]) and graph.constants[node.inputs[1]].size == 0
    return not node.attrs.get("axes")


def _noop_reduce(e: _Emit) -> None:
    """A Reduce* with ``noop_with_empty_axes`` and no axes is the identity (ONNX), not a reduction over every axis."""
    e.add("Identity", "noop", [e.node.inputs[0]], e.node.outputs[0])


def _depth_space(e: _Emit) -> None:
    node, g = e.node, e.graph
    shape = g.shapes[node.inputs[0]]
    bs = int(node.attrs.get("blocksize", 0))
    if len(shape) != 4 or bs < 1:
        raise InputError(f"{g.source}: unsupported op {node.op_type} (node '{node.name}'): only 4-D inputs with a "
                         f"blocksize >= 1 are lowered (input {list(shape)}, blocksize {bs})")
    b, c, h, w = shape
    mode = node.attrs.get("mode", b"DCR")
    mode = mode.decode() if isinstance(mode, bytes) else str(mode)
    if node.op_type == "DepthToSpace":
        if c % (bs * bs):
            raise InputError(f"{g.source}: {node.op_type} (node '{node.name}'): {c} channels are not a multiple of "
                             f"blocksize^2 = {bs * bs}")
        if mode == "CRD":
            blocked, perm = (b, c // (bs * bs), bs, bs, h, w), [0, 1, 4, 2, 5, 3]
        else:
            blocked, perm = (b, bs, bs, c // (bs * bs), h, w), [0, 3, 4, 1, 5, 2]
    else:
        if h % bs or w % bs:
            raise InputError(f"{g.source}: {node.op_type} (node '{node.name}'): spatial size {h}x{w} is not a "
                             f"multiple of blocksize {bs}")
        # output channel (DCR) bh * bs * C + bw * C + c, or (CRD, opset 25) c * bs * bs + bh * bs + bw
        blocked, perm = (b, c, h // bs, bs, w // bs, bs), [0, 1, 3, 5, 2, 4] if mode == "CRD" else [0, 3, 5, 1, 2, 4]
    view = e.add("Reshape", "blocks", [node.inputs[0], e.const("blocks_shape", np.array(blocked, dtype=np.int64))],
                 e.tensor("blocks", blocked))
    moved = e.add("Transpose", "move", [view], e.tensor("move", tuple(blocked[p] for p in perm)), {"perm": perm})
    e.add("Reshape", "out", [moved, e.const("out_shape", np.array(g.shapes[node.outputs[0]], dtype=np.int64))],
          node.outputs[0])


def _first_axis_gather(e: _Emit) -> None:
    node, g = e.node, e.graph
    idx = g.constants[node.inputs[1]]
    e.add("Gather", "gather", [node.inputs[0], e.const("index", idx[..., 0].astype(np.int64))], node.outputs[0],
          {"axis": 0})


def _is_first_axis_gather_nd(graph: Graph, node: Node) -> bool:
    idx = graph.constants.get(node.inputs[1]) if len(node.inputs) > 1 else None
    return (node.op_type == "GatherND" and idx is not None and idx.ndim >= 1 and idx.shape[-1] == 1
            and int(node.attrs.get("batch_dims", 0)) == 0 and node.inputs[0] not in graph.constants)


def _lowering(graph: Graph, node: Node):
    if node.op_type.startswith("Reduce") and int(node.attrs.get("noop_with_empty_axes", 0)) and _no_axes(graph, node):
        return _noop_reduce  # before ReduceLogSumExp's own lowering, which would reduce every axis
    if node.op_type in _VARIADIC and (len([i for i in node.inputs if i]) != 2 or node.op_type in ("Sum", "Mean")):
        return _variadic  # two-input Max / Min are the dialect's binary ops; Sum and Mean have no binary form there
    if node.op_type in ("LogSoftmax", "ReduceLogSumExp", "ReduceLogSum"):
        return _log_sum_exp
    if node.op_type in _GLOBAL_POOLS:
        return _global_pool
    if node.op_type in ("DepthToSpace", "SpaceToDepth"):
        return _depth_space
    if node.op_type == "LpNormalization":
        return _lp_normalization
    if node.op_type == "ArgMin" or (node.op_type == "ArgMax" and int(node.attrs.get("select_last_index", 0))):
        return _arg_extreme
    if node.op_type == "LayerNormalization":
        return _layernorm_axes
    if node.op_type == "Dropout" and len(node.outputs) > 1 and node.outputs[1]:
        return _dropout
    if node.op_type == "MatMul" and any(len(graph.shapes.get(i, (0, 0))) == 1 for i in node.inputs):
        return _matmul_vector
    return None


def lower_compound_ops(graph: Graph) -> int:
    """Replace every op of the module docstring in ``graph`` in place; returns how many were lowered."""
    nodes: list[Node] = []
    lowered = 0
    for node in graph.nodes:
        rule = _first_axis_gather if _is_first_axis_gather_nd(graph, node) else _lowering(graph, node)
        if rule is None:
            nodes.append(node)
            continue
        emit = _Emit(graph, node)
        rule(emit)
        nodes += emit.nodes
        lowered += 1
    if lowered:
        graph.nodes[:] = nodes
    return lowered
