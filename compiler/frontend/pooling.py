"""Lower ``AveragePool`` / ``MaxPool`` nodes to ops the dataflow dialect has, before recognition.

A pool whose windows tile its input exactly (kernel == stride on every spatial axis, no padding, no dilation, each
spatial size a multiple of its kernel) averages or maximises disjoint blocks: the input reshaped so that each
spatial axis ``X`` becomes ``(X / k, k)`` and reduced over the ``k`` axes computes the same tensor, with the vector
work a reduction costs (no MACs, as torch's FlopCounterMode counts none for pooling). Funnel Transformer pools its
sequence this way (``avg_pool2d`` with kernel (2, 1)). Where a spatial size is not a multiple of its kernel (SEW
pools 39 frames by 2) a floor-mode pool drops the last partial window: a Slice to the whole windows comes first.

Any other pool (overlapping windows, padding, dilation, ceil mode: PoolFormer's and EfficientFormer's 3x3 token
mixer of stride 1, MViT-v2's strided max pool of keys and values, ViTamin's strided average shortcut) is the
element-wise sum or maximum of one strided Slice per kernel offset of the padded input: output position ``o`` of
offset ``j`` reads input ``o * stride + j * dilation - pad_begin``, which is what the pool's window holds there.
Padding is by zeros for an average, by the lowest float for a maximum (no window holds only padding); an average
then multiplies by the reciprocal of each window's divisor: the in-bounds elements it covers, or with
``count_include_pad`` those within the padded input (ceil mode's extra end positions never count). Pricing: a
``pad`` move and ``prod(kernel)`` strided slices and element-wise ops, still no MACs. A pool that also returns
max indices raises one `InputError` line naming the node; ``auto_pad`` SAME_UPPER / SAME_LOWER (TensorFlow
converters' "same" pools) become their explicit pads.
"""

from __future__ import annotations

import numpy as np

from compiler.frontend.graph import Graph, Node
from compiler.frontend.onnx_ops import conv_pads
from hw.errors import InputError

__all__ = ["lower_pools"]

_REDUCE = {"AveragePool": "ReduceMean", "MaxPool": "ReduceMax"}


