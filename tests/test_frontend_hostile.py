"""Hostile and malformed ONNX files through `codesign compile`: each gets exit status 2 and one stderr line naming the
culprit (file, initializer, node, field, opset import), or compiles where the input was legal; sizes are estimated
before anything is allocated (tracemalloc sees NumPy's allocations)."""

from __future__ import annotations

import os
import tracemalloc
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

import compiler.limits
from codesign.cli import main
from compiler.frontend.onnx_ops import run_node

W = np.arange(16, dtype=np.float32).reshape(4, 4) / 16


def _model(nodes, inits, inputs=None, opset: int = 17) -> onnx.ModelProto:
    inputs = inputs or [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 4])]
    graph = helper.make_graph(nodes, "g", inputs, [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)],
                              initializer=inits)
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])


def _matmul(w: TensorProto, opset: int = 17) -> onnx.ModelProto:
    return _model([helper.make_node("MatMul", ["x", "w"], ["y"], name="mm")], [w], opset=opset)


def _raw(name: str, elem: int, dims: list[int], data: bytes) -> TensorProto:
    """A tensor exactly as given (onnx.helper.make_tensor refuses the inconsistent ones we need)."""
    t = TensorProto()
    t.name, t.data_type = name, elem
    t.dims.extend(dims)
    t.raw_data = data
    return t


def _save(model: onnx.ModelProto, path: Path) -> str:
    path.write_bytes(model.SerializeToString())
    return str(path)


def _error(capsys, *args: str) -> str:
    code = main(["compile", *args, "-q"])
    _, err = capsys.readouterr()
    assert code == 2, err
    assert err.count("\n") == 1 and err.startswith("codesign: error: ") and "Traceback" not in err, err
    return err[len("codesign: error: "):-1]


def _external(tmp_path: Path, name: str, location: str, offset: int = 0, length: int | None = 64) -> str:
    t = numpy_helper.from_array(W, "w")
    t.ClearField("raw_data")
    t.data_location = TensorProto.EXTERNAL
    entries = {"location": location, "offset": str(offset)} | ({"length": str(length)} if length is not None else {})
    for key, value in entries.items():
        e = t.external_data.add()
        e.key, e.value = key, value
    return _save(_matmul(t), tmp_path / name)


def test_legal_external_data_compiles(tmp_path, capsys):
    (tmp_path / "w.bin").write_bytes(b"\0" * 8 + W.tobytes())
    assert main(["compile", _external(tmp_path, "ok.onnx", "w.bin", offset=8), "-q"]) == 0


def test_external_data_outside_missing_or_wrong(tmp_path, capsys):
    (tmp_path / "w.bin").write_bytes(W.tobytes())
    (tmp_path / "sub").mkdir()
    (tmp_path / "link.bin").symlink_to(tmp_path / "w.bin")
    (tmp_path.parent / "outside.bin").write_bytes(W.tobytes())
    prefix = "external data of initializer 'w'"
    cases = {
        ("missing", "nope.bin", 0, 64): f"{prefix}: file 'nope.bin' is missing (next to the model in {tmp_path})",
        ("outside", "../outside.bin", 0, 64): f"{prefix}: location '../outside.bin' points outside the model's "
                                              f"folder {tmp_path}",
        ("absolute", str(tmp_path / "w.bin"), 0, 64): f"{prefix}: location '{tmp_path / 'w.bin'}' is absolute; it "
                                                      "must be relative to the model's folder",
        ("symlink", "link.bin", 0, 64): f"{prefix}: location 'link.bin' is (or passes through) a symbolic link",
        ("directory", "sub", 0, 64): f"{prefix}: 'sub' is not a regular file",
        ("offset", "w.bin", 1000, 64): f"{prefix}: offset 1000 is past the end of 'w.bin' (64 bytes)",
        ("short", "w.bin", 8, None): f"{prefix}: needs bytes 8..72 but 'w.bin' has 64",
        ("length", "w.bin", 0, 10**12): f"{prefix}: length 1000000000000 bytes, but shape 4x4 FLOAT needs 64",
        ("negative offset", "w.bin", -8, 64): f"{prefix}: External data offset must be non-negative, got -8 for "
                                               "tensor 'w'",
        ("negative length", "w.bin", 0, -1): f"{prefix}: External data length must be non-negative, got -1 for "
                                             "tensor 'w'",
    }
    for (name, location, offset, length), message in cases.items():
        path = _external(tmp_path, f"{name}.onnx", location, offset, length)
        assert _error(capsys, path) == f"{path}: {message}", name


