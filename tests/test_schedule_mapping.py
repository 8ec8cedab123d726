"""Mapping search per GEMM (compiler/schedule/mapping.py) and the overlap of vector work with the array, measured
as roofline ratios on one-layer ViT-Base and BERT-base shapes (the full models are `make bench`)."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

from compiler.schedule.mapping import MappingSpace, mapped_work, mapping_space, search
from hw.models import build_model
from hw.perf.systolic import systolic_cycles
from hw.perf.workload import GemmWork
from hw.targets import load_target

ROOT = Path(__file__).resolve().parent.parent
IVIT = {"quant": "int8", "softmax": "shiftmax", "gelu": "shiftgelu", "layernorm": "ilayernorm"}
SPACE = MappingSpace(rows=16, cols=64, dataflows=("os",), caps=(256 * 1024, 1024 * 1024, 256 * 1024))


def _brute(work: GemmWork, space: MappingSpace) -> int:
    return min(systolic_cycles(m, n, work.k, space.rows, space.cols, d)
               for d in space.dataflows for m, n in ((work.m, work.n), (work.n, work.m)))


@pytest.mark.parametrize("m,n,k", [(197, 768, 768), (768, 197, 64), (197, 3072, 768), (5, 4096, 64), (128, 128, 3072)])
def test_search_finds_the_fastest_executable_orientation(m: int, n: int, k: int) -> None:
    work = GemmWork(m=m, n=n, k=k)
    chosen = search(work, SPACE)
    assert chosen.cycles == _brute(work, SPACE)
    run = mapped_work(work, chosen)
    assert chosen.cycles == systolic_cycles(run.m, run.n, run.k, SPACE.rows, SPACE.cols, chosen.dataflow)
    assert {run.m, run.n} == {m, n} and run.macs == work.macs
    # Every tile fits its buffer (left operand, right operand, accumulators).
    assert chosen.tile_m * k <= SPACE.caps[0] and k * chosen.tile_n <= SPACE.caps[1]
    assert chosen.tile_m * chosen.tile_n * 4 <= SPACE.caps[2]


def test_skinny_gemm_is_transposed_on_a_skinny_array() -> None:
    # On a 64 x 16 array, 5 rows on the 64 array rows waste 59/64 of every fold; n on the rows wastes none.
    tall = MappingSpace(rows=64, cols=16, dataflows=("os",), caps=SPACE.caps)
    chosen = search(GemmWork(m=5, n=4096, k=64), tall)
    assert chosen.transpose
    assert chosen.cycles == systolic_cycles(4096, 5, 64, 64, 16, "os") < systolic_cycles(5, 4096, 64, 64, 16, "os")
    assert "^T" in chosen.label()


def test_loop_order_avoids_rereading_the_bigger_operand() -> None:
    # The left operand (197 x 3072) overflows its buffer and the weights (3072 x 768) too: whichever order, one of
    # them is re-read; the search re-reads the one that costs least.
    work = GemmWork(m=197, n=768, k=3072)
    slow_bw = MappingSpace(64, 64, ("os",), (256 * 1024, 1024 * 1024, 256 * 1024), bytes_per_cycle=1.0)
    chosen = search(work, slow_bw)
    a, b = 197 * 3072, 3072 * 768
    assert chosen.reread_bytes < b
    assert chosen.order == "nm" and chosen.reread_bytes <= 3 * a


def test_mapping_space_of_the_u280_is_its_rtl_array() -> None:
    space = mapping_space(build_model(load_target("fpga-u280")))
    assert space is not None
    assert (space.rows, space.cols, space.dataflows) == (64, 64, ("os",))
    assert mapping_space(build_model(load_target("gpu-a100"))) is None


def _export(kind: str, out: Path) -> Path:
    sys.path.insert(0, str(ROOT / "examples"))
    if kind == "vit":
        from export_vit import export_vit

        export_vit(out, layers=1, hidden=768, heads=12, intermediate=3072, image_size=224, patch=16, num_classes=10)
    else:
        from export_bert import export_bert

        export_bert(out, layers=1, hidden=768, heads=12, intermediate=3072, seq_len=128, vocab=1024,
                    max_positions=128)
    return out


@pytest.fixture(scope="module")
def base_layers(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """One-layer ViT-Base (197 tokens) and BERT-base (sequence 128) exports: the full models' layer shapes."""
    out = tmp_path_factory.mktemp("base_layers")
    return {kind: _export(kind, out / f"{kind}.onnx") for kind in ("vit", "bert")}


