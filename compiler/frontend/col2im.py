"""Lower ``Col2Im`` (ONNX opset 18; ``F.fold`` / ``nn.Fold``) to Reshape, Transpose, Split, Pad, Slice and Add.

Semantics (ONNX spec, onnx/reference/ops/op_col2im.py): the input ``[N, C*prod(block), L]`` holds, for each of the
``L = prod(grid)`` window positions (row-major over ``grid[a] = (image[a] + pad_begin[a] + pad_end[a] -
((block[a] - 1) * dilation[a] + 1)) // stride[a] + 1``), one column of ``C`` blocks (channel-major, block offsets
row-major). Column value ``(c, j, o)`` is added to padded-image position ``o * stride + j * dilation`` of channel
``c``; the output is that padded image cropped to ``[pad_begin, pad_begin + image)``.

When the windows tile the image (strides == block, no pads, dilations 1, each image dim a multiple of its block),
every output pixel receives exactly one value, so the fold is the inverse of a patch unfold: the columns viewed as
``[N, C, *block, *grid]``, each block axis moved next to its grid axis, and the result viewed as ``[N, C, *image]``
(Reshape + Transpose + Reshape; MobileViTv2 folds its patches back this way).

Any other fold (VOLO's outlook attention folds overlapping 3x3 windows, padded by 1, back onto its map) is
separable: it folds one spatial axis at a time, last first. Folding axis ``a`` of ``[N, C, k_0..k_a, g_0..g_a,
image_{a+1}..]``: the grid axis is spread onto the stride lattice (viewed as ``[g, 1]``, zero-padded to ``[g, s]``,
viewed as ``g * s``: position ``o * s`` holds window ``o``), the block axis is Split into its ``k_a`` offsets, and
offset ``j`` is zero-padded by ``j * dilation`` in front so its values land on ``o * s + j * dilation``; the
``k_a`` canvases are summed (pairwise Add: the dialect's element-wise ops are binary), cropped to the image, and
the spent block axis is viewed away. Pricing: per axis one split, ``k_a`` pads and ``k_a - 1`` adds over a canvas
of that axis's image size times what is left to fold, so a 2-D ``kh x kw`` fold costs ``kw - 1`` adds over
``kh * grid_h * W`` plus ``kh - 1`` over ``H * W`` instead of ``kh * kw - 1`` full images; no MACs, as torch's
FlopCounterMode counts none for col2im.

Attributes the spec forbids (a block count that does not divide the channels, ``L`` not the window count,
non-positive block / strides / dilations, negative pads, a window larger than the padded image) raise one
`InputError` line naming the node.
"""

from __future__ import annotations

import numpy as np

from compiler.frontend.emitter import Emitter, int_attrs, lower_each
from compiler.frontend.graph import Graph, Node
from hw.errors import InputError

__all__ = ["lower_col2ims"]



def _check(graph: Graph, node: Node) -> tuple[list[int], list[int], list[int], list[int], list[int], list[int]]:
    """The node's image, block, strides, pads, dilations and window grid, validated as the spec requires."""

    def bad(why: str) -> InputError:
        return InputError(f"{graph.source}: invalid Col2Im (node '{node.name}'): {why}")

    consts = node.inputs[1:3]
    if len(consts) != 2 or not all(graph.is_const(c) for c in consts):
        raise InputError(f"{graph.source}: unsupported op Col2Im (node '{node.name}'): image and block shapes must "
                         "be constants")
    image, block = ([int(v) for v in graph.constants[c].reshape(-1)] for c in consts)
    rank = len(block)
    strides = int_attrs(node, "strides", [1] * rank)
    pads = int_attrs(node, "pads", [0] * 2 * rank)
    dilations = int_attrs(node, "dilations", [1] * rank)
    if not rank or len(image) != rank or len(strides) != rank or len(dilations) != rank or len(pads) != 2 * rank:
        raise bad(f"image {image}, block {block}, strides {strides}, dilations {dilations} and pads {pads} must "
                  "give one value per spatial axis (pads two)")
    if min(block) < 1 or min(strides) < 1 or min(dilations) < 1 or min(image) < 1 or min(pads) < 0:
        raise bad(f"image {image}, block {block}, strides {strides} and dilations {dilations} must be positive, "
                  f"pads {pads} not negative")
    shape = graph.shapes.get(node.inputs[0])
    if shape is None or len(shape) != 3:
        raise bad(f"input {node.inputs[0]} must be [N, C*prod(block), L], got {list(shape or ())}")
    grid = [(i + b + e - (k - 1) * d - 1) // s + 1
            for i, b, e, k, d, s in zip(image, pads[:rank], pads[rank:], block, dilations, strides)]
    if min(grid) < 1:
        raise bad(f"a window of block {block} and dilations {dilations} does not fit image {image} padded by {pads}")
    if shape[1] % int(np.prod(block)) or shape[2] != int(np.prod(grid)):
        raise bad(f"input {list(shape)} must be [N, C*{int(np.prod(block))}, {int(np.prod(grid))}] for block "
                  f"{block} over image {image} (strides {strides}, pads {pads}, dilations {dilations})")
    return image, block, strides, pads, dilations, grid


