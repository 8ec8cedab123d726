"""hw.targets: bundled YAMLs, the schema's defaults, overrides, and the citation rule for YAML numbers."""

from __future__ import annotations

import re
from importlib import resources
from pathlib import Path

import pydantic
import pytest

from hw.targets import (
    TARGET_KINDS,
    AsicTarget,
    FpgaTarget,
    GpuTarget,
    NpuTarget,
    OpticalTarget,
    bundled_targets,
    load_target,
)
from hw.targets.defaults import PJ_PER_MAC, VECTOR_COSTS

BUNDLED = ["asic-systolic", "fpga-u280", "fpga-zcu102", "gpu-a100", "gpu-rtx2080ti", "npu-hexagon", "npu-xdna",
           "optical-4f"]
KIND_OF = {"fpga": FpgaTarget, "npu": NpuTarget, "optical": OpticalTarget, "gpu": GpuTarget, "asic": AsicTarget}


def test_bundled_names_and_summaries() -> None:
    targets = bundled_targets()
    assert list(targets) == BUNDLED
    for name, summary in targets.items():
        assert summary and "\n" not in summary, name


@pytest.mark.parametrize("name", BUNDLED)
def test_bundled_target_loads(name: str) -> None:
    target = load_target(name)
    assert target.name == name
    assert isinstance(target, KIND_OF[target.kind])
    assert target.description == bundled_targets()[name]


def test_kinds_registry() -> None:
    assert TARGET_KINDS == KIND_OF


def _numeric_lines(text: str) -> list[tuple[int, str]]:
    return [(i, line) for i, line in enumerate(text.splitlines(), 1)
            if re.match(r"^\s*[\w.]+:\s*(\{.*\d.*\}|-?[\d.]+)\s*(#.*)?$", line)]


@pytest.mark.parametrize("name", BUNDLED)
def test_every_number_is_cited(name: str) -> None:
    """A number needs a comment on its line or on its section's line (``pj_per_mac:  # source`` over its entries)."""
    lines = resources.files("hw.targets").joinpath(f"{name}.yaml").read_text().splitlines()
    for number, line in _numeric_lines("\n".join(lines)):
        if "#" in line:
            continue
        indent = len(line) - len(line.lstrip())
        parent = next(lines[j] for j in range(number - 2, -1, -1)
                      if lines[j].strip() and len(lines[j]) - len(lines[j].lstrip()) < indent)
        assert "#" in parent, f"{name}.yaml:{number}: number without a source or ⚠ default comment: {line.strip()}"


def test_overrides_are_parsed_to_schema_types() -> None:
    t = load_target("fpga-u280", {"gemm.rows": "16", "clock_mhz": "250", "buffers.double_buffered": "false",
                                  "gemm.dataflow": "ws"})
    assert isinstance(t, FpgaTarget)
    assert (t.gemm.rows, t.gemm.cols, t.gemm.dataflow) == (16, 64, "ws")
    assert t.clock_mhz == 250.0 and isinstance(t.clock_mhz, float)
    assert t.buffers.double_buffered is False


def test_overrides_reach_free_keys() -> None:
    t = load_target("fpga-u280", {"energy.pj_per_mac.4": "0.4", "vector.costs.swish.exact": "3",
                                  "vector.costs.softmax.shiftmax.per_row": "40"})
    assert isinstance(t, FpgaTarget)
    assert t.energy.pj_per_mac[4] == 0.4 and t.energy.pj_per_mac[8] == 1.0
    assert t.vector.costs["swish"]["exact"].per_element == 3.0
    assert t.vector.costs["softmax"]["shiftmax"].per_row == 40.0
    assert t.vector.costs["softmax"]["shiftmax"].per_element == VECTOR_COSTS["softmax"]["shiftmax"][0]


def test_defaults_are_filled() -> None:
    gpu = load_target("gpu-a100")
    assert gpu.energy.pj_per_mac == dict(PJ_PER_MAC)  # the YAML gives only static_w
    fpga = load_target("fpga-u280")
    assert isinstance(fpga, FpgaTarget)
    assert fpga.vector.count == 1
    assert set(fpga.vector.costs) == set(VECTOR_COSTS)
    assert fpga.vector.costs["softmax"]["exact"].per_element == 8.0


def test_targets_are_frozen() -> None:
    t = load_target("fpga-u280")
    with pytest.raises(pydantic.ValidationError):
        t.clock_mhz = 1.0  # type: ignore[misc]
    assert isinstance(t, FpgaTarget)
    with pytest.raises(pydantic.ValidationError):
        t.gemm.rows = 1  # type: ignore[misc]


def test_energy_lookup_by_width() -> None:
    e = load_target("gpu-a100").energy
    assert e.mac_pj(8) == 0.3 and e.mac_pj(6) == 0.3 and e.mac_pj(12) == 0.9
    assert e.mac_pj(64) == pytest.approx(3.2 * 4)  # quadratic above the widest entry


SMALL = """\
kind: fpga
description: a small test design
clock_mhz: 200
offchip: {kind: ddr4, bandwidth_gbps: 10, capacity_gb: 2}
device: {part: test, lut: 100000, ff: 200000, dsp: 500, bram18: 400}
gemm: &array
  rows: 8
  cols: 8
vector:
  lanes: 8
buffers: {weight_kb: 64, act_kb: 64, out_kb: 64}
"""


def test_user_file_name_defaults_to_stem(tmp_path: Path) -> None:
    path = tmp_path / "my-board.yaml"
    path.write_text(SMALL)
    t = load_target(str(path))
    assert isinstance(t, FpgaTarget)
    assert t.name == "my-board"
    assert (t.gemm.rows, t.gemm.dataflow, t.gemm.acc_bits) == (8, "os", 32)
    assert (t.dma.channels, t.buffers.memory, t.device.uram) == (1, "auto", 0)


def test_yaml_merge_keys(tmp_path: Path) -> None:
    path = tmp_path / "merge.yaml"
    path.write_text(SMALL.replace("vector:\n  lanes: 8\n", "vector:\n  lanes: 8\n") +
                    "dma:\n  <<: {channels: 3, width_bits: 64}\n  width_bits: 128\n")
    t = load_target(str(path))
    assert isinstance(t, FpgaTarget)
    assert (t.dma.channels, t.dma.width_bits) == (3, 128)
