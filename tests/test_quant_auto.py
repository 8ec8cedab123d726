"""compiler/quant_auto.py (``--quant auto --accuracy-target``): the choice meets the target on the calibration data
as measured again from the compiled model, the IR carries the chosen formats, cheaper choices were tried first,
and the report (JSON and table) shows each GEMM's cost next to its candidates."""

from __future__ import annotations

import json
from typing import Any

import numpy as np
import pytest

from codesign.api import compile
from codesign.cli import main
from compiler.dialect import dataflow as df
from compiler.quant_auto import RECIPES, Recipe, output_cosine, recipe_cost
from compiler.quant_groups import GROUP_ATTR
from compiler.simulate import Simulator
from hw.perf.workload import GemmWork
from tests.conftest import model_path
from tests.ir_values import attr_int, elem_type


def _data() -> dict[str, np.ndarray]:
    rng = np.random.default_rng(0)
    ids = rng.integers(0, 1000, (4, 1, 16)).astype(np.int64)
    return {"input_ids": ids, "attention_mask": np.ones_like(ids), "token_type_ids": np.zeros_like(ids)}


def _target(cosine: str) -> dict[str, Any]:
    """The ``--accuracy-target`` choice, whose dashed name is no Python keyword."""
    return {"accuracy-target": cosine}


@pytest.fixture(scope="module")
def auto_bert():
    return compile(model_path("bert_tiny.onnx"), quant="auto", balance="smoothquant", calibrate=_data(),
                   **_target("0.99"))


def test_recipe_costs_rise_along_the_order() -> None:
    work = GemmWork(m=16, n=128, k=512)
    costs = [recipe_cost(work, r, None) for r in RECIPES]
    assert [c["recipe"] for c in costs] == [r.name for r in RECIPES]
    assert all(a["weight_bytes"] < b["weight_bytes"] for a, b in zip(costs, costs[1:]))
    assert costs[0]["group_macs"] == 0 and costs[3]["group_macs"] == 16 * 128 * 16  # w4g32: 16 groups
    assert recipe_cost(work, Recipe("w4g32", 4, 32), None)["weight_bytes"] == 512 * 128 // 2 + 4 * 128 + 16 * 128


def _rows(*hot: tuple[int, float]) -> np.ndarray:
    """Rows of 16 values (compiler/output_rows.py's shortest row), row i holding ``value`` at ``column``."""
    out = np.zeros((len(hot), 16))
    for i, (column, value) in enumerate(hot):
        out[i, column] = value
    return out


def test_output_cosine() -> None:
    a = {"y": _rows((0, 1.0), (1, 2.0))}
    assert output_cosine([a], [a]) == pytest.approx(1.0)
    assert output_cosine([{"y": _rows((1, 1.0), (1, 2.0))}], [a]) == pytest.approx(0.5)


def test_auto_meets_the_target_as_measured_again(auto_bert) -> None:
    section = auto_bert.report["numerics"]["quant_auto"]
    assert section["accuracy_target"] == 0.99 and section["met"] and section["output_cosine"] >= 0.99
    assert "greedy" in section["method"] and section["probes"] >= 2
    # the figure is the compiled model's: simulate it again on the calibration data against the float model
    data = _data()
    float_model = compile(model_path("bert_tiny.onnx"))
    names = auto_bert.imported.input_names
    ref = Simulator(float_model.module, float_model.env.weights, names, exact=True)
    got = Simulator(auto_bert.module, auto_bert.env.weights, names)
    feeds = [{k: v[i] for k, v in data.items()} for i in range(4)]
    again = output_cosine([got.run(f) for f in feeds], [ref.run(f) for f in feeds])
    assert again == pytest.approx(section["output_cosine"], abs=1e-5)


def test_the_ir_carries_each_choice_and_the_report_its_costs(auto_bert) -> None:
    section = auto_bert.report["numerics"]["quant_auto"]
    chosen = {x["layer"]: x for x in section["layers"]}
    recipes = {r.name: r for r in RECIPES}
    seen = 0
    for op in auto_bert.module.walk():
        if isinstance(op, df.GemmOp) and isinstance(op.rhs.owner, df.WeightOp):
            layer = chosen[df.str_attr(op, "layer")]
            recipe = recipes[layer["recipe"]]
            assert elem_type(op.rhs) == f"i{recipe.bits}"
            assert (attr_int(op, GROUP_ATTR) if GROUP_ATTR in op.attributes else 0) == recipe.group
            seen += 1
    assert seen == len(chosen) == 12
    for layer in chosen.values():
        names = [c["recipe"] for c in layer["candidates"]]
        assert layer["recipe"] in names and "w8" in names
        assert all(key in layer for key in ("sqnr_db", "weight_bytes", "group_macs", "cycles"))
    assert section["weight_bytes"] == sum(x["weight_bytes"] for x in chosen.values())
    assert section["weight_bytes"] < section["weight_bytes_all_w8"]  # 0.99 does not need int8 weights everywhere
    assert auto_bert.report["numerics"]["quant"] == "auto"


@pytest.mark.slow
def test_a_stricter_target_buys_more_bytes(auto_bert) -> None:
    strict = compile(model_path("bert_tiny.onnx"), quant="auto", balance="smoothquant", calibrate=_data(),
                     **_target("0.999")).report["numerics"]["quant_auto"]
    assert strict["met"] and strict["output_cosine"] >= 0.999
    assert strict["weight_bytes"] > auto_bert.report["numerics"]["quant_auto"]["weight_bytes"]


def test_cli_prints_the_auto_table_and_writes_it_to_json(tmp_path, capsys) -> None:
    calib: dict[str, Any] = _data()  # keyword arrays: numpy's stub would match them against allow_pickle
    np.savez(tmp_path / "calib.npz", **calib)
    out = tmp_path / "r.json"
    assert main(["compile", str(model_path("bert_tiny.onnx")), "--quant", "auto", "--accuracy-target", "0.95",
                 "--calibrate", str(tmp_path / "calib.npz"), "--json", str(out)]) == 0
    text = capsys.readouterr().out
    assert "--quant auto" in text and "candidates" in text
    section = json.loads(out.read_text())["numerics"]["quant_auto"]
    assert section["accuracy_target"] == 0.95 and section["layers"]
    assert main(["compile", str(model_path("bert_tiny.onnx")), "--quant", "auto", "--accuracy-target", "2"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "--accuracy-target 2" in err[0]


def test_output_cosine_skips_the_rows_a_mask_hides() -> None:
    ref = {"y": _rows((0, 1.0), (1, 2.0))}
    got = {"y": _rows((0, 1.0), (0, 2.0))}  # the second row (padding) is wrong
    assert output_cosine([got], [ref]) == pytest.approx(0.5)
    assert output_cosine([got], [ref], [np.array([[1, 0]])]) == pytest.approx(1.0)
