"""Half-precision exports compile like their float32 twins (compiler/frontend/precision.py).

Real zoo models (BERT: erf GELU and a padding mask; ViT: erf GELU on image patches; LLaMA: rotary Q/K, RMSNorm and
softmax computed in float32 between Casts, grouped-query heads) exported in float16 by both torch exporters
(``.half()``), converted by onnxruntime's float16 converter (``keep_io_types`` True and False) and exported in
bfloat16 (``.bfloat16()``, dynamo: torch's legacy exporter fails on bfloat16). Each must recognise exactly the
patterns of the float32 legacy export of the same model, and its simulated outputs must match onnxruntime running
the half-precision model itself to float16 rounding. onnxruntime's CPU provider has no bfloat16 Add / Mul kernels,
and refuses torch's legacy float16 BERT export (the exporter leaves float32 constants next to float16 tensors): for
those the simulated outputs are checked against onnxruntime on the float32 twin instead, to the export's rounding.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch
from onnx import TensorProto, helper, numpy_helper

from codesign.api import compile
from compiler.frontend.onnx_loader import load_graph
from compiler.frontend.recognize import recognize
from compiler.simulate import Simulator
from hw.errors import InputError

FP16_EPS = float(np.finfo(np.float16).eps)
_DTYPES = {"fp16": torch.float16, "bf16": torch.bfloat16, "f32": torch.float32}


@pytest.fixture(scope="module")
def exported(tmp_path_factory: pytest.TempPathFactory):
    """``get(arch, variant)``: the path of ``arch`` exported as ``variant`` (``f32-legacy``, ``fp16-dynamo``,
    ``bf16-dynamo``, ``ort-keepio``, ``ort-fp16io``, ...), built once per module."""
    from onnxruntime.transformers.float16 import convert_float_to_float16

    from examples import zoo
    from examples._common import export_onnx

    folder = tmp_path_factory.mktemp("half")
    cache: dict[tuple[str, str], Path] = {}

    def get(arch: str, variant: str) -> Path:
        if (arch, variant) in cache:
            return cache[arch, variant]
        path = folder / f"{arch}_{variant}.onnx"
        kind, exporter = variant.split("-")
        if kind == "ort":  # onnxruntime's converter on the float32 legacy export
            twin = onnx.load(str(get(arch, "f32-legacy")))
            onnx.save(convert_float_to_float16(twin, keep_io_types=exporter == "keepio"), str(path))
        else:
            dtype = _DTYPES[kind]
            module = zoo.build(arch, exporter).to(dtype)
            feeds = zoo.feeds(arch, exporter)
            args = [torch.from_numpy(v).to(dtype) if v.dtype.kind == "f" else torch.from_numpy(v)
                    for v in feeds.values()]
            export_onnx(module, args, path, input_names=list(feeds), output_names=["last_hidden_state"],
                        exporter=exporter)  # type: ignore[arg-type]
        cache[arch, variant] = path
        return path

    return get


def _samples(arch: str, path: Path) -> dict[str, np.ndarray]:
    """The zoo's inputs for ``arch`` in the types ``path`` declares (float16 pixels for a float16 ViT), one
    sample."""
    from examples import zoo

    feeds = zoo.feeds(arch, "legacy")
    model = onnx.load(str(path), load_external_data=False)
    out = {}
    for inp in model.graph.input:
        value = feeds[inp.name]
        if value.dtype.kind == "f":
            value = value.astype(helper.tensor_dtype_to_np_dtype(inp.type.tensor_type.elem_type))
        out[inp.name] = value[None]
    return out


def _float32_reference(path: Path, samples: dict[str, np.ndarray]) -> np.ndarray:
    sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    feeds = {k: (v[0].astype(np.float32) if v.dtype.kind not in "iub" else v[0]) for k, v in samples.items()}
    return np.asarray(sess.run(["last_hidden_state"], feeds)[0], dtype=np.float64)


def _cosine_min(a: np.ndarray, b: np.ndarray) -> float:
    a, b = a.reshape(-1, a.shape[-1]).astype(np.float64), b.reshape(-1, b.shape[-1]).astype(np.float64)
    return float(((a * b).sum(1) / (np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1))).min())


ORT_RUNS = [("bert", "fp16-dynamo"), ("bert", "ort-keepio"), ("vit", "fp16-legacy"), ("vit", "ort-keepio"),
            ("vit", "ort-fp16io"), ("llama", "fp16-legacy"), ("llama", "fp16-dynamo"), ("llama", "ort-keepio"),
            ("llama", "ort-fp16io")]


@pytest.mark.parametrize("arch, variant", ORT_RUNS)
def test_float16_export_keeps_its_patterns_and_matches_onnxruntime(exported, arch: str, variant: str) -> None:
    twin = compile(exported(arch, "f32-legacy")).imported.patterns
    path = exported(arch, variant)
    result = compile(path, inputs=_samples(arch, path))
    assert result.imported.patterns == twin
    assert result.report["precision"] == "float16"
    accuracy = result.report["accuracy"]
    assert accuracy["reference"] == "onnxruntime FP16"
    out = accuracy["outputs"]["last_hidden_state"]
    # recognised patterns compute in float32: the error is the float16 model's own rounding, a few ulps
    assert out["cosine_min"] >= 0.9999
    assert out["max_abs_error"] <= 16 * FP16_EPS * out["max_abs_value"]
    assert accuracy["layers"], "float16 layers are compared with onnxruntime's tensors too"


# torch's legacy exporter folds the float16 BERT's transposed weights into float32 constants: most of its weights
# are float32, and the report says so
@pytest.mark.parametrize("arch, variant, precision", [("llama", "bf16-dynamo", "bfloat16"),
                                                      ("bert", "fp16-legacy", "float32")])
def test_export_onnxruntime_cannot_run_keeps_its_patterns(exported, arch: str, variant: str, precision: str) -> None:
    """bfloat16 (no CPU kernels in onnxruntime) and torch's inconsistent legacy float16 BERT: patterns as the twin's,
    simulated outputs near onnxruntime's on the float32 twin (the weights differ by their rounding)."""
    twin_path = exported(arch, "f32-legacy")
    twin = compile(twin_path).imported.patterns
    path = exported(arch, variant)
    result = compile(path)
    assert result.imported.patterns == twin
    assert result.report["precision"] == precision
    samples = _samples(arch, path)
    sim = Simulator(result.module, result.env.weights, result.imported.input_names, result.imported.output_names)
    got = sim.run({k: v[0] for k, v in samples.items()})["last_hidden_state"]
    assert _cosine_min(got, _float32_reference(twin_path, samples)) >= 0.999
    if precision == "bfloat16":  # --inputs cannot compare: one line that says why
        with pytest.raises(InputError, match="^onnxruntime cannot load the BF16 reference model: .*; onnxruntime's "
                                             "CPU provider lacks most bfloat16 kernels$"):
            compile(path, inputs=samples)


