"""hw.targets: every way a target can be wrong gives one InputError line naming the file:line or --set and key."""

from __future__ import annotations

from pathlib import Path

import pytest

from hw.errors import InputError
from hw.targets import load_target
from hw.targets.schema import FpgaTarget

GOOD = """\
kind: fpga
description: a small test design
clock_mhz: 200
offchip:
  kind: ddr4
  bandwidth_gbps: 10
  capacity_gb: 2
device: {part: test, lut: 100000, ff: 200000, dsp: 500, bram18: 400}
gemm:
  rows: 8
  cols: 8
  dataflow: os
vector:
  lanes: 8
buffers:
  weight_kb: 64
  act_kb: 64
  out_kb: 64
"""


def error(name_or_path: str, overrides: dict[str, str] | None = None) -> str:
    with pytest.raises(InputError) as info:
        load_target(name_or_path, overrides)
    message = str(info.value)
    assert "\n" not in message
    return message


@pytest.fixture
def write(tmp_path: Path):
    def _write(text: str, name: str = "my.yaml") -> str:
        path = tmp_path / name
        path.write_text(text)
        return str(path)
    return _write


def test_good_file_loads(write) -> None:
    assert load_target(write(GOOD)).name == "my"


def test_unknown_bundled_name() -> None:
    assert error("fpga-u208") == (
        "unknown target 'fpga-u208' (did you mean fpga-u280?); bundled targets: asic-systolic, fpga-u280, fpga-zcu102, "
        "gpu-a100, gpu-rtx2080ti, npu-hexagon, npu-xdna, optical-4f; or give a YAML path"
    )
    assert error("tpu").startswith("unknown target 'tpu'; bundled targets: asic-systolic, fpga-u280, ")


def test_missing_file(tmp_path: Path) -> None:
    path = str(tmp_path / "nope.yaml")
    assert error(path) == f"{path}: target file not found"
    (tmp_path / "dir.yaml").mkdir()
    assert error(str(tmp_path / "dir.yaml")) == f"{tmp_path / 'dir.yaml'}: is a directory, not a target file"


def test_yaml_syntax_error(write) -> None:
    path = write(GOOD.replace("  cols: 8\n", "  cols: [8\n"))
    assert error(path) == f"{path}:12: YAML syntax error: expected ',' or ']', but got ':'"


def test_empty_and_non_mapping_files(write) -> None:
    assert error(p := write("")) == f"{p}:1: empty target file"
    assert error(p := write("- 1\n- 2\n")) == f"{p}:1: expected a mapping of target keys at the top level"


def test_duplicate_key(write) -> None:
    path = write(GOOD.replace("  cols: 8\n", "  cols: 8\n  rows: 4\n"))
    assert error(path) == f"{path}:12: duplicate key 'gemm.rows'"


def test_bad_literal_value_names_key_and_line(write) -> None:
    path = write(GOOD.replace("dataflow: os", "dataflow: xs"))
    assert error(path) == f"{path}:12: gemm.dataflow: 'xs' is not one of os, ws, is"


def test_unknown_key_suggests_the_close_one(write) -> None:
    path = write(GOOD.replace("  rows: 8", "  rowz: 8"))
    assert error(path) == f"{path}:10: unknown key 'gemm.rowz' (did you mean gemm.rows?)"
    path = write(GOOD + "colour: blue\n")
    assert error(path) == f"{path}:19: unknown key 'colour'"


def test_wrong_types(write) -> None:
    assert error(p := write(GOOD.replace("rows: 8", "rows: eight"))) == (
        f"{p}:10: gemm.rows: expected an integer, got 'eight'")
    assert error(p := write(GOOD.replace("rows: 8", "rows: 8.5"))) == f"{p}:10: gemm.rows: expected an integer, got 8.5"
    assert error(p := write(GOOD.replace("clock_mhz: 200", "clock_mhz: '200'"))) == (
        f"{p}:3: clock_mhz: expected a number, got '200'")
    assert error(p := write(GOOD.replace("  lanes: 8", "  lanes: 8\n  count: yes"))) == (
        f"{p}:15: vector.count: expected an integer, got true")
    assert error(p := write(GOOD.replace("gemm:\n  rows: 8\n  cols: 8\n  dataflow: os\n", "gemm: 8\n"))) == (
        f"{p}:9: gemm: expected a mapping, got 8")


def test_negative_and_zero_sizes(write) -> None:
    assert error(p := write(GOOD.replace("rows: 8", "rows: -4"))) == f"{p}:10: gemm.rows: must be > 0, got -4"
    assert error(p := write(GOOD.replace("act_kb: 64", "act_kb: 0"))) == f"{p}:17: buffers.act_kb: must be > 0, got 0"
    assert error(p := write(GOOD.replace("bram18: 400", "bram18: -1"))) == (
        f"{p}:8: device.bram18: must be >= 0, got -1")