def _tiles(image: list[int], block: list[int], strides: list[int], pads: list[int], dilations: list[int]) -> bool:
    return (strides == block and not any(pads) and all(d == 1 for d in dilations)
            and not any(i % b for i, b in zip(image, block)))


def _lower(graph: Graph, node: Node) -> list[Node]:
    image, block, strides, pads, dilations, grid = _check(graph, node)
    rank = len(block)
    n, ck = graph.shapes[node.inputs[0]][:2]
    c = ck // int(np.prod(block))
    emit = Emitter(graph, node)
    split = [n, c, *block, *grid]
    cols = emit.reshape("blocks", node.inputs[0], split)
    if _tiles(image, block, strides, pads, dilations):
        # [N, C, k1..kr, g1..gr] -> [N, C, g1, k1, g2, k2, ...]
        perm = [0, 1] + [a for i in range(rank) for a in (2 + rank + i, 2 + i)]
        moved = emit.op("Transpose", "interleave", [cols], [split[p] for p in perm], {"perm": perm})
        emit.reshape("image", moved, [n, c, *image], out=node.outputs[0])
        return emit.nodes
    shape = split
    for a in reversed(range(rank)):  # shape: [N, C, k_0..k_a, g_0..g_a, image_{a+1}..]
        ka, q = 2 + a, 3 + 2 * a
        k, s, d, begin = block[a], strides[a], dilations[a], pads[a]
        if s > 1:  # window o to lattice position o * s
            lattice = [*shape[:q + 1], 1, *shape[q + 1:]]
            cols = emit.reshape(f"axis{a}_lattice", cols, lattice)
            cols = emit.pad(f"axis{a}_stride", cols, lattice, q + 1, 0, s - 1)
            shape = [*shape[:q], shape[q] * s, *shape[q + 1:]]
            cols = emit.reshape(f"axis{a}_strided", cols, shape)
        span = shape[q]
        canvas = max(span + (k - 1) * d, begin + image[a])
        tap_shape = [*shape[:ka], 1, *shape[ka + 1:]]
        taps = emit.split(f"axis{a}_taps", cols, tap_shape, ka, k) if k > 1 else [cols]
        total = ""
        for j, tap in enumerate(taps):
            tap = emit.pad(f"axis{a}_shift{j}", tap, tap_shape, q, j * d, canvas - span - j * d)
            if total:
                summed = [*tap_shape[:q], canvas, *tap_shape[q + 1:]]
                tap = emit.op("Add", f"axis{a}_sum{j}", [total, tap], summed)
            total = tap
        shape = [*tap_shape[:q], canvas, *tap_shape[q + 1:]]
        if begin or canvas != begin + image[a]:
            total = emit.slice(f"axis{a}_crop", total, shape, q, begin, begin + image[a])
            shape[q] = image[a]
        shape = shape[:ka] + shape[ka + 1:]
        cols = emit.reshape(f"axis{a}_folded", total, shape, out=node.outputs[0] if a == 0 else None)
    return emit.nodes


def lower_col2ims(graph: Graph) -> int:
    """Replace every Col2Im of ``graph`` in place; returns how many were lowered."""
    return lower_each(graph, ("Col2Im",), _lower)
