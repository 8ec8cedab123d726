"""onnxruntime's block-quantized weight-only GEMMs (``com.microsoft.MatMulNBits``, compiler/frontend/ort_nbits.py):
a LLaMA export quantized by onnxruntime's own MatMulNBitsQuantizer (4 bits, symmetric and with zero points, 2 and 8
bits too) compiles to the float model's recognised ops on its dequantized weights, its simulated output equal to
onnxruntime's run of the quantized file; the unpacking is checked against a hand-packed tensor; what is not
supported is one line and exit 2."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import helper, numpy_helper
from onnxruntime.quantization.matmul_nbits_quantizer import MatMulNBitsQuantizer

from codesign.api import compile
from codesign.cli import main as codesign_main
from compiler.frontend.ort_nbits import unpack_codes
from examples import zoo


@pytest.fixture(scope="module")
def llama(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, np.ndarray]]:
    path = tmp_path_factory.mktemp("nbits") / "llama.onnx"
    zoo.export("llama", "legacy:mask", path)
    return path, zoo.feeds("llama", "legacy:mask")


def _quantized(src: Path, out: Path, bits: int, symmetric: bool) -> Path:
    quantizer = MatMulNBitsQuantizer(onnx.load(str(src)), bits=bits, block_size=32, is_symmetric=symmetric)
    quantizer.process()
    quantizer.model.save_model_to_file(str(out))  # pyright: ignore[reportAttributeAccessIssue]  (an ONNXModel)
    assert any(n.op_type == "MatMulNBits" for n in onnx.load(str(out)).graph.node)
    return out


@pytest.mark.parametrize(("bits", "symmetric"), [(4, True), (4, False), (8, False), (2, False)])
def test_quantized_llama_compiles_like_the_float_one(llama, tmp_path: Path, bits: int, symmetric: bool) -> None:
    src, feeds = llama
    path = _quantized(src, tmp_path / "q.onnx", bits, symmetric)
    samples = {k: v[None] for k, v in feeds.items()}
    got, ref = compile(str(path), "fpga-u280", inputs=samples), compile(str(src), "fpga-u280")
    assert got.imported.patterns == ref.imported.patterns and got.imported.patterns["attention"] == 2
    assert got.report is not None and ref.report is not None and got.report["macs"] == ref.report["macs"]
    want = np.asarray(ort.InferenceSession(str(path)).run(None, feeds)[0])
    float_out = np.asarray(ort.InferenceSession(str(src)).run(None, feeds)[0])
    sim = np.asarray(got.env.artifacts["outputs"]["last_hidden_state"])[0]
    np.testing.assert_allclose(sim, want, atol=2e-5)
    assert np.abs(want - float_out).max() > 1e-3  # the weights really are on a coarser grid than the float ones
    assert got.report["accuracy"]["reference"] == "onnxruntime FP32 with the file's quantized ops"


def test_unpacking_is_low_bits_first() -> None:
    packed = np.array([[0x21, 0x43], [0xF0, 0x0E]], np.uint8)
    assert unpack_codes(packed, 4).tolist() == [[1, 2, 3, 4], [0, 15, 14, 0]]
    assert unpack_codes(np.array([0b11100100], np.uint8), 2).tolist() == [0, 1, 2, 3]


def _one_node(tmp_path: Path, **changes) -> Path:
    """Y = A [2, 32] @ dequant(B)^T, N = 4, one 32-element block per column."""
    inputs = changes.pop("inputs", ["a", "b", "s"]) + changes.pop("extra_inputs", [])
    node = helper.make_node("MatMulNBits", inputs, ["y"], domain="com.microsoft", name="proj",
                            **{"K": 32, "N": 4, "bits": 4, "block_size": 32, **changes})
    inits = [numpy_helper.from_array(np.full((4, 1, 16), 0x98, np.uint8), "b"),
             numpy_helper.from_array(np.full((4, 1), 0.5, np.float32), "s"),
             numpy_helper.from_array(np.zeros(32, np.int32), "g")]
    graph = helper.make_graph([node], "g", [helper.make_tensor_value_info("a", onnx.TensorProto.FLOAT, [2, 32])],
                              [helper.make_tensor_value_info("y", onnx.TensorProto.FLOAT, [2, 4])], inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17),
                                                    helper.make_opsetid("com.microsoft", 1)], ir_version=10)
    path = tmp_path / "nbits.onnx"
    onnx.save(model, str(path))
    return path


def test_one_node_matches_onnxruntime(tmp_path: Path) -> None:
    """Codes 8 and 9 in every byte, zero point 8: W is alternately 0 and 0.5."""
    path = _one_node(tmp_path)
    a = np.random.default_rng(0).normal(size=(2, 32)).astype(np.float32)
    got = np.asarray(compile(str(path), "fpga-u280", inputs={"a": a[None]}).env.artifacts["outputs"]["y"])[0]
    want = np.asarray(ort.InferenceSession(str(path)).run(None, {"a": a})[0])
    np.testing.assert_allclose(got, want, atol=1e-5)
    np.testing.assert_allclose(got, np.repeat((a[:, 1::2] * 0.5).sum(-1, keepdims=True), 4, axis=1), atol=1e-5)


@pytest.mark.parametrize(("changes", "says"), [
    ({"extra_inputs": ["", "g"]}, "g_idx"),
    ({"block_size": 24}, "block_size=24"),
    ({"K": 64}, "do not fit K=64"),
    ({"extra_inputs": ["s"]}, "float zero points are not"),
    ({"block_size": 0}, "block_size=0"),  # found by mutating builder files: a ZeroDivisionError
    ({"K": 0}, "K=0, N=4 (both positive)"),
    ({"inputs": ["a", "b", ""]}, "its required input scales is missing"),  # was an AssertionError
    ({"inputs": ["a", "", "s"]}, "its required input B is missing"),
])
def test_unsupported_forms_are_one_line(tmp_path: Path, capsys, changes: dict, says: str) -> None:
    path = _one_node(tmp_path, **changes)
    assert codesign_main(["compile", str(path), "-q"]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "MatMulNBits (node 'proj')" in err and says in err, err


@pytest.mark.parametrize("symmetric", [True, False])
def test_blocked_int4_qdq_weights_compile_like_onnxruntime(llama, tmp_path: Path, symmetric: bool) -> None:
    """The same quantizer's QDQ format: int4 / uint4 weights and a DequantizeLinear with ``block_size`` (opset 21),
    decoded and folded at load."""
    from onnx import version_converter
    from onnxruntime.quantization import QuantFormat

    src, feeds = llama
    quantizer = MatMulNBitsQuantizer(version_converter.convert_version(onnx.load(str(src)), 21), block_size=32,
                                     is_symmetric=symmetric, quant_format=QuantFormat.QDQ,
                                     op_types_to_quantize=("MatMul",))
    quantizer.process()
    path = tmp_path / "qdq.onnx"
    quantizer.model.save_model_to_file(str(path))  # pyright: ignore[reportAttributeAccessIssue]  (an ONNXModel)
    packed = {t.data_type for t in onnx.load(str(path)).graph.initializer}
    assert packed & {onnx.TensorProto.INT4, onnx.TensorProto.UINT4}
    got = compile(str(path), "fpga-u280", inputs={k: v[None] for k, v in feeds.items()})
    assert got.imported.patterns["attention"] == 2
    opts = ort.SessionOptions()  # unoptimised: onnxruntime's CPU build fuses DequantizeLinear + MatMul into a
    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL  # MatMulNBits on int8 activations
    want = np.asarray(ort.InferenceSession(str(path), opts).run(None, feeds)[0])
    np.testing.assert_allclose(np.asarray(got.env.artifacts["outputs"]["last_hidden_state"])[0], want, atol=2e-5)


def test_blocked_dequantize_with_a_partial_last_block(tmp_path: Path) -> None:
    """int4 codes of a [5, 3] weight (15 values: an odd count, half of the last byte unused) in blocks of 2 along
    axis 0 (three blocks, the last of one row), against onnxruntime."""
    rng = np.random.default_rng(1)
    codes = rng.integers(-8, 8, size=(5, 3)).astype(np.int8)
    scale = rng.uniform(0.1, 1.0, size=(3, 3)).astype(np.float32)
    w = helper.make_tensor("w", onnx.TensorProto.INT4, [5, 3], codes.reshape(-1).tolist())
    nodes = [helper.make_node("DequantizeLinear", ["w", "s"], ["wf"], axis=0, block_size=2),
             helper.make_node("MatMul", ["a", "wf"], ["y"])]
    graph = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("a", onnx.TensorProto.FLOAT, [2, 5])],
                              [helper.make_tensor_value_info("y", onnx.TensorProto.FLOAT, [2, 3])],
                              [w, numpy_helper.from_array(scale, "s")])
    path = tmp_path / "blocked.onnx"
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 21)], ir_version=10), str(path))
    a = rng.normal(size=(2, 5)).astype(np.float32)
    got = np.asarray(compile(str(path), "fpga-u280", inputs={"a": a[None]}).env.artifacts["outputs"]["y"])[0]
    np.testing.assert_allclose(got, a @ (codes * np.repeat(scale, 2, axis=0)[:5]), rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(got, np.asarray(ort.InferenceSession(str(path)).run(None, {"a": a})[0]), atol=1e-5)