def test_int8_quantization_of_a_float16_model(exported) -> None:
    path = exported("llama", "fp16-legacy")
    result = compile(path, inputs=_samples("llama", path), quant="int8")
    assert result.imported.patterns == compile(exported("llama", "f32-legacy")).imported.patterns
    assert result.report["accuracy"]["outputs"]["last_hidden_state"]["cosine_min"] >= 0.99


def _gelu_model(sqrt2: float, cast_to: int | None, dtype: type[np.floating] = np.float16) -> onnx.ModelProto:
    """x * 0.5 * (1 + erf(x / sqrt2)) on a float16 [1, 4, 8] input, optionally through a Cast to ``cast_to`` and
    back before the Erf."""
    elem = helper.np_dtype_to_tensor_dtype(np.dtype(dtype))
    nodes = [helper.make_node("Div", ["x", "c"], ["d"])]
    erf_in = "d"
    if cast_to is not None:
        nodes += [helper.make_node("Cast", ["d"], ["di"], to=cast_to), helper.make_node("Cast", ["di"], ["df"], to=elem)]
        erf_in = "df"
    nodes += [helper.make_node("Erf", [erf_in], ["e"]), helper.make_node("Add", ["e", "one"], ["a"]),
              helper.make_node("Mul", ["x", "a"], ["m"]), helper.make_node("Mul", ["m", "half"], ["y"])]
    consts = [numpy_helper.from_array(np.array(v, dtype=dtype), n) for n, v in
              (("c", sqrt2), ("one", 1.0), ("half", 0.5))]
    graph = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", elem, [1, 4, 8])],
                              [helper.make_tensor_value_info("y", elem, [1, 4, 8])], initializer=consts)
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])


