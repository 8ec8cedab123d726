"""compiler.summary: the report's resources are those of the design that runs the compile's work; an FPGA's vector
lanes hold only the RTL units the compile used (``resources_detail`` says which), so an approximation's hardware
shows up in the resource figures."""

from __future__ import annotations

from typing import Any

import pytest
from conftest import model_path

import codesign
from hw.models.resources import VECTOR_ALU, unit_cost

INT8 = {"quant": "int8", "softmax": "shiftmax", "layernorm": "ilayernorm"}


def _report(model: str, **choices: str) -> dict[str, Any]:
    opts: dict[str, Any] = choices
    report = codesign.compile(str(model_path(model)), "fpga-u280", **opts).report
    assert report is not None
    return report


def _used(report: dict) -> dict[str, float]:
    return {name: entry["used"] for name, entry in report["resources"].items()}


def _difference(a: str, b: str) -> dict[str, float]:
    """Per lane, unit ``a`` minus unit ``b``."""
    return {r: unit_cost(a)[r] - unit_cost(b)[r] for r in ("lut", "ff", "dsp")}


@pytest.mark.parametrize("model", ["vit_tiny.onnx", "bert_tiny.onnx"])
def test_the_row_max_shiftgelu_costs_its_fitted_difference_per_lane(model):
    elem = _report(model, gelu="shiftgelu", **INT8)
    row = _report(model, gelu="shiftgelu-row", **INT8)
    assert list(elem["resources_detail"]["lane_units"]) == ["ilayernorm", "requant", "shiftgelu", "shiftmax",
                                                            VECTOR_ALU]
    assert list(row["resources_detail"]["lane_units"]) == ["ilayernorm", "requant", "shiftgelu-row", "shiftmax",
                                                           VECTOR_ALU]
    lanes = row["resources_detail"]["vector_lanes"]
    assert lanes == 64
    more = _difference("shiftgelu-row", "shiftgelu")  # 2,655 LUT, 816 FF, 1 DSP
    used_row, used_elem = _used(row), _used(elem)
    for r in ("lut", "ff", "dsp"):
        assert used_row[r] - used_elem[r] == pytest.approx(lanes * more[r])
    assert used_row["dsp"] - used_elem["dsp"] == 64
    assert used_row["uram"] == used_elem["uram"] and used_row["bram18"] == used_elem["bram18"]


def test_the_online_softmax_costs_its_fitted_difference_per_lane():
    shift = _report("vit_tiny.onnx", **INT8)
    online = _report("vit_tiny.onnx", **{**INT8, "softmax": "online"})
    assert "online_softmax" in online["resources_detail"]["lane_units"]
    assert "shiftmax" not in online["resources_detail"]["lane_units"]
    more = _difference("online_softmax", "shiftmax")  # 297 LUT, 17 FF, 3 DSP
    for r in ("lut", "ff", "dsp"):
        assert _used(online)[r] - _used(shift)[r] == pytest.approx(64 * more[r])


def test_a_float_compile_holds_no_integer_unit():
    report = _report("vit_tiny.onnx")
    detail = report["resources_detail"]
    # Exact softmax, GELU and LayerNorm are priced from the cost table: the lanes are the generic ⚠ ALU only.
    assert list(detail["lane_units"]) == [VECTOR_ALU]
    assert detail["per_lane"] == unit_cost(VECTOR_ALU)
    assert detail["components"]["dsp"]["vector"] == 64 * 1.0
    assert report["resources"]["dsp"]["used"] == 64 * 64 / 2 + 64


def test_flash_attention_holds_the_online_softmax_it_runs():
    # An exact softmax runs as the online softmax inside flash attention: the lanes hold that unit. The standard
    # order prices it from the cost table (the generic ALU, needed for the residual adds anyway).
    flash = _report("vit_tiny.onnx", attention="flash", quant="int8")["resources_detail"]
    standard = _report("vit_tiny.onnx", quant="int8")["resources_detail"]
    assert list(flash["lane_units"]) == ["online_softmax", "requant", VECTOR_ALU]
    assert list(standard["lane_units"]) == ["requant", VECTOR_ALU]


def test_an_moe_router_adds_the_topk_unit():
    detail = _report("switch_tiny.onnx", quant="int8")["resources_detail"]
    assert "topk_router" in detail["lane_units"] and "requant" in detail["lane_units"]


def test_fixed_silicon_reports_no_resources():
    report = codesign.compile(str(model_path("vit_tiny.onnx")), "npu-xdna").report
    assert report is not None and "resources" not in report and "resources_detail" not in report


ZCU102_70 = ["--target", "fpga-zcu102", "--set", "gemm.rows=70", "--set", "gemm.cols=70"]


def test_fit_is_decided_by_the_compiled_design(capsys):
    """A 70x70 array on the ZCU102 leaves room for float lanes (generic ALUs only) but not for the I-ViT units:
    the float compile succeeds (the old check with a fixed lane refused it), the int8 one stops with one line."""
    from codesign.cli import main
    from hw.errors import InputError
    from hw.models import build_model
    from hw.targets import load_target

    model = build_model(load_target("fpga-zcu102", {"gemm.rows": "70", "gemm.cols": "70"}))
    with pytest.raises(InputError, match="does not fit"):
        model.check_fits()  # the default lane (every integer unit)
    vit = str(model_path("vit_tiny.onnx"))
    assert main(["compile", vit, *ZCU102_70, "-q"]) == 0
    capsys.readouterr()
    assert main(["compile", vit, *ZCU102_70, "--quant", "int8", "--softmax", "shiftmax", "--gelu", "shiftgelu",
                 "--layernorm", "ilayernorm", "-q"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("codesign: error: fpga-zcu102: the design does not fit xczu9eg-ffvb1156-2-e: DSP needs ")
    assert len(err.splitlines()) == 1
