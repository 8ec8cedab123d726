"""codesign.sweep.spec: the sweep YAML schema and the checks that run before any point is computed."""

from __future__ import annotations

from pathlib import Path

import pytest

from codesign.sweep.spec import parse_sweep
from hw.errors import InputError

ROOT = Path(__file__).resolve().parents[1]
TINY = ROOT / "examples" / "models" / "vit_tiny.onnx"

GOOD = f"""\
models: [{TINY}]
target: fpga-u280
space:
  gemm.rows: [8, 16]
  clock_mhz: {{min: 150, max: 350, step: 50}}
objectives: {{latency_ms: min, energy_mj: min, dsp: min}}
constraints: ["fits", "latency_ms <= 5"]
"""


def _error(text: str) -> str:
    with pytest.raises(InputError) as info:
        parse_sweep(text, "s.yaml")
    message = str(info.value)
    assert "\n" not in message
    return message


def test_good_spec_expands_ranges_and_counts_the_grid():
    sweep = parse_sweep(GOOD, "s.yaml")
    assert [a.name for a in sweep.axes] == ["gemm.rows", "clock_mhz"]
    assert sweep.axes[1].values == (150, 200, 250, 300, 350)
    assert sweep.grid_size == sweep.total == 10
    assert [c.name for c in sweep.constraints] == ["fits", "latency_ms <= 5"]
    assert len(sweep.spec_hash) == 16


def test_hash_ignores_the_budget_but_not_the_space():
    a = parse_sweep(GOOD + "strategy: random\nbudget: 5\n", "s.yaml")
    b = parse_sweep(GOOD + "strategy: random\nbudget: 9\n", "s.yaml")
    c = parse_sweep(GOOD.replace("[8, 16]", "[8, 32]") + "strategy: random\nbudget: 9\n", "s.yaml")
    assert a.spec_hash == b.spec_hash != c.spec_hash


def test_unknown_axis_names_line_and_suggests():
    message = _error(GOOD.replace("gemm.rows:", "gemm.rowz:"))
    assert message == "s.yaml:4: space.gemm.rowz: unknown key 'gemm.rowz' (did you mean gemm.rows?) (target fpga-u280)"


def test_bad_axis_value_names_line():
    message = _error(GOOD.replace("[8, 16]", "[8, -1]"))
    assert message.startswith("s.yaml:4: space.gemm.rows:") and "-1" in message


def test_empty_space():
    message = _error(GOOD.replace("space:\n  gemm.rows: [8, 16]\n  clock_mhz: {min: 150, max: 350, step: 50}\n",
                                  "space: {}\n"))
    assert message == "s.yaml:3: space: must not be empty"


def test_objective_must_be_a_report_field():
    message = _error(GOOD.replace("dsp: min", "speed: min"))
    assert message.startswith("s.yaml:6: objectives: 'speed' is not a report field (known: latency_ms,")


def test_bad_constraint_names_its_item_line():
    text = GOOD.replace('constraints: ["fits", "latency_ms <= 5"]', 'constraints:\n  - fits\n  - "latency <= 5"')
    assert _error(text).startswith("s.yaml:9: constraints[1]: 'latency' is not a report field")


def test_unknown_top_level_key_and_bad_strategy():
    assert _error(GOOD + "stratgy: grid\n") == "s.yaml:8: unknown key 'stratgy' (did you mean strategy?)"
    assert _error(GOOD + "strategy: annealing\n") == \
        "s.yaml:8: strategy: 'annealing' is not one of grid, random, nsga2, tpe"


def test_grid_needs_steps_and_samplers_need_a_budget():
    assert _error(GOOD.replace(", step: 50", "")) == \
        "s.yaml:5: space.clock_mhz: strategy grid needs a list or a range with a step"
    assert _error(GOOD + "strategy: tpe\n") == "s.yaml:8: strategy tpe needs a budget (number of points)"


@pytest.mark.parametrize(("value", "message"), [
    ("{min: 1, max: 1000000000000, step: 1}",
     "space.clock_mhz: 1 to 1000000000000 in steps of 1 is about 1e+12 points (over 1,000,000); use a larger step"),
    ("{min: 150.0, max: 350.0, step: 1.0e-300}",
     "space.clock_mhz: 150.0 to 350.0 in steps of 1e-300 is about 2e+302 points (over 1,000,000); use a larger step"),
    ("{min: 1, max: 1.0e+308, step: 1.0e-10}",
     "space.clock_mhz: 1 to 1e+308 in steps of 1e-10 is about inf points (over 1,000,000); use a larger step"),
    ("{min: .nan, max: 350, step: 50}", "space.clock_mhz.min: must be a finite number, got nan"),
    ("{min: 150, max: .inf, step: 50}", "space.clock_mhz.max: must be a finite number, got inf"),
    ("{min: 150, max: 350, step: .nan}", "space.clock_mhz.step: must be a finite number, got nan"),
    ("{min: 150, max: 350, step: 0}", "space.clock_mhz.step: must be > 0, got 0"),
    ("{min: 350, max: 150, step: 50}", "space.clock_mhz.max: must be >= min (350), got 150"),
    ("[150, .nan]", "space.clock_mhz: values must be finite numbers, got [150, nan]"),
])
def test_unusable_ranges_are_one_line_naming_the_key(value, message):
    assert _error(GOOD.replace("{min: 150, max: 350, step: 50}", value)) == f"s.yaml:5: {message}"


