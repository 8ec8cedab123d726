"""Col2Im (compiler/frontend/col2im.py): a fold whose windows tile the image is Reshape + Transpose + Reshape; any
other fold (overlapping, gapped, padded, dilated) is folded one axis at a time by Slice, Pad and Add. Each lowering
equals onnxruntime; hand-built nodes and torch's F.fold (both exporters, opset 18) compile float exactly and int8
without error; attributes the spec forbids are one line naming the node."""

from __future__ import annotations

import itertools
from pathlib import Path
from typing import Any, cast

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch
import torch.nn.functional as F
from onnx import TensorProto, helper, numpy_helper
from onnx.reference import ReferenceEvaluator

from codesign.api import compile
from compiler.frontend.col2im import lower_col2ims
from compiler.frontend.graph import Graph, Node
from compiler.frontend.onnx_ops import run_node
from examples._common import Exporter, export_onnx
from examples.zoo import INT8
from hw.errors import InputError

Ints = tuple[int, ...]
Case = tuple[Ints, Ints, Ints, Ints, Ints]
#: the I-ViT integer compile's choices, typed as compile's keyword arguments
INT8_CHOICES: dict[str, Any] = dict(INT8)


#: (block, strides, pads [begin..., end...], dilations, image): overlapping, gapped, asymmetric pads, dilation 2,
#: non-square images, 1-wide blocks
CASES: list[Case] = [
    ((3, 3), (1, 1), (1, 1, 1, 1), (1, 1), (6, 6)),
    ((3, 3), (2, 2), (1, 1, 1, 1), (1, 1), (7, 9)),
    ((2, 3), (3, 4), (0, 0, 0, 0), (1, 1), (8, 11)),
    ((3, 2), (2, 1), (0, 2, 1, 0), (1, 1), (7, 5)),
    ((3, 3), (1, 2), (2, 1, 0, 1), (2, 2), (9, 8)),
    ((2, 2), (1, 1), (0, 0, 0, 0), (2, 1), (5, 6)),
    ((1, 3), (2, 2), (0, 1, 0, 1), (1, 1), (5, 7)),
    ((4, 4), (2, 2), (0, 0, 0, 0), (1, 1), (9, 9)),  # the last row / column is in no window
]


def _grid(block: Ints, strides: Ints, pads: Ints, dilations: Ints, image: Ints) -> list[int]:
    rank = len(block)
    return [(i + b + e - (k - 1) * d - 1) // s + 1
            for i, b, e, k, d, s in zip(image, pads[:rank], pads[rank:], block, dilations, strides)]


def _onnx(block: Ints, strides: Ints, pads: Ints, dilations: Ints, image: Ints, cols: Ints) -> onnx.ModelProto:
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, list(cols))
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, None)
    inits = [numpy_helper.from_array(np.array(image, np.int64), "image"),
             numpy_helper.from_array(np.array(block, np.int64), "block")]
    node = helper.make_node("Col2Im", ["x", "image", "block"], ["y"], name="fold/Col2Im", strides=list(strides),
                            pads=list(pads), dilations=list(dilations))
    graph = helper.make_graph([node], "g", [x], [y], initializer=inits)
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)], ir_version=10)


