"""``--shape NAME=N`` for a symbolic dim's name (compiler/frontend/input_shapes.py): every input dim of
that name takes N, as onnxruntime's free-dimension override does, so a decoder with a past input per layer is given
its cache length once. Per-input ``--shape`` still wins; a name that is neither an input nor a symbolic dim, a 0
outside a KV cache's length and a --batch that contradicts a named batch dim are one line each. Given samples
(``--inputs``), the dims no ``--shape`` names are read off them, as onnxruntime sizes a model by its feeds; samples
that disagree on a dim are one line."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper

from codesign.cli import main


def _decoder_step(path: Path) -> None:
    """Two layers' caches [batch, 2, past, 4] appended to new [batch, 2, seq, 4] rows (a decode step's KV append)."""
    nodes, inputs, outputs = [], [], []
    for layer in range(2):
        inputs += [helper.make_tensor_value_info(f"past.{layer}", TensorProto.FLOAT, ["batch", 2, "past", 4]),
                   helper.make_tensor_value_info(f"new.{layer}", TensorProto.FLOAT, ["batch", 2, "seq", 4])]
        nodes.append(helper.make_node("Concat", [f"past.{layer}", f"new.{layer}"], [f"present.{layer}"], axis=2))
        nodes.append(helper.make_node("Relu", [f"present.{layer}"], [f"y.{layer}"]))
        outputs.append(helper.make_tensor_value_info(f"y.{layer}", TensorProto.FLOAT, None))
    graph = helper.make_graph(nodes, "step", inputs, outputs)
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=8), str(path))


def _json(tmp_path: Path, *args: str) -> str:
    out = tmp_path / "r.json"
    assert main(["compile", str(tmp_path / "step.onnx"), "-q", "--json", str(out), *args]) == 0
    return out.read_text()


def test_dims_given_by_name_equal_the_per_input_shapes(tmp_path: Path) -> None:
    _decoder_step(tmp_path / "step.onnx")
    by_input = [a for layer in range(2) for a in ("--shape", f"past.{layer}=1x2x5x4", "--shape", f"new.{layer}=1x2x1x4")]
    by_name = ["--shape", "batch=1", "--shape", "past=5", "--shape", "seq=1"]
    assert _json(tmp_path, *by_name) == _json(tmp_path, *by_input)
    # a per-input shape wins over the names for that input
    assert _json(tmp_path, *by_name, "--shape", "new.0=1x2x1x4") == _json(tmp_path, *by_input)


@pytest.mark.parametrize(("args", "message"), [
    (["--shape", "batch=1", "--shape", "past=5", "--shape", "length=1"],
     "--shape length=...: {path} has no input 'length' (inputs: past.0, new.0, past.1, new.1); its symbolic dims, "
     "each given as NAME=N: batch, past, seq"),
    (["--shape", "batch=1", "--shape", "past=5"],
     "{path}: input 'new.0' has symbolic shape 1x2xseqx4; give it with --shape new.0=1x2x1x4 or name its dims: "
     "--shape seq=N"),
    (["--shape", "batch=0", "--shape", "past=5", "--shape", "seq=1"],
     "{path}: input 'past.0' (0x2x5x4 from the dims given by name): a dim of 0 is only meaningful as the length"),
    (["--shape", "batch=1", "--shape", "past=5", "--shape", "seq=1", "--batch", "2"],
     "--batch 2 contradicts --shape batch=1 (input 'past.0')"),
])
def test_bad_dim_names_are_one_line(args: list[str], message: str, tmp_path: Path, capsys) -> None:
    path = tmp_path / "step.onnx"
    _decoder_step(path)
    assert main(["compile", str(path), "-q", *args]) == 2
    err = capsys.readouterr().err.strip()
    assert "\n" not in err and message.format(path=path) in err, err


def test_an_empty_cache_by_name(tmp_path: Path) -> None:
    """past=0: the prompt step of a decode export, its caches empty."""
    _decoder_step(tmp_path / "step.onnx")
    assert '"macs"' in _json(tmp_path, "--shape", "batch=1", "--shape", "past=0", "--shape", "seq=3")


def _masked_step(path: Path, mask_dim: str) -> None:
    """A cache [batch, 2, past, 4] grown by new [batch, 2, seq, 4] rows, then scaled by a mask whose length is the
    symbolic ``mask_dim`` (an expression of past and seq)."""
    inputs = [helper.make_tensor_value_info("cache", TensorProto.FLOAT, ["batch", 2, "past", 4]),
              helper.make_tensor_value_info("rows", TensorProto.FLOAT, ["batch", 2, "seq", 4]),
              helper.make_tensor_value_info("mask", TensorProto.FLOAT, ["batch", mask_dim])]
    nodes = [helper.make_node("Concat", ["cache", "rows"], ["kv"], axis=2),
             helper.make_node("Constant", [], ["axes"], value=helper.make_tensor("a", TensorProto.INT64, [2], [1, 3])),
             helper.make_node("Unsqueeze", ["mask", "axes"], ["m4"]),
             helper.make_node("Mul", ["kv", "m4"], ["y"])]
    graph = helper.make_graph(nodes, "step", inputs, [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)])
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=8), str(path))


@pytest.mark.parametrize(("mask_dim", "size"), [
    ("past + seq", 7), ("seq + past", 7), ("2*past - 1", 7), ("(past + seq)", 7),
    ("Max(past, seq) + seq", 7), ("floor(past/2) + seq + 2", 7), ("past // 2 + 5", 7)])
def test_a_dim_named_by_an_expression_is_computed(mask_dim: str, size: int, tmp_path: Path) -> None:
    """Optimum names the decoder mask's length ``past_sequence_length + sequence_length``; sympy-printed dims (torch)
    use ``*``, ``//``, ``floor`` and ``Max``. Given the names it uses, such a dim is computed."""
    _masked_step(tmp_path / "step.onnx", mask_dim)
    named = _json(tmp_path, "--shape", "batch=1", "--shape", "past=4", "--shape", "seq=3")
    assert named == _json(tmp_path, "--shape", "cache=1x2x4x4", "--shape", "rows=1x2x3x4", "--shape", f"mask=1x{size}")


