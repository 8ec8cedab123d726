"""Export the M3ViT of `m3vit.py` (Edge-MoE's configuration, or the tiny one) to ONNX for one task."""

from __future__ import annotations

import argparse
from dataclasses import asdict
from pathlib import Path

import torch
from _common import Exported, Exporter, export_onnx, seed_all, torch_outputs
from m3vit import EDGE_MOE, TINY, M3ViT, M3ViTConfig

INPUT = "pixel_values"
OUTPUT = "last_hidden_state"


def export_m3vit(out_path: Path, *, config: M3ViTConfig = EDGE_MOE, task: int = 0, seed: int = 0,
                 exporter: Exporter = "legacy") -> Exported:
    """Export a seeded random M3ViT with the gate of `task` baked in; static batch 1.

    The check input is a random image; the manifest's `moe` entry carries what tests need to count MACs the way
    the hardware runs them (top_k experts per token, not the dense Einsum the graph spells).
    """
    seed_all(seed)
    model = M3ViT(config, task=task, seed=seed).eval()
    gen = torch.Generator().manual_seed(seed + 1)
    x = torch.randn(1, config.channels, config.image_height, config.image_width, generator=gen)
    export_onnx(model, [x], out_path, input_names=[INPUT], output_names=[OUTPUT], exporter=exporter)
    moe_layers = [i for i in range(config.layers) if config.is_moe(i)]
    meta = {
        "family": "m3vit",
        "config": {
            "layers": config.layers, "hidden": config.hidden, "heads": config.heads, "head_dim": config.head_dim,
            "intermediate": config.mlp_hidden, "image_size": [config.image_height, config.image_width],
            "channels": config.channels, "patch": config.patch, "num_patches": config.num_patches,
            "tokens": config.tokens, "seq_len": config.tokens, "num_classes": None, "vocab": None,
            "layer_norm_eps": config.layer_norm_eps, "activation": "gelu_erf", "cls_token": True, "head": None,
            "final_norm": False, "attn_scale": config.head_dim**-0.5, "raw": asdict(config),
        },
        "moe": {
            "experts": config.experts, "top_k": config.top_k, "expert_hidden": config.expert_hidden,
            "moe_layers": moe_layers, "dense_layers": [i for i in range(config.layers) if i not in moe_layers],
            "tasks": config.tasks, "task": task, "gate_bias": False,
            "router": "softmax over experts; top-k on logits by ArgMax rounds (ties -> lower index); "
                      "weights = full softmax probabilities, not renormalised",
            "dispatch": "dense Einsum over stacked expert weights; combine matrix zero outside the top-k",
        },
        "exporter": exporter, "attn_implementation": "eager", "weights": "random", "seed": seed,
    }
    return Exported(out_path, {INPUT: x.numpy()}, torch_outputs(model, [x], [OUTPUT]), meta)


def main() -> None:
    """CLI: export m3vit (Edge-MoE sizes) or m3vit_tiny and print the onnxruntime vs torch difference."""
    from _common import ort_max_abs_diff

    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("out", type=Path)
    p.add_argument("--tiny", action="store_true", help="2 blocks, 4 experts, small widths")
    p.add_argument("--task", type=int, default=0)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--exporter", choices=["legacy", "dynamo"], default="legacy")
    a = p.parse_args()
    ex = export_m3vit(a.out, config=TINY if a.tiny else EDGE_MOE, task=a.task, seed=a.seed, exporter=a.exporter)
    print(f"{ex.path}: max |ort - torch| = {ort_max_abs_diff(ex.path, ex.feeds, ex.expected):.3g}")


if __name__ == "__main__":
    main()
