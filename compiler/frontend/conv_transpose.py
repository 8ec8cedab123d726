"""Lower ``ConvTranspose`` (``nn.ConvTranspose1d/2d/3d``) to a GEMM and a ``Col2Im``, before recognition.

A transposed convolution scatters each input position's ``Cin`` values through the kernel onto the output:
output position ``o * stride + j * dilation - pad_begin`` of channel ``co`` receives ``sum_ci x[ci, o] *
W[ci, co, j]`` (ONNX spec; ``W`` is [Cin, Cout / group, *kernel]). That is a GEMM per input position, [L, Cin]
times W viewed as [Cin, Cout * prod(kernel)], whose columns are then added into place: exactly ``Col2Im`` with the
kernel as block, the same strides, dilations and begin pads, the output's spatial size as image (ONNX's
``col2im``; compiler/frontend/col2im.py lowers it further). So the lowering is

    x [N, Cin, *S] -> Reshape [N, Cin, L] -> Transpose [N, L, Cin] -> MatMul W' -> Transpose [N, Cout*K, L]
      -> Col2Im -> (Pad at the end) -> Add bias [1, Cout, 1, ...]

with ``L = prod(S)``, ``K = prod(kernel)``. Groups ``G > 1`` split the channels: x viewed as [G, N * L, Cin/G],
one GEMM batched over the groups against W' [G, Cin/G, Cout/G * K] (a grouped Conv's layout), the columns moved
to [N, G, Cout/G * K, L] and read as [N, Cout * K, L] (channel-major, as Col2Im wants). The GEMM's MACs,
``N L Cin Cout K / G``, are what torch's FlopCounterMode counts for the layer; the fold adds no MACs.

Pads: explicit ``pads`` give the begin pad; with ``output_shape`` or ``auto_pad`` SAME_* the spec's total padding
``stride (in - 1) + output_padding + (kernel - 1) dilation + 1 - out`` is split as it says (SAME_UPPER: the smaller
half first; otherwise the larger). Col2Im's end pad is chosen so that its window count is the input's length; an
output longer than the fold reaches (``output_padding``) receives no contribution there, so the fold's image is
zero-padded at the end. A weight or bias that is not a constant, or a kernel that disagrees with the weight, is one
`InputError` line naming the node.
"""

from __future__ import annotations

import numpy as np

from compiler.frontend.emitter import Emitter, int_attrs, lower_each
from compiler.frontend.graph import Graph, Node
from hw.errors import InputError

__all__ = ["lower_conv_transposes"]



