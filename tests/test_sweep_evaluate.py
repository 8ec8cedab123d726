"""codesign.sweep.evaluate: every tier reports exactly what a fresh `codesign compile` reports."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from codesign.api import compile
from codesign.sweep.evaluate import PointRequest, clear_caches, evaluate_chunk, evaluate_report, fast_target
from hw.errors import InputError
from hw.targets import load_target

ROOT = Path(__file__).resolve().parents[1]
TINY = str(ROOT / "examples" / "models" / "vit_tiny.onnx")


def _opts(choices: tuple[tuple[str, str], ...]) -> dict[str, Any]:
    """A point's (name, value) choices as compile's keywords."""
    return dict(choices)

POINTS = [
    ("fpga-u280", (("gemm.rows", "16"), ("gemm.cols", "8"), ("clock_mhz", "200"))),
    ("fpga-u280", (("gemm.dataflow", "ws"), ("buffers.act_kb", "64"))),
    ("fpga-zcu102", (("gemm.rows", "32"),)),
    ("npu-xdna", ()),
    ("gpu-a100", ()),
    ("optical-4f", ()),
]


@pytest.mark.parametrize("target,overrides", POINTS)
def test_fast_target_equals_load_target(target, overrides):
    assert fast_target(target, overrides) == load_target(target, dict(overrides))


def test_fast_target_reports_the_loaders_error():
    with pytest.raises(InputError, match=r"^--set gemm.rows=0: gemm.rows: must be > 0, got 0$"):
        fast_target("fpga-u280", (("gemm.rows", "0"),))


@pytest.mark.parametrize("tier", ["plan", "prefix", None])
def test_every_tier_equals_a_fresh_compile(tier):
    clear_caches()
    for target, overrides in POINTS:
        point = PointRequest(key="k", model=TINY, target=target, overrides=overrides)
        report, used, _ = evaluate_report(point, tier)
        assert report == compile(TINY, target, overrides=dict(overrides)).report, (target, overrides, used)
        if tier is None:
            assert used == "plan"  # the checked fast tier serves these models


def test_a_point_that_does_not_fit_is_priced_and_marked():
    point = PointRequest(key="big", model=TINY, target="fpga-zcu102", overrides=(("gemm.rows", "256"),
                                                                                 ("gemm.cols", "256")))
    (row,) = evaluate_chunk([point])
    assert row["error"] is None and row["fits"] is False and row["fit_excess"] > 0
    assert "does not fit" in row["fit_message"] and row["metrics"]["latency_ms"] > 0
    with pytest.raises(InputError, match="does not fit"):
        compile(TINY, "fpga-zcu102", overrides={"gemm.rows": 256, "gemm.cols": 256})


def test_a_points_fit_is_that_of_its_compiled_design():
    """The fit check sizes the vector lanes to the units the compile used, as the report's resources do: a float
    ViT's lanes hold only the generic ALU (1 DSP, not the default I-ViT lane's 14), so 70 x 70 fits the zcu102."""
    point = PointRequest(key="tight", model=TINY, target="fpga-zcu102", overrides=(("gemm.rows", "70"),
                                                                                   ("gemm.cols", "70")))
    (row,) = evaluate_chunk([point])
    assert row["error"] is None and row["fits"] is True and row["fit_excess"] == 0.0
    assert row["metrics"]["dsp"] == 70 * 70 / 2 + 16 * 1 and row["metrics"]["dsp_fraction"] <= 1


def test_a_bad_point_is_an_error_row_not_an_exception():
    (row,) = evaluate_chunk([PointRequest(key="bad", model=TINY, target="fpga-u280",
                                          overrides=(("gemm.acc_bits", "8"),))])
    assert row["error"] == "fpga-u280.yaml:21: gemm: acc_bits 8 cannot hold an in_bits x w_bits product (16 bits)"
    assert row["metrics"] == {}


CHOICE_SETS = [
    (("attention", "edge-moe"),),  # set-attention reads the target: the prefix stops before it
    (("attention", "flash"),),
    (("gelu", "shiftgelu"), ("quant", "int8"), ("softmax", "shiftmax")),
]


@pytest.mark.parametrize("choices", CHOICE_SETS, ids=lambda c: ",".join(v for _, v in c))
def test_compile_choices_equal_a_fresh_compile(choices):
    from codesign.options import CHOICES

    if not all(k in CHOICES and v in CHOICES[k][0] for k, v in choices):
        pytest.fail("compile option not registered")
    for overrides in ((("gemm.rows", "16"),), (("gemm.cols", "8"), ("clock_mhz", "200"))):
        point = PointRequest(key="k", model=TINY, target="fpga-u280", overrides=overrides, choices=choices)
        report, _, _ = evaluate_report(point)
        assert report == compile(TINY, "fpga-u280", overrides=dict(overrides), **_opts(choices)).report


def test_calibration_data_reaches_the_quantizer():
    from codesign.options import CHOICES

    data = ROOT / "examples" / "data" / "vit_tiny_images.npz"
    if "quant" not in CHOICES or not data.exists():
        pytest.fail("quantization or sample data not available")
    point = PointRequest(key="k", model=TINY, target="fpga-u280", choices=(("quant", "int8"),), calibrate=str(data))
    report, _, _ = evaluate_report(point)
    assert report == compile(TINY, "fpga-u280", calibrate=str(data), quant="int8").report


def test_mapping_objective_is_part_of_a_points_key():
    """``compile.mapping-objective`` as a sweep axis: each tier prices the objective a fresh compile does, and a
    point cached for one objective does not answer for another. A 16x16 ASIC with 4 KiB operand buffers re-reads
    vit_tiny's operands, so mapping for EdP moves fewer bytes than mapping for latency."""
    overrides = (("gemm.rows", "16"), ("gemm.cols", "16"), ("buffers.bank_kb", "1"), ("buffers.act_kb", "4"),
                 ("buffers.weight_kb", "4"), ("buffers.out_kb", "4"), ("dma.channels", "1"))
    clear_caches()
    reports = {}
    for objective in ("latency", "edp", "latency"):
        choices = (("mapping-objective", objective), ("quant", "int8"))
        point = PointRequest(key="k", model=TINY, target="asic-systolic", overrides=overrides, choices=choices)
        report, _, _ = evaluate_report(point)
        assert report == compile(TINY, "asic-systolic", overrides=dict(overrides), **_opts(choices)).report
        reports[objective] = report
    assert reports["edp"]["bytes_offchip"] < reports["latency"]["bytes_offchip"]
    assert reports["edp"]["energy_mj"] < reports["latency"]["energy_mj"]
