"""hw.rtl.calibrate: the fits, the LUT count, and the checked-in hw/models/calibration.json."""

from __future__ import annotations

import json
from dataclasses import fields
from pathlib import Path

import pytest

from hw.models.resources import FpgaCalibration
from hw.rtl import calibrate

CALIBRATION = Path(calibrate.__file__).resolve().parents[1] / "models" / "calibration.json"


def test_fit_line_is_least_squares():
    assert calibrate.fit_line([1, 3], [10, 14]) == (8.0, 2.0)
    a, b = calibrate.fit_line([4, 16, 32], [203, 657, 1302])
    assert round(b, 3) == 39.307 and round(a, 3) == 39.338  # the systolic_gemm LUT fit
    with pytest.raises(ValueError, match="two distinct x values"):
        calibrate.fit_line([2, 2], [1, 3])


def test_lut_count_includes_distributed_ram_and_shift_registers():
    assert calibrate.lut_count({"LUT6": 10, "LUT2": 3, "RAM32M16": 2, "SRLC32E": 4, "FDRE": 99, "CARRY8": 5}) == 33


def test_checked_in_calibration_constructs_the_resource_models_calibration():
    doc = json.loads(CALIBRATION.read_text())
    assert doc["format"] == 1 and doc["generated_by"].startswith("python -m hw.rtl.calibrate")
    known = {f.name for f in fields(FpgaCalibration)}
    assert set(doc["fpga_calibration"]) <= known
    cal = FpgaCalibration(**doc["fpga_calibration"])
    assert cal.lut_per_pe > 0 and cal.lut_per_lane > 0 and cal.dsp_per_lane >= 1
    units = {**calibrate.LANE_UNITS, **calibrate.OTHER_UNITS}
    assert {p["unit"] for p in doc["points"]} == {"systolic_gemm", *units}
    for point in doc["points"]:
        if point["unit"] in units:
            kernel, base, key, sizes = units[point["unit"]]
            assert point["kernel"] == kernel and base.items() <= point["params"].items(), point
            assert point["params"][key] in sizes


def test_a_lane_holds_the_per_element_shiftgelu():
    """``--gelu shiftgelu`` builds the per-element unit, so that is the lane's; its fixed logic is the lane's share,
    and it is lighter than the published row-max unit (fitted for the record)."""
    doc = json.loads(CALIBRATION.read_text())
    assert calibrate.LANE_UNITS["shiftgelu"][:2] == ("shiftgelu", {"in_bits": 8, "out_bits": 8, "per_element": 1})
    assert calibrate.OTHER_UNITS["shiftgelu-row"][1]["per_element"] == 0
    assert doc["lane_units"]["shiftgelu"] == {"kernel": "shiftgelu", "in_bits": 8, "out_bits": 8, "per_element": 1}
    fits = doc["fits"]
    for resource, name in (("lut", "lut_per_lane"), ("ff", "ff_per_lane"), ("dsp", "dsp_per_lane")):
        share = [fits[unit][resource]["per_lanes" if unit == "requant" else "fixed"] for unit in calibrate.LANE_UNITS]
        assert doc["fpga_calibration"][name] == round(sum(share), 1)
        assert fits["shiftgelu"][resource]["fixed"] < fits["shiftgelu-row"][resource]["fixed"]
    assert fits["shiftgelu"]["bram18"] == {"fixed": 0.0, "per_n": 0.0}


def test_bad_family_is_one_line(capsys):
    assert calibrate.main(["--family", "ice40", "--out", "/tmp/never.json"]) == 2
    assert capsys.readouterr().err == "calibrate: error: --family ice40: not supported (one of xcup, xcu, xc7)\n"
