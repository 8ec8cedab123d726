"""Golden numbers: the headline figures of the example models on every bundled target kind stay what they were.

A refactor of lowering, pricing or scheduling must not move a number by accident (the plan/price split was checked
this way on all 298 report pairs of every example model and bundled target). Each case pins latency, MACs, off-chip
bytes, the roofline bound and energy of one (model, target, numerics) compile. A deliberate change regenerates the
file with ``CODESIGN_UPDATE_GOLDEN=1 pytest tests/test_golden_reports.py`` and says why in its commit.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

import codesign

GOLDEN = Path(__file__).resolve().parent / "golden" / "reports.json"
MODELS = ("vit_tiny", "bert_tiny", "gpt2_tiny")
TARGETS = ("fpga-u280", "fpga-zcu102", "npu-xdna", "gpu-a100", "optical-4f", "asic-systolic")
NUMERICS = {"float": {}, "ivit": {"quant": "int8", "softmax": "shiftmax", "gelu": "shiftgelu", "layernorm": "ilayernorm"}}
FIELDS = ("latency_cycles", "macs", "bytes_offchip", "roofline_cycles", "energy_mj")


def _figures(models_dir: Path) -> dict[str, dict[str, float]]:
    out = {}
    for model in MODELS:
        for target in TARGETS:
            for tag, choices in NUMERICS.items():
                report = codesign.compile(str(models_dir / f"{model}.onnx"), target, **choices).report
                out[f"{model}/{target}/{tag}"] = {name: report[name] for name in FIELDS}
    return out


def test_headline_figures_are_unchanged(models_dir):
    got = _figures(models_dir)
    if os.environ.get("CODESIGN_UPDATE_GOLDEN"):
        GOLDEN.parent.mkdir(exist_ok=True)
        GOLDEN.write_text(json.dumps(got, indent=1, sort_keys=True) + "\n")
    want = json.loads(GOLDEN.read_text())
    assert sorted(got) == sorted(want)
    for case, figures in want.items():
        for name, value in figures.items():
            assert got[case][name] == pytest.approx(value, rel=1e-12), f"{case}: {name}"
