"""Col2Im (compiler/frontend/col2im.py): a fold whose windows tile the image is Reshape + Transpose + Reshape,
equal to torch's F.fold; an overlapping fold is refused in one line naming the node."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from compiler.frontend.col2im import lower_col2ims
from compiler.frontend.graph import Graph, Node
from compiler.frontend.onnx_ops import run_node
from hw.errors import InputError


def _graph(image: list[int], block: list[int], cols: tuple[int, ...], attrs: dict) -> Graph:
    consts = {"image": np.array(image, np.int64), "block": np.array(block, np.int64)}
    shapes = {"x": cols, "y": (cols[0], cols[1] // int(np.prod(block)), *image), "image": (2,), "block": (2,)}
    return Graph([Node("Col2Im", "fold/Col2Im", ["x", "image", "block"], ["y"], attrs)], ["x"], ["y"], consts,
                 shapes, {"x": np.dtype(np.float32)}, source="m.onnx")


def test_tiling_fold_is_reshape_transpose_reshape() -> None:
    x = np.random.default_rng(0).normal(size=(2, 3 * 2 * 3, 4 * 2)).astype(np.float32)
    graph = _graph([8, 6], [2, 3], x.shape, {"strides": [2, 3]})
    assert lower_col2ims(graph) == 1 and [n.op_type for n in graph.nodes] == ["Reshape", "Transpose", "Reshape"]
    values = {"x": x, **graph.constants}
    for node in graph.nodes:
        values[node.outputs[0]] = run_node(node.op_type, [values[i] for i in node.inputs], node.attrs)[0]
    want = torch.nn.functional.fold(torch.from_numpy(x), (8, 6), (2, 3), stride=(2, 3)).numpy()
    np.testing.assert_array_equal(values["y"], want)


def test_overlapping_fold_is_one_line() -> None:
    graph = _graph([5, 5], [3, 3], (1, 9, 4), {"strides": [2, 2]})
    with pytest.raises(InputError, match=r"^m\.onnx: unsupported op Col2Im \(node 'fold/Col2Im'\): only folds whose "
                                         r"windows tile the image"):
        lower_col2ims(graph)
