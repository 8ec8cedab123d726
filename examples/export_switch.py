"""Export a tiny randomly initialised HF SwitchTransformersEncoderModel (top-1 MoE in every layer) to ONNX.

This is the "MoE as HF writes it" example: the router spells ArgMax -> OneHot -> CumSum (capacity) and the expert
loop spells NonZero -> Gather -> expert MLP -> ScatterElements (index_add_). Caveat the frontend must know: the
TorchScript exporter unrolls HF's Python loop over the experts that the *trace input* hit, binding each unrolled
step to one expert's weights. The file is therefore only faithful for inputs that send at least one token to every
expert; the trace input is chosen so that it does, and the manifest records that caveat.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import torch
from _common import Exported, Exporter, export_onnx, reinit_, seed_all, torch_outputs

INPUTS = ("input_ids", "attention_mask")
OUTPUT = "last_hidden_state"


class _Encoder(torch.nn.Module):
    """Call the encoder by keyword; return only last_hidden_state (router logits are a training-time output)."""

    def __init__(self, model: torch.nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        return self.model(input_ids=input_ids, attention_mask=attention_mask).last_hidden_state


def _experts_hit(model: torch.nn.Module, ids: torch.Tensor, mask: torch.Tensor) -> list[list[int]]:
    """Per sparse layer, the experts the router picks for at least one token of this input (sorted)."""
    hits: list[list[int]] = []
    hooks = []
    for module in model.modules():
        if type(module).__name__.endswith("Top1Router"):
            hooks.append(module.register_forward_hook(
                lambda _m, _i, out: hits.append(sorted(set(out[0].sum(dim=(0, 1)).nonzero().flatten().tolist())))
            ))
    with torch.no_grad():
        model(ids, mask)
    for h in hooks:
        h.remove()
    return hits


def export_switch(
    out_path: Path, *, layers: int = 2, hidden: int = 64, heads: int = 4, d_ff: int = 128, experts: int = 4,
    seq_len: int = 16, vocab: int = 1024, exporter: Exporter = "legacy", seed: int = 0,
) -> Exported:
    """Export a seeded random Switch encoder whose every layer is sparse; capacity = seq_len so nothing is dropped."""
    from transformers import SwitchTransformersConfig, SwitchTransformersEncoderModel

    seed_all(seed)
    config = SwitchTransformersConfig(
        vocab_size=vocab, d_model=hidden, d_kv=hidden // heads, d_ff=d_ff, num_layers=layers,
        num_sparse_encoder_layers=layers, num_decoder_layers=0, num_sparse_decoder_layers=0, num_heads=heads,
        num_experts=experts, expert_capacity=seq_len, router_jitter_noise=0.0, dense_act_fn="relu",
        layer_norm_epsilon=1e-6,
    )
    enc = SwitchTransformersEncoderModel(config).eval()
    reinit_(enc, seed)
    model = _Encoder(enc).eval()
    gen = torch.Generator().manual_seed(seed + 1)
    mask = torch.ones(1, seq_len, dtype=torch.int64)
    for _ in range(100):  # the unrolled expert loop is only faithful if the trace input reaches every expert
        ids = torch.randint(0, vocab, (1, seq_len), generator=gen)
        hits = _experts_hit(model, ids, mask)
        if all(h == list(range(experts)) for h in hits):
            break
    else:
        raise RuntimeError(f"no trace input among 100 reaches all {experts} experts in every layer: {hits}")
    export_onnx(model, [ids, mask], out_path, input_names=INPUTS, output_names=[OUTPUT], exporter=exporter)
    moe_layers = [i for i, block in enumerate(enc.encoder.block) if block.is_sparse]
    meta = {
        "family": "switch",
        "config": {
            "layers": layers, "hidden": hidden, "heads": heads, "head_dim": hidden // heads, "intermediate": d_ff,
            "seq_len": seq_len, "tokens": seq_len, "vocab": vocab, "num_classes": None, "patch": None,
            "layer_norm_eps": 1e-6, "norm": "rms", "activation": "relu", "bias": False,
            "position": "t5_relative_bias",
        },
        "moe": {
            "experts": experts, "top_k": 1, "expert_hidden": d_ff, "moe_layers": moe_layers, "dense_layers": [],
            "router": "softmax -> argmax (top-1), weight = max prob", "capacity": seq_len,
            "caveat": "expert loop unrolled at trace time; faithful only when every expert receives a token",
        },
        "exporter": exporter, "attn_implementation": "eager", "weights": "random", "seed": seed,
    }
    feeds = {"input_ids": ids.numpy(), "attention_mask": mask.numpy()}
    return Exported(out_path, feeds, torch_outputs(model, [ids, mask], [OUTPUT]), meta)


def main() -> None:
    """CLI: export switch_tiny and print the onnxruntime vs torch difference."""
    from _common import ort_max_abs_diff

    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("out", type=Path)
    p.add_argument("--experts", type=int, default=4)
    p.add_argument("--exporter", choices=["legacy", "dynamo"], default="legacy")
    a = p.parse_args()
    ex = export_switch(a.out, experts=a.experts, exporter=a.exporter)
    print(f"{ex.path}: max |ort - torch| = {ort_max_abs_diff(ex.path, ex.feeds, ex.expected):.3g}")


if __name__ == "__main__":
    main()