def test_initializer_data_disagrees_with_its_shape(tmp_path, capsys):
    short = _save(_matmul(_raw("w", TensorProto.FLOAT, [2, 4], W.tobytes()[:24])), tmp_path / "short.onnx")
    assert _error(capsys, short) == f"{short}: initializer 'w' has 24 bytes of data but shape [2, 4] FLOAT needs 32"
    typed = helper.make_tensor("w", TensorProto.FLOAT, [4, 4], W.reshape(-1).tolist())
    del typed.float_data[10:]
    typed_path = _save(_matmul(typed), tmp_path / "typed.onnx")
    assert _error(capsys, typed_path) == f"{typed_path}: initializer 'w' has 10 values but shape [4, 4] needs 16"
    neg = _save(_matmul(_raw("w", TensorProto.FLOAT, [4, -4], b"")), tmp_path / "neg.onnx")
    assert _error(capsys, neg) == f"{neg}: initializer 'w' has a negative dimension in shape [4, -4]"


def test_constant_node_tensor_is_checked_too(tmp_path, capsys):
    const = helper.make_node("Constant", [], ["w"], name="c", value=_raw("v", TensorProto.FLOAT, [4, 4], b"\0" * 8))
    path = _save(_model([const, helper.make_node("MatMul", ["x", "w"], ["y"], name="mm")], []), tmp_path / "c.onnx")
    assert _error(capsys, path) == (f"{path}: attribute 'value' of Constant 'c' has 8 bytes of data but shape [4, 4] "
                                    "FLOAT needs 64")


def test_constant_inputs_a_node_cannot_take_name_it(tmp_path, capsys):
    """timm's mixed-RoPE ViT exported by the legacy exporter expands the class token to a shape computed for another
    tensor; folding it must name the node, not crash (onnxruntime refuses the file too)."""
    token = numpy_helper.from_array(np.ones((1, 1, 4), np.float32), "token")
    shape = numpy_helper.from_array(np.array([1, 3, 3], np.int64), "shape")
    nodes = [helper.make_node("Expand", ["token", "shape"], ["t"], name="/Expand"),
             helper.make_node("Add", ["x", "t"], ["y"], name="add")]
    path = _save(_model(nodes, [token, shape]), tmp_path / "expand.onnx")
    assert _error(capsys, path).startswith(f"{path}: invalid ONNX model: Expand '/Expand' cannot run on its constant "
                                           "inputs (shapes [[1, 1, 4], [3]]): shape mismatch")


def test_zero_size_initializer_names_node_and_initializer(tmp_path, capsys):
    path = _save(_matmul(numpy_helper.from_array(np.zeros((4, 0), np.float32), "w")), tmp_path / "zero.onnx")
    assert _error(capsys, path) == (f"{path}: MatMul 'mm' produces an empty tensor 'y' (shape 1x0) from the empty "
                                    "constant 'w' (shape 4x0); a zero-size tensor has nothing to compute")


def test_string_tensors_are_named(tmp_path, capsys):
    supported = "BFLOAT16, BOOL, DOUBLE, FLOAT, FLOAT16, INT16, INT32, INT64, INT8, UINT16, UINT32, UINT64, UINT8"
    init = _save(_matmul(helper.make_tensor("w", TensorProto.STRING, [4, 4], [b"a"] * 16)), tmp_path / "s.onnx")  # pyright: ignore[reportArgumentType]  (onnx's stub omits the bytes a STRING tensor takes)
    assert _error(capsys, init) == (f"{init}: initializer 'w' has element type STRING, which codesign cannot "
                                    f"compute with (supported: {supported})")
    text_in = [helper.make_tensor_value_info("x", TensorProto.STRING, [1, 4])]
    inp = _save(_model([helper.make_node("Identity", ["x"], ["y"])], [], inputs=text_in), tmp_path / "si.onnx")
    assert _error(capsys, inp) == (f"{inp}: input 'x' has element type STRING, which codesign cannot compute with "
                                   f"(supported: {supported})")


def test_opset_from_the_future(tmp_path, capsys):
    newest = onnx.defs.onnx_opset_version()
    path = _save(_matmul(numpy_helper.from_array(W, "w"), opset=99), tmp_path / "o99.onnx")
    assert _error(capsys, path) == (f"{path}: opset_import of domain 'ai.onnx' is version 99, newer than the "
                                    f"{newest} this onnx {onnx.__version__} supports; re-export with "
                                    f"opset_version <= {newest}")
    assert main(["compile", _save(_matmul(numpy_helper.from_array(W, "w"), opset=newest), tmp_path / "ok.onnx"),
                 "-q"]) == 0