# Measured 2026-12-04 (ratio = latency / roofline bound, one layer, int8): ViT I-ViT 1.644 (fixed mapping 1.665),
# with 8 sub-arrays 1.235 (1.260); BERT 1.414 (1.415), with 8 sub-arrays 1.358 (1.359). Before attention kept its
# scores on chip, pipelined across heads (compiler/schedule/attention_pipeline.py): ViT 1.700, 1.294; BERT 1.485,
# 1.407. Serial vector work and no mapping search gave ViT 1.73 on the full model. The bounds leave 1% for
# deliberate model changes.
@pytest.mark.slow
@pytest.mark.parametrize("kind,partitions,bound", [("vit", 1, 1.66), ("vit", 8, 1.25), ("bert", 1, 1.43),
                                                   ("bert", 8, 1.37)])
def test_roofline_ratio_of_one_base_layer(base_layers: dict[str, Path], kind: str, partitions: int,
                                          bound: float) -> None:
    from codesign.api import compile as compile_model

    options = IVIT if kind == "vit" else {"quant": "int8"}
    overrides = {"gemm.partitions": str(partitions)}
    searched = compile_model(str(base_layers[kind]), mapping="search", overrides=overrides, **options)
    fixed = compile_model(str(base_layers[kind]), mapping="fixed", overrides=overrides, **options)
    report = searched.report
    ratio = report["latency_cycles"] / report["roofline_cycles"]
    assert 1.0 < ratio <= bound
    assert report["latency_cycles"] <= fixed.report["latency_cycles"]
    # Overlap: some vector task runs while the array works on a GEMM it streams from or into.
    sched = searched.env.schedule
    overlapped = [t for t in sched.tasks if t.stream and any(
        sched.task(p).unit != t.unit and t.start < sched.task(p).end for p in t.stream)]
    assert overlapped
    gemms = [layer for layer in report["layers"] if layer["op"].startswith("gemm")]
    assert gemms and all("mapping" in layer["detail"] for layer in gemms)


def test_mapping_in_ir_report_and_trace(models_dir: Path) -> None:
    from codesign.api import compile as compile_model
    from codesign.trace import trace_events
    from compiler.dialect import dataflow as df

    result = compile_model(str(models_dir / "vit_tiny.onnx"), quant="int8")
    gemms = [op for op in result.module.walk() if isinstance(op, df.GemmOp)]
    assert gemms and all("mapping" in op.attributes for op in gemms)
    layers = {layer["name"]: layer for layer in result.report["layers"]}
    for op in gemms:
        label = op.attributes["mapping"].data  # type: ignore[attr-defined]
        assert layers[df.str_attr(op, "layer")]["detail"]["mapping"] == label
    doc = trace_events(result.env.schedule, result.report["clock_mhz"], "vit_tiny", result.env.plans)
    events = doc["traceEvents"]
    assert any("mapping" in e.get("args", {}) for e in events if e["ph"] == "X")
    streamed = [e for e in events if e["ph"] == "X" and "streams_from" in e["args"]]
    starts = [e for e in events if e["ph"] == "s"]
    assert streamed and len(starts) == sum(len(e["args"]["streams_from"]) for e in streamed)
    fixed = compile_model(str(models_dir / "vit_tiny.onnx"), quant="int8", mapping="fixed")
    assert not any("mapping" in op.attributes for op in fixed.module.walk() if isinstance(op, df.GemmOp))


def test_unknown_mapping_mode_is_one_line() -> None:
    from compiler.schedule.plan import Plan, price
    from hw.errors import InputError

    with pytest.raises(InputError, match="mapping must be one of search, fixed, got 'best'"):
        price(Plan(()), build_model(load_target("fpga-u280")), "best")