def test_missing_required_keys(write) -> None:
    assert error(p := write(GOOD.replace("  cols: 8\n", ""))) == f"{p}:9: gemm: missing required key 'cols'"
    assert error(p := write(GOOD.replace("clock_mhz: 200\n", ""))) == f"{p}:1: missing required key 'clock_mhz'"
    assert error(p := write(GOOD.replace("kind: fpga\n", ""))) == (
        f"{p}:1: missing required key 'kind' (one of fpga, npu, optical, gpu, asic)")
    assert error(p := write(GOOD.replace("kind: fpga", "kind: tpu"))) == (
        f"{p}:1: kind: 'tpu' is not one of fpga, npu, optical, gpu, asic")


def test_several_errors_report_the_first_and_count_the_rest(write) -> None:
    path = write(GOOD.replace("rows: 8", "rows: 0").replace("lanes: 8", "lanes: -1"))
    assert error(path) == f"{path}:10: gemm.rows: must be > 0, got 0 (and 1 more)"


def test_cross_field_and_one_line_checks(write) -> None:
    assert error(p := write(GOOD.replace("  dataflow: os", "  dataflow: os\n  acc_bits: 12"))) == (
        f"{p}:9: gemm: acc_bits 12 cannot hold an in_bits x w_bits product (16 bits)")
    assert error(p := write(GOOD.replace("description: a small test design", "description: |\n  two\n  lines"))) == (
        f"{p}:2: description: must be one line (it is the summary `codesign targets` prints)")


def test_set_unknown_key() -> None:
    assert error("fpga-u280", {"gemm.rowz": "16"}) == (
        "--set gemm.rowz=16: unknown key 'gemm.rowz' (did you mean gemm.rows?)")
    assert error("fpga-u280", {"dataflow": "ws"}) == (
        "--set dataflow=ws: unknown key 'dataflow' (did you mean gemm.dataflow?)")
    assert error("fpga-u280", {"vector.costs.softmax.exact.per_elem": "3"}) == (
        "--set vector.costs.softmax.exact.per_elem=3: unknown key 'vector.costs.softmax.exact.per_elem' "
        "(did you mean vector.costs.softmax.exact.per_element?)")
    assert error("gpu-a100", {"gemm.rows": "16"}) == "--set gemm.rows=16: unknown key 'gemm.rows'"
    assert error("fpga-u280", {"clock_mhz.x": "1"}) == (
        "--set clock_mhz.x=1: clock_mhz is a value, not a section; cannot set clock_mhz.x")
    assert error("fpga-u280", {"gemm..rows": "1"}) == "--set gemm..rows=1: empty key"


def test_set_bad_value() -> None:
    assert error("fpga-u280", {"gemm.dataflow": "xs"}) == (
        "--set gemm.dataflow=xs: gemm.dataflow: 'xs' is not one of os, ws, is")
    assert error("fpga-u280", {"gemm.rows": "sixteen"}) == (
        "--set gemm.rows=sixteen: gemm.rows: expected an integer, got 'sixteen'")
    assert error("fpga-u280", {"gemm.rows": "0"}) == "--set gemm.rows=0: gemm.rows: must be > 0, got 0"
    assert error("fpga-u280", {"buffers.double_buffered": "1"}) == (
        "--set buffers.double_buffered=1: buffers.double_buffered: expected true or false, got 1")
    assert error("fpga-u280", {"gemm": "3"}) == "--set gemm=3: gemm: expected a mapping, got 3"
    assert error("fpga-u280", {"kind": "tpu"}) == (
        "--set kind=tpu: kind: 'tpu' is not one of fpga, npu, optical, gpu, asic")
    assert error("fpga-u280", {"clock_mhz": "[1"}) == "--set clock_mhz=[1: clock_mhz: cannot parse '[1' as a YAML value"


# --- YAML a hostile or broken file cannot get past (hw.targets.loader.compose_yaml) ------------------------------------


def test_python_and_custom_tags_are_refused_not_constructed(write, tmp_path: Path) -> None:
    flag = tmp_path / "ran"
    p = write(GOOD.replace("description: a small test design",
                           f"description: !!python/object/apply:os.system ['touch {flag}']"))
    assert error(p) == f"{p}:2: YAML tag !!python/object/apply:os.system is not allowed (plain YAML values only)"
    p = write(GOOD.replace("gemm:\n", "gemm: !!python/object:collections.OrderedDict\n"))
    assert error(p) == f"{p}:9: YAML tag !!python/object:collections.OrderedDict is not allowed (plain YAML values only)"
    assert error(p := write(GOOD.replace("rows: 8", "rows: !mine 8"))) == (
        f"{p}:10: YAML tag !mine is not allowed (plain YAML values only)")
    assert not flag.exists()


def test_explicit_tags_that_cannot_hold_the_value(write) -> None:
    assert error(p := write(GOOD.replace("rows: 8", "rows: !!int eight"))) == f"{p}:10: cannot read 'eight' as !!int"
    assert error(p := write(GOOD.replace("rows: 8", "rows: !!bool maybe"))) == f"{p}:10: cannot read 'maybe' as !!bool"