def test_half_precision_tolerance_allows_rounding_not_another_function() -> None:
    kinds = lambda model: [m.kind for m in recognize(load_graph(model))]  # noqa: E731
    assert kinds(_gelu_model(np.sqrt(2), None)) == ["gelu"]  # 1.4141 in float16: its rounding is allowed
    assert kinds(_gelu_model(1.5, None)) == []  # another constant computes another function
    assert kinds(_gelu_model(np.sqrt(2), None, np.float32)) == ["gelu"]
    # float16 -> float32 -> float16 only rounds: a GELU; through int32 the values change: generic ops, exact
    assert kinds(_gelu_model(np.sqrt(2), TensorProto.FLOAT)) == ["gelu"]
    assert kinds(_gelu_model(np.sqrt(2), TensorProto.INT32)) == []


def _chain(nodes: list[onnx.NodeProto]) -> onnx.ModelProto:
    io = [helper.make_tensor_value_info(n, TensorProto.FLOAT, [2]) for n in ("x", "y")]
    return helper.make_model(helper.make_graph(nodes, "g", io[:1], io[1:]), opset_imports=[helper.make_opsetid("", 17)])


def test_nodes_out_of_order_are_sorted_and_a_cycle_still_refused() -> None:
    """onnxruntime's float16 converter (keep_io_types) appends the input Casts after their readers: loaded in order.
    A cycle has no order: the checker's one line."""
    graph = load_graph(_chain([helper.make_node("Relu", ["a"], ["y"]), helper.make_node("Neg", ["x"], ["a"])]))
    assert [n.op_type for n in graph.nodes] == ["Neg", "Relu"]
    cycle = _chain([helper.make_node("Add", ["x", "b"], ["a"]), helper.make_node("Relu", ["a"], ["b"]),
                    helper.make_node("Relu", ["a"], ["y"])])
    with pytest.raises(InputError, match="^g: invalid ONNX model: Nodes in a graph must be topologically "
                                         "sorted, however input 'b' of node:"):
        load_graph(cycle)


@pytest.mark.parametrize("dtype, kept", [(np.float32, True), (np.float16, False)])
def test_only_float16_values_of_65504_are_a_mask(dtype: type, kept: bool, tmp_path: Path) -> None:
    """Calibration drops a mask's "minus infinity" from a range: -65504 in float16, whose most negative value it is;
    a float32 activation of 70000 is data and its range must cover it (else int8 saturates it)."""
    from compiler.calibrate import activation_ranges

    elem = TensorProto.FLOAT if dtype == np.float32 else TensorProto.FLOAT16
    w = np.eye(4, dtype=dtype)
    graph = helper.make_graph([helper.make_node("MatMul", ["x", "w"], ["y"])], "g",
                              [helper.make_tensor_value_info("x", elem, [1, 2, 4])],
                              [helper.make_tensor_value_info("y", elem, [1, 2, 4])],
                              [numpy_helper.from_array(w, "w")])
    path = tmp_path / "big.onnx"
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=8), str(path))
    result = compile(str(path), stop_after="canonicalize")
    big = 70000.0 if dtype == np.float32 else 65504.0
    x = np.array([[[1.0, -2.0, 3.0, big], [0.5, 0.25, -1.0, 2.0]]], dtype=dtype)
    ranges = activation_ranges(result.module, result.env.weights, list(result.imported.input_names),
                               {result.imported.input_names[0]: x[None]})
    top = max(ranges.values())
    assert (top == big) if kept else (top == 3.0)
