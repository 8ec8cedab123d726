"""Sliding windows longer than their padded input: Conv and pooling nodes whose input the given shapes make too short.

No position of such a window fits, so the node has nothing to compute. onnxruntime refuses such a Conv ("Invalid input
shape"), but onnx's shape inference does not: it computes the output length as ``(size + pads - window) / stride + 1``
with C++'s truncating division, so a window that overhangs its input by less than a stride gets one output position
(an 8-sample input to wav2vec2's 10-wide, stride-5 first convolution came out 1 frame long instead of being refused).
onnxruntime's pools truncate the same way (one output of a partial window, or an empty output); torch refuses them.
Checked once every shape is known, each such node is one line naming it, the input, the axis and the lengths.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from compiler.frontend.graph import Node
from compiler.frontend.onnx_ops import conv_pads
from hw.errors import InputError

__all__ = ["WINDOWED_OPS", "check_windows"]

#: Ops whose first input is [batch, channels, *spatial] and which slide a window over the spatial axes.
WINDOWED_OPS = frozenset({"Conv", "ConvInteger", "MaxPool", "AveragePool", "LpPool"})


def _kernel(node: Node, shapes: Mapping[str, tuple[int, ...]]) -> list[int] | None:
    if "kernel_shape" in node.attrs:
        return [int(k) for k in node.attrs["kernel_shape"]]
    if node.op_type in ("Conv", "ConvInteger") and len(node.inputs) > 1 and node.inputs[1] in shapes:
        return list(shapes[node.inputs[1]][2:])
    return None


def check_windows(nodes: Sequence[Node], shapes: Mapping[str, tuple[int, ...]], source: str) -> None:
    """Refuse (``InputError``) the first windowed node whose window is longer than its padded input on some axis."""
    for node in nodes:
        if node.op_type not in WINDOWED_OPS or not node.inputs:
            continue
        x = shapes.get(node.inputs[0])
        kernel = _kernel(node, shapes)
        if x is None or kernel is None or len(x) != len(kernel) + 2:
            continue
        spatial = x[2:]
        rank = len(kernel)
        pads = conv_pads(node.attrs, spatial, kernel)
        dilations = [int(d) for d in node.attrs.get("dilations", [1] * rank)]
        for axis, (size, k, d) in enumerate(zip(spatial, kernel, dilations)):
            window = (k - 1) * d + 1
            padded = size + pads[axis] + pads[axis + rank]
            if padded < window:
                shown = "x".join(map(str, x))
                raise InputError(
                    f"{source}: {node.describe()}: its input '{node.inputs[0]}' ({shown}) is {size} long on spatial "
                    f"axis {axis} ({padded} with padding), shorter than its {window}-wide window (no position of it "
                    "fits): give a longer input (--shape)")