def test_names_that_are_not_utf8(tmp_path, capsys):
    good = _matmul(numpy_helper.from_array(W, "w")).SerializeToString()
    node_name = tmp_path / "n.onnx"
    assert good.count(b"\x1a\x02mm") == 1  # NodeProto.name: field 3, length 2
    node_name.write_bytes(good.replace(b"\x1a\x02mm", b"\x1a\x02\xff\xfe"))
    assert _error(capsys, str(node_name)) == (f"{node_name}: model.graph.node[0] (MatMul).name is not valid UTF-8 "
                                              "(b'\\xff\\xfe')")
    assert good.count(b"\n\x01x\n\x01w") == 1  # NodeProto.input: field 1, twice
    input_name = tmp_path / "i.onnx"
    input_name.write_bytes(good.replace(b"\n\x01x\n\x01w", b"\n\x01x\n\x01\xff"))
    assert _error(capsys, str(input_name)) == (f"{input_name}: model.graph.node[0] (MatMul).input[1] is not valid "
                                               "UTF-8 (b'\\xff')")
    attr = helper.make_node("Gelu", ["x"], ["y"], name="g", approximate="tanh")
    raw = _model([attr], []).SerializeToString().replace(b"tanh", b"t\xffnh")
    attr_path = tmp_path / "a.onnx"
    attr_path.write_bytes(raw)
    assert _error(capsys, str(attr_path)) == (f"{attr_path}: attribute 'approximate' of Gelu 'g' is a string that is "
                                              "not valid UTF-8")


def test_device_and_directory_are_not_models(tmp_path, capsys):
    assert _error(capsys, "/dev/zero") == "/dev/zero: not a regular file (a device, FIFO or socket); expected an .onnx file"
    assert _error(capsys, str(tmp_path)) == f"{tmp_path}: is a directory, expected an .onnx file"


def test_model_bigger_than_memory_is_refused_before_parsing(tmp_path, capsys, monkeypatch):
    path = _save(_matmul(numpy_helper.from_array(W, "w")), tmp_path / "m.onnx")
    monkeypatch.setattr(compiler.limits, "available_memory_bytes", lambda: 100)
    size = os.path.getsize(path)
    assert _error(capsys, path) == (f"{path}: parsing a {size} B model needs {2 * size} B, more than the 100 B of "
                                    "memory available; refused before allocating")


def test_available_memory_is_bounded_by_the_machine():
    have = compiler.limits.available_memory_bytes()
    assert 0 < have <= os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")


def _huge_constant(tmp_path: Path, n: int) -> str:
    """A ~300-byte model whose ConstantOfShape asks for [n, n] float32, reduced to a scalar and added to x."""
    nodes = [helper.make_node("ConstantOfShape", ["shp"], ["big"], name="cos",
                              value=helper.make_tensor("v", TensorProto.FLOAT, [1], [1.0])),
             helper.make_node("ReduceSum", ["big"], ["r"], name="rs", keepdims=0),
             helper.make_node("Add", ["x", "r"], ["y"], name="add")]
    return _save(_model(nodes, [numpy_helper.from_array(np.array([n, n], np.int64), "shp")]), tmp_path / "cos.onnx")


def _huge_range(tmp_path: Path, limit: int) -> str:
    nodes = [helper.make_node("Range", ["a", "b", "c"], ["big"], name="rng"),
             helper.make_node("Cast", ["big"], ["bf"], name="cast", to=TensorProto.FLOAT),
             helper.make_node("ReduceSum", ["bf"], ["r"], name="rs", keepdims=0),
             helper.make_node("Add", ["x", "r"], ["y"], name="add")]
    inits = [numpy_helper.from_array(np.array(v, np.int64), k) for k, v in (("a", 0), ("b", limit), ("c", 1))]
    return _save(_model(nodes, inits), tmp_path / "range.onnx")


def _peak_bytes(args: list[str]) -> tuple[int, int]:
    tracemalloc.start()
    try:
        code = main(args)
        return code, tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()


def test_huge_constant_of_shape_is_not_folded(tmp_path, capsys):
    """4 GiB asked by a tiny file: legal, priced, never built; calibrating it would need more than any machine."""
    code, peak = _peak_bytes(["compile", _huge_constant(tmp_path, 32768), "-q"])
    assert code == 0 and peak < 256 << 20, (code, peak)
    path = _huge_constant(tmp_path, 1 << 24)
    err = _error(capsys, path, "--quant", "int8")
    assert err.startswith("calibration on synthetic data [arg0 4x1x4] (4 samples, ") and \
        "the largest value" in err and "more than the" in err and "refused before allocating" in err, err


def test_huge_range_is_not_folded(tmp_path, capsys):
    code, peak = _peak_bytes(["compile", _huge_range(tmp_path, 10**10), "-q"])
    assert code == 0 and peak < 256 << 20, (code, peak)
    path = _huge_range(tmp_path, 10**13)
    err = _error(capsys, path, "--quant", "int8")
    assert "needs" in err and "refused before allocating" in err, err