def test_a_name_that_reads_as_an_expression_is_still_a_name(tmp_path: Path, capsys) -> None:
    """A dim named "seq-len" is a name (exporters space the operators of an expression), given as --shape seq-len=N,
    and the hint names it whole, so nobody gives seq and len and gets their difference."""
    path = tmp_path / "step.onnx"
    _masked_step(path, "seq-len")
    assert _json(tmp_path, "--shape", "batch=1", "--shape", "past=4", "--shape", "seq=3", "--shape", "seq-len=7") == \
        _json(tmp_path, "--shape", "cache=1x2x4x4", "--shape", "rows=1x2x3x4", "--shape", "mask=1x7")
    assert main(["compile", str(path), "-q", "--shape", "batch=1", "--shape", "past=4", "--shape", "seq=3"]) == 2
    assert capsys.readouterr().err.strip().endswith("name its dims: --shape seq-len=N")


def test_an_expression_dim_names_the_dims_it_needs(tmp_path: Path, capsys) -> None:
    path = tmp_path / "step.onnx"
    _masked_step(path, "past + seq")
    assert main(["compile", str(path), "-q", "--shape", "batch=1", "--shape", "past=4",
                 "--shape", "rows=1x2x3x4"]) == 2
    err = capsys.readouterr().err.strip()
    assert err == (f"codesign: error: {path}: input 'mask' has symbolic shape 1xpast + seq; give it with --shape "
                   "mask=1x1 or name its dims: --shape seq=N"), err
    # the names inside an expression are dims one may give by name
    assert main(["compile", str(path), "-q", "--shape", "length=3"]) == 2
    assert capsys.readouterr().err.strip().endswith("its symbolic dims, each given as NAME=N: batch, past, seq")


