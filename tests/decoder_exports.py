"""Tiny transformers decoders exported as users export them: a prefill (input_ids only, the causal or sliding-window
mask built from shapes) and one decode step with ``past_key_values`` inputs (use_cache=True, ``present.*`` outputs).

Configs: 2 layers, hidden 64, 4 heads (LLaMA: 2 KV heads, grouped-query), vocab 128, seeded random weights
(``examples._common.reinit_``), the legacy (TorchScript) exporter. Used by tests/test_decode.py and
tests/test_masked_tiles.py.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

LAYERS, HIDDEN, HEADS, KV_HEADS, VOCAB = 2, 64, 4, 2, 128
HEAD_DIM = HIDDEN // HEADS


def _model(family: str, window: int | None = None, attn: str = "eager") -> tuple[torch.nn.Module, int]:
    """(the bare model with seeded random weights, its KV head count)."""
    import transformers as tf

    from examples._common import reinit_, seed_all

    common = {"vocab_size": VOCAB, "hidden_size": HIDDEN, "num_hidden_layers": LAYERS, "num_attention_heads": HEADS,
              "intermediate_size": 2 * HIDDEN, "max_position_embeddings": 128, "attn_implementation": attn}
    seed_all(0)  # before the model is built: its initial weights draw from the seeded generator
    model: torch.nn.Module
    if family == "gpt2":
        gpt2 = tf.GPT2Config(vocab_size=VOCAB, n_embd=HIDDEN, n_layer=LAYERS, n_head=HEADS,
                             n_positions=128, attn_implementation=attn, bos_token_id=VOCAB - 1,  # pyright: ignore[reportCallIssue]  (a PretrainedConfig kwarg the config's typed __init__ omits)
                             eos_token_id=VOCAB - 1)
        model, kv = tf.GPT2Model(gpt2), HEADS
    elif family == "llama":
        model, kv = tf.LlamaModel(tf.LlamaConfig(num_key_value_heads=KV_HEADS, **common)), KV_HEADS
    elif family == "mistral":
        model = tf.MistralModel(tf.MistralConfig(num_key_value_heads=KV_HEADS, sliding_window=window, **common))
        kv = KV_HEADS
    elif family == "falcon":  # multi-query: one KV head the products broadcast over the query heads
        falcon = {k: v for k, v in common.items() if k not in ("intermediate_size", "max_position_embeddings")}
        model, kv = tf.FalconModel(tf.FalconConfig(multi_query=True, new_decoder_architecture=False, **falcon)), 1
    else:
        raise ValueError(family)
    model = model.eval()
    reinit_(model, 0)
    return model, kv


class _Prefill(torch.nn.Module):
    def __init__(self, model: torch.nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, input_ids: torch.Tensor) -> torch.Tensor:
        mask = torch.ones_like(input_ids)
        return self.model(input_ids=input_ids, attention_mask=mask, use_cache=False).last_hidden_state


class _Step(torch.nn.Module):
    """One decode step: the past keys and values of every layer in, the hidden state and the grown caches out; the
    attention mask an input too with ``mask_input`` (Hugging Face Optimum's decoder signature)."""

    def __init__(self, model: torch.nn.Module, mask_input: bool = False) -> None:
        super().__init__()
        self.model = model
        self.mask_input = mask_input

    def forward(self, input_ids: torch.Tensor, *past: torch.Tensor) -> tuple[torch.Tensor, ...]:
        from transformers import DynamicCache

        positions = None
        if self.mask_input:
            mask, positions, *past = past  # type: ignore[assignment]
        else:
            mask = torch.ones(input_ids.shape[0], past[0].shape[2] + input_ids.shape[1], dtype=torch.int64)
        cache = DynamicCache()
        for i in range(LAYERS):
            cache.update(past[2 * i], past[2 * i + 1], i)
        out = self.model(input_ids=input_ids, attention_mask=mask, position_ids=positions, past_key_values=cache,
                         use_cache=True)
        grown = []
        for layer in out.past_key_values.layers[:LAYERS]:
            grown += [layer.keys, layer.values]
        return (out.last_hidden_state, *grown)


def export_prefill(family: str, seq: int, path: Path, window: int | None = None) -> dict[str, np.ndarray]:
    """Export a prefill of ``seq`` tokens to ``path``; return its inputs with a leading sample axis (--inputs)."""
    from examples._common import export_onnx

    model, _ = _model(family, window, attn="sdpa")
    ids = torch.randint(0, VOCAB, (1, seq), generator=torch.Generator().manual_seed(1))
    export_onnx(_Prefill(model), [ids], path, input_names=["input_ids"], output_names=["last_hidden_state"],
                exporter="legacy")
    return {"input_ids": ids.numpy()[None]}


def step_input_names() -> list[str]:
    return ["input_ids"] + [f"past_key_values.{i}.{t}" for i in range(LAYERS) for t in ("key", "value")]


def export_step(family: str, past: int, path: Path, dynamic: bool = False, exporter: str = "legacy",
                new: int = 1, attn: str = "eager") -> dict[str, np.ndarray]:
    """Export one decode step of ``new`` tokens (several: a chunk) against a cache of ``past`` positions (a symbolic
    cache length with ``dynamic``, legacy exporter only) with ``attn`` attention (transformers' "sdpa" folds a
    single token's grouped query heads into the query axis); return its inputs with a leading sample axis."""
    from examples._common import export_onnx

    model, kv = _model(family, attn=attn)
    gen = torch.Generator().manual_seed(1)
    ids = torch.randint(0, VOCAB, (1, new), generator=gen)
    caches = [torch.randn(1, kv, past, HEAD_DIM, generator=gen) for _ in range(2 * LAYERS)]
    names = step_input_names()
    outputs = ["last_hidden_state"] + [f"present.{i}.{t}" for i in range(LAYERS) for t in ("key", "value")]
    axes = {n: {2: "past"} for n in names[1:]} if dynamic else None
    export_onnx(_Step(model), [ids, *caches], path, input_names=names, output_names=outputs,
                exporter=exporter, dynamic_axes=axes)  # type: ignore[arg-type]
    return {n: t.numpy()[None] for n, t in zip(names, [ids, *caches], strict=True)}


def export_optimum_step(family: str, past: int, path: Path, new: int = 1) -> dict[str, np.ndarray]:
    """One step of ``new`` tokens against ``past`` cached positions, with the inputs and axis names of Hugging Face
    Optimum's decoder export (optimum/exporters/onnx: ``input_ids``, ``attention_mask``, ``position_ids``, the
    caches; ``batch_size``, ``sequence_length``, ``past_sequence_length`` and the mask's ``past_sequence_length +
    sequence_length``), exported with a cache of 2 positions so every axis stays symbolic; return the inputs for
    ``past`` and ``new`` with a leading sample axis."""
    from examples._common import export_onnx

    model, kv = _model(family)
    gen = torch.Generator().manual_seed(1)

    def sample(p: int, n: int) -> list[torch.Tensor]:
        ids = torch.randint(0, VOCAB, (1, n), generator=gen)
        caches = [torch.randn(1, kv, p, HEAD_DIM, generator=gen) for _ in range(2 * LAYERS)]
        return [ids, torch.ones(1, p + n, dtype=torch.int64), torch.arange(p, p + n)[None], *caches]

    names = ["input_ids", "attention_mask", "position_ids", *step_input_names()[1:]]
    outputs = ["last_hidden_state"] + [f"present.{i}.{t}" for i in range(LAYERS) for t in ("key", "value")]
    axes = {"input_ids": {0: "batch_size", 1: "sequence_length"},
            "attention_mask": {0: "batch_size", 1: "past_sequence_length + sequence_length"},
            "position_ids": {0: "batch_size", 1: "sequence_length"},
            **{n: {0: "batch_size", 2: "past_sequence_length"} for n in names[3:]}}
    export_onnx(_Step(model, mask_input=True), sample(2, 1), path, input_names=names, output_names=outputs,
                exporter="legacy", dynamic_axes=axes)  # type: ignore[arg-type]
    return {n: t.numpy()[None] for n, t in zip(names, sample(past, new), strict=True)}
