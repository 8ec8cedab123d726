"""MoE lowering and costing (compiler/schedule/moe.py) and the ``route-moe`` pass: stages, active experts only,
measured vs assumed routing, the report's ``moe`` section."""

from __future__ import annotations

import json

import numpy as np
import pytest
from xdsl.dialects.builtin import DenseArrayBase, StringAttr, i64

from codesign.cli import main
from compiler.dialect import dataflow as df
from compiler.frontend.onnx_loader import load_graph
from compiler.frontend.to_dialect import build_module
from compiler.schedule.lower import lower_module
from compiler.schedule.moe import ROUTING_ATTR, TOKENS_ATTR, assumed_tokens_per_expert
from hw.models import build_model
from hw.targets import load_target


def _moe_plan(module, target="fpga-zcu102"):
    plans = lower_module(module, build_model(load_target(target)))
    return next(p for p in plans if p.op == "moe")


def test_uniform_assumption_spreads_assignments_and_clips_at_capacity():
    assert assumed_tokens_per_expert(129, 16, 2, "task", 0.0) == [17, 17] + [16] * 14
    assert assumed_tokens_per_expert(16, 4, 1, "token", 0.5) == [2, 2, 2, 2]
    assert assumed_tokens_per_expert(10, 4, 2, "image", 0.0, images=2) == [5, 5, 5, 5]
    assert assumed_tokens_per_expert(10, 8, 2, "image", 0.0, images=1) == [10, 10, 0, 0, 0, 0, 0, 0]


def test_stages_and_detail_under_the_uniform_assumption(models_dir):
    imp = build_module(load_graph(models_dir / "m3vit_tiny.onnx"))
    plan = _moe_plan(imp.module)
    names = [t.name.rsplit(".", 1)[-1] for t in plan.tasks]
    assert names == ["router", "dispatch", "expert0", "expert1", "expert2", "expert3", "combine"]
    d = plan.detail
    assert (d["experts"], d["top_k"], d["mode"], d["routing"]) == (4, 2, "task", "assumed")
    assert d["tokens_per_expert"] == "5,5,4,4" and d["active_experts"] == 4
    per_expert = (64 * 128 * 2 + 128 + 64) * 4
    assert d["expert_weight_bytes"] == d["expert_weight_bytes_all"] == 4 * per_expert
    assert plan.macs == 9 * 64 * 4 + 18 * (64 * 128 * 2)


def test_only_active_experts_are_loaded_and_computed(models_dir):
    imp = build_module(load_graph(models_dir / "m3vit_tiny.onnx"))
    moe = next(o for o in imp.module.walk() if isinstance(o, df.MoeOp))
    moe.attributes[TOKENS_ATTR] = DenseArrayBase.from_list(i64, [12, 0, 6, 0])
    moe.attributes[ROUTING_ATTR] = StringAttr("measured")
    plan = _moe_plan(imp.module)
    assert [t.name.rsplit(".", 1)[-1] for t in plan.tasks if "expert" in t.name] == ["expert0", "expert2"]
    per_expert = (64 * 128 * 2 + 128 + 64) * 4
    assert plan.detail["expert_weight_bytes"] == 2 * per_expert
    assert plan.detail["routing"] == "measured" and plan.detail["load_imbalance"] == pytest.approx(12 / 4.5)
    assert sum(t.bytes_in for t in plan.tasks if "expert" in t.name) == 2 * per_expert


@pytest.mark.filterwarnings("ignore::RuntimeWarning")
def test_switch_routing_measured_from_real_inputs(models_dir, tmp_path):
    rng = np.random.default_rng(7)
    ids = rng.integers(0, 1024, size=(3, 1, 16), dtype=np.int64)
    data = tmp_path / "ids.npz"
    np.savez(data, input_ids=ids, attention_mask=np.ones_like(ids))
    out = tmp_path / "r.json"
    passes = f'canonicalize,set-attention,route-moe{{inputs="{data}"}},fuse,tile,schedule'
    assert main(["compile", str(models_dir / "switch_tiny.onnx"), "--passes", passes, "--json", str(out), "-q"]) == 0
    report = json.loads(out.read_text())
    assert report["patterns"]["moe"] == 2
    section = report["moe"]
    assert section["routing"] == "measured on 3 samples of ids.npz"
    for row in section["layers"]:
        assert row["routing"] == "measured" and row["samples"] == 3 and sum(row["tokens_per_expert"]) == 16
        assert (row["experts"], row["top_k"], row["mode"]) == (4, 1, "token")
    layers = [ly for ly in report["layers"] if ly["op"] == "moe"]
    assert [ly["detail"]["routing"] for ly in layers] == ["measured", "measured"]


def test_default_compile_reports_the_assumption(models_dir, tmp_path):
    out = tmp_path / "r.json"
    assert main(["compile", str(models_dir / "m3vit_tiny.onnx"), "--json", str(out), "-q"]) == 0
    report = json.loads(out.read_text())
    assert report["patterns"]["moe"] == 1
    assert report["moe"]["routing"].startswith("assumed: uniform")
    (row,) = report["moe"]["layers"]
    assert row["tokens_per_expert"] == [5, 5, 4, 4] and row["routing"] == "assumed"


@pytest.mark.slow
def test_cli_inputs_give_measured_routing_and_match_onnxruntime(models_dir, tmp_path):
    import importlib.util

    spec = importlib.util.spec_from_file_location("make_switch_inputs", models_dir.parent / "make_switch_inputs.py")
    assert spec is not None
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)  # type: ignore[union-attr]
    data = tmp_path / "switch.npz"
    np.savez(data, **mod.make_inputs(3, model=models_dir / "switch_tiny.onnx"))
    out = tmp_path / "r.json"
    assert main(["compile", str(models_dir / "switch_tiny.onnx"), "--inputs", str(data), "--json", str(out),
                 "-q"]) == 0
    report = json.loads(out.read_text())
    assert report["moe"]["routing"].startswith("measured on 3 samples")
    assert report["accuracy"]["outputs"]["last_hidden_state"]["max_abs_error"] < 1e-4


def test_integer_block_is_priced_at_its_ir_types(models_dir):
    from codesign.api import compile

    fp = _moe_plan(compile(models_dir / "m3vit_tiny.onnx").module)
    q = _moe_plan(compile(models_dir / "m3vit_tiny.onnx", quant="int8").module)
    # gate: int8 x int16 (2 passes of the 8-bit array); experts: int8 x int8.
    assert q.macs_by_bits == {16: 9 * 64 * 4, 8: 18 * (64 * 128 * 2)}
    assert fp.macs_by_bits == {32: q.macs}
    experts = lambda plan: sum(t.compute_cycles for t in plan.tasks if "expert" in t.name)  # noqa: E731
    assert experts(q) * 8 < experts(fp)
    per_expert = 64 * 128 * 2 + (128 + 64) * 4  # int8 weights, int32 biases
    assert q.detail["expert_weight_bytes"] == 4 * per_expert
