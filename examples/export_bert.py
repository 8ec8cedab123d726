"""Export a randomly initialised HF BertModel encoder (no pooler) to ONNX.

The three standard inputs (input_ids, attention_mask, token_type_ids) are all graph inputs, so the export keeps
the padding-mask path: attention_mask -> boolean/additive mask -> added to the attention scores in every layer.
The sample input pads the last quarter of the sequence so the onnxruntime check exercises that path.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import torch
from _common import Attn, Exported, Exporter, export_onnx, reinit_, seed_all, torch_outputs

INPUTS = ("input_ids", "attention_mask", "token_type_ids")
OUTPUT = "last_hidden_state"


class _Encoder(torch.nn.Module):
    """Call the HF model by keyword (its positional order changed across transformers releases); one output."""

    def __init__(self, model: torch.nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor,
                token_type_ids: torch.Tensor) -> torch.Tensor:
        return self.model(input_ids=input_ids, attention_mask=attention_mask,
                          token_type_ids=token_type_ids).last_hidden_state


def sample_tokens(*, seq_len: int, vocab: int, seed: int, batch: int = 1) -> list[torch.Tensor]:
    """Random ids with the last quarter padded (id 0, mask 0) and a two-segment token_type_ids, all int64."""
    gen = torch.Generator().manual_seed(seed + 1)
    ids = torch.randint(1, vocab, (batch, seq_len), generator=gen)
    mask = torch.ones(batch, seq_len, dtype=torch.int64)
    pad = seq_len - seq_len // 4
    mask[:, pad:] = 0
    ids[:, pad:] = 0
    types = torch.zeros(batch, seq_len, dtype=torch.int64)
    types[:, seq_len // 2 : pad] = 1
    return [ids, mask, types]


def export_bert(
    out_path: Path, *, layers: int = 2, hidden: int = 128, heads: int = 2, intermediate: int = 512,
    seq_len: int = 16, vocab: int = 1024, max_positions: int = 64, exporter: Exporter = "legacy",
    attn: Attn = "eager", seed: int = 0, dynamic: bool = False,
) -> Exported:
    """Export a seeded random BERT encoder with a static [1, seq_len] signature for all three inputs, or with batch
    and sequence symbolic (``dynamic``, legacy exporter only): the position ids then stay the sliced
    ``position_ids`` buffer that onnxruntime's optimizer fuses into EmbedLayerNormalization."""
    from transformers import BertConfig, BertModel

    seed_all(seed)
    config = BertConfig(
        num_hidden_layers=layers, hidden_size=hidden, num_attention_heads=heads, intermediate_size=intermediate,
        vocab_size=vocab, max_position_embeddings=max_positions, type_vocab_size=2, hidden_act="gelu",
        layer_norm_eps=1e-12, attn_implementation=attn,
    )
    bert = BertModel(config, add_pooling_layer=False).eval()
    reinit_(bert, seed)
    model = _Encoder(bert).eval()
    args = sample_tokens(seq_len=seq_len, vocab=vocab, seed=seed)
    export_onnx(model, args, out_path, input_names=INPUTS, output_names=[OUTPUT], exporter=exporter,
                dynamic_axes={n: {0: "batch", 1: "sequence"} for n in INPUTS} if dynamic else None)
    meta = {
        "family": "bert",
        "config": {
            "layers": layers, "hidden": hidden, "heads": heads, "head_dim": hidden // heads,
            "intermediate": intermediate, "seq_len": seq_len, "tokens": seq_len, "vocab": vocab,
            "max_positions": max_positions, "type_vocab": 2, "num_classes": None, "patch": None,
            "layer_norm_eps": 1e-12, "activation": "gelu_erf", "pooler": False, "causal": False,
        },
        "exporter": exporter, "attn_implementation": attn, "weights": "random", "seed": seed,
    }
    feeds = {n: t.numpy() for n, t in zip(INPUTS, args, strict=True)}
    return Exported(out_path, feeds, torch_outputs(model, args, [OUTPUT]), meta)


def main() -> None:
    """CLI: export one BERT (defaults are bert_tiny) and print the onnxruntime vs torch difference."""
    from _common import ort_max_abs_diff

    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("out", type=Path)
    for name, default in [("layers", 2), ("hidden", 128), ("heads", 2), ("intermediate", 512), ("seq-len", 16),
                          ("vocab", 1024), ("seed", 0)]:
        p.add_argument(f"--{name}", type=int, default=default)
    p.add_argument("--exporter", choices=["legacy", "dynamo"], default="legacy")
    p.add_argument("--attn", choices=["eager", "sdpa"], default="eager")
    a = p.parse_args()
    ex = export_bert(a.out, layers=a.layers, hidden=a.hidden, heads=a.heads, intermediate=a.intermediate,
                     seq_len=a.seq_len, vocab=a.vocab, exporter=a.exporter, attn=a.attn, seed=a.seed)
    print(f"{ex.path}: max |ort - torch| = {ort_max_abs_diff(ex.path, ex.feeds, ex.expected):.3g}")


if __name__ == "__main__":
    main()