def _graph(image: list[int], block: list[int], cols: tuple[int, ...], attrs: dict) -> Graph:
    consts = {"image": np.array(image, np.int64), "block": np.array(block, np.int64)}
    shapes = {"x": cols, "y": (cols[0], cols[1] // int(np.prod(block)), *image), "image": (len(image),),
              "block": (len(block),)}
    return Graph([Node("Col2Im", "fold/Col2Im", ["x", "image", "block"], ["y"], attrs)], ["x"], ["y"], consts,
                 shapes, {"x": np.dtype(np.float32)}, source="m.onnx")


def _run(graph: Graph, x: np.ndarray) -> np.ndarray:
    values = {"x": x, **graph.constants}
    for node in graph.nodes:
        outs = run_node(node.op_type, [values[i] for i in node.inputs], node.attrs, len(node.outputs))
        for name, value in zip(node.outputs, outs, strict=True):
            assert value.shape == graph.shapes[name], name
            values[name] = value
    return values["y"]


def test_tiling_fold_is_reshape_transpose_reshape() -> None:
    x = np.random.default_rng(0).normal(size=(2, 3 * 2 * 3, 4 * 2)).astype(np.float32)
    graph = _graph([8, 6], [2, 3], x.shape, {"strides": [2, 3]})
    assert lower_col2ims(graph) == 1 and [n.op_type for n in graph.nodes] == ["Reshape", "Transpose", "Reshape"]
    want = torch.nn.functional.fold(torch.from_numpy(x), (8, 6), (2, 3), stride=(2, 3)).numpy()
    np.testing.assert_array_equal(_run(graph, x), want)


@pytest.mark.parametrize("block, strides, pads, dilations, image", [
    *CASES,
    *itertools.product([(2, 3), (3, 1)], [(1, 1), (3, 2)], [(0, 0, 0, 0), (1, 0, 2, 1)], [(1, 1), (1, 2)], [(6, 7)]),
    ((3,), (2,), (1, 0), (1,), (9,)),  # 1-D and 3-D folds: Col2Im has any number of spatial axes
    ((2, 2, 3), (1, 2, 2), (0, 1, 0, 1, 0, 1), (1, 1, 2), (4, 5, 6)),
])
def test_general_fold_equals_onnxruntime(block, strides, pads, dilations, image) -> None:
    """Oracles: onnxruntime for 1-D and 2-D folds; onnx's reference implementation for every rank (onnxruntime's
    3-D Col2Im disagrees with the spec's reference and with a loop over windows on the 3-D case here: its CPU
    kernel's 3-D indexing, microsoft/onnxruntime#18156)."""
    grid = _grid(block, strides, pads, dilations, image)
    cols = (2, 3 * int(np.prod(block)), int(np.prod(grid)))
    x = np.random.default_rng(1).normal(size=cols).astype(np.float32)
    model = _onnx(block, strides, pads, dilations, image, cols)
    want = np.asarray(cast(list[Any], ReferenceEvaluator(model).run(None, {"x": x}))[0])
    if len(block) <= 2:
        session = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
        np.testing.assert_allclose(np.asarray(session.run(None, {"x": x})[0]), want, rtol=1e-5, atol=1e-5)
    graph = _graph(list(image), list(block), cols, {"strides": list(strides), "pads": list(pads),
                                                    "dilations": list(dilations)})
    assert lower_col2ims(graph) == 1 and "Col2Im" not in {n.op_type for n in graph.nodes}
    np.testing.assert_allclose(_run(graph, x), want, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("case", CASES[:5])
def test_fold_compiles_float_exactly_and_int8(tmp_path: Path, case: Case) -> None:
    """Compiled and simulated: equal to onnxruntime, no MACs (the fold only moves and adds)."""
    grid = _grid(*case)
    cols = (2, 4 * int(np.prod(case[0])), int(np.prod(grid)))
    path = tmp_path / "fold.onnx"
    onnx.save(_onnx(*case, cols), path)
    x = np.random.default_rng(2).normal(size=cols).astype(np.float32)
    result = compile(path, inputs={"x": x[None]})
    row = result.report["accuracy"]["outputs"]["y"]
    assert result.report["macs"] == 0
    assert row["max_abs_error"] <= 1e-5 * row["max_abs_value"]
    if case is CASES[1]:
        assert compile(path, inputs={"x": x[None]}, **INT8_CHOICES).report["accuracy"]["outputs"]["y"]["cosine_mean"] > 0.99


class _Outlook(torch.nn.Module):
    """VOLO's outlook aggregation, reduced: values unfolded into overlapping 3x3 windows of stride 2 (padding 1),
    each window weighted, and folded back (overlaps summed) by ``F.fold``."""

    def __init__(self) -> None:
        super().__init__()
        self.v = torch.nn.Conv2d(4, 4, 1)
        self.w = torch.nn.Parameter(torch.randn(4 * 9, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        cols = F.unfold(self.v(x), 3, padding=1, stride=2) * self.w
        return F.fold(cols, (7, 9), 3, padding=1, stride=2)


@pytest.mark.parametrize("exporter", ["legacy", "dynamo"])
def test_torch_fold_both_exporters(tmp_path: Path, exporter: Exporter) -> None:
    """torch writes F.fold as Col2Im from opset 18 (the legacy exporter too): float exact, int8 compiles."""
    torch.manual_seed(0)
    x = torch.randn(2, 4, 7, 9)
    path = tmp_path / f"outlook_{exporter}.onnx"
    export_onnx(_Outlook(), [x], path, input_names=["x"], output_names=["y"], exporter=exporter, opset=18)
    assert "Col2Im" in {n.op_type for n in onnx.load(str(path)).graph.node}
    result = compile(path, inputs={"x": x.numpy()[None]})
    row = result.report["accuracy"]["outputs"]["y"]
    assert result.report["macs"] == 2 * 4 * 4 * 7 * 9  # the 1x1 conv's; the fold adds none
    assert row["max_abs_error"] <= 1e-5 * row["max_abs_value"]
    assert compile(path, inputs={"x": x.numpy()[None]}, **INT8_CHOICES).report["accuracy"]["outputs"]["y"]["cosine_mean"] > 0.99


@pytest.mark.parametrize("image, block, cols, attrs, why", [
    ([5, 5], [3, 3], (1, 9, 5), {"strides": [2, 2]},
     r"input \[1, 9, 5\] must be \[N, C\*9, 4\] for block \[3, 3\] over image \[5, 5\]"),
    ([5, 5], [3, 3], (1, 10, 4), {"strides": [2, 2]}, r"input \[1, 10, 4\] must be \[N, C\*9, 4\]"),
    ([5, 5], [3, 3], (1, 9, 4), {"strides": [0, 2]}, r"image \[5, 5\], block \[3, 3\], strides \[0, 2\] and "),
    ([5, 5], [3, 3], (1, 9, 4), {"dilations": [1, -1]}, r"dilations \[1, -1\] must be positive"),
    ([5, 5], [3, 3], (1, 9, 4), {"pads": [0, -1, 0, 0]}, r"pads \[0, -1, 0, 0\] not negative"),
    ([5, 5], [3, 3], (1, 9, 4), {"pads": [0, 0]}, r"must give one value per spatial axis"),
    ([2, 5], [3, 3], (1, 9, 3), {}, r"a window of block \[3, 3\] and dilations \[1, 1\] does not fit image \[2, 5\]"),
])
def test_invalid_fold_is_one_line(image, block, cols, attrs, why) -> None:
    with pytest.raises(InputError, match=rf"^m\.onnx: invalid Col2Im \(node 'fold/Col2Im'\): [^\n]*{why}[^\n]*$"):
        lower_col2ims(_graph(image, block, cols, attrs))
