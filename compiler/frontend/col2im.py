"""Lower non-overlapping ``Col2Im`` (``F.fold`` with stride == kernel) to Reshape + Transpose + Reshape.

``F.fold`` sums each column of ``[N, C*prod(k), L]`` into its window of the image. When the windows tile the image
(strides == block, no pads, dilations 1, each image dim a multiple of its block), every output pixel receives
exactly one value, so the fold is the inverse of a patch unfold: the columns viewed as ``[N, C, *k, *grid]``,
each block axis moved next to its grid axis, and the result viewed as ``[N, C, *image]``. MobileViTv2 folds its
patches back into a feature map this way (the dynamo export writes Col2Im; torch's legacy exporter has no col2im).
Overlapping, padded or dilated folds raise one `InputError` line naming the node.
"""

from __future__ import annotations

import numpy as np

from compiler.frontend.graph import Graph, Node
from hw.errors import InputError

__all__ = ["lower_col2ims"]


def _ints(graph: Graph, node: Node, attr: str, default: list[int]) -> list[int]:
    return [int(v) for v in node.attrs.get(attr, default)]


def _lower(graph: Graph, node: Node) -> list[Node]:
    x, out = node.inputs[0], node.outputs[0]
    consts = node.inputs[1:3]
    if len(consts) != 2 or not all(graph.is_const(c) for c in consts):
        raise InputError(f"{graph.source}: unsupported op Col2Im (node '{node.name}'): image and block shapes must "
                         "be constants")
    image, block = ([int(v) for v in graph.constants[c].reshape(-1)] for c in consts)
    rank = len(block)
    strides = _ints(graph, node, "strides", [1] * rank)
    if (strides != block or any(_ints(graph, node, "pads", [0] * 2 * rank))
            or any(d != 1 for d in _ints(graph, node, "dilations", [1] * rank)) or len(image) != rank
            or any(i % b for i, b in zip(image, block))):
        raise InputError(f"{graph.source}: unsupported op Col2Im (node '{node.name}'): only folds whose windows "
                         f"tile the image are lowered (block {block}, strides {strides}, image {image})")
    n, ck = graph.shapes[x][:2]
    c = ck // int(np.prod(block))
    grid = [i // b for i, b in zip(image, block)]
    dtype = graph.dtypes.get(x, np.dtype(np.float32))
    split = (n, c, *block, *grid)
    # [N, C, k1..kr, g1..gr] -> [N, C, g1, k1, g2, k2, ...]
    perm = [0, 1] + [a for i in range(rank) for a in (2 + rank + i, 2 + i)]
    moved = tuple(split[p] for p in perm)
    names = {}
    for what, shape in (("blocks", split), ("image", (n, c, *image))):
        names[what] = f"{node.name}/{what}_shape"
        graph.constants[names[what]] = np.array(shape, np.int64)
        graph.shapes[names[what]], graph.dtypes[names[what]] = (len(shape),), np.dtype(np.int64)
    blocks, interleaved = f"{node.name}/blocks_output_0", f"{node.name}/interleaved_output_0"
    graph.shapes[blocks], graph.dtypes[blocks] = split, dtype
    graph.shapes[interleaved], graph.dtypes[interleaved] = moved, dtype
    return [Node("Reshape", f"{node.name}/blocks", [x, names["blocks"]], [blocks]),
            Node("Transpose", f"{node.name}/interleave", [blocks], [interleaved], {"perm": perm}),
            Node("Reshape", node.name, [interleaved, names["image"]], [out])]


def lower_col2ims(graph: Graph) -> int:
    """Replace every Col2Im of ``graph`` in place; returns how many were lowered."""
    lowered = 0
    nodes: list[Node] = []
    for node in graph.nodes:
        if node.op_type == "Col2Im":
            nodes += _lower(graph, node)
            lowered += 1
        else:
            nodes.append(node)
    graph.nodes[:] = nodes
    return lowered
