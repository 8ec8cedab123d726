"""``codesign fit``: the largest design a device holds is maximal, fits, and prices as a plain compile does."""

from __future__ import annotations

import json

import pytest

import codesign
from codesign.cli import main
from codesign.fit import fit

pytestmark = [pytest.mark.slow]


@pytest.fixture(scope="module")
def vit_fit(models_dir):
    return fit(str(models_dir / "vit_tiny.onnx"), "fpga-u280", choices=[("quant", "int8")])


def test_largest_is_maximal_and_fits(vit_fit):
    largest = vit_fit.largest
    assert largest.fits
    assert all(entry["fraction"] <= 1.0 for entry in largest.report["resources"].values())
    fitting = [d for d in vit_fit.designs if d.fits]
    assert max(d.macs_per_cycle for d in fitting) == largest.macs_per_cycle
    # Something bigger was priced and refused: the device, not the candidate list, bounds the answer.
    assert any(not d.fits and d.macs_per_cycle > largest.macs_per_cycle for d in vit_fit.designs)
    # More lanes on the same array would not fit (or the lane search hit its bound).
    wider = [d for d in vit_fit.designs if (d.rows, d.cols) == (largest.rows, largest.cols) and d.lanes > largest.lanes]
    assert all(not d.fits for d in wider)


def test_fastest_is_fastest(vit_fit):
    fitting = [d for d in vit_fit.designs if d.fits]
    assert vit_fit.fastest.fits
    assert vit_fit.fastest.latency_ms == min(d.latency_ms for d in fitting)


def test_largest_prices_as_a_compile(models_dir, vit_fit):
    d = vit_fit.largest
    report = codesign.compile(str(models_dir / "vit_tiny.onnx"), "fpga-u280", quant="int8", overrides={
        "gemm.rows": d.rows, "gemm.cols": d.cols, "vector.lanes": d.lanes}).report
    assert report["latency_cycles"] == d.report["latency_cycles"]
    assert report["resources"] == d.report["resources"]


def test_cli_json(models_dir, tmp_path, capsys):
    out = tmp_path / "fit.json"
    assert main(["fit", str(models_dir / "vit_tiny.onnx"), "--target", "fpga-zcu102", "--json", str(out)]) == 0
    doc = json.loads(out.read_text())
    assert doc["target"] == "fpga-zcu102" and doc["largest"]["fits"]
    assert "largest" in capsys.readouterr().out


@pytest.mark.parametrize("argv, message", [
    (["--target", "gpu-a100"], "fit sizes a design for an FPGA"),
    (["--set", "device.dsp=4"], "no candidate fits"),
])
def test_refusals_are_one_line(models_dir, capsys, argv, message):
    assert main(["fit", str(models_dir / "vit_tiny.onnx"), *argv]) == 2
    err = capsys.readouterr().err.strip()
    assert message in err and len(err.splitlines()) == 1