def test_recursive_aliases_are_refused(write) -> None:
    assert error(p := write(GOOD + "extra: &x [1, *x]\n")) == (
        f"{p}:19: alias *x is inside the node &x it names (a recursive alias)")
    assert error(p := write(GOOD.replace("gemm:\n", "gemm: &g\n  self: *g\n"))) == (
        f"{p}:10: alias *g is inside the node &g it names (a recursive alias)")


def test_deep_nesting_is_refused(write) -> None:
    from hw.targets.loader import MAX_YAML_DEPTH

    assert error(p := write(GOOD + "extra: " + "[" * 20_000 + "]" * 20_000 + "\n")) == (
        f"{p}:19: YAML nested more than {MAX_YAML_DEPTH} levels deep")
    # Aliases count at their expanded depth: each level below nests the one above once more.
    chain = "a0: &a0 [[[[[[[[[[1]]]]]]]]]]\n" + "".join(f"a{i}: &a{i} [[[[[[[[[[*a{i - 1}]]]]]]]]]]\n" for i in (1, 2, 3))
    assert error(p := write(GOOD + chain)) == f"{p}:22: YAML nested more than {MAX_YAML_DEPTH} levels deep"


def test_an_alias_bomb_is_refused_before_it_expands(write) -> None:
    # "Billion laughs": 9 levels of 10 aliases each would expand to 10**9 nodes; the count is O(1) per alias.
    bomb = "l0: &l0 [lol, lol, lol, lol, lol, lol, lol, lol, lol, lol]\n" + "".join(
        f"l{i}: &l{i} [{', '.join([f'*l{i - 1}'] * 10)}]\n" for i in range(1, 10))
    assert error(p := write(GOOD + bomb)) == (
        f"{p}:23: more than 100000 YAML nodes with aliases expanded (an alias bomb?)")


def test_merge_keys_and_harmless_anchors_still_load(write) -> None:
    text = GOOD.replace("buffers:\n  weight_kb: 64\n  act_kb: 64\n  out_kb: 64\n",
                        "sizes: &kb {weight_kb: 64, act_kb: 64}\nbuffers:\n  <<: *kb\n  out_kb: 32\n")
    with pytest.raises(InputError, match="unknown key 'sizes'"):  # the anchor's own key is not a target key
        load_target(write(text))
    text = GOOD.replace("buffers:\n  weight_kb: 64\n  act_kb: 64\n  out_kb: 64\n",
                        "buffers: &kb {weight_kb: 64, act_kb: 64, out_kb: 32}\n")
    aliased = load_target(write(text))
    assert isinstance(aliased, FpgaTarget) and aliased.buffers.out_kb == 32


def test_every_number_is_finite_and_in_range(write) -> None:
    assert error(p := write(GOOD.replace("bandwidth_gbps: 10", "bandwidth_gbps: .inf"))) == (
        f"{p}:6: offchip.bandwidth_gbps: must be a finite number, got inf")
    assert error(p := write(GOOD.replace("clock_mhz: 200", "clock_mhz: .inf"))) == (
        f"{p}:3: clock_mhz: must be a finite number, got inf")
    assert error(p := write(GOOD.replace("clock_mhz: 200", "clock_mhz: .nan"))) == (
        f"{p}:3: clock_mhz: must be a finite number, got nan")
    assert error(p := write(GOOD.replace("clock_mhz: 200", "clock_mhz: 1.0e-300"))) == (
        f"{p}:3: clock_mhz: must be >= 1e-06 (a smaller value makes cycle counts overflow), got 1e-300")
    assert error(p := write(GOOD.replace("act_kb: 64", "act_kb: 1.0e+300"))) == (
        f"{p}:17: buffers.act_kb: must be <= 1000000000000, got 1e+300")
    assert error(p := write(GOOD.replace("rows: 8", "rows: 100000000000000000000"))) == (
        f"{p}:10: gemm.rows: must be <= 2147483647, got 100000000000000000000")
    assert error(p := write(GOOD.replace("  dataflow: os", "  dataflow: os\n  acc_bits: 4096"))) == (
        f"{p}:13: gemm.acc_bits: must be <= 64, got 4096")
    assert error("gpu-a100", {"gpu.memory_efficiency": ".nan"}) == (
        "--set gpu.memory_efficiency=.nan: gpu.memory_efficiency: must be a finite number, got nan")
    assert error("fpga-u280", {"offchip.bandwidth_gbps": ".inf"}) == (
        "--set offchip.bandwidth_gbps=.inf: offchip.bandwidth_gbps: must be a finite number, got inf")
    assert error("fpga-u280", {"energy.pj_per_byte_offchip": "-.inf"}) == (
        "--set energy.pj_per_byte_offchip=-.inf: energy.pj_per_byte_offchip: must be a finite number, got -inf")
