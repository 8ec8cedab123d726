"""`codesign rtl --system --simulate --set gemm.dataflow=ws`: bert_tiny (int8, I-ViT set) with its weight GEMMs
run weight stationary on the top level (built with the ws array), its outputs bit-exact against `codesign compile
--outputs`, and the model's cycles against the RTL's (docs/RTL.md, Weight-stationary GEMM)."""

from __future__ import annotations

import pytest
from test_cli_rtl_system import DRAM_BANDWIDTH, I_VIT, _check_design, _model_agreement, simulated_equals_compiled

from hw.isa import Gemm, from_bytes

# (total, worst layer) |model - RTL| / RTL of the whole model, as tests/test_cli_rtl_system.py's AGREEMENT
WS_AGREEMENT = (0.02, 0.05)


@pytest.mark.rtl
@pytest.mark.slow
@pytest.mark.timeout(3600)
def test_bert_tiny_with_ws_weight_gemms_equals_codesign_compile(data_dir, tmp_path, capsys) -> None:
    sizes = ["--set", "gemm.rows=8", "--set", "gemm.cols=8", *DRAM_BANDWIDTH, "--set", "gemm.dataflow=ws"]
    for key in ("act_kb", "weight_kb", "out_kb"):
        sizes += ["--set", f"buffers.{key}=16"]
    r, out = simulated_equals_compiled(capsys, tmp_path, data_dir, "bert_tiny.onnx", [*I_VIT, *sizes])
    assert r["system"]["ws_array"] is True
    gemms = [i for i in from_bytes((out / "program.bin").read_bytes()).instructions if isinstance(i, Gemm)]
    assert {g.dataflow for g in gemms} == {0, 1}  # weight GEMMs ws, the attention's products os
    assert any(g.dataflow == 1 and g.accumulate for g in gemms)
    total, worst = _model_agreement(r)
    print(f"\nbert_tiny 8x8 ws: {r['rtl_cycles']} cycles, build {r['build_s']} s, run {r['run_s']} s; model "
          f"{r['latency_cycles']}, {r['host_latency_cycles']} of it the host's ({total:+.1%}), worst layer "
          f"{worst[1]:+.1%} ({worst[0]})")
    assert abs(total) <= WS_AGREEMENT[0] and abs(worst[1]) <= WS_AGREEMENT[1]
    _check_design(out, dict(o.split("=") for o in sizes[1::2]))
