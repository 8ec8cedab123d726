"""Decode steps of mixture-of-experts decoders (compiler/schedule/decode.py): ``--decode-tokens`` on a prefill
export with MoE blocks was refused; each step's token now goes to ``top_k`` experts, which load their weights once,
so a step reads ``top_k`` of the experts' weights rather than the prompt's measured queues (every expert a
16-token prompt reached)."""

from __future__ import annotations

from pathlib import Path

import pytest

from codesign.api import compile
from codesign.cli import main
from examples import zoo

pytestmark = pytest.mark.slow  # a transformers export and two compiles per case


@pytest.mark.parametrize("name", ["mixtral", "qwen2-moe"])
def test_moe_decoder_decodes_with_top_k_experts_a_step(tmp_path: Path, name: str, capsys) -> None:
    path = tmp_path / f"{name}.onnx"
    variant = zoo.variants(name)[0]
    zoo.export(name, variant, path)
    feeds = {k: v[None] for k, v in zoo.feeds(name, variant).items()}
    report = compile(str(path), decode_tokens=3, inputs=feeds).report
    decode = report["decode"]
    prefill = {layer["name"]: layer["detail"] for layer in report["layers"] if "active_experts" in layer["detail"]}
    assert decode["tokens"] == 3 and len(decode["step_cycles"]) == 3 and decode["moe_per_step"]
    assert [m["name"] for m in decode["moe_per_step"]] == list(prefill)
    for moe in decode["moe_per_step"]:
        whole = prefill[moe["name"]]
        per_expert = whole["expert_weight_bytes_all"] // whole["experts"]
        assert moe["active_experts"] == moe["top_k"] == whole["top_k"] < whole["active_experts"]
        assert moe["expert_weight_bytes"] == moe["top_k"] * per_expert
    assert decode["bytes_offchip_per_token_first"] < report["bytes_offchip"]
    assert decode["per_token_cycles_first"] < report["latency_cycles"]
    capsys.readouterr()
    assert main(["compile", str(path), "--decode-tokens", "2", "-q"]) == 0, capsys.readouterr().err
