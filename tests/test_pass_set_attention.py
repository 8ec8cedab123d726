"""``set-attention``: the choice in the IR (algorithm, lanes, tiles), its errors, and its effect on the schedule."""

from __future__ import annotations

import json

import pytest

from codesign.cli import main
from compiler.context import make_context
from compiler.frontend.onnx_loader import load_graph
from compiler.frontend.to_dialect import build_module
from compiler.passes.set_attention import SetAttention
from compiler.pipeline import parse_passes
from compiler.schedule.attention import attention_buffers, choose_flash_tiles
from hw.errors import InputError
from hw.targets import load_target


def _ir(models_dir, **opts) -> str:
    import io

    from xdsl.printer import Printer

    imp = build_module(load_graph(models_dir / "m3vit_tiny.onnx"))
    ctx = make_context()
    ctx.env.target = load_target("fpga-zcu102", {"attention.lanes": "8"})
    SetAttention(**opts).apply(ctx, imp.module)
    imp.module.verify()
    out = io.StringIO()
    Printer(stream=out).print_op(imp.module)
    return out.getvalue()


def test_edge_moe_sets_lanes_from_the_target(models_dir):
    ir = _ir(models_dir, algorithm="edge-moe")
    lines = [ln for ln in ir.splitlines() if "dataflow.attention" in ln]
    assert len(lines) == 2
    assert all('algorithm = "edge-moe"' in ln and "lanes = 8 : i64" in ln for ln in lines)


def test_flash_tiles_fit_the_target_buffers(models_dir):
    ir = _ir(models_dir, algorithm="flash")
    line = next(ln for ln in ir.splitlines() if "dataflow.attention" in ln)
    assert 'algorithm = "flash"' in line and "tile_q = 9 : i64" in line and "tile_k = 9 : i64" in line
    target = load_target("fpga-zcu102")
    tq, tk = choose_flash_tiles(129, 129, 64, 64, 8, 32, attention_buffers(target))
    q_cap, kv_cap, out_cap = attention_buffers(target)
    assert tq * 64 <= q_cap and tk * 128 <= kv_cap and tq * (tk + 64) * 4 <= out_cap
    assert (tq, tk) == (80, 129)


def test_back_to_standard_removes_lanes_and_tiles(models_dir):
    imp = build_module(load_graph(models_dir / "m3vit_tiny.onnx"))
    ctx = make_context()
    ctx.env.target = load_target("fpga-zcu102")
    for algorithm in ("flash", "edge-moe", "standard"):
        SetAttention(algorithm=algorithm).apply(ctx, imp.module)
    from compiler.dialect import dataflow as df

    att = [o for o in imp.module.walk() if isinstance(o, df.AttentionOp)]
    assert all("lanes" not in o.properties and "tile_q" not in o.attributes for o in att)


def test_errors_name_the_option(models_dir):
    module = build_module(load_graph(models_dir / "m3vit_tiny.onnx")).module
    with pytest.raises(InputError, match=r"--attention ring: unknown choice \(valid: standard, edge-moe, flash\)"):
        SetAttention(algorithm="ring").apply(make_context(), module)
    with pytest.raises(InputError, match="set-attention: lanes must be a positive integer, got 0"):
        parse_passes("set-attention{algorithm=edge-moe lanes=0}")[0].apply(make_context(), module)
    ctx = make_context()
    ctx.env = None  # type: ignore[assignment]  # as under `codesign opt`
    with pytest.raises(InputError, match="needs a target to size its tiles"):
        SetAttention(algorithm="flash").apply(ctx, module)


def test_cli_attention_choice_cuts_score_traffic(models_dir, tmp_path):
    reports = {}
    for algorithm in ("standard", "edge-moe", "flash"):
        out = tmp_path / f"{algorithm}.json"
        assert main(["compile", str(models_dir / "m3vit_tiny.onnx"), "--target", "fpga-zcu102", "--attention",
                     algorithm, "--json", str(out), "-q"]) == 0
        reports[algorithm] = json.loads(out.read_text())
    att = {a: [ly for ly in r["layers"] if ly["op"] == "attention"] for a, r in reports.items()}
    std = att["standard"][0]["detail"]
    # The standard order keeps a tile's scores in the buffers too (compiler/schedule/attention_pipeline.py) ...
    assert std["score_bytes_offchip"] == 0 < std["score_bytes_standard"] and std["algorithm"] == "standard"
    for algorithm in ("edge-moe", "flash"):
        detail = att[algorithm][0]["detail"]
        assert detail["score_bytes_offchip"] == 0 and detail["algorithm"] == algorithm
        assert att[algorithm][0]["bytes_offchip"] == att["standard"][0]["bytes_offchip"]
    # ... unless its buffers hold no tile of one array fold of rows: then the scores go through off-chip memory.
    out = tmp_path / "small.json"
    assert main(["compile", str(models_dir / "m3vit_tiny.onnx"), "--target", "fpga-zcu102", "--set",
                 "buffers.out_kb=1", "--json", str(out), "-q"]) == 0
    small = next(ly for ly in json.loads(out.read_text())["layers"] if ly["op"] == "attention")
    assert small["detail"]["score_bytes_offchip"] == std["score_bytes_standard"]
    assert small["bytes_offchip"] == att["standard"][0]["bytes_offchip"] + std["score_bytes_standard"]
    assert reports["edge-moe"]["options"] == {"attention": "edge-moe"}


def test_cli_lanes_override(models_dir, tmp_path):
    out = tmp_path / "r.json"
    assert main(["compile", str(models_dir / "m3vit_tiny.onnx"), "--target", "fpga-zcu102", "--attention", "edge-moe",
                 "--set", "attention.lanes=8", "--json", str(out), "-q"]) == 0
    layer = next(ly for ly in json.loads(out.read_text())["layers"] if ly["op"] == "attention")
    assert layer["detail"]["lanes"] == 8
