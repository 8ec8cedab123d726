"""A zoo model through `codesign rtl --system --simulate` on Verilator: its `--json` report (tests marked rtl)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from codesign.cli import main
from examples import zoo


def zoo_on_top_level(name: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> dict[str, Any]:
    """Zoo architecture ``name`` (its first variant, one sample of its feeds), int8 with the I-ViT set on an 8x8
    array at the DRAM model's 4.8 GB/s, run on the system top level: the report, after checking the CLI succeeded
    and the device's outputs equal the simulator's."""
    model = tmp_path / f"{name}.onnx"
    variant = zoo.variants(name)[0]
    zoo.export(name, variant, model)
    return onnx_on_top_level(model, zoo.feeds(name, variant), tmp_path, capsys)


def onnx_on_top_level(model: Path, feeds: dict[str, np.ndarray], tmp_path: Path,
                      capsys: pytest.CaptureFixture[str]) -> dict[str, Any]:
    """``model`` on one sample (``feeds``, without the sample axis), as :func:`zoo_on_top_level` runs it."""
    inputs, report = tmp_path / "x.npz", tmp_path / "r.json"
    np.savez(inputs, **{k: v[None] for k, v in feeds.items()})  # type: ignore[arg-type]
    code = main(["rtl", str(model), "--quant", "int8", "--softmax", "shiftmax", "--gelu", "shiftgelu", "--layernorm",
                 "ilayernorm", "--set", "gemm.rows=8", "--set", "gemm.cols=8", "--set", "offchip.bandwidth_gbps=4.8",
                 "--out", str(tmp_path / "sys"), "--system", "--simulate", "--inputs", str(inputs), "--json",
                 str(report), "-q"])
    assert code == 0, capsys.readouterr().err
    r = json.loads(report.read_text())
    assert r["device_outputs_equal_simulator"] is True
    return r
