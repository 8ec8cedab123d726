"""Export a randomly initialised HF ViT image classifier (ViTForImageClassification) to ONNX.

One function serves ViT-tiny (the fast test model, in every exporter spelling) and ViT-Base (the realistic size);
both keep HF's layout (Conv2d patch embedding, CLS token, learned positions, pre-norm blocks, final LayerNorm,
linear head on the CLS token) so the frontend sees exactly what users' exports look like.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import torch
from _common import Attn, Exported, Exporter, export_onnx, reinit_, save_with_external_data, seed_all, torch_outputs

INPUT = "pixel_values"
OUTPUT = "logits"


class _Logits(torch.nn.Module):
    """Return only the logits tensor, so every exporter sees one output with a fixed name."""

    def __init__(self, model: torch.nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, pixel_values: torch.Tensor) -> torch.Tensor:
        return self.model(pixel_values=pixel_values).logits


def build_vit(
    *, layers: int, hidden: int, heads: int, intermediate: int, image_size: int, patch: int, num_classes: int,
    attn: Attn = "eager", seed: int = 0,
) -> torch.nn.Module:
    """Build the seeded random ViT classifier; the same arguments always give the same weights."""
    from transformers import ViTConfig, ViTForImageClassification

    seed_all(seed)
    config = ViTConfig(
        num_hidden_layers=layers, hidden_size=hidden, num_attention_heads=heads, intermediate_size=intermediate,
        image_size=image_size, patch_size=patch, num_channels=3, num_labels=num_classes,
        hidden_act="gelu", layer_norm_eps=1e-12, attn_implementation=attn,
    )
    model = ViTForImageClassification(config).eval()
    reinit_(model, seed)
    return _Logits(model).eval()


def export_vit(
    out_path: Path, *, layers: int = 2, hidden: int = 64, heads: int = 4, intermediate: int = 128,
    image_size: int = 32, patch: int = 8, num_classes: int = 10, batch: int = 1,
    exporter: Exporter = "legacy", attn: Attn = "eager", seed: int = 0, dynamic_batch: bool = False,
    external_data: bool = False,
) -> Exported:
    """Export the ViT classifier; `dynamic_batch` makes the batch axis a symbolic dim named "batch" (legacy only);
    `external_data` moves the weights into `<name>.data` next to the model.

    Returns the torch outputs for the seeded sample image(s) so the caller can check the file in onnxruntime.
    """
    model = build_vit(
        layers=layers, hidden=hidden, heads=heads, intermediate=intermediate, image_size=image_size, patch=patch,
        num_classes=num_classes, attn=attn, seed=seed,
    )
    x = torch.randn(batch, 3, image_size, image_size, generator=torch.Generator().manual_seed(seed + 1))
    dynamic_axes = {INPUT: {0: "batch"}, OUTPUT: {0: "batch"}} if dynamic_batch else None
    export_onnx(model, [x], out_path, input_names=[INPUT], output_names=[OUTPUT], exporter=exporter,
                dynamic_axes=dynamic_axes)
    extra = [save_with_external_data(out_path)] if external_data else []
    if dynamic_batch:  # check a batch other than the traced one, or a baked-in batch size would pass unnoticed
        x = torch.cat([x, x.flip(0) * 0.5], dim=0)
    tokens = (image_size // patch) ** 2 + 1
    meta = {
        "family": "vit",
        "config": {
            "layers": layers, "hidden": hidden, "heads": heads, "head_dim": hidden // heads,
            "intermediate": intermediate, "image_size": image_size, "channels": 3, "patch": patch,
            "num_patches": tokens - 1, "tokens": tokens, "seq_len": tokens, "num_classes": num_classes,
            "vocab": None, "layer_norm_eps": 1e-12, "activation": "gelu_erf", "cls_token": True,
            "head": "linear_on_cls",
        },
        "exporter": exporter, "attn_implementation": attn, "weights": "random", "seed": seed,
        "external_data": external_data, "dynamic_batch": dynamic_batch,
    }
    return Exported(out_path, {INPUT: x.numpy()}, torch_outputs(model, [x], [OUTPUT]), meta, extra)


def sample_images(n: int, *, image_size: int = 32, seed: int = 123) -> dict[str, np.ndarray]:
    """`n` random images keyed by the model input name, with a leading sample axis: [n, 1, 3, H, W] float32."""
    gen = torch.Generator().manual_seed(seed)
    return {INPUT: torch.randn(n, 1, 3, image_size, image_size, generator=gen).numpy()}


def main() -> None:
    """CLI: export one ViT (defaults are vit_tiny) and print the onnxruntime vs torch difference."""
    from _common import ort_max_abs_diff

    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("out", type=Path)
    for name, default in [("layers", 2), ("hidden", 64), ("heads", 4), ("intermediate", 128), ("image-size", 32),
                          ("patch", 8), ("num-classes", 10), ("seed", 0)]:
        p.add_argument(f"--{name}", type=int, default=default)
    p.add_argument("--exporter", choices=["legacy", "dynamo"], default="legacy")
    p.add_argument("--attn", choices=["eager", "sdpa"], default="eager")
    p.add_argument("--dynamic-batch", action="store_true")
    p.add_argument("--external-data", action="store_true")
    a = p.parse_args()
    ex = export_vit(a.out, layers=a.layers, hidden=a.hidden, heads=a.heads, intermediate=a.intermediate,
                    image_size=a.image_size, patch=a.patch, num_classes=a.num_classes, exporter=a.exporter,
                    attn=a.attn, seed=a.seed, dynamic_batch=a.dynamic_batch,
                    external_data=a.external_data)
    print(f"{ex.path}: max |ort - torch| = {ort_max_abs_diff(ex.path, ex.feeds, ex.expected):.3g}")


if __name__ == "__main__":
    main()
