"""``--batch N``: N samples per inference through a dynamic batch axis; weights are read once per batch."""

from __future__ import annotations

import json

import pytest

from codesign.cli import main


def _report(models_dir, tmp_path, batch: int) -> dict:
    out = tmp_path / f"b{batch}.json"
    assert main(["compile", str(models_dir / "vit_tiny_symbolic.onnx"), "--batch", str(batch), "--json", str(out),
                 "-q"]) == 0
    return json.loads(out.read_text())


def test_batch_reuses_weights_and_raises_throughput(models_dir, tmp_path):
    one, four = _report(models_dir, tmp_path, 1), _report(models_dir, tmp_path, 4)
    assert four["macs"] == 4 * one["macs"]
    # Activations scale with the batch, weights do not: less than four single inferences' traffic.
    assert one["bytes_offchip"] < four["bytes_offchip"] < 4 * one["bytes_offchip"]
    assert four["throughput_per_s"] == pytest.approx(4e3 / four["latency_ms"])
    assert four["throughput_per_s"] > one["throughput_per_s"]


@pytest.mark.parametrize("model, batch, message", [
    ("vit_tiny.onnx", "4", "--batch 4: {m}: input 'pixel_values' has a fixed leading dim of 1; export it with a "
                           "dynamic batch axis (torch.onnx dynamic_axes) or give its shape with --shape"),
    ("vit_tiny_symbolic.onnx", "0", "--batch 0: expected a whole number of samples from 1 to 1048576"),
])
def test_bad_batch_is_one_line(models_dir, capsys, model, batch, message):
    path = str(models_dir / model)
    assert main(["compile", path, "--batch", batch, "-q"]) == 2
    assert capsys.readouterr().err == f"codesign: error: {message.format(m=path)}\n"


def test_batch_and_a_full_shape_must_agree(models_dir, tmp_path, capsys):
    """``--shape INPUT=DIMS`` names the input's whole shape, its leading dim included: with ``--batch`` beside it
    the two must agree. A disagreeing pair computed the --shape's batch while ``--batch`` went unread (a batch-1
    figure for a batch-4 question); now one line, exit 2, and an agreeing pair is the --batch compile."""
    path = str(models_dir / "vit_tiny_symbolic.onnx")
    assert main(["compile", path, "--shape", "pixel_values=1x3x32x32", "--batch", "4", "-q"]) == 2
    assert capsys.readouterr().err == ("codesign: error: --batch 4 contradicts --shape pixel_values=1x3x32x32 (its "
                                       "leading dim, the samples per inference, is 1); drop one or make them agree\n")
    out = tmp_path / "both.json"
    assert main(["compile", path, "--shape", "pixel_values=4x3x32x32", "--batch", "4", "--json", str(out), "-q"]) == 0
    assert json.loads(out.read_text())["macs"] == _report(models_dir, tmp_path, 4)["macs"]
