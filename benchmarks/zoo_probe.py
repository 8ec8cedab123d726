"""Architectures that are not in the zoo, built the zoo's way and checked the zoo's way: the "any mainstream
transformer" check of the model-generality issue.

Each entry is a tiny transformers config (examples/zoo.py's sizes, seeded random weights, no downloads) the zoo
does not hold, or an exporter variant it does not run. Every one is checked by benchmarks/zoo_table.py's `check`
(the float compile's attention / norm / GELU counts against forward hooks, MACs against FlopCounterMode, simulation
against onnxruntime, the int8 I-ViT compile) and printed as one line per variant: ``ok`` or what failed.

    python benchmarks/zoo_probe.py               # every probe (~4 min on 2 idle cores)
    python benchmarks/zoo_probe.py sam-vision phimoe

What a probe finds either becomes a fix for its class (then the architecture usually joins examples/zoo.py) or a
line of README's "Not yet through" list. Exports that stop in torch itself (an op the exporter cannot write) are
reported as such: they say nothing about the compiler.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))

from examples import zoo  # noqa: E402
from examples.zoo_archs import _BART, _VIS, HEADS, HIDDEN, IMAGE, LAYERS, PATCH, VOCAB, Arch, _enc, _raw  # noqa: E402

__all__ = ["PROBES", "main"]

_KV = {"num_key_value_heads": 2}
_MOE = {"experts_implementation": "batched_mm"}  # every expert over all tokens: exportable by both exporters
_BOTH = ("legacy", "dynamo")
_E = {k: v for k, v in _BART.items() if k != "max_position_embeddings"}

#: name -> the zoo entry it would be (decoders with grouped-query attention where the family has it).
PROBES: dict[str, Arch] = {
    # Decoders.
    "mistral": Arch("decoder", _enc("MistralConfig", "MistralModel", sliding_window=8, **_KV),
                    exporters=(*_BOTH, "symbolic")),
    "qwen2": Arch("decoder", _enc("Qwen2Config", "Qwen2Model", **_KV), exporters=(*_BOTH, "symbolic")),
    "phi": Arch("decoder", _enc("PhiConfig", "PhiModel"), exporters=(*_BOTH, "symbolic")),
    "gptj": Arch("decoder", _raw("GPTJConfig", "GPTJModel", vocab_size=VOCAB, n_embd=HIDDEN, n_layer=LAYERS,
                                 n_head=HEADS, rotary_dim=8, n_positions=64), exporters=(*_BOTH, "symbolic")),
    "glm4": Arch("decoder", _enc("Glm4Config", "Glm4Model", pad_token_id=0, **_KV), exporters=("dynamo",)),
    "smollm3": Arch("decoder", _enc("SmolLM3Config", "SmolLM3Model", pad_token_id=0, **_KV)),
    "ministral": Arch("decoder", _enc("MinistralConfig", "MinistralModel", head_dim=16, sliding_window=8, **_KV),
                      exporters=_BOTH),
    "ministral3": Arch("decoder", _enc("Ministral3Config", "Ministral3Model", head_dim=16, pad_token_id=0, **_KV),
                       exporters=_BOTH),
    "ernie4_5": Arch("decoder", _enc("Ernie4_5Config", "Ernie4_5Model", head_dim=16, pad_token_id=0, **_KV),
                     exporters=("dynamo",)),
    "seed-oss": Arch("decoder", _enc("SeedOssConfig", "SeedOssModel", **_KV)),
    "apertus": Arch("decoder", _enc("ApertusConfig", "ApertusModel", **_KV), exporters=("dynamo",)),
    "doge": Arch("decoder", _enc("DogeConfig", "DogeModel", **_KV)),
    "bitnet": Arch("decoder", _enc("BitNetConfig", "BitNetModel", **_KV)),
    "vaultgemma": Arch("decoder", _enc("VaultGemmaConfig", "VaultGemmaModel", head_dim=16, pad_token_id=0, **_KV),
                       exporters=_BOTH),
    "modernbert-decoder": Arch("decoder", _enc("ModernBertDecoderConfig", "ModernBertDecoderModel",
                                               pad_token_id=0), exporters=_BOTH),
    "lfm2": Arch("decoder", _enc("Lfm2Config", "Lfm2Model", layer_types=["conv", "full_attention"], **_KV),
                 attention=1, exporters=_BOTH),
    "hunyuan-dense": Arch("decoder", _enc("HunYuanDenseV1Config", "HunYuanDenseV1Model", head_dim=16, **_KV),
                          exporters=_BOTH),
    # MoE decoders.
    "phimoe": Arch("decoder", _enc("PhimoeConfig", "PhimoeModel", num_local_experts=4, **_KV, **_MOE),
                   exporters=("dynamo",)),
    "ernie4_5-moe": Arch("decoder", _enc("Ernie4_5_MoeConfig", "Ernie4_5_MoeModel", head_dim=16, moe_num_experts=4,
                                         moe_k=2, moe_intermediate_size=32, pad_token_id=0, **_KV, **_MOE),
                         exporters=("dynamo",)),
    "dots1": Arch("decoder", _enc("Dots1Config", "Dots1Model", head_dim=16, n_routed_experts=4, n_shared_experts=1,
                                  num_experts_per_tok=2, moe_intermediate_size=32, first_k_dense_replace=1,
                                  pad_token_id=0, **_KV, **_MOE), exporters=_BOTH),
    "flexolmo": Arch("decoder", _enc("FlexOlmoConfig", "FlexOlmoModel", num_experts=4, num_experts_per_tok=2,
                                     pad_token_id=0, **_KV, **_MOE), exporters=_BOTH),
    # Encoders.
    "xlnet": Arch("encoder", _raw("XLNetConfig", "XLNetModel", vocab_size=VOCAB, d_model=HIDDEN, n_layer=LAYERS,
                                  n_head=HEADS, d_inner=2 * HIDDEN), constant_products=True),
    "deberta": Arch("encoder", _enc("DebertaConfig", "DebertaModel")),
    "eurobert": Arch("encoder", _enc("EuroBertConfig", "EuroBertModel", pad_token_id=0, **_KV),
                     exporters=("dynamo",)),
    "bert-generation": Arch("encoder", _enc("BertGenerationConfig", "BertGenerationEncoder")),
    "xlm-roberta-xl": Arch("encoder", _enc("XLMRobertaXLConfig", "XLMRobertaXLModel", pad_token_id=1)),
    # Encoder-decoders.
    "nllb": Arch("encdec", _raw("M2M100Config", "M2M100Model", **_BART, pad_token_id=1), attention=3 * LAYERS,
                 exporters=_BOTH),
    "bart-dynamo": Arch("encdec", _raw("BartConfig", "BartModel", **_BART), attention=3 * LAYERS,
                        exporters=("dynamo",)),
    "t5-gated": Arch("encdec", _raw("T5Config", "T5Model", vocab_size=VOCAB, d_model=HIDDEN, d_kv=16,
                                    d_ff=2 * HIDDEN, num_layers=LAYERS, num_heads=HEADS,
                                    feed_forward_proj="gated-gelu"), attention=3 * LAYERS, exporters=_BOTH),
    "pegasus-x": Arch("encdec", _raw("PegasusXConfig", "PegasusXModel", **_BART, block_size=8, num_global_tokens=4)),
    "led": Arch("encdec", _raw("LEDConfig", "LEDModel", **_E, max_encoder_position_embeddings=64,
                               max_decoder_position_embeddings=64, attention_window=8)),
    # Vision.
    "sam-vision": Arch("vision", _raw("SamVisionConfig", "SamVisionModel", hidden_size=HIDDEN,
                                      num_hidden_layers=LAYERS, num_attention_heads=HEADS, mlp_dim=2 * HIDDEN,
                                      image_size=IMAGE, patch_size=PATCH, output_channels=32, window_size=2,
                                      global_attn_indexes=[1]), exporters=_BOTH),
    "dinov3": Arch("vision", _raw("DINOv3ViTConfig", "DINOv3ViTModel", hidden_size=HIDDEN,
                                  num_hidden_layers=LAYERS, num_attention_heads=HEADS, intermediate_size=2 * HIDDEN,
                                  image_size=IMAGE, patch_size=PATCH), exporters=("dynamo",)),
    "blip-vision": Arch("vision", _raw("BlipVisionConfig", "BlipVisionModel", **_VIS), dead={"layernorm": 1}),
    "owlvit-vision": Arch("vision", _raw("OwlViTVisionConfig", "OwlViTVisionModel", **_VIS),
                          dead={"layernorm": 1}),
    "chinese-clip-vision": Arch("vision", _raw("ChineseCLIPVisionConfig", "ChineseCLIPVisionModel", **_VIS),
                                dead={"layernorm": 1}),
    "git-vision": Arch("vision", _raw("GitVisionConfig", "GitVisionModel", **_VIS)),
    "pixtral-vision": Arch("vision", _raw("PixtralVisionConfig", "PixtralVisionModel", hidden_size=HIDDEN,
                                          num_hidden_layers=LAYERS, num_attention_heads=HEADS,
                                          intermediate_size=2 * HIDDEN, image_size=IMAGE, patch_size=PATCH,
                                          head_dim=16), exporters=_BOTH),
    "deit-dynamo": Arch("vision", _raw("DeiTConfig", "DeiTModel", **_VIS), exporters=("dynamo", "symbolic")),
    "beit-dynamo": Arch("vision", _raw("BeitConfig", "BeitModel", use_relative_position_bias=True, **_VIS),
                        exporters=("dynamo",)),
    "segformer-dynamo": Arch("vision", _raw("SegformerConfig", "SegformerModel", num_encoder_blocks=2,
                                            depths=[1, 1], sr_ratios=[2, 1], hidden_sizes=[32, 64],
                                            num_attention_heads=[1, 2], image_size=IMAGE, patch_sizes=[7, 3],
                                            strides=[4, 2], mlp_ratios=[2, 2]), exporters=("dynamo",)),
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("names", nargs="*", help="probes (default: all)")
    args = parser.parse_args()
    import zoo_table

    names = args.names or list(PROBES)
    unknown = [n for n in names if n not in PROBES]
    if unknown:
        parser.error(f"unknown probe(s): {', '.join(unknown)} (known: {', '.join(PROBES)})")
    zoo.ARCHS.update({n: PROBES[n] for n in names if n not in zoo.ARCHS})
    with tempfile.TemporaryDirectory() as tmp:
        for name in names:
            for variant in zoo.variants(name):
                row = zoo_table.check(name, variant, Path(tmp))
                print(f"{name} {variant}: {zoo_table.problems(row) or 'ok'}", flush=True)


if __name__ == "__main__":
    main()
