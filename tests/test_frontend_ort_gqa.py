"""onnxruntime's GroupQueryAttention (compiler/frontend/ort_gqa.py): the decoder attention the onnxruntime-genai
model builder writes (KV cache, rotary embeddings, grouped KV heads) expands into standard ops that onnxruntime's own
kernel agrees with, the compile finds attention and the cache in it, and what the expansion does not implement is
refused in one line naming the node.

Single-node models are built here with the attribute and input combinations the builder writes (packed or separate
QKV, rotate-half, interleaved or partial rotary, a sliding window, a logit softcap, an empty or filled past, one or
several new tokens, the builder's seqlens_k / total_sequence_length subgraph on an attention_mask input); onnxruntime
runs each as the reference. One real builder export (a transformers LLaMA from a tiny config, seeded weights, no
download) goes through the CLI."""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper, numpy_helper

from codesign.api import compile
from codesign.cli import main

HEADS, HEAD = 4, 16


def _gqa_model(kv_heads: int, past: int, new: int, packed: bool, rotary: int | None = None,
               **attrs: Any) -> onnx.ModelProto:
    """One GroupQueryAttention (batch 1, ``HEADS`` x ``HEAD``) on a past of ``past`` positions (the past and mask
    lengths symbolic: :func:`_shapes` gives them) and ``new`` tokens; seqlens_k and total_sequence_length from an attention_mask input as the builder computes them; ``rotary`` dims
    rotating per head (cos / sin tables of 64 positions), None for no rotary."""
    rng = np.random.default_rng(0)
    q_hidden, kv_hidden = HEADS * HEAD, kv_heads * HEAD
    inputs = [helper.make_tensor_value_info("mask", TensorProto.INT64, [1, "total"]),
              helper.make_tensor_value_info("past_key", TensorProto.FLOAT, [1, kv_heads, "past", HEAD]),
              helper.make_tensor_value_info("past_value", TensorProto.FLOAT, [1, kv_heads, "past", HEAD])]
    if packed:
        inputs.insert(0, helper.make_tensor_value_info("qkv", TensorProto.FLOAT, [1, new, q_hidden + 2 * kv_hidden]))
        qkv = ["qkv", "", ""]
    else:
        inputs[:0] = [helper.make_tensor_value_info(n, TensorProto.FLOAT, [1, new, h])
                      for n, h in (("q", q_hidden), ("k", kv_hidden), ("v", kv_hidden))]
        qkv = ["q", "k", "v"]
    inits, caches = [], ["", ""]
    if rotary is not None:
        angles = np.arange(64)[:, None] * rng.uniform(0.01, 1.0, rotary // 2)[None]
        inits = [numpy_helper.from_array(np.cos(angles).astype(np.float32), "cos"),
                 numpy_helper.from_array(np.sin(angles).astype(np.float32), "sin")]
        caches = ["cos", "sin"]
        attrs = {"do_rotary": 1, **attrs}
    one = numpy_helper.from_array(np.array([1], np.int64), "one")
    nodes = [helper.make_node("ReduceSum", ["mask", "one"], ["count"], keepdims=0),
             helper.make_node("Sub", ["count", "one"], ["last"]),
             helper.make_node("Cast", ["last"], ["seqlens"], to=TensorProto.INT32),
             helper.make_node("Shape", ["mask"], ["mask_shape"], start=1, end=2),
             helper.make_node("Squeeze", ["mask_shape"], ["total64"]),
             helper.make_node("Cast", ["total64"], ["total"], to=TensorProto.INT32),
             helper.make_node("GroupQueryAttention", [*qkv, "past_key", "past_value", "seqlens", "total", *caches],
                              ["y", "present_key", "present_value"], name="gqa", domain="com.microsoft",
                              num_heads=HEADS, kv_num_heads=kv_heads, **attrs)]
    outputs = [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, new, q_hidden]),
               helper.make_tensor_value_info("present_key", TensorProto.FLOAT, [1, kv_heads, past + new, HEAD]),
               helper.make_tensor_value_info("present_value", TensorProto.FLOAT, [1, kv_heads, past + new, HEAD])]
    graph = helper.make_graph(nodes, "g", inputs, outputs, [one, *inits])
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17),
                                                   helper.make_opsetid("com.microsoft", 1)], ir_version=8)


def _shapes(model: onnx.ModelProto, past: int) -> dict[str, list[int]]:
    new = next(d.dim_value for d in model.graph.input[0].type.tensor_type.shape.dim[1:2])
    sizes = {"past": past, "total": past + new}
    return {i.name: [d.dim_value if d.HasField("dim_value") else sizes[d.dim_param]
                     for d in i.type.tensor_type.shape.dim] for i in model.graph.input}


def _feeds(model: onnx.ModelProto, past: int) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(1)
    feeds = {}
    for name, shape in _shapes(model, past).items():
        inp = next(i for i in model.graph.input if i.name == name)
        feeds[inp.name] = (np.ones(shape, np.int64) if inp.name == "mask"
                           else rng.standard_normal(shape).astype(np.float32))
    return feeds


