"""Decoder families beyond GPT-2 compile with their attention recognised: LLaMA (grouped-query, and multi-query),
Mistral (sliding window), Qwen2 (a global and a local layer), Phi (partial rotary), GPT-J (interleaved rotary) and
GPT-2 with SDPA and only input_ids.

Each model is a tiny transformers config (2 layers, hidden 64, 4 heads, 2 KV heads where the family has them, vocab
128, 16 tokens) with seeded random weights, exported by the legacy (TorchScript) exporter and, for two families, by
the dynamo one. An all-ones attention mask is made inside the wrapper, so input_ids is the only graph input and the
exporter builds the causal (or banded) mask from shapes in the graph. The checks: attention, norm and GELU counts
equal the modules the PyTorch model runs; total MACs equal torch's FlopCounterMode (SDPA on the math backend);
the float compile's simulation equals onnxruntime; the int8 I-ViT compile runs.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from codesign.api import compile
from compiler.dialect import dataflow as df

pytestmark = pytest.mark.slow

LAYERS, HIDDEN, HEADS, KV_HEADS, VOCAB, SEQ = 2, 64, 4, 2, 128, 16


class _Decoder(torch.nn.Module):
    """input_ids -> last hidden state, with the all-ones attention mask built inside (no packed-sequence probe)."""

    def __init__(self, model: torch.nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, input_ids: torch.Tensor) -> torch.Tensor:
        mask = torch.ones_like(input_ids)
        return self.model(input_ids=input_ids, attention_mask=mask, use_cache=False).last_hidden_state


def _build(family: str) -> torch.nn.Module:
    import transformers as tf

    from examples._common import reinit_, seed_all

    common = {"vocab_size": VOCAB, "hidden_size": HIDDEN, "num_hidden_layers": LAYERS, "num_attention_heads": HEADS,
              "intermediate_size": 2 * HIDDEN, "max_position_embeddings": 64, "attn_implementation": "sdpa"}
    config, cls = {
        "llama": (lambda: tf.LlamaConfig(num_key_value_heads=KV_HEADS, **common), tf.LlamaModel),
        "mistral": (lambda: tf.MistralConfig(num_key_value_heads=KV_HEADS, sliding_window=SEQ // 2, **common),
                    tf.MistralModel),
        "mqa": (lambda: tf.LlamaConfig(num_key_value_heads=1, **common), tf.LlamaModel),
        # Layer 0 global, layer 1 local: the two layers differ only in their (folded) mask.
        "qwen2": (lambda: tf.Qwen2Config(num_key_value_heads=KV_HEADS, use_sliding_window=True, sliding_window=SEQ // 2,
                                         max_window_layers=1, **common), tf.Qwen2Model),
        "phi": (lambda: tf.PhiConfig(partial_rotary_factor=0.5, **common), tf.PhiModel),  # pyright: ignore[reportCallIssue]  (a PretrainedConfig kwarg the config's typed __init__ omits)
        "gptj": (lambda: tf.GPTJConfig(vocab_size=VOCAB, n_embd=HIDDEN, n_layer=LAYERS, n_head=HEADS, rotary_dim=8,
                                       n_positions=64, attn_implementation="eager"), tf.GPTJModel),  # pyright: ignore[reportCallIssue]  (a PretrainedConfig kwarg the config's typed __init__ omits)
        "gpt2": (lambda: tf.GPT2Config(vocab_size=VOCAB, n_embd=HIDDEN, n_layer=LAYERS, n_head=HEADS, n_positions=64,
                                       attn_implementation="sdpa", bos_token_id=VOCAB - 1, eos_token_id=VOCAB - 1),  # pyright: ignore[reportCallIssue]  (a PretrainedConfig kwarg the config's typed __init__ omits)
                 tf.GPT2Model),
    }[family]
    seed_all(0)
    model = cls(config()).eval()
    reinit_(model, 0)
    return _Decoder(model).eval()


def _ids() -> torch.Tensor:
    return torch.randint(0, VOCAB, (1, SEQ), generator=torch.Generator().manual_seed(1))


def _torch_counts(module: torch.nn.Module) -> dict[str, int]:
    """What the PyTorch model runs: its norm and GELU modules, its MACs (FlopCounterMode counts 2 per MAC)."""
    from torch.nn.attention import SDPBackend, sdpa_kernel
    from torch.utils.flop_counter import FlopCounterMode

    names = [type(m).__name__ for m in module.modules()]
    with torch.no_grad(), sdpa_kernel(SDPBackend.MATH), FlopCounterMode(display=False) as counter:
        module(_ids())
    return {"layernorm": sum(n.endswith("RMSNorm") or n == "LayerNorm" for n in names),
            "gelu": sum("GELU" in n.upper() for n in names),
            "macs": counter.get_total_flops() // 2}


@pytest.fixture(scope="module")
def exported(tmp_path_factory: pytest.TempPathFactory):
    from examples._common import export_onnx

    folder = tmp_path_factory.mktemp("zoo")
    cache: dict[tuple[str, str], tuple[Path, torch.nn.Module]] = {}

    def get(family: str, exporter: str) -> tuple[Path, torch.nn.Module]:
        if (family, exporter) not in cache:
            module = _build(family)
            path = folder / f"{family}_{exporter}.onnx"
            export_onnx(module, [_ids()], path, input_names=["input_ids"], output_names=["last_hidden_state"],
                        exporter=exporter)  # type: ignore[arg-type]
            cache[family, exporter] = (path, module)
        return cache[family, exporter]

    return get


CASES = [("llama", "legacy"), ("llama", "dynamo"), ("mqa", "legacy"), ("mistral", "legacy"), ("qwen2", "legacy"),
         ("phi", "legacy"), ("gptj", "legacy"), ("gptj", "dynamo"), ("gpt2", "legacy"), ("gpt2", "dynamo")]
KV = {"llama": KV_HEADS, "mqa": 1, "mistral": KV_HEADS, "qwen2": KV_HEADS}
MASK = {"mistral": ["banded", "banded"], "qwen2": ["causal", "banded"]}


@pytest.mark.parametrize("family, exporter", CASES)
def test_float_compile_recognises_attention_and_matches(exported, family: str, exporter: str) -> None:
    path, module = exported(family, exporter)
    result = compile(path, inputs={"input_ids": _ids().numpy()[None]})
    want = _torch_counts(module)
    patterns = result.imported.patterns
    assert patterns["attention"] == LAYERS
    assert patterns["layernorm"] == want["layernorm"]
    assert patterns["gelu"] == want["gelu"]
    assert abs(result.report["macs"] - want["macs"]) <= 0.005 * want["macs"]
    assert result.report["accuracy"]["outputs"]["last_hidden_state"]["cosine_min"] >= 0.9999
    attention = [op for op in result.module.walk() if isinstance(op, df.AttentionOp)]
    assert {df.kv_heads(op) for op in attention} == {KV.get(family, HEADS)}
    assert [df.str_attr(op, "mask_kind") for op in attention] == MASK.get(family, ["causal"] * LAYERS)


@pytest.mark.parametrize("family", ["llama", "phi", "gptj"])
def test_int8_ivit_compile(exported, family: str) -> None:
    """The integer I-ViT numerics run on rotary, grouped-query models (accuracy is their business, not asserted
    beyond being a usable model)."""
    path, _ = exported(family, "legacy")
    result = compile(path, inputs={"input_ids": _ids().numpy()[None]}, quant="int8", softmax="shiftmax",
                     gelu="shiftgelu", layernorm="ilayernorm")
    assert result.imported.patterns["attention"] == LAYERS
    assert result.report["accuracy"]["outputs"]["last_hidden_state"]["cosine_mean"] >= 0.95


def test_grouped_query_kv_costed_once_per_kv_head(exported) -> None:
    """K and V of a grouped-query attention are read from off-chip at their KV-head size, not repeated per head."""
    path, _ = exported("llama", "legacy")
    result = compile(path)
    attention = next(op for op in result.module.walk() if isinstance(op, df.AttentionOp))
    assert attention.k.type.get_shape()[-1] == KV_HEADS * HIDDEN // HEADS  # type: ignore[attr-defined]
    plan = next(p for p in result.env.plans if p.op == "attention")
    elem, kv_width = 4, KV_HEADS * HIDDEN // HEADS  # float32
    # On chip (docs/ARCHITECTURE.md, "Attention on chip") the layer is one task reading Q, K and V once each: K and
    # V at their KV-head width, the causal mask a flag (no bytes).
    (task,) = plan.tasks
    assert task.bytes_in == elem * SEQ * (HIDDEN + 2 * kv_width)
    assert plan.macs == HEADS * SEQ * SEQ * 2 * (HIDDEN // HEADS)  # QK^T and A.V of every query head


class _SeqFirst(torch.nn.Module):
    """torch.nn.MultiheadAttention in its default sequence-first layout: [S, B, E] in and out, packed in_proj."""

    def __init__(self) -> None:
        super().__init__()
        self.mha = torch.nn.MultiheadAttention(HIDDEN, HEADS, batch_first=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.mha(x, x, x, need_weights=False)[0]


@pytest.mark.parametrize("exporter", ["legacy", "dynamo"])
def test_sequence_first_packed_attention(tmp_path: Path, exporter: str) -> None:
    from torch.nn.attention import SDPBackend, sdpa_kernel
    from torch.utils.flop_counter import FlopCounterMode

    from examples._common import export_onnx, reinit_, seed_all

    seed_all(0)
    module = _SeqFirst().eval()
    reinit_(module, 0)
    x = torch.randn(SEQ, 2, HIDDEN, generator=torch.Generator().manual_seed(2))
    path = tmp_path / "mha.onnx"
    export_onnx(module, [x], path, input_names=["x"], output_names=["y"], exporter=exporter)  # type: ignore[arg-type]
    # Train mode (dropout is 0) keeps torch off its fused inference kernel, which FlopCounterMode does not count.
    with torch.no_grad(), sdpa_kernel(SDPBackend.MATH), FlopCounterMode(display=False) as counter:
        module.train()(x)
    result = compile(path, inputs={"x": x.numpy()[None]})
    assert result.imported.patterns["attention"] == 1
    assert abs(result.report["macs"] - counter.get_total_flops() // 2) <= 0.005 * result.report["macs"]
    assert result.report["accuracy"]["outputs"]["y"]["cosine_min"] >= 0.9999


def test_relative_position_bias_and_padding_mask_both_kept() -> None:
    """T5/Switch add a constant relative-position bias and a padding mask from the input: both reach the attention
    op (summed into one mask operand), so padded keys stay masked."""
    from tests.conftest import DATA, model_path

    feeds = {k: v.copy() for k, v in np.load(DATA / "switch_tiny_inputs.npz").items()}
    feeds["attention_mask"][..., 12:] = 0
    result = compile(model_path("switch_tiny.onnx"), inputs=feeds)
    attention = [op for op in result.module.walk() if isinstance(op, df.AttentionOp)]
    assert len(attention) == 2 and all(op.mask is not None for op in attention)
    assert {df.str_attr(op, "mask_kind") for op in attention} == {"other"}
    assert result.report["accuracy"]["outputs"]["last_hidden_state"]["cosine_min"] >= 0.9999


@pytest.mark.parametrize("exporter", ["legacy", "dynamo"])
def test_swin_shifted_windows_are_block_masked_attention(tmp_path: Path, exporter: str) -> None:
    """Swin's shifted-window blocks: transformers sums the relative-position bias and the cyclic-shift mask (-100
    across regions of the rolled image) into one SDPA mask; the attention over windows is recognised with that mask
    of kind ``block`` (the bias-only blocks: ``other``), every region keeping its own tokens, and torch's MACs."""
    from examples import zoo

    path = tmp_path / "swin.onnx"
    module = zoo.export("swin", exporter, path)
    want = zoo.expected(module, "swin", exporter)
    result = compile(path, inputs={k: v[None] for k, v in zoo.feeds("swin").items()})
    attention = [op for op in result.module.walk() if isinstance(op, df.AttentionOp)]
    assert [df.str_attr(op, "mask_kind") for op in attention] == ["other", "block"] * 2
    windows = [op.q.type.get_shape()[0] for op in attention]  # type: ignore[attr-defined]
    assert [op.mask.type.get_shape()[0] for op in attention] == [1, windows[1], 1, windows[3]]  # type: ignore
    assert result.report["macs"] == want["macs"]
    assert result.report["accuracy"]["outputs"]["last_hidden_state"]["cosine_min"] >= 0.9999
