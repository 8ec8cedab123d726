"""ONNX Resize to another size (compiler/frontend/onnx_resize.py `resize`): a ``resize`` move, simulated as the ONNX
specification defines it (torch's interpolate where the two agree, ONNX's reference implementation elsewhere).

Bilinear (half-pixel and align-corners), nearest and bicubic resizes exported by torch compile, keep the conv
around them and simulate like onnxruntime; so do the transforms torch has no mode for (asymmetric linear, nearest
with half-pixel rounding, a downsampling scale); the one combination ONNX leaves undefined (nearest with
antialias) is refused in one line naming the node.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

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


def _resize_model(path: Path, sizes: list[int] | None = None, scales: list[float] | None = None,
                  **attrs: Any) -> None:
    """x [1, 2, 4, 4] -> Resize(attrs) -> y, the target given as ``sizes`` or ``scales``."""
    inits = [onnx.numpy_helper.from_array(np.array(sizes, np.int64), "sizes")] if sizes else \
        [onnx.numpy_helper.from_array(np.array(scales, np.float32), "scales")]
    node = helper.make_node("Resize", ["x", "", "scales" if scales else "", "sizes" if sizes else ""], ["y"],
                            name="up/Resize", **attrs)
    graph = helper.make_graph([node], "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 2, 4, 4])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)], initializer=inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 19)])
    model.ir_version = 9
    onnx.save(model, path)


@pytest.mark.parametrize("target, attrs", [
    ({"sizes": [1, 2, 8, 8]}, {"mode": "linear", "coordinate_transformation_mode": "asymmetric"}),
    ({"sizes": [1, 2, 7, 5]}, {"mode": "nearest"}),  # half_pixel, round_prefer_floor: ONNX's defaults
    ({"scales": [1, 1, 0.6, 0.6]}, {"mode": "linear"}),  # the scale, not 2/4, maps coordinates
    ({"scales": [1, 1, 0.6, 0.6]}, {"mode": "cubic", "coordinate_transformation_mode": "align_corners"}),
    ({"sizes": [1, 2, 1, 3]}, {"mode": "linear", "coordinate_transformation_mode": "pytorch_half_pixel"}),
])
def test_resize_torch_has_no_mode_for_simulates_like_onnxruntime(tmp_path: Path, target: dict,
                                                                 attrs: dict) -> None:
    import onnxruntime as ort

    path = tmp_path / "resize.onnx"
    _resize_model(path, **target, **attrs)
    x = np.random.default_rng(2).normal(size=(1, 2, 4, 4)).astype(np.float32)
    result = compile(path, inputs={"x": x[None]})
    sim = result.report["accuracy"]["outputs"]["y"]
    assert sim["cosine_min"] >= 0.99999, sim
    want = np.asarray(ort.InferenceSession(str(path), providers=["CPUExecutionProvider"]).run(None, {"x": x})[0])
    from compiler.frontend.onnx_ops import run_node

    scales = np.array(target["scales"], np.float32) if "scales" in target else None
    sizes = np.array(target["sizes"], np.int64) if "sizes" in target else None
    (got,) = run_node("Resize", [x, None, scales, sizes], attrs)
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6)


def test_resize_onnx_leaves_undefined_is_one_line(tmp_path: Path) -> None:
    path = tmp_path / "aa.onnx"
    _resize_model(path, sizes=[1, 2, 2, 2], mode="nearest", antialias=1)
    with pytest.raises(InputError, match=r"Resize.*up/Resize.*mode nearest and antialias"):
        compile(path, inputs={"x": np.ones((1, 1, 2, 4, 4), np.float32)})