#: name -> (kv heads, past, new tokens, packed QKV, rotary dims, attributes).
CASES: dict[str, tuple[int, int, int, bool, int | None, dict[str, Any]]] = {
    "prompt-packed-rotate-half": (2, 0, 5, True, HEAD, {}),
    "decode-packed-rotate-half": (2, 6, 1, True, HEAD, {}),
    "chunk-separate-interleaved": (1, 4, 3, False, HEAD, {"rotary_interleaved": 1}),
    "decode-rotary-scale": (4, 5, 1, True, HEAD, {"scale": 0.1}),
    "prompt-no-rotary-window": (2, 0, 7, False, None, {"local_window_size": 2}),
    "decode-window-softcap": (2, 6, 1, True, HEAD, {"local_window_size": 3, "softcap": 2.0}),
}


@pytest.mark.parametrize("case", list(CASES))
def test_group_query_attention_matches_onnxruntime(case: str, tmp_path: Path) -> None:
    """Every output (the attention and the grown caches) equals onnxruntime's kernel; the compile finds one
    attention."""
    kv_heads, past, new, packed, rotary, attrs = CASES[case]
    model = _gqa_model(kv_heads, past, new, packed, rotary, **attrs)
    path = tmp_path / "gqa.onnx"
    onnx.save(model, str(path))
    feeds = _feeds(model, past)
    want = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"]).run(None, feeds)
    out = tmp_path / "out.npz"
    report = compile(str(path), inputs={k: v[None] for k, v in feeds.items()}, outputs=str(out),
                     shapes=_shapes(model, past))
    assert report.imported.patterns["attention"] == 1
    got = np.load(out)
    for name, ref in zip(["y", "present_key", "present_value"], want, strict=True):
        np.testing.assert_allclose(got[name][0], np.asarray(ref), rtol=1e-4, atol=1e-5, err_msg=name)


@pytest.mark.parametrize(("edit", "message"), [
    ({"smooth_softmax": 1}, "smooth_softmax=1 is not supported"),
    ({"k_quant_type": "PER_CHANNEL"}, "k_quant_type=PER_CHANNEL (a quantized KV cache)"),
    ({"num_heads": 3}, "num_heads=3, kv_num_heads=2"),
    ({"position_ids": True}, "a position_ids input is not supported"),
])
def test_what_the_expansion_does_not_implement_is_refused_in_one_line(edit: dict[str, Any], message: str,
                                                                     tmp_path: Path, capsys) -> None:
    model = _gqa_model(2, 3, 1, True, HEAD)
    node = model.graph.node[-1]
    if edit.pop("position_ids", False):
        node.input.extend(["mask"])
    for key, value in edit.items():
        kept = [a for a in node.attribute if a.name != key]
        del node.attribute[:]
        node.attribute.extend([*kept, helper.make_attribute(key, value)])
    path = tmp_path / "gqa.onnx"
    onnx.save(model, str(path))
    shapes = [f"--shape={name}={'x'.join(map(str, dims))}" for name, dims in _shapes(model, 3).items()]
    assert main(["compile", str(path), "-q", *shapes]) == 2
    err = capsys.readouterr().err.strip()
    assert "\n" not in err and "com.microsoft.GroupQueryAttention (node 'gqa')" in err and message in err, err


def test_a_zero_dim_is_only_an_empty_cache(tmp_path: Path, capsys) -> None:
    """``--shape`` takes a 0 only as an empty KV cache's length (the prompt step of a decode export)."""
    model = _gqa_model(2, 3, 1, True, HEAD)
    path = tmp_path / "gqa.onnx"
    onnx.save(model, str(path))
    shapes = ["--shape", "past_key=1x2x0x16", "--shape", "past_value=1x2x0x16"]
    assert main(["compile", str(path), "-q", *shapes, "--shape", "mask=1x1"]) == 0
    assert main(["compile", str(path), "-q", *shapes, "--shape", "mask=1x0"]) == 2
    err = capsys.readouterr().err.strip()
    assert "\n" not in err and "--shape mask=1x0: a dim of 0 is only meaningful as the length of an empty KV" in err


#: name -> (transformers config class name, config overrides, builder precision, past positions of the step).
#: Phi-3 with LongRoPE: the builder picks the short or long cos / sin tables with an If on the total length
#: (compiler/frontend/static_if.py); 70 + 1 positions is past its original 64, the long tables.
GENAI: dict[str, tuple[str, dict[str, Any], str, int]] = {
    "llama-fp32": ("LlamaConfig", {}, "fp32", 5),
    "llama-int4": ("LlamaConfig", {}, "int4", 5),
    "gemma-int4-tied": ("GemmaConfig", {"head_dim": 16}, "int4", 5),  # GatherBlockQuantized embeddings
    # float16 for the CPU: RotaryEmbedding + MultiHeadAttention instead of GroupQueryAttention, position_ids an input
    # (a prompt: onnxruntime itself fails on this file's decode steps, in a Cast of its mask subgraph)
    "qwen2-fp16-rotary-mha": ("Qwen2Config", {}, "fp16", 0),
    "phi3-longrope": ("Phi3Config", {"max_position_embeddings": 256, "original_max_position_embeddings": 64,
                                     "pad_token_id": 0, "rope_scaling": {
                                         "rope_type": "longrope", "type": "longrope", "short_factor": [1.0] * 8,
                                         "long_factor": [1.5] * 8}}, "fp32", 70),
}