def _token_model(tmp_path: Path) -> str:
    """input_ids [1, seq] -> embedding Gather -> MatMul, with a symbolic sequence length."""
    ids = [helper.make_tensor_value_info("input_ids", TensorProto.INT64, [1, "seq"])]
    nodes = [helper.make_node("Gather", ["emb", "input_ids"], ["h"], name="embed"),
             helper.make_node("MatMul", ["h", "w"], ["y"], name="proj")]
    inits = [numpy_helper.from_array(np.random.default_rng(0).standard_normal((32, 4)).astype(np.float32), "emb"),
             numpy_helper.from_array(W, "w")]
    return _save(_model(nodes, inits, inputs=ids), tmp_path / "tokens.onnx")


@pytest.mark.parametrize("tokens, memory", [(10**7, 1 << 30), (10**10, None)])
def test_huge_shape_with_synthetic_calibration_is_refused_with_the_estimate(tmp_path, capsys, monkeypatch, tokens,
                                                                            memory):
    """10^7 tokens need ~5 GiB (refused on a 1 GiB machine), 10^10 more than any machine has."""
    if memory is not None:
        monkeypatch.setattr(compiler.limits, "available_memory_bytes", lambda: memory)
    path = _token_model(tmp_path)
    tracemalloc.start()
    try:
        err = _error(capsys, path, "--shape", f"input_ids=1x{tokens}", "--quant", "int8")
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert err.startswith(f"calibration on synthetic data [arg0 4x1x{tokens}] (4 samples, "), err
    assert "needs" in err and "refused before allocating" in err and peak < 256 << 20, (err, peak)


def test_calibration_refusal_follows_the_machine(tmp_path, capsys, monkeypatch):
    """The same small model is refused once the machine has less memory than its estimate (1 MiB)."""
    path = _token_model(tmp_path)
    assert main(["compile", path, "--shape", "input_ids=1x8", "--quant", "int8", "-q"]) == 0
    monkeypatch.setattr(compiler.limits, "available_memory_bytes", lambda: 1 << 20)
    err = _error(capsys, path, "--shape", "input_ids=1x100000", "--quant", "int8")
    assert err.startswith("calibration on synthetic data [arg0 4x1x100000] (4 samples, 3.1 MiB of inputs; "
                          "simulating one sample holds 3.8 MiB, the largest value"), err
    assert err.endswith("more than the 1.0 MiB of memory available; refused before allocating"), err


@pytest.mark.parametrize("op, inputs, expected", [
    ("CumSum", [np.arange(6, dtype=np.float32).reshape(2, 3), np.array([1])],
     np.cumsum(np.arange(6, dtype=np.float32).reshape(2, 3), axis=1)),
    ("CumSum", [np.arange(6, dtype=np.float32).reshape(2, 3), np.array(0)],
     np.cumsum(np.arange(6, dtype=np.float32).reshape(2, 3), axis=0)),
    ("Trilu", [np.ones((3, 3), np.float32), np.array([1])], np.triu(np.ones((3, 3), np.float32), 1)),
])
def test_one_element_axis_and_k(op, inputs, expected):
    """RoBERTa / OPT exports give CumSum's axis as [1]; int() of a 1-d array is an error in NumPy 2."""
    np.testing.assert_array_equal(run_node(op, inputs, {}), [expected])


@pytest.mark.slow
def test_huge_shape_on_a_real_export_is_refused_with_the_estimate(tmp_path, capsys):
    """A RoBERTa export with a symbolic sequence: 10^9 tokens are refused (float and int8) before any allocation."""
    import sys

    import torch

    sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "examples"))
    from _common import export_onnx
    from test_onnx_ops import _model

    path = tmp_path / "roberta_dyn.onnx"
    ids, mask = torch.randint(3, 100, (1, 8)), torch.ones(1, 8, dtype=torch.int64)
    export_onnx(_model("roberta"), [ids, mask], path, input_names=["input_ids", "attention_mask"],
                output_names=["last_hidden_state"], exporter="legacy",
                dynamic_axes={"input_ids": {1: "seq"}, "attention_mask": {1: "seq"}})
    shapes = ["--shape", "input_ids=1x1000000000", "--shape", "attention_mask=1x1000000000"]
    for quant in ([], ["--quant", "int8"]):
        code, peak = _peak_bytes(["compile", str(path), *shapes, *quant, "-q"])
        _, err = capsys.readouterr()
        assert code == 2 and err.count("\n") == 1 and peak < 256 << 20, (err, peak)
        assert err.startswith(f"codesign: error: {path}: recognizing attention: tracing the layout of '") and \
            "(1x1000000000x32) needs 1.4 TiB, more than the" in err, err
