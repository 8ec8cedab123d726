"""Export a randomly initialised HF GPT2Model (decoder stack, no LM head, use_cache=False) to ONNX.

GPT-2 differs from BERT in every spelling the frontend must recognise: fused QKV through Conv1D (Gemm + Split),
tanh-approximated GELU (Pow/Tanh), pre-norm blocks, a causal mask. attention_mask is a graph input on purpose:
without it transformers 5 probes position_ids for packed sequences with torch.diff, which the TorchScript exporter
cannot export (aten::diff); with it the causal and padding masks are combined in the graph, as in real exports.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import torch
from _common import Attn, Exported, Exporter, export_onnx, reinit_, seed_all, torch_outputs

INPUTS = ("input_ids", "attention_mask")
OUTPUT = "last_hidden_state"


class _Decoder(torch.nn.Module):
    """Call GPT2Model by keyword and return only the final hidden states."""

    def __init__(self, model: torch.nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        return self.model(input_ids=input_ids, attention_mask=attention_mask, use_cache=False).last_hidden_state


def export_gpt2(
    out_path: Path, *, layers: int = 2, hidden: int = 128, heads: int = 4, seq_len: int = 16, vocab: int = 1024,
    max_positions: int = 64, exporter: Exporter = "legacy", attn: Attn = "eager", seed: int = 0,
) -> Exported:
    """Export a seeded random GPT-2 with static [1, seq_len] inputs; the MLP is 4 * hidden as in GPT-2."""
    from transformers import GPT2Config, GPT2Model

    seed_all(seed)
    config = GPT2Config(
        n_layer=layers, n_embd=hidden, n_head=heads, n_inner=None, n_positions=max_positions, vocab_size=vocab,
        use_cache=False, activation_function="gelu_new", layer_norm_epsilon=1e-5, attn_implementation=attn,
        bos_token_id=vocab - 1, eos_token_id=vocab - 1,  # GPT-2's 50256 would lie outside the tiny vocabulary
    )
    gpt2 = GPT2Model(config).eval()
    reinit_(gpt2, seed)
    model = _Decoder(gpt2).eval()
    gen = torch.Generator().manual_seed(seed + 1)
    ids = torch.randint(0, vocab, (1, seq_len), generator=gen)
    mask = torch.ones(1, seq_len, dtype=torch.int64)
    mask[:, seq_len - seq_len // 4 :] = 0  # right padding: the check covers the padding half of the mask too
    export_onnx(model, [ids, mask], out_path, input_names=INPUTS, output_names=[OUTPUT], exporter=exporter)
    meta = {
        "family": "gpt2",
        "config": {
            "layers": layers, "hidden": hidden, "heads": heads, "head_dim": hidden // heads,
            "intermediate": 4 * hidden, "seq_len": seq_len, "tokens": seq_len, "vocab": vocab,
            "max_positions": max_positions, "num_classes": None, "patch": None, "layer_norm_eps": 1e-5,
            "activation": "gelu_tanh", "causal": True, "lm_head": False, "use_cache": False,
        },
        "exporter": exporter, "attn_implementation": attn, "weights": "random", "seed": seed,
    }
    feeds = {"input_ids": ids.numpy(), "attention_mask": mask.numpy()}
    return Exported(out_path, feeds, torch_outputs(model, [ids, mask], [OUTPUT]), meta)


def main() -> None:
    """CLI: export one GPT-2 (defaults are gpt2_tiny) and print the onnxruntime vs torch difference."""
    from _common import ort_max_abs_diff

    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("out", type=Path)
    for name, default in [("layers", 2), ("hidden", 128), ("heads", 4), ("seq-len", 16), ("vocab", 1024),
                          ("seed", 0)]:
        p.add_argument(f"--{name}", type=int, default=default)
    p.add_argument("--exporter", choices=["legacy", "dynamo"], default="legacy")
    p.add_argument("--attn", choices=["eager", "sdpa"], default="eager")
    a = p.parse_args()
    ex = export_gpt2(a.out, layers=a.layers, hidden=a.hidden, heads=a.heads, seq_len=a.seq_len, vocab=a.vocab,
                     exporter=a.exporter, attn=a.attn, seed=a.seed)
    print(f"{ex.path}: max |ort - torch| = {ort_max_abs_diff(ex.path, ex.feeds, ex.expected):.3g}")


if __name__ == "__main__":
    main()
