"""Decode steps with a KV cache (compiler/frontend/kv_cache.py, compiler/schedule/kv_cache.py and decode.py).

Real exports of tiny transformers decoders (tests/decoder_exports.py): GPT-2 (legacy and dynamo exporters) and LLaMA
(grouped-query, 2 KV heads of 4) decode steps with ``past_key_values`` inputs, and a GPT-2 prefill. The step compiles with its attention
recognised on Concat(past, new), simulates equal to onnxruntime, counts the whole cache read and the new rows written
per token; a prefill with ``decode_tokens`` reports per-token latency next to its own; contradictions are one line.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from codesign.api import compile
from codesign.cli import main
from compiler.dialect import dataflow as df
from compiler.schedule.decode import decode_sections
from hw.errors import InputError
from tests.decoder_exports import HEAD_DIM, HEADS, HIDDEN, KV_HEADS, LAYERS, export_prefill, export_step

pytestmark = pytest.mark.slow

PAST = 15


@pytest.fixture(scope="module")
def exports(tmp_path_factory: pytest.TempPathFactory) -> dict[str, tuple[Path, dict[str, np.ndarray]]]:
    root = tmp_path_factory.mktemp("decode")
    out = {}
    for name, make in (
        ("gpt2_step", lambda p: export_step("gpt2", PAST, p)),
        ("llama_step", lambda p: export_step("llama", PAST, p)),
        ("llama-sdpa_step", lambda p: export_step("llama", PAST, p, attn="sdpa")),
        ("llama-sdpa-dynamo_step", lambda p: export_step("llama", PAST, p, attn="sdpa", exporter="dynamo")),
        ("gpt2-dynamo_step", lambda p: export_step("gpt2", PAST, p, exporter="dynamo")),
        ("gpt2_chunk", lambda p: export_step("gpt2", PAST, p, new=3)),
        ("gpt2_dynamic", lambda p: export_step("gpt2", PAST, p, dynamic=True)),
        ("gpt2_prefill", lambda p: export_prefill("gpt2", PAST, p)),
    ):
        path = root / f"{name}.onnx"
        out[name] = (path, make(path))
    return out


def _cosines(report: dict | None) -> list[float]:
    return [o["cosine_min"] for o in report["accuracy"]["outputs"].values()]


@pytest.mark.parametrize("family, kv", [("gpt2", HEADS), ("llama", KV_HEADS), ("gpt2-dynamo", HEADS),
                                        ("llama-sdpa", KV_HEADS), ("llama-sdpa-dynamo", KV_HEADS)])
def test_step_is_recognised_and_simulates_like_onnxruntime(exports, family: str, kv: int) -> None:
    path, feeds = exports[f"{family}_step"]
    report = compile(path, inputs=feeds).report
    assert report["patterns"]["attention"] == LAYERS
    assert len(_cosines(report)) == 1 + 2 * LAYERS  # the hidden state and every grown cache
    assert min(_cosines(report)) >= 0.9999
    kv_cache = report["kv_cache"]
    row = 2 * kv * HEAD_DIM * 4  # K and V of one position, fp32, once per KV head
    assert kv_cache["bytes_per_position"] == LAYERS * row
    assert kv_cache["past_len"] == PAST and kv_cache["positions"] == PAST + 1
    assert kv_cache["capacity_bytes"] == kv_cache["read_bytes_per_token"] == LAYERS * row * (PAST + 1)
    assert kv_cache["write_bytes_per_token"] == LAYERS * row
    assert kv_cache["inputs"] == [f"past_key_values.{i}.{t}" for i in range(LAYERS) for t in ("key", "value")]
    assert kv_cache["fits_onchip"] and kv_cache["fits_offchip"]
    # The attention reads the whole cache (its K and V operands) ...
    attn = [layer for layer in report["layers"] if layer["op"] == "attention"]
    assert all(layer["bytes_offchip"] >= row * (PAST + 1) for layer in attn)
    # ... and the cache's own moves are views: nothing copies it.
    assert not [layer["name"] for layer in report["layers"] if ".kv_" in layer["name"]]
    decode = report["decode"]
    assert decode["source"] == "step" and decode["tokens"] == 1 and decode["cache_len_first"] == PAST
    assert decode["per_token_cycles_first"] == report["latency_cycles"]
    assert decode["bytes_offchip_per_token_first"] == report["bytes_offchip"]


@pytest.mark.parametrize("family", ["llama-sdpa", "llama-sdpa-dynamo"])
def test_sdpa_step_is_the_same_grouped_attention(exports, family: str) -> None:
    """transformers' SDPA decode step folds each KV head's query heads into the query axis (legacy exporter; the
    dynamo one repeats K/V): the same grouped attention as the eager step, with the same MACs."""
    eager = compile(exports["llama_step"][0])
    result = compile(exports[f"{family}_step"][0])
    attention = [op for op in result.module.walk() if isinstance(op, df.AttentionOp)]
    assert [(df.int_attr(op, "num_heads"), df.kv_heads(op)) for op in attention] == [(HEADS, KV_HEADS)] * LAYERS
    plans = [p for p in result.env.plans if p.op == "attention"]
    assert [p.macs for p in plans] == [HEADS * (PAST + 1) * 2 * HEAD_DIM] * LAYERS
    assert result.report["macs"] == eager.report["macs"]


def test_step_continues_for_more_tokens(exports) -> None:
    path, _ = exports["gpt2_step"]
    result = compile(path, decode_tokens=4, attention="flash")
    decode, kv_cache = result.report["decode"], result.report["kv_cache"]
    assert decode["cache_len_first"] == PAST and decode["cache_len_last"] == PAST + 3
    cycles = decode["step_cycles"]
    assert cycles[0] == result.report["latency_cycles"]
    assert cycles == sorted(cycles) and cycles[-1] > cycles[0]  # a longer cache costs more
    assert decode["bytes_offchip_per_token_last"] > decode["bytes_offchip_per_token_first"]
    assert kv_cache["positions"] == PAST + 4
    assert kv_cache["capacity_bytes"] == kv_cache["bytes_per_position"] * (PAST + 4)


def test_table_shows_per_token_latency_and_the_cache(exports, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["compile", str(exports["gpt2_prefill"][0]), "--decode-tokens", "2", "--attention", "flash"]) == 0
    out = capsys.readouterr().out
    assert "ms/token mean (2 tokens, cache 15..16" in out and f"prefill of {PAST} tokens" in out
    assert "KV cache" in out and "positions (fits on chip)" in out


def test_chunk_of_new_tokens_attends_the_cache_causally(exports) -> None:
    """Three new tokens after 15 cached: query i sees the cache and the new tokens up to itself (the causal mask's
    diagonal is offset by the cache), in the simulator as in onnxruntime."""
    path, feeds = exports["gpt2_chunk"]
    report = compile(path, inputs=feeds, decode_tokens=2).report
    assert report["patterns"]["attention"] == LAYERS
    assert min(_cosines(report)) >= 0.9999
    decode, kv_cache = report["decode"], report["kv_cache"]
    assert (decode["tokens_per_step"], decode["tokens"], decode["cache_len_last"]) == (3, 6, PAST + 3)
    assert decode["per_token_cycles_first"] == pytest.approx(report["latency_cycles"] / 3)
    assert kv_cache["positions"] == PAST + 6 and kv_cache["write_bytes_per_token"] == 3 * LAYERS * 2 * HIDDEN * 4


@pytest.mark.parametrize("family", ["llama", "llama-sdpa"])
def test_step_int8_compiles(exports, family: str) -> None:
    path, feeds = exports[f"{family}_step"]
    report = compile(path, quant="int8", softmax="shiftmax", layernorm="ilayernorm", calibrate=feeds).report
    assert report["patterns"]["attention"] == LAYERS
    # The integer attention reads an int8 cache: one byte per element.
    assert report["kv_cache"]["bytes_per_position"] == LAYERS * 2 * KV_HEADS * HEAD_DIM


def test_prefill_reports_per_token_latency(exports) -> None:
    path, _ = exports["gpt2_prefill"]
    report = compile(path, decode_tokens=3).report
    decode = report["decode"]
    assert decode["source"] == "prefill" and decode["prefill_tokens"] == PAST
    assert decode["prefill_latency_cycles"] == report["latency_cycles"]
    assert (decode["cache_len_first"], decode["cache_len_last"], decode["tokens"]) == (PAST, PAST + 2, 3)
    assert len(decode["step_cycles"]) == 3
    assert decode["per_token_cycles_mean"] == pytest.approx(sum(decode["step_cycles"]) / 3)
    # One row per step: far less traffic than the prefill of 15 rows (the weights are read by both).
    assert decode["bytes_offchip_per_token_first"] < report["bytes_offchip"]
    # The prefill-derived first step is the decode-step export's step (same model, cache of PAST positions): the
    # graphs differ only in how they build masks and positions, so the figures agree closely.
    step = compile(exports["gpt2_step"][0]).report
    assert decode["per_token_cycles_first"] == pytest.approx(step["latency_cycles"], rel=0.05)
    assert report["kv_cache"]["bytes_per_position"] == step["kv_cache"]["bytes_per_position"]
    plain = compile(path).report
    assert plain is not None and "decode" not in plain  # asked for, or a cache in the graph: nothing else changes


def test_cache_lengths_that_contradict_the_graph(exports, capsys: pytest.CaptureFixture[str]) -> None:
    path, _ = exports["gpt2_dynamic"]
    shapes = {"input_ids": (1, 1)} | {f"past_key_values.{i}.{t}": (1, HEADS, 20, HEAD_DIM)
                                      for i in range(LAYERS) for t in ("key", "value")}
    assert compile(path, shapes=shapes).report["kv_cache"]["past_len"] == 20
    args = [str(path), "--shape", "input_ids=1x1", "-q"]
    for name in shapes:
        if name != "input_ids":
            length = 7 if name == "past_key_values.0.value" else 20
            args += ["--shape", f"{name}=1x{HEADS}x{length}x{HEAD_DIM}"]
    assert main(["compile", *args]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1
    assert "past_key_values.0.value" in err and "past_key_values.0.key" in err
    static, _ = exports["gpt2_step"]
    assert main(["compile", str(static), "--shape", f"past_key_values.1.key=1x{HEADS}x20x{HEAD_DIM}", "-q"]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "past_key_values.1.key" in err


def test_step_export_with_an_empty_cache_decodes_from_a_one_token_prompt(exports, tmp_path: Path) -> None:
    """A step export (no mask input) compiled with an empty cache and one new token is a one-token prompt: its
    attentions have one query and one key, so decoding continues from it (it was refused as not causal)."""
    out = tmp_path / "r.json"
    assert main(["compile", str(exports["gpt2_dynamic"][0]), "--shape", "past=0", "--decode-tokens", "4", "-q",
                 "--json", str(out)]) == 0
    decode = json.loads(out.read_text())["decode"]
    assert decode["source"] == "prefill" and decode["prefill_tokens"] == 1 and decode["tokens"] == 4
    assert decode["cache_len_first"] == 1 and decode["cache_len_last"] == 4


def test_decode_tokens_refused_where_it_means_nothing(exports, models_dir: Path,
                                                      capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["compile", str(models_dir / "vit_tiny.onnx"), "--decode-tokens", "4", "-q"]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "is not causal self-attention" in err
    with pytest.raises(InputError, match="--decode-tokens 0"):
        compile(exports["gpt2_prefill"][0], decode_tokens=0)
    result = compile(exports["gpt2_prefill"][0])
    assert result.env.model is not None
    with pytest.raises(InputError, match="--decode-tokens 5000"):
        decode_sections(result.module, result.env.model, result.env.target, "m", 1, 5000)