def test_unknown_compile_option():
    message = _error(GOOD.replace("  gemm.rows: [8, 16]\n", "  gemm.rows: [8, 16]\n  compile.softmx: [exact]\n"))
    assert message.startswith("s.yaml:5: space.compile.softmx: unknown compile option 'softmx'")


def test_target_axis_checks_every_axis_on_every_target():
    text = GOOD.replace("target: fpga-u280\n", "").replace("space:\n", "space:\n  target: [fpga-u280, gpu-a100]\n")
    message = _error(text)
    assert message.startswith("s.yaml:4: space.gemm.rows: unknown key 'gemm.rows'") and "gpu-a100" in message
    ok = parse_sweep(text.replace("  gemm.rows: [8, 16]\n", ""), "s.yaml")
    assert ok.targets == ("fpga-u280", "gpu-a100") and ok.grid_size == 10


def test_missing_model_and_missing_target():
    assert _error(GOOD.replace(str(TINY), "nope.onnx")) == "s.yaml:1: models: nope.onnx: no such file"
    assert _error(GOOD.replace("target: fpga-u280\n", "")) == \
        "s.yaml:1: missing required key 'target' (or a 'target' axis under space)"


def test_yaml_syntax_error_has_a_line():
    assert _error(GOOD + "budget: [1\n").startswith("s.yaml:")


NEEDS_INPUTS = ("needs samples to run: add 'inputs: <file>.npz' to the sweep (arrays keyed by model input name, "
                "leading sample axis, as for codesign compile --inputs)")


def test_accuracy_without_inputs_is_refused_naming_the_key():
    assert _error(GOOD.replace('"latency_ms <= 5"', '"accuracy.cosine >= 0.99"')) == \
        f"s.yaml:7: constraints[1]: accuracy.cosine {NEEDS_INPUTS}"
    assert _error(GOOD.replace("dsp: min", "accuracy.max_abs_err: min")) == \
        f"s.yaml:6: objectives.accuracy.max_abs_err {NEEDS_INPUTS}"


def test_inputs_are_checked_like_codesign_compile_inputs(tmp_path):
    import numpy as np

    from codesign.accuracy import load_samples, model_signature

    data = ROOT / "examples" / "data" / "vit_tiny_images.npz"
    ok = parse_sweep(GOOD + f"inputs: {data}\n", "s.yaml")
    assert ok.inputs == str(data) and ok.measures_accuracy
    assert ok.spec_hash != parse_sweep(GOOD, "s.yaml").spec_hash
    wrong = tmp_path / "wrong.npz"
    np.savez(wrong, pixel_values=np.zeros((2, 1, 3, 8, 8), np.float32))
    with pytest.raises(InputError) as cli:  # what `codesign compile --inputs wrong.npz` says
        load_samples(wrong, "--inputs", model_signature(TINY))
    assert _error(GOOD + f"inputs: {wrong}\n") == \
        f"s.yaml:8: inputs: {wrong}: " + str(cli.value).removeprefix(f"--inputs {wrong}: ")
    assert _error(GOOD + "inputs: nope.npz\n") == "s.yaml:8: inputs: nope.npz: no such file"
    np.savez(wrong, input_ids=np.zeros((2, 1, 4), np.int64))
    assert _error(GOOD + f"inputs: {wrong}\n") == \
        f"s.yaml:8: inputs: {wrong}: no array for model input 'pixel_values' (arrays: input_ids)"


def test_constant_inputs_cannot_calibrate_a_quantized_sweep(tmp_path):
    import numpy as np

    flat = tmp_path / "flat.npz"
    np.savez(flat, pixel_values=np.ones((2, 1, 3, 32, 32), np.float32))
    parse_sweep(GOOD + f"inputs: {flat}\n", "s.yaml")  # float compiles only run them
    quantized = GOOD.replace("  gemm.rows: [8, 16]\n", "  gemm.rows: [8, 16]\n  compile.quant: [none, int8]\n")
    assert _error(quantized + f"inputs: {flat}\n") == \
        f"s.yaml:9: inputs: {flat}: input 'pixel_values' is constant (1); calibration needs varied data"


SYMBOLIC = ROOT / "examples" / "models" / "vit_tiny_symbolic.onnx"


def test_shapes_take_input_names_and_symbolic_dim_names():
    """``shapes`` as on the command line: an input's dims, or a symbolic dim's name and size (--shape NAME=N)."""
    by_dim = parse_sweep(GOOD.replace(str(TINY), str(SYMBOLIC)) + "shapes: {batch: 2}\n", "s.yaml")
    by_input = parse_sweep(GOOD.replace(str(TINY), str(SYMBOLIC)) + "shapes: {pixel_values: [2, 3, 32, 32]}\n",
                           "s.yaml")
    assert by_dim.shapes == (("batch", (2,)),) and by_input.shapes == (("pixel_values", (2, 3, 32, 32)),)


@pytest.mark.parametrize(("shapes", "message"), [
    ("{batches: 2}", "s.yaml:8: shapes.batches: {model} has no input 'batches' (inputs: pixel_values); its symbolic "
                     "dims, each given as NAME=N: batch"),
    ("{batch: -1}", "s.yaml:8: shapes.batch: dims must be ints >= 0"),
])
def test_bad_shapes_name_their_key(shapes: str, message: str):
    got = _error(GOOD.replace(str(TINY), str(SYMBOLIC)) + f"shapes: {shapes}\n")
    assert got.startswith(message.format(model=SYMBOLIC.resolve())), got
