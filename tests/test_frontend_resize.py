"""ONNX Resize to another size (compiler/frontend/onnx_ops.py `_resize`): a ``resize`` move, simulated with torch's
interpolate where it computes what ONNX does.

Bilinear (half-pixel and align-corners), nearest and bicubic resizes exported by torch compile, keep the conv
around them and simulate like onnxruntime; a resize whose mode and coordinate transform torch does not compute is
refused in one line naming the node.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import pytest
import torch
from onnx import TensorProto, helper

from codesign.api import compile
from examples._common import export_onnx
from hw.errors import InputError


class _Resized(torch.nn.Module):
    """A conv, its feature map resized to a size that is no multiple of it (MobileViT's patch grid), a conv."""

    def __init__(self, mode: str, corners: bool | None) -> None:
        super().__init__()
        self.mode, self.corners = mode, corners
        self.a, self.b = torch.nn.Conv2d(3, 4, 3, padding=1), torch.nn.Conv2d(4, 4, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = torch.nn.functional.interpolate(self.a(x), size=(8, 6), mode=self.mode, align_corners=self.corners)
        return self.b(h)


@pytest.mark.parametrize("mode, corners", [("bilinear", False), ("bilinear", True), ("nearest", None),
                                           ("bicubic", False)])
def test_resize_simulates_like_onnxruntime(tmp_path: Path, mode: str, corners: bool | None) -> None:
    torch.manual_seed(0)
    path = tmp_path / "resize.onnx"
    export_onnx(_Resized(mode, corners).eval(), (torch.randn(1, 3, 5, 7),), path, input_names=["x"],
                output_names=["y"], exporter="legacy")
    x = np.random.default_rng(1).normal(size=(2, 1, 3, 5, 7)).astype(np.float32)
    result = compile(path, inputs={"x": x})
    assert result.imported.patterns["gemm"] == 2
    assert any(layer["op"] == "move.resize" for layer in result.report["layers"])
    assert result.report["accuracy"]["outputs"]["y"]["cosine_min"] >= 0.9999


def test_resize_torch_does_not_compute_is_one_line(tmp_path: Path) -> None:
    sizes = onnx.numpy_helper.from_array(np.array([1, 2, 8, 8], np.int64), "sizes")
    node = helper.make_node("Resize", ["x", "", "", "sizes"], ["y"], name="up/Resize", mode="linear",
                            coordinate_transformation_mode="asymmetric")
    graph = helper.make_graph([node], "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 2, 4, 4])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 2, 8, 8])],
                              initializer=[sizes])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    path = tmp_path / "asym.onnx"
    onnx.save(model, path)
    with pytest.raises(InputError, match=r"Resize.*up/Resize.*mode linear, coordinate_transformation_mode asymmetric"):
        compile(path, inputs={"x": np.ones((1, 1, 2, 4, 4), np.float32)})