def _lower(graph: Graph, node: Node) -> list[Node]:
    shape = graph.shapes[node.inputs[0]]
    spatial = shape[2:]
    kernel = [int(k) for k in node.attrs.get("kernel_shape", [])]
    strides = [int(s) for s in node.attrs.get("strides", [1] * len(kernel))]
    pads = [int(p) for p in node.attrs.get("pads", [0] * 2 * len(kernel))]
    dilations = [int(d) for d in node.attrs.get("dilations", [1] * len(kernel))]
    auto_pad = node.attrs.get("auto_pad", "NOTSET")
    auto_pad = auto_pad.decode() if isinstance(auto_pad, bytes) else auto_pad
    if (len(kernel) != len(spatial) or auto_pad not in ("NOTSET", "VALID", "SAME_UPPER", "SAME_LOWER")
            or len(pads) != 2 * len(kernel) or len(node.outputs) > 1 and node.outputs[1]):
        raise InputError(f"{graph.source}: unsupported op {node.op_type} (node '{node.name}'): only pools without "
                         f"indices are lowered (kernel {kernel}, strides {strides}, pads {pads}, auto_pad "
                         f"{auto_pad}, input {list(shape)})")
    pads = conv_pads(node.attrs, spatial, kernel)  # auto_pad resolved as for a Conv
    if (kernel != strides or any(pads) or any(d != 1 for d in dilations)
            or int(node.attrs.get("ceil_mode", 0)) and any(s % k for s, k in zip(spatial, kernel))):
        return _windows(graph, node, kernel, strides, pads, dilations)
    blocked = list(shape[:2])
    for s, k in zip(spatial, kernel):
        blocked += [s // k, k]
    nodes: list[Node] = []
    src = node.inputs[0]
    dtype = graph.dtypes.get(src, np.dtype(np.float32))
    whole = [s - s % k for s, k in zip(spatial, kernel)]
    if whole != list(spatial):  # floor mode: the last partial window is not pooled
        names = []
        for what, value in (("starts", [0] * len(whole)), ("ends", whole), ("axes", range(2, 2 + len(whole)))):
            names.append(f"{node.name}/whole_{what}")
            graph.constants[names[-1]] = np.array(list(value), dtype=np.int64)
            graph.shapes[names[-1]], graph.dtypes[names[-1]] = (len(whole),), np.dtype(np.int64)
        cut = f"{node.name}/whole_output_0"
        graph.shapes[cut], graph.dtypes[cut] = (*shape[:2], *whole), dtype
        nodes.append(Node("Slice", f"{node.name}/whole", [src, *names], [cut]))
        src = cut
    axes = [3 + 2 * i for i in range(len(kernel))]
    target = f"{node.name}/blocks_shape"
    graph.constants[target] = np.array(blocked, dtype=np.int64)
    graph.shapes[target], graph.dtypes[target] = (len(blocked),), np.dtype(np.int64)
    axes_name = f"{node.name}/block_axes"
    graph.constants[axes_name] = np.array(axes, dtype=np.int64)
    graph.shapes[axes_name], graph.dtypes[axes_name] = (len(axes),), np.dtype(np.int64)
    blocks = f"{node.name}/blocks_output_0"
    graph.shapes[blocks] = tuple(blocked)
    graph.dtypes[blocks] = dtype
    return nodes + [Node("Reshape", f"{node.name}/blocks", [src, target], [blocks]),
                    Node(_REDUCE[node.op_type], node.name, [blocks, axes_name], [node.outputs[0]], {"keepdims": 0})]


def _const(graph: Graph, name: str, value: np.ndarray) -> str:
    graph.constants[name] = value
    graph.shapes[name], graph.dtypes[name] = value.shape, value.dtype
    return name


def _windows(graph: Graph, node: Node, kernel: list[int], strides: list[int], pads: list[int],
             dilations: list[int]) -> list[Node]:
    """An overlapping / padded / dilated / ceil-mode pool as Pad, one strided Slice per kernel offset, their Sum or
    Max, and (averages) the reciprocal divisors (module docstring)."""
    shape, out = graph.shapes[node.inputs[0]], graph.shapes[node.outputs[0]]
    rank = len(kernel)
    spatial, out_spatial = list(shape[2:]), list(out[2:])
    dtype = graph.dtypes.get(node.inputs[0], np.dtype(np.float32))
    begin, end = pads[:rank], pads[rank:]
    # ceil mode's last window may reach past the end padding: pad as far as every window reads
    reach = [(o - 1) * s + (k - 1) * d + 1 for o, s, k, d in zip(out_spatial, strides, kernel, dilations)]
    extra = [max(0, r - (n + b + e)) for r, n, b, e in zip(reach, spatial, begin, end)]
    average = node.op_type == "AveragePool"
    fill = 0.0 if average else (float(np.finfo(dtype).min) if dtype.kind == "f" else int(np.iinfo(dtype).min))
    base = node.name
    padded = f"{base}/padded_output_0"
    graph.shapes[padded] = (*shape[:2], *(n + b + e + x for n, b, e, x in zip(spatial, begin, end, extra)))
    graph.dtypes[padded] = dtype
    pad_values = np.array([0, 0, *begin, 0, 0, *(e + x for e, x in zip(end, extra))], dtype=np.int64)
    nodes = [Node("Pad", f"{base}/pad", [node.inputs[0], _const(graph, f"{base}/pads", pad_values),
                                         _const(graph, f"{base}/fill", np.array(fill, dtype=dtype))], [padded])]
    axes = _const(graph, f"{base}/axes", np.arange(2, 2 + rank, dtype=np.int64))
    steps = _const(graph, f"{base}/steps", np.array(strides, dtype=np.int64))
    taps: list[str] = []
    for offset in np.ndindex(*kernel):
        starts = [j * d for j, d in zip(offset, dilations)]
        ends = [st + (o - 1) * s + 1 for st, o, s in zip(starts, out_spatial, strides)]
        tag = "_".join(map(str, offset))
        tap = f"{base}/tap_{tag}_output_0"
        graph.shapes[tap], graph.dtypes[tap] = tuple(out), dtype
        nodes.append(Node("Slice", f"{base}/tap_{tag}", [
            padded, _const(graph, f"{base}/starts_{tag}", np.array(starts, dtype=np.int64)),
            _const(graph, f"{base}/ends_{tag}", np.array(ends, dtype=np.int64)), axes, steps], [tap]))
        taps.append(tap)
    total = taps[0]
    for i, tap in enumerate(taps[1:]):  # pairwise: the dialect's element-wise ops are binary
        last = i == len(taps) - 2 and not average
        name = node.outputs[0] if last else f"{base}/acc_{i}_output_0"
        graph.shapes[name], graph.dtypes[name] = tuple(out), dtype
        nodes.append(Node("Add" if average else "Max", f"{base}/acc_{i}", [total, tap], [name]))
        total = name
    if not average:
        if len(taps) == 1:
            nodes.append(Node("Identity", f"{base}/only", [total], [node.outputs[0]]))
        return nodes
    # divisors: count of window positions inside the input (or, with count_include_pad, inside the padded input)
    inside = np.pad(np.ones(spatial), [(b, e + x) for b, e, x in zip(begin, end, extra)])
    if int(node.attrs.get("count_include_pad", 0)):
        inside = np.pad(np.ones([n + b + e for n, b, e in zip(spatial, begin, end)]), [(0, x) for x in extra])
    counts = np.zeros(out_spatial)
    for offset in np.ndindex(*kernel):
        counts += inside[tuple(slice(j * d, j * d + (o - 1) * s + 1, s)
                               for j, d, o, s in zip(offset, dilations, out_spatial, strides))]
    scale = _const(graph, f"{base}/divisors", (1.0 / counts).astype(dtype).reshape(1, 1, *out_spatial))
    nodes.append(Node("Mul", f"{base}/average", [total, scale], [node.outputs[0]]))
    return nodes


def lower_pools(graph: Graph) -> int:
    """Replace every AveragePool / MaxPool of ``graph`` in place; returns how many were lowered."""
    if not any(n.op_type in _REDUCE for n in graph.nodes):
        return 0
    nodes: list[Node] = []
    lowered = sum(n.op_type in _REDUCE for n in graph.nodes)
    for node in graph.nodes:
        nodes += _lower(graph, node) if node.op_type in _REDUCE else [node]
    graph.nodes[:] = nodes
    return lowered
