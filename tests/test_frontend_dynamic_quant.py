"""Models quantized by onnxruntime (compiler/frontend/dynamic_quant.py): ``quantize_dynamic``'s integer GEMMs,
convolutions and dequantized embedding gathers import as the float graph on the model's dequantized weights, with
every pattern the float model has (the QOperator format: tests/test_frontend_qoperator.py).

The models are the repository's real exports quantized here by onnxruntime.quantization itself; onnxruntime runs
them as the reference."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper, numpy_helper
from onnxruntime.quantization import QuantType, quantize_dynamic

from codesign.api import compile
from codesign.cli import main
from tests.conftest import model_path


def _feeds(path: Path, seed: int = 0) -> dict[str, np.ndarray]:
    """One sample for each input of ``path`` (token ids in range, an all-ones mask, type ids 0)."""
    rng = np.random.default_rng(seed)
    out: dict[str, np.ndarray] = {}
    for inp in onnx.load(str(path), load_external_data=False).graph.input:
        shape = [d.dim_value or 1 for d in inp.type.tensor_type.shape.dim]
        if inp.type.tensor_type.elem_type == TensorProto.FLOAT:
            out[inp.name] = rng.standard_normal(shape).astype(np.float32)
        elif "type" in inp.name:
            out[inp.name] = np.zeros(shape, np.int64)
        elif "mask" in inp.name:
            out[inp.name] = np.ones(shape, np.int64)
        else:
            out[inp.name] = rng.integers(0, 100, shape).astype(np.int64)
    return out


def _integer_ops(path: Path) -> int:
    return sum(n.op_type in ("MatMulInteger", "ConvInteger") for n in onnx.load(str(path)).graph.node)


CASES: dict[str, tuple[str, dict[str, Any]]] = {
    "bert-s8": ("bert_tiny.onnx", {"weight_type": QuantType.QInt8}),
    "vit-conv-per-channel": ("vit_tiny.onnx", {"weight_type": QuantType.QInt8, "per_channel": True}),
    "gpt2-u8-reduce-range": ("gpt2_tiny.onnx", {"weight_type": QuantType.QUInt8, "per_channel": True,
                                                "reduce_range": True}),
}


@pytest.mark.parametrize("case", list(CASES))
def test_quantize_dynamic_imports_with_the_float_models_patterns(case: str, tmp_path: Path) -> None:
    name, options = CASES[case]
    src = model_path(name)
    dst = tmp_path / f"{case}.onnx"
    quantize_dynamic(src, dst, **options)
    count = _integer_ops(dst)
    assert count > 0
    x = _feeds(src)
    result = compile(str(dst), inputs={k: v[None] for k, v in x.items()})
    report = result.report
    assert report is not None
    assert report["patterns"] == compile(str(src)).report["patterns"]  # type: ignore[index]
    assert report["import_notes"][0].startswith(f"{count} dynamically quantized")
    assert not {"MatMulInteger", "ConvInteger", "DynamicQuantizeLinear"} & {o.name.split(".")[-1] for o in
                                                                             result.module.walk()}
    # against onnxruntime on the quantized model: only DynamicQuantizeLinear's activation rounding differs
    assert min(v["cosine_min"] for v in report["accuracy"]["outputs"].values()) > 0.999
    int8 = compile(str(dst), inputs={k: v[None] for k, v in x.items()}, quant="int8").report
    assert int8 is not None and int8["patterns"] == report["patterns"]
    assert min(v["cosine_mean"] for v in int8["accuracy"]["outputs"].values()) > 0.99


def _gather_dequant(zero_point: bool) -> onnx.ModelProto:
    """Gather of an int8 table, then DequantizeLinear: how quantize_dynamic quantizes an embedding."""
    rng = np.random.default_rng(3)
    table = rng.integers(-128, 128, (50, 16)).astype(np.int8)
    inits = [numpy_helper.from_array(table, "table"), numpy_helper.from_array(np.array(0.037, np.float32), "s")]
    dq_inputs = ["g", "s"]
    if zero_point:
        inits.append(numpy_helper.from_array(np.array(-3, np.int8), "z"))
        dq_inputs.append("z")
    inits.append(numpy_helper.from_array(rng.standard_normal((16, 8)).astype(np.float32), "w"))
    graph = helper.make_graph(
        [helper.make_node("Gather", ["table", "ids"], ["g"]), helper.make_node("DequantizeLinear", dq_inputs, ["e"]),
         helper.make_node("MatMul", ["e", "w"], ["y"])], "g",
        [helper.make_tensor_value_info("ids", TensorProto.INT64, [1, 6])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 6, 8])], inits)
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=8)


@pytest.mark.parametrize("zero_point", [False, True])
def test_a_dequantized_embedding_gather_is_exact(zero_point: bool, tmp_path: Path) -> None:
    model = _gather_dequant(zero_point)
    path = tmp_path / "gather.onnx"
    onnx.save(model, str(path))
    ids = np.array([[0, 7, 49, 3, 3, 21]], np.int64)
    want = np.asarray(ort.InferenceSession(str(path), providers=["CPUExecutionProvider"]).run(None, {"ids": ids})[0])
    out = tmp_path / "out.npz"
    result = compile(str(path), inputs={"ids": ids[None]}, outputs=str(out))
    got = np.load(out)["y"][0]
    np.testing.assert_allclose(got, want, rtol=1e-6, atol=1e-6)
    assert result.report is not None and result.report["patterns"]["gemm"] == 1


def test_an_integer_gemm_of_another_shape_is_refused_by_name(tmp_path: Path, capsys) -> None:
    """A MatMulInteger whose weight is not a constant is not quantize_dynamic's chain: refused, not guessed."""
    graph = helper.make_graph(
        [helper.make_node("DynamicQuantizeLinear", ["x"], ["xq", "xs", "xz"]),
         helper.make_node("MatMulInteger", ["xq", "wq", "xz"], ["acc"], name="mmi"),
         helper.make_node("Cast", ["acc"], ["accf"], to=TensorProto.FLOAT),
         helper.make_node("Mul", ["accf", "xs"], ["y"])], "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 4, 8]),
         helper.make_tensor_value_info("wq", TensorProto.UINT8, [8, 3])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 4, 3])])
    path = tmp_path / "mmi.onnx"
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=8), str(path))
    assert main(["compile", str(path), "-q"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "cannot import MatMulInteger 'mmi': integer GEMMs and convolutions import only" in err
