"""InstanceNormalization (compiler/frontend/instancenorm.py): torch's GroupNorm export, lowered to a last-axis
LayerNormalization plus a per-channel Mul / Add.

The lowered graph, run node by node with the frontend's NumPy op table, equals torch's instance norm (3-D and 4-D
inputs, affine and not); GroupNorms of 1, 2 and C groups on 1-D and 2-D conv outputs (wav2vec2's feature
extractor, MobileViTv2's GroupNorm(1, C)) compile as layer norms, simulate like onnxruntime and compile with the
integer I-LayerNorm; a scale that is not a constant is refused in one line naming the node.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from codesign.api import compile
from compiler.frontend.graph import Graph, Node
from compiler.frontend.instancenorm import lower_instance_norms
from compiler.frontend.onnx_ops import run_node
from examples._common import Exporter, export_onnx
from hw.errors import InputError


def _run(graph: Graph, feeds: dict[str, np.ndarray]) -> np.ndarray:
    values = {**feeds, **graph.constants}
    for node in graph.nodes:
        for name, value in zip(node.outputs, run_node(node.op_type, [values[i] for i in node.inputs], node.attrs)):
            assert value.shape == graph.shapes[name], node.describe()
            values[name] = value
    return values["y"]


@pytest.mark.parametrize("shape", [(2, 6, 10), (1, 6, 4, 5)])
@pytest.mark.parametrize("affine", [True, False])
def test_instance_norm_is_a_last_axis_layernorm(shape: tuple[int, ...], affine: bool) -> None:
    rng = np.random.default_rng(0)
    x = rng.normal(1.0, 2.0, shape).astype(np.float32)
    scale = rng.normal(1, 0.3, shape[1]).astype(np.float32) if affine else np.ones(shape[1], np.float32)
    bias = rng.normal(0, 0.3, shape[1]).astype(np.float32) if affine else np.zeros(shape[1], np.float32)
    graph = Graph([Node("InstanceNormalization", "gn", ["x", "s", "b"], ["y"], {"epsilon": 1e-5})], ["x"], ["y"],
                  {"s": scale, "b": bias}, {"x": shape, "y": shape, "s": scale.shape, "b": bias.shape},
                  {"x": np.dtype(np.float32)})
    assert lower_instance_norms(graph) == 1
    ops = [n.op_type for n in graph.nodes]
    assert ops.count("LayerNormalization") == 1 and set(ops) <= {"Reshape", "LayerNormalization", "Mul", "Add"}
    assert ("Mul" in ops) == affine  # unit scales and zero biases (the GroupNorm export's) add no work
    want = torch.nn.functional.instance_norm(torch.from_numpy(x), weight=torch.from_numpy(scale),
                                             bias=torch.from_numpy(bias), eps=1e-5).numpy()
    np.testing.assert_allclose(_run(graph, {"x": x}), want, rtol=1e-4, atol=1e-5)


class _GroupNorms(torch.nn.Module):
    """A conv feature extractor's norms: GroupNorm of C groups (wav2vec2), of 2 groups, and of 1 group on a 2-D map
    (MobileViTv2)."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = torch.nn.Conv1d(1, 8, 5, stride=2)
        self.per_channel, self.two = torch.nn.GroupNorm(8, 8), torch.nn.GroupNorm(2, 8)
        self.image = torch.nn.GroupNorm(1, 8)
        for norm in (self.per_channel, self.two, self.image):
            torch.nn.init.normal_(norm.weight, 1.0, 0.3)
            torch.nn.init.normal_(norm.bias, 0.0, 0.3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.two(torch.nn.functional.gelu(self.per_channel(self.conv(x))))  # [1, 8, 30]
        return self.image(h.reshape(1, 8, 5, 6)) + 1.0


@pytest.mark.parametrize("exporter", ["legacy", "dynamo"])
def test_group_norms_compile_as_layer_norms(tmp_path: Path, exporter: Exporter) -> None:
    torch.manual_seed(0)
    path = tmp_path / "gn.onnx"
    x = torch.randn(1, 1, 64)
    export_onnx(_GroupNorms().eval(), (x,), path, input_names=["x"], output_names=["y"], exporter=exporter)
    samples = {"x": np.random.default_rng(1).normal(size=(2, 1, 1, 64)).astype(np.float32)}
    result = compile(path, inputs=samples)
    assert result.imported.patterns["layernorm"] == 3
    assert result.report["accuracy"]["outputs"]["y"]["cosine_min"] >= 0.9999
    int8 = compile(path, inputs=samples, quant="int8", layernorm="ilayernorm")
    assert int8.imported.patterns["layernorm"] == 3
    assert int8.report["accuracy"]["outputs"]["y"]["cosine_mean"] >= 0.95


def test_instance_norm_with_a_computed_scale_is_one_line() -> None:
    graph = Graph([Node("InstanceNormalization", "enc/gn", ["x", "s", "b"], ["y"])], ["x", "s"], ["y"],
                  {"b": np.zeros(4, np.float32)}, {"x": (1, 4, 9), "y": (1, 4, 9), "s": (4,), "b": (4,)}, {},
                  source="m.onnx")
    with pytest.raises(InputError, match=r"^m\.onnx: unsupported op InstanceNormalization \(node 'enc/gn'\): only "
                                         r"constant scale and bias"):
        lower_instance_norms(graph)