def _begin_pads(node: Node, spatial: list[int], out: list[int], kernel: list[int], strides: list[int],
                dilations: list[int], out_pad: list[int]) -> list[int]:
    """The begin pad of each spatial axis (module docstring)."""
    rank = len(kernel)
    auto = node.attrs.get("auto_pad", "NOTSET")
    auto = auto.decode() if isinstance(auto, bytes) else str(auto)
    if auto in ("NOTSET", "") and "output_shape" not in node.attrs:
        return int_attrs(node, "pads", [0] * 2 * rank)[:rank]
    if auto == "VALID":
        return [0] * rank
    totals = [s * (n - 1) + p + (k - 1) * d + 1 - o
              for n, o, k, s, d, p in zip(spatial, out, kernel, strides, dilations, out_pad)]
    return [t // 2 if auto == "SAME_UPPER" else t - t // 2 for t in totals]


def _lower(graph: Graph, node: Node) -> list[Node]:
    where = f"{graph.source}: ConvTranspose (node '{node.name}')"
    x, w_name = node.inputs[0], node.inputs[1]
    b_name = node.inputs[2] if len(node.inputs) > 2 and node.inputs[2] else None
    if w_name not in graph.constants or (b_name is not None and b_name not in graph.constants):
        raise InputError(f"{graph.source}: unsupported op ConvTranspose (node '{node.name}'): the weight and bias "
                         "must be constants")
    w = graph.constants[w_name]
    shape, out_shape = list(graph.shapes[x]), list(graph.shapes[node.outputs[0]])
    n, cin, spatial = shape[0], shape[1], shape[2:]
    rank = len(spatial)
    group = int(node.attrs.get("group", 1))
    kernel = int_attrs(node, "kernel_shape", list(w.shape[2:]))
    strides, dilations = int_attrs(node, "strides", [1] * rank), int_attrs(node, "dilations", [1] * rank)
    out_pad = int_attrs(node, "output_padding", [0] * rank)
    if w.ndim != rank + 2 or list(w.shape[2:]) != kernel or w.shape[0] != cin or cin % group \
            or len(out_shape) != rank + 2:
        raise InputError(f"{where}: weight {list(w.shape)} does not fit input {shape}, kernel {kernel} and group "
                         f"{group}")
    cout, k = w.shape[1] * group, int(np.prod(kernel))
    out = out_shape[2:]
    begin = _begin_pads(node, spatial, out, kernel, strides, dilations, out_pad)
    reach = [(m - 1) * s + (kk - 1) * d + 1 for m, kk, s, d in zip(spatial, kernel, strides, dilations)]
    image = [min(o, r - b) for o, r, b in zip(out, reach, begin)]
    if any(b < 0 for b in begin) or any(i < 1 for i in image):
        raise InputError(f"{where}: pads {begin} leave no output (input {spatial}, output {out})")
    ends = [r - b - i for r, b, i in zip(reach, begin, image)]
    e = Emitter(graph, node)
    length = int(np.prod(spatial))
    g_in, g_out = cin // group, cout // group
    # Each group's weight viewed as [Cin/G, Cout/G * K]: column co * K + j.
    w_cols = w.reshape(group, g_in, g_out * k).astype(e.dtype if e.dtype.kind == "f" else np.float32)
    flat = e.reshape("flat", x, [n, group, g_in, length] if group > 1 else [n, cin, length])
    if group > 1:  # the group is the GEMM's batch, as for a grouped Conv: [G, N*L, Cin/G] x [G, Cin/G, Cout/G*K]
        rows = e.op("Transpose", "rows", [flat], [group, n, length, g_in], {"perm": [1, 0, 3, 2]})
        rows = e.reshape("group_rows", rows, [group, n * length, g_in])
        prod = e.op("MatMul", "gemm", [rows, e.const("weight", w_cols)], [group, n * length, g_out * k])
        prod = e.reshape("group_cols", prod, [group, n, length, g_out * k])
        cols = e.op("Transpose", "cols", [prod], [n, group, g_out * k, length], {"perm": [1, 0, 3, 2]})
        cols = e.reshape("columns", cols, [n, cout * k, length])
    else:
        rows = e.op("Transpose", "rows", [flat], [n, length, cin], {"perm": [0, 2, 1]})
        prod = e.op("MatMul", "gemm", [rows, e.const("weight", w_cols[0])], [n, length, cout * k])
        cols = e.op("Transpose", "cols", [prod], [n, cout * k, length], {"perm": [0, 2, 1]})
    last = b_name is None and image == out
    folded = e.op("Col2Im", "fold", [cols, e.const("image", image),
                                     e.const("block", kernel)],
                  [n, cout, *image], {"strides": strides, "dilations": dilations, "pads": begin + ends},
                  out=node.outputs[0] if last else None)
    if image != out:  # output_padding: positions past the fold's reach receive nothing
        pads = np.array([0, 0] + [0] * rank + [0, 0] + [o - i for o, i in zip(out, image)], np.int64)
        folded = e.op("Pad", "tail", [folded, e.const("tail_pads", pads)], [n, cout, *out],
                      out=node.outputs[0] if b_name is None else None)
    if b_name is not None:
        bias = graph.constants[b_name].astype(e.dtype).reshape(1, cout, *([1] * rank))
        e.op("Add", "bias", [folded, e.const("bias", bias)], [n, cout, *out], out=node.outputs[0])
    return e.nodes


def lower_conv_transposes(graph: Graph) -> int:
    """Replace every ConvTranspose of ``graph`` in place (before Col2Im is lowered); returns how many were."""
    return lower_each(graph, ("ConvTranspose",), _lower)