@pytest.mark.parametrize(("family", "past", "new"), [("llama", 5, 1), ("llama", 0, 4), ("falcon", 0, 4),
                                                     ("falcon", 3, 1)])
def test_optimum_decoder_step_by_dim_names(family: str, past: int, new: int, tmp_path: Path) -> None:
    """A real decoder (LLaMA: grouped KV heads; Falcon: one KV head broadcast; RoPE from a position_ids input)
    exported with Optimum's inputs and axis names: three names size every input, the mask included, and the compiled
    step equals onnxruntime on it, a decode step and the prompt step against an empty cache (Optimum's first step)
    alike."""
    import json

    import numpy as np
    from decoder_exports import export_optimum_step

    path = tmp_path / "step.onnx"
    samples = export_optimum_step(family, past, path, new)
    npz = tmp_path / "in.npz"
    np.savez(str(npz), **samples)  # pyright: ignore[reportArgumentType]  (numpy's stub types **kwds as allow_pickle)
    out = tmp_path / "r.json"
    assert main(["compile", str(path), "-q", "--shape", "batch_size=1", "--shape", f"sequence_length={new}",
                 "--shape", f"past_sequence_length={past}", "--inputs", str(npz), "--json", str(out)]) == 0
    report = json.loads(out.read_text())
    assert report["patterns"]["attention"] == 2
    for name, row in report["accuracy"]["outputs"].items():
        assert row["cosine_min"] > 0.99999, (name, row)
    if past == 0:  # the prompt step decodes on: about what the same file's steps cost at those cache lengths
        decoded = []
        for shape in ([f"sequence_length={new}", "past_sequence_length=0"], ["sequence_length=1",
                                                                                f"past_sequence_length={new}"]):
            assert main(["compile", str(path), "-q", "--shape", "batch_size=1", *[a for d in shape for a in
                                                                                  ("--shape", d)],
                         "--decode-tokens", "4", "--json", str(out)]) == 0
            decoded.append(json.loads(out.read_text())["decode"])
        assert [d["source"] for d in decoded] == ["prefill", "step"]
        assert [(d["cache_len_first"], d["cache_len_last"]) for d in decoded] == [(new, new + 3)] * 2
        assert decoded[0]["per_token_ms_mean"] == pytest.approx(decoded[1]["per_token_ms_mean"], rel=0.05)


@pytest.mark.parametrize(("text", "names", "value"), [
    ("s + t", ["s", "t"], 10), ("2*s", ["s"], 14), ("Max(s, t)", ["s", "t"], 7), ("ceiling(s/2)", ["s"], 4),
    ("Max(s)", ["Max(s)"], None), ("floor(s, 2)", ["floor(s, 2)"], None), ("s**2", ["s**2"], None),
    ("__import__('os')", ["__import__('os')"], None), ("s / 2", ["s"], None), ("s // 0", ["s"], None),
    (" + ".join(["s"] * 5000), [" + ".join(["s"] * 5000)], None)])
def test_dim_expressions_are_read_safely(text: str, names: list[str], value: int | None) -> None:
    """Only integer arithmetic of names is an expression (a fraction, a division by 0, a power, a call that is not
    floor / ceiling / Max / Min with its arguments: a name or no value); nothing is evaluated as Python, and a chain
    too long to parse within the recursion limit is a name."""
    from compiler.frontend.input_shapes import dim_names, dim_value

    assert dim_names(text) == names
    assert dim_value(text, {"s": 7, "t": 3}) == value


