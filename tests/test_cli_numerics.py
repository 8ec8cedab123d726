"""`codesign compile --quant/--softmax/... --inputs/--outputs/--calibrate`: results and exact error lines."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from codesign.cli import main
from tests.conftest import DATA, model_path

VIT = str(model_path("vit_tiny.onnx"))


def _npz(path: Path, **arrays: np.ndarray) -> str:
    named: dict[str, Any] = arrays  # keyword arrays: numpy's stub would match them against allow_pickle
    np.savez(path, **named)
    return str(path)


def _images(n: int = 3, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).standard_normal((n, 1, 3, 32, 32)).astype(np.float32)


def _error(argv: list[str], capsys: pytest.CaptureFixture[str]) -> str:
    capsys.readouterr()
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1, err
    return err.strip()


def test_inputs_outputs_and_accuracy(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    inputs = _npz(tmp_path / "in.npz", pixel_values=_images())
    out, report = tmp_path / "out.npz", tmp_path / "r.json"
    assert main(["compile", VIT, "--quant", "int8", "--softmax", "shiftmax", "--gelu", "shiftgelu", "--layernorm",
                 "ilayernorm", "--inputs", inputs, "--outputs", str(out), "--json", str(report), "-q"]) == 0
    got = np.load(out)
    assert list(got) == ["logits"] and got["logits"].shape == (3, 1, 10)
    acc = json.loads(report.read_text())["accuracy"]
    assert acc["samples"] == 3 and acc["reference"] == "onnxruntime FP32"
    assert acc["calibration"] == "inputs (3 samples)"
    assert acc["outputs"]["logits"]["cosine_mean"] > 0.9
    assert {"name", "tensor", "sqnr_db", "max_abs_error"} <= set(acc["layers"][0])


def test_calibrate_file_is_named_in_the_report(tmp_path: Path) -> None:
    calib = _npz(tmp_path / "calib.npz", pixel_values=_images(2, 5))
    report = tmp_path / "r.json"
    assert main(["compile", VIT, "--quant", "w4a8", "--calibrate", calib, "--json", str(report), "-q"]) == 0
    assert json.loads(report.read_text())["numerics"]["calibration"] == "calib.npz (2 samples)"


def test_missing_input(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = _npz(tmp_path / "x.npz", images=_images())
    assert _error(["compile", VIT, "--inputs", path], capsys) == (
        f"codesign: error: --inputs {path}: no array for model input 'pixel_values' (arrays: images)")


def test_wrong_shape(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = _npz(tmp_path / "x.npz", pixel_values=np.zeros((2, 3, 32, 32), np.float32))
    assert _error(["compile", VIT, "--inputs", path], capsys) == (
        f"codesign: error: --inputs {path}: input 'pixel_values' has shape 2x3x32x32, expected Nx1x3x32x32 "
        "(a leading sample axis, then the model input's shape)")


def test_wrong_dtype(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = _npz(tmp_path / "x.npz", pixel_values=_images().astype(np.float64))
    assert _error(["compile", VIT, "--inputs", path], capsys) == (
        f"codesign: error: --inputs {path}: input 'pixel_values' has dtype float64, expected float32")


def test_empty_data(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = _npz(tmp_path / "x.npz", pixel_values=_images(0))
    assert _error(["compile", VIT, "--inputs", path], capsys) == (
        f"codesign: error: --inputs {path}: input 'pixel_values' has no samples")


def test_constant_calibration_data(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = _npz(tmp_path / "c.npz", pixel_values=np.full((2, 1, 3, 32, 32), 0.5, np.float32))
    assert _error(["compile", VIT, "--quant", "int8", "--calibrate", path], capsys) == (
        f"codesign: error: --calibrate {path}: input 'pixel_values' is constant (0.5); calibration needs varied data")
    # The same data is fine to run, just not to calibrate on.
    assert main(["compile", VIT, "--inputs", path, "-q"]) == 0


def test_missing_file(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = str(tmp_path / "none.npz")
    assert _error(["compile", VIT, "--calibrate", path], capsys) == f"codesign: error: --calibrate {path}: no such file"


def test_not_an_npz(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "bad.npz"
    path.write_text("hello")
    assert _error(["compile", VIT, "--inputs", str(path)], capsys).startswith(
        f"codesign: error: --inputs {path}: not an .npz archive (")


def test_outputs_need_inputs(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert _error(["compile", VIT, "--outputs", str(tmp_path / "o.npz")], capsys) == (
        "codesign: error: --outputs needs --inputs (the samples to run)")


@pytest.mark.parametrize("flag, value, valid", [
    ("--softmax", "fast", "exact, shiftmax, online, base2, ibert, log2q, softmax-free"),
    ("--gelu", "tanh", "exact, shiftgelu, shiftgelu-row, ibert, lut"),
    ("--layernorm", "rms", "exact, ilayernorm"),
    ("--quant", "int4", "none, int8, w4a8, auto"),
])
def test_unknown_approximation(flag: str, value: str, valid: str, capsys: pytest.CaptureFixture[str]) -> None:
    assert _error(["compile", VIT, flag, value], capsys) == (
        f"codesign: error: {flag} {value}: unknown choice (valid: {valid})")


def test_layer_sqnr_over_real_tokens(tmp_path: Path) -> None:
    """With an attention mask, each [batch, seq, ...] layer also gets its SQNR over real tokens; padding rows of a
    quantized BERT are where most error sits, so the real-token figure is higher, and computed from those rows."""
    data = dict(np.load(DATA / "minilm_sentences.npz"))
    inputs = _npz(tmp_path / "in.npz", **{k: v[:2] for k, v in data.items()})
    report = tmp_path / "r.json"
    assert main(["compile", str(model_path("minilm.onnx")), "--quant", "int8", "--inputs", inputs, "--json", str(report),
                 "-q"]) == 0
    layers = {row["name"]: row for row in json.loads(report.read_text())["accuracy"]["layers"]}
    ffn = layers["model.encoder.layer.0.intermediate.dense.MatMul"]
    assert ffn["sqnr_valid_db"] is not None and ffn["sqnr_valid_db"] != ffn["sqnr_db"]
    assert sum(row.get("sqnr_valid_db") is not None for row in layers.values()) > 30


def test_no_mask_no_real_token_sqnr(tmp_path: Path) -> None:
    inputs = _npz(tmp_path / "in.npz", pixel_values=_images(2))
    report = tmp_path / "r.json"
    assert main(["compile", VIT, "--quant", "int8", "--inputs", inputs, "--json", str(report), "-q"]) == 0
    assert all("sqnr_valid_db" not in row for row in json.loads(report.read_text())["accuracy"]["layers"])


@pytest.mark.parametrize("args, message", [
    (["--weight-group", "32"], "--weight-group 32 has no effect with --quant none: it needs --quant int8 or --quant "
                               "w4a8 or --quant auto"),
    (["--act-granularity", "per-token"], "--act-granularity per-token has no effect with --quant none: it needs "
                                         "--quant int8 or --quant w4a8 or --quant auto"),
    (["--quant", "int8", "--accuracy-target", "0.9"], "--accuracy-target 0.9 has no effect with --quant int8: it "
                                                      "needs --quant auto"),
])
def test_a_choice_its_quant_does_not_read_is_one_line(args: list[str], message: str,
                                                      capsys: pytest.CaptureFixture[str]) -> None:
    """``--quant`` defaults to ``none``: ``--weight-group 32`` alone compiled the float model as if asked for that, and
    ``--accuracy-target`` is read by ``--quant auto`` only. The CLI and the Python API refuse such a choice (a sweep,
    whose space crosses choices on purpose, does not); at its default value it is harmless and accepted."""
    from codesign.api import compile
    from hw.errors import InputError

    assert _error(["compile", VIT, *args], capsys) == f"codesign: error: {message}"
    keywords: dict[str, Any] = {a.lstrip("-").replace("-", "_"): b for a, b in zip(args[::2], args[1::2])}
    with pytest.raises(InputError, match=message.split(":")[0]):
        compile(VIT, **keywords)
    assert main(["compile", VIT, "--observer", "minmax", "-q"]) == 0