@pytest.mark.skipif(importlib.util.find_spec("onnxruntime_genai") is None, reason="onnxruntime-genai not installed")
@pytest.mark.parametrize("case", list(GENAI))
def test_a_genai_builder_decoder_compiles_from_the_cli(case: str, tmp_path: Path) -> None:
    """A transformers decoder (tiny config, grouped KV heads, seeded weights; a vocabulary unlike every MLP width,
    which the builder 0.18 confuses with it and wires its lm_head to the first layer) exported by the
    onnxruntime-genai model builder: every attention is found, the decode step's cache is reported, and the
    simulated logits and caches equal onnxruntime's run of the builder's file. In int4 (MatMulNBits weights)
    onnxruntime's CPU kernel also rounds the activations to int8 (the builder's accuracy_level 4), which the import
    does not: the outputs agree to 1e-2."""
    import torch
    import transformers as tf
    from tokenizers import Tokenizer, models, pre_tokenizers

    kind, overrides, precision, past = GENAI[case]
    hf = tmp_path / "hf"
    torch.manual_seed(0)
    config = getattr(tf, kind)(**{"vocab_size": 320, "hidden_size": 64, "intermediate_size": 128,
                                  "num_hidden_layers": 2, "num_attention_heads": 4, "num_key_value_heads": 2,
                                  "max_position_embeddings": 128, **overrides})
    tf.AutoModelForCausalLM.from_config(config).eval().save_pretrained(hf)
    words = Tokenizer(models.WordLevel({f"t{i}": i for i in range(320)}, unk_token="t0"))
    words.pre_tokenizer = pre_tokenizers.Whitespace()  # the builder reads a tokenizer from the model folder
    tf.PreTrainedTokenizerFast(tokenizer_object=words, unk_token="t0", bos_token="t1",
                               eos_token="t2").save_pretrained(hf)
    built = tmp_path / "genai"
    ran = subprocess.run([sys.executable, "-m", "onnxruntime_genai.models.builder", "-i", str(hf), "-o", str(built),
                          "-p", precision, "-e", "cpu", "-c", str(tmp_path / "cache")], capture_output=True, text=True,
                         env={**os.environ, "TRANSFORMERS_OFFLINE": "1", "HF_HUB_OFFLINE": "1"})
    assert ran.returncode == 0, ran.stderr[-2000:]
    path = built / "model.onnx"
    rng = np.random.default_rng(0)
    feeds, shapes = {}, []
    for inp in onnx.load(str(path), load_external_data=False).graph.input:
        if inp.name == "input_ids":
            shape, value = (1, 1), rng.integers(0, 320, (1, 1))
        elif inp.name == "attention_mask":
            shape, value = (1, past + 1), np.ones((1, past + 1), np.int64)
        elif inp.name == "position_ids":
            shape, value = (1, 1), np.full((1, 1), past, np.int64)
        else:
            shape = (1, 2, past, 16)
            value = rng.standard_normal(shape).astype(np.float16 if precision == "fp16" else np.float32)
        feeds[inp.name] = value
        shapes += ["--shape", f"{inp.name}={'x'.join(map(str, shape))}"]
    want = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"]).run(None, feeds)
    npz, out, report = tmp_path / "in.npz", tmp_path / "out.npz", tmp_path / "report.json"
    np.savez(npz, **{k: v[None] for k, v in feeds.items()})
    assert main(["compile", str(path), *shapes, "--inputs", str(npz), "--outputs", str(out), "--json",
                 str(report), "-q"]) == 0
    printed = json.loads(report.read_text())
    assert printed["patterns"]["attention"] == 2, printed["patterns"]
    if past:
        assert printed["kv_cache"]["past_len"] == past and printed["kv_cache"]["layers"] == 2, printed["kv_cache"]
    got = np.load(out)
    names = [o.name for o in onnx.load(str(path), load_external_data=False).graph.output]
    tol = 1e-5 if precision == "fp32" else 1e-2  # int4: onnxruntime's int8 activations; fp16: its half rounding
    for name, ref in zip(names, want, strict=True):
        np.testing.assert_allclose(got[name][0], np.asarray(ref), rtol=1e-4, atol=tol, err_msg=name)


def test_a_prompt_step_with_an_empty_cache_calibrates_under_int8(tmp_path: Path) -> None:
    """--inputs of a prompt step hold 0-position caches: no value to calibrate on, and not a 'constant input'."""
    model = _gqa_model(2, 0, 5, True, HEAD)
    path = tmp_path / "gqa.onnx"
    onnx.save(model, str(path))
    feeds = _feeds(model, 0)
    assert feeds["past_key"].size == 0
    result = compile(str(path), inputs={k: v[None] for k, v in feeds.items()}, shapes=_shapes(model, 0), quant="int8")
    assert result.imported.patterns["attention"] == 1
    assert result.report["accuracy"]["outputs"]["y"]["cosine_mean"] > 0.99