def test_a_negative_dim_expression_is_one_line(tmp_path: Path, capsys) -> None:
    path = tmp_path / "step.onnx"
    _masked_step(path, "seq - past")
    assert main(["compile", str(path), "-q", "--shape", "batch=1", "--shape", "past=4", "--shape", "seq=3"]) == 2
    assert capsys.readouterr().err.strip() == (
        f"codesign: error: {path}: input 'mask': a dim named by an expression comes out -1 from the dims given by "
        "name (batch=1, past=4, seq=3); a size is not negative")


def _samples(path: Path, cache: tuple[int, ...], rows: tuple[int, ...], mask: tuple[int, ...]) -> str:
    rng = np.random.default_rng(0)
    arrays = {k: rng.standard_normal((2, *s)).astype(np.float32)
              for k, s in (("cache", cache), ("rows", rows), ("mask", mask))}
    np.savez(path, **arrays)  # type: ignore[arg-type]
    return str(path)


def test_symbolic_dims_are_read_off_the_samples(tmp_path: Path) -> None:
    """A model exported with dynamic axes and run on samples needs no --shape: each named dim is the samples' (the
    mask's ``past + seq`` computed from them), and the compile equals the one given every dim by name."""
    _masked_step(tmp_path / "step.onnx", "past + seq")
    x = _samples(tmp_path / "x.npz", (1, 2, 4, 4), (1, 2, 3, 4), (1, 7))
    named = _json(tmp_path, "--inputs", x, "--shape", "batch=1", "--shape", "past=4", "--shape", "seq=3")
    assert _json(tmp_path, "--inputs", x) == named
    assert _json(tmp_path, "--calibrate", x, "--quant", "int8") == \
        _json(tmp_path, "--calibrate", x, "--quant", "int8", "--shape", "batch=1", "--shape", "past=4",
              "--shape", "seq=3")


@pytest.mark.parametrize(("shapes", "args", "message"), [
    (((1, 2, 4, 4), (2, 2, 3, 4), (1, 7)), [],
     "--inputs: inputs disagree on the dim 'batch': 'cache' has 1, 'rows' has 2"),
    (((1, 2, 4, 4), (1, 2, 3, 4), (1, 7)), ["--shape", "seq=2"], "--inputs: input 'rows' has seq=3, but --shape seq=2"),
    (((1, 2, 4, 4), (1, 2, 3, 4), (1, 8)), [],
     "--inputs: input 'mask' has a dim of 8 where its 'past + seq' is 7 (batch=1, past=4, seq=3)"),
])
def test_samples_that_disagree_on_a_dim_are_one_line(shapes: tuple, args: list[str], message: str, tmp_path: Path,
                                                     capsys) -> None:
    path = tmp_path / "step.onnx"
    _masked_step(path, "past + seq")
    x = _samples(tmp_path / "x.npz", *shapes)
    assert main(["compile", str(path), "-q", "--inputs", x, *args]) == 2
    err = capsys.readouterr().err.strip()
    assert "\n" not in err and err == f"codesign: error: {message}", err


def test_rtl_kernels_size_a_dynamic_model_by_its_calibration_samples(tmp_path: Path) -> None:
    """`codesign rtl` (one kernel per layer) given `--calibrate` samples reads the symbolic dims off them as
    `codesign compile` does, rather than asking for --shape."""
    from onnx import numpy_helper

    rng = np.random.default_rng(1)
    weight = numpy_helper.from_array(rng.standard_normal((16, 8)).astype(np.float32), "w")
    graph = helper.make_graph([helper.make_node("MatMul", ["x", "w"], ["y"])], "mlp",
                              [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", "seq", 16])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)], [weight])
    path = tmp_path / "mlp.onnx"
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=8), str(path))
    calib = tmp_path / "c.npz"
    np.savez(calib, x=rng.standard_normal((4, 1, 5, 16)).astype(np.float32))
    assert main(["rtl", str(path), "--quant", "int8", "--calibrate", str(calib), "--out", str(tmp_path / "k"),
                 "-q"]) == 0
    assert (tmp_path / "k" / "manifest.json").exists()
