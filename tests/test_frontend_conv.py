"""General convolutions (compiler/frontend/conv.py) and Pad: 1-D / 2-D / 3-D, strided, dilated, padded (asymmetric too),
grouped and depthwise, exported from torch modules; each compiles, its MACs equal the analytic count, its float
simulation equals onnxruntime and its int8 compile runs. A tiny Whisper encoder (Conv1d stem) compiles with its
attention recognised.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import cast

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch
from onnx import TensorProto, helper, numpy_helper

from codesign.api import compile
from compiler.dialect import dataflow as df
from compiler.dialect.op_base import shape_of
from compiler.frontend.onnx_loader import load_graph
from compiler.frontend.onnx_ops import run_node
from compiler.frontend.to_dialect import build_module
from compiler.pipeline import CompileResult
from compiler.simulate import Simulator
from compiler.simulate.registry import py_attr
from examples._common import export_onnx
from hw.errors import InputError
from tests.ir_values import elem_type


class _Net(torch.nn.Module):
    """One conv (after an optional F.pad) and a GELU-free tail, so the graph is the conv and nothing to recognise."""

    def __init__(self, conv: torch.nn.Module, pad: tuple[int, ...] | None = None, value: float = 0.0) -> None:
        super().__init__()
        self.conv, self.pad, self.value = conv, pad, value

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.pad is not None:
            x = torch.nn.functional.pad(x, self.pad, value=self.value)
        return torch.relu(self.conv(x))


def _conv_macs(conv: object, out_shape: tuple[int, ...]) -> int:
    """B * L * Cout * (Cin / groups) * prod(kernel): what the unfolded GEMMs multiply-accumulate."""
    assert isinstance(conv, (torch.nn.Conv1d, torch.nn.Conv2d, torch.nn.Conv3d)), conv
    return (out_shape[0] * math.prod(out_shape[2:]) * conv.out_channels * conv.in_channels // conv.groups
            * math.prod(conv.kernel_size))


CASES = {
    "conv1d_k3_pad1": (lambda: torch.nn.Conv1d(8, 16, 3, padding=1), (1, 8, 32), None),
    "conv1d_stride2": (lambda: torch.nn.Conv1d(16, 16, 3, stride=2, padding=1), (1, 16, 32), None),
    "depthwise": (lambda: torch.nn.Conv2d(8, 8, 3, padding=1, groups=8), (1, 8, 10, 10), None),
    "grouped2": (lambda: torch.nn.Conv2d(8, 12, 3, padding=1, groups=2), (1, 8, 9, 9), None),
    "strided_dilated": (lambda: torch.nn.Conv2d(4, 6, 3, stride=2, dilation=2, padding=2, bias=False),
                        (1, 4, 13, 11), None),
    "asymmetric_pad": (lambda: torch.nn.Conv2d(4, 6, (2, 3)), (1, 4, 8, 8), (1, 0, 2, 1)),
    "batch2": (lambda: torch.nn.Conv2d(4, 8, 3, stride=(1, 2), padding=1, groups=4), (2, 4, 7, 8), None),
    # video: VideoMAE / ViViT tubelet embeddings (kernel == stride) and a padded, dilated, grouped 3-D conv
    "conv3d_tubelet": (lambda: torch.nn.Conv3d(3, 8, (2, 4, 4), stride=(2, 4, 4)), (1, 3, 4, 8, 8), None),
    "conv3d_grouped": (lambda: torch.nn.Conv3d(4, 6, 3, stride=(1, 2, 1), padding=1, dilation=(1, 1, 2), groups=2),
                       (1, 4, 3, 6, 7), None),
}


def _export(tmp_path: Path, name: str, dynamo: bool = False, value: float = 0.0) -> tuple[Path, torch.nn.Module, tuple]:
    make, shape, pad = CASES[name]
    torch.manual_seed(0)
    net = _Net(make(), pad, value).eval()
    x = torch.randn(*shape)
    path = tmp_path / f"{name}{'_dynamo' if dynamo else ''}_{value}.onnx"
    export_onnx(net, (x,), path, input_names=["x"], output_names=["y"], exporter="dynamo" if dynamo else "legacy")
    return path, net, shape


def _simulate_vs_ort(path: Path, shape: tuple, samples: int = 2) -> tuple[float, float, CompileResult]:
    feeds = {"x": np.random.default_rng(1).standard_normal((samples, *shape)).astype(np.float32)}
    result = compile(path, stop_after="canonicalize")
    sim = Simulator(result.module, result.env.weights, result.imported.input_names, result.imported.output_names)
    got = sim.run_samples(feeds)["y"]
    sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    want = np.stack([cast(np.ndarray, sess.run(None, {"x": feeds["x"][i]})[0]) for i in range(samples)])
    a, b = got.reshape(-1).astype(np.float64), want.reshape(-1).astype(np.float64)
    cosine = float(a @ b / (np.linalg.norm(a) * np.linalg.norm(b)))
    return cosine, float(np.abs(got - want).max()), result


@pytest.mark.parametrize("name", sorted(CASES))
def test_conv_compiles_costs_and_simulates_like_onnxruntime(tmp_path: Path, name: str) -> None:
    path, net, shape = _export(tmp_path, name)
    with torch.no_grad():
        out_shape = tuple(net(torch.zeros(*shape)).shape)
    cosine, err, canon = _simulate_vs_ort(path, shape)
    assert cosine >= 0.9999 and err < 1e-4
    ops = list(canon.module.walk())
    gemms = [op for op in ops if isinstance(op, df.GemmOp)]
    assert len(gemms) == 1  # a grouped / depthwise conv is one batched GEMM, not one per group
    kinds = {df.str_attr(op, "kind") for op in ops if isinstance(op, df.MoveOp)}
    assert "im2col" in kinds and "pad" not in kinds  # F.pad's zero Pad is folded into the conv's padding
    result = compile(path)
    assert result.report["macs"] == _conv_macs(net.conv, out_shape)
    layers = {layer["op"]: layer for layer in result.report["layers"]}
    cols = next(op for op in ops if isinstance(op, df.MoveOp) and df.str_attr(op, "kind") == "im2col")
    unfolded = math.prod(shape_of(cols.outputs[0])) * 4  # float32
    source = math.prod(shape_of(cols.inputs[0])) * 4
    assert layers["move.im2col"]["bytes_offchip"] == source + unfolded
    quant = compile(path, quant="int8", inputs={"x": np.random.default_rng(2).standard_normal((2, *shape))
                                                .astype(np.float32)})
    assert any(isinstance(op, df.GemmOp) and elem_type(op.lhs) == "i8"
               for op in quant.module.walk())
    assert quant.report["accuracy"]["outputs"]["y"]["cosine_min"] >= 0.98


@pytest.mark.slow
@pytest.mark.parametrize("name", ["conv1d_stride2", "depthwise", "asymmetric_pad"])
def test_dynamo_exports_compile_and_simulate(tmp_path: Path, name: str) -> None:
    path, _, shape = _export(tmp_path, name, dynamo=True)
    cosine, err, _ = _simulate_vs_ort(path, shape)
    assert cosine >= 0.9999 and err < 1e-4


def test_zero_pad_folds_into_the_conv_and_a_nonzero_one_stays_a_move(tmp_path: Path) -> None:
    path, _, shape = _export(tmp_path, "asymmetric_pad")
    ops = list(build_module(load_graph(str(path))).module.walk())
    cols = next(op for op in ops if isinstance(op, df.MoveOp) and df.str_attr(op, "kind") == "im2col")
    assert cols.attrs is not None
    pads = py_attr(cols.attrs.data["pads"])  # F.pad (1, 0, 2, 1): left 1, top 2, bottom 1
    assert list(pads) == [2, 1, 1, 0] and list(shape_of(cols.inputs[0])) == list(shape)
    path, _, _ = _export(tmp_path, "asymmetric_pad", value=0.5)
    kinds = [df.str_attr(op, "kind") for op in build_module(load_graph(str(path))).module.walk()
             if isinstance(op, df.MoveOp)]
    assert "pad" in kinds and "im2col" in kinds
    cosine, err, _ = _simulate_vs_ort(path, shape)
    assert cosine >= 0.9999 and err < 1e-4


@pytest.mark.parametrize("target", ["asic-systolic", "fpga-u280", "gpu-a100", "npu-xdna", "optical-4f"])
def test_im2col_is_costed_on_every_target_kind(tmp_path: Path, target: str) -> None:
    path, _, _ = _export(tmp_path, "grouped2")
    layer = next(x for x in compile(path, target=target).report["layers"] if x["op"] == "move.im2col")
    assert layer["cycles"] > 0 and layer["bytes_offchip"] > 0


def test_gemm_shape_ignores_batch_one_and_groups_batch(tmp_path: Path) -> None:
    path, _, _ = _export(tmp_path, "depthwise")
    gemm = next(op for op in build_module(load_graph(str(path))).module.walk() if isinstance(op, df.GemmOp))
    assert gemm.mnk() == (8, 100, 1, 9)  # batch = groups, m = B * H * W, n = Cout / G, k = Cin / G * kh * kw
    path, _, _ = _export(tmp_path, "conv1d_k3_pad1")
    gemm = next(op for op in build_module(load_graph(str(path))).module.walk() if isinstance(op, df.GemmOp))
    assert gemm.mnk() == (1, 32, 16, 24)


def _pad_model(mode: str, value: float | None, const_input: bool = False) -> onnx.ModelProto:
    data = np.arange(2 * 3 * 4, dtype=np.float32).reshape(1, 2, 3, 4)
    inits = [numpy_helper.from_array(np.array([0, 0, 1, 2, 0, 0, 2, 1], np.int64), "pads")]
    pad_inputs = ["src", "pads"]
    if value is not None:
        inits.append(numpy_helper.from_array(np.array(value, np.float32), "value"))
        pad_inputs.append("value")
    nodes = [helper.make_node("Pad", pad_inputs, ["p"], mode=mode, name="pad"),
             helper.make_node("Relu", ["p"], ["y"], name="relu")]
    inputs = []
    if const_input:
        inits.append(numpy_helper.from_array(data, "src"))
        nodes.insert(0, helper.make_node("Add", ["src", "x"], ["sum"], name="add"))
        nodes[1].input[0] = "src"
        nodes[2].input[0] = "p"
        nodes.append(helper.make_node("Add", ["y", "x"], ["z"], name="out"))
        nodes.pop(0)
        inputs = [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1])]
        outputs = [helper.make_tensor_value_info("z", TensorProto.FLOAT, None)]
    else:
        nodes[0].input[0] = "x"
        inputs = [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 2, 3, 4])]
        outputs = [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)]
    graph = helper.make_graph(nodes, "pad", inputs, outputs, inits)
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)], ir_version=9)


@pytest.mark.parametrize("mode,value", [("constant", None), ("constant", -1.5), ("reflect", None), ("edge", None)])
def test_pad_is_a_costed_move_and_simulates_like_onnxruntime(tmp_path: Path, mode: str, value: float | None) -> None:
    path = tmp_path / "pad.onnx"
    onnx.save(_pad_model(mode, value), str(path))
    x = np.random.default_rng(0).standard_normal((2, 1, 2, 3, 4)).astype(np.float32)
    result = compile(path, inputs={"x": x})
    assert result.report["accuracy"]["outputs"]["y"]["max_abs_error"] == 0.0
    pad = next(layer for layer in result.report["layers"] if layer["op"] == "move.pad")
    assert pad["bytes_offchip"] == (1 * 2 * 3 * 4 + 1 * 2 * 6 * 7) * 4  # [1, 2, 3, 4] in, [1, 2, 6, 7] out, float32
    sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    want = sess.run(None, {"x": x[0]})[0]
    got = run_node("Pad", [x[0], np.array([0, 0, 1, 2, 0, 0, 2, 1]), None if value is None else np.asarray(value, np.float32)],
                   {"mode": mode})[0]
    np.testing.assert_array_equal(np.maximum(got, 0), want)


def test_pad_of_a_constant_folds(tmp_path: Path) -> None:
    path = tmp_path / "pad_const.onnx"
    onnx.save(_pad_model("constant", 2.0, const_input=True), str(path))
    graph = load_graph(str(path))
    assert "Pad" not in {n.op_type for n in graph.nodes}
    kinds = {df.str_attr(op, "kind") for op in build_module(graph).module.walk() if isinstance(op, df.MoveOp)}
    assert "pad" not in kinds


def test_negative_pads_crop() -> None:
    x = np.arange(12, dtype=np.float32).reshape(3, 4)
    got = run_node("Pad", [x, np.array([-1, 1, 0, -2])], {})[0]
    np.testing.assert_array_equal(got, np.pad(x[1:, :2], [(0, 0), (1, 0)]))


def test_conv_weight_that_is_not_constant_is_refused_in_one_line(tmp_path: Path) -> None:
    nodes = [helper.make_node("Conv", ["x", "w"], ["y"], name="dyn_conv")]
    graph = helper.make_graph(nodes, "c", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 2, 4, 4]),
                                            helper.make_tensor_value_info("w", TensorProto.FLOAT, [3, 2, 3, 3])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)])
    path = tmp_path / "dyn.onnx"
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=9), str(path))
    with pytest.raises(InputError, match=r"unsupported op Conv \(node 'dyn_conv'\): the weight is not a constant"):
        compile(path)


@pytest.mark.slow
def test_tiny_whisper_encoder_compiles_with_attention(tmp_path: Path) -> None:
    import transformers as tf
    from transformers.models.whisper.modeling_whisper import WhisperEncoder

    from examples._common import reinit_, seed_all  # noqa: I001

    config = tf.WhisperConfig(d_model=64, encoder_layers=2, encoder_attention_heads=4, decoder_layers=1,
                              decoder_attention_heads=4, encoder_ffn_dim=128, decoder_ffn_dim=128, num_mel_bins=16,
                              max_source_positions=16, max_target_positions=16, vocab_size=128, pad_token_id=0,
                              bos_token_id=1, eos_token_id=2, decoder_start_token_id=1)
    seed_all(0)
    encoder = WhisperEncoder(config).eval()
    reinit_(encoder, 0)

    class _Encoder(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.encoder = encoder

        def forward(self, input_features: torch.Tensor) -> torch.Tensor:
            return self.encoder(input_features).last_hidden_state

    x = torch.randn(1, 16, 32, generator=torch.Generator().manual_seed(1))
    path = tmp_path / "whisper.onnx"
    export_onnx(_Encoder().eval(), (x,), path, input_names=["input_features"], output_names=["y"], exporter="legacy")
    result = compile(path, inputs={"input_features": x.numpy()[None]})
    assert result.imported.patterns["attention"] == 2
    assert result.report["accuracy"]["outputs"]["y"]["cosine_min"] >= 0.9999
    convs = [op for op in result.module.walk() if isinstance(op, df.MoveOp) and df.str_attr(op, "kind") == "im2col"]
    assert len(convs) == 2
    quant = compile(path, quant="int8", inputs={"input_features": x.numpy()[None]})
    assert quant.report["accuracy"]["outputs"]["y"]["cosine_min"] >= 0.9


def _vision(tmp_path: Path, family: str) -> tuple[Path, torch.Tensor]:
    import transformers as tf

    from examples._common import reinit_, seed_all  # noqa: I001

    seed_all(0)
    if family == "mobilevit":  # 64 px: every MobileViT block's map is a multiple of the 2x2 patch (no Resize)
        model = tf.MobileViTModel(tf.MobileViTConfig(
            image_size=64, patch_size=2, hidden_sizes=[32, 48, 64], neck_hidden_sizes=[8, 8, 16, 16, 24, 32, 64],
            num_attention_heads=4, expand_ratio=2.0)).eval()
    else:
        model = tf.SwinModel(tf.SwinConfig(image_size=32, patch_size=4, window_size=2, depths=[1, 1],
                                           num_heads=[2, 4], embed_dim=16)).eval()
    reinit_(model, 0)

    class _Vision(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.model = model

        def forward(self, pixel_values: torch.Tensor) -> torch.Tensor:
            return self.model(pixel_values=pixel_values).last_hidden_state

    x = torch.randn(1, 3, *(2 * [64 if family == "mobilevit" else 32]), generator=torch.Generator().manual_seed(1))
    path = tmp_path / f"{family}.onnx"
    export_onnx(_Vision().eval(), (x,), path, input_names=["pixel_values"], output_names=["y"], exporter="legacy")
    return path, x


@pytest.mark.slow
@pytest.mark.parametrize("family,attention,int8_cosine", [("mobilevit", 9, 0.97), ("swin", 2, 0.99)])
def test_conv_attention_hybrids_compile(tmp_path: Path, family: str, attention: int, int8_cosine: float) -> None:
    """MobileViT (depthwise / strided convs, 9 transformer layers) and Swin (a Pad to the window multiple before
    each block): float equals onnxruntime, int8 runs."""
    path, x = _vision(tmp_path, family)
    samples = {"pixel_values": x.numpy()[None]}
    result = compile(path, inputs=samples)
    assert result.imported.patterns["attention"] == attention
    assert result.report["accuracy"]["outputs"]["y"]["cosine_min"] >= 0.9999
    quant = compile(path, quant="int8", inputs=samples)
    assert quant.report["accuracy"]["outputs"]["y"]["cosine_min"] >= int8_cosine


def test_codesign_rtl_runs_conv_gemms_on_the_array_and_gives_im2col_no_unit(tmp_path: Path, capsys) -> None:
    """A conv-derived GEMM is a GEMM: the depthwise one is one systolic invocation per group (its batch); the
    im2col move has no RTL unit, as patchify has none (moves are the host's / DMA's)."""
    import json

    from codesign.cli import main

    path, _, _ = _export(tmp_path, "depthwise")
    out = tmp_path / "rtl"
    code = main(["rtl", str(path), "--quant", "int8", "--set", "gemm.rows=4", "--set", "gemm.cols=4",
                 "--set", "gemm.partitions=1", "--out", str(out), "-q"])
    assert code == 0, capsys.readouterr().err
    kernels = {k["name"]: k for k in json.loads((out / "manifest.json").read_text())["kernels"]}
    gemm = kernels["systolic_gemm_stream"]["invocations"]
    assert [(inv["work"], inv["count"]) for inv in gemm] == [({"m": 100, "n": 1, "k": 9}, 8)]
    assert not any("im2col" in name for name in kernels)


@pytest.mark.parametrize("auto_pad", ["SAME_UPPER", "SAME_LOWER", "VALID"])
def test_auto_pad_is_resolved_like_onnxruntime(tmp_path: Path, auto_pad: str) -> None:
    rng = np.random.default_rng(0)
    w = rng.standard_normal((6, 3, 3, 2)).astype(np.float32)
    node = helper.make_node("Conv", ["x", "w"], ["y"], name="conv", auto_pad=auto_pad, strides=[2, 3],
                            kernel_shape=[3, 2])
    graph = helper.make_graph([node], "c", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3, 9, 8])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)],
                              [numpy_helper.from_array(w, "w")])
    path = tmp_path / "auto.onnx"
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=9), str(path))
    cosine, err, _ = _simulate_vs_ort(path, (1, 3, 9, 8))
    assert cosine >= 0.9999 and err < 1e-4
