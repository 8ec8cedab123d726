"""Write examples/data/vit_base_images.npz: the samples examples/sweeps/vit_base_u280.yaml measures accuracy on.

``pixel_values`` float32 [N, 1, 3, 224, 224] (a leading sample axis, then vit_base.onnx's input shape; README "Sample
data"): standard normal noise from the same seeded generator as vit_tiny_images.npz (export_vit.sample_images). Two
images by default: a sweep simulates them once per combination of compile choices, a few seconds each for ViT-Base.

Usage: python examples/make_sweep_inputs.py [--samples 2] [--out examples/data/vit_base_images.npz]
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
IMAGE_SIZE = 224  # ViT-Base's input (build_models.VIT_BASE)
DEFAULT_OUT = HERE / "data" / "vit_base_images.npz"


def write_vit_base_images(out: Path = DEFAULT_OUT, samples: int = 2, seed: int = 123) -> Path:
    """Write ``samples`` seeded ViT-Base images to ``out`` (parent folders created); returns ``out``. The file is
    rewritten only when its content would change, so callers may run this before every use."""
    sys.path.insert(0, str(HERE))  # the exporters are flat modules
    from export_vit import sample_images

    images = sample_images(samples, image_size=IMAGE_SIZE, seed=seed)
    if out.is_file():
        try:
            with np.load(out, allow_pickle=False) as old:
                if set(old.files) == set(images) and all(np.array_equal(old[k], v) for k, v in images.items()):
                    return out
        except (OSError, ValueError, EOFError):
            pass  # unreadable: write it again
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(out.name + ".tmp")
    with open(tmp, "wb") as fh:
        np.savez(fh, **images)
    tmp.replace(out)  # atomic: a concurrent reader never sees half a file
    return out


def main() -> None:
    """CLI: write the npz."""
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--samples", type=int, default=2)
    p.add_argument("--out", type=Path, default=DEFAULT_OUT)
    a = p.parse_args()
    write_vit_base_images(a.out, a.samples)
    print(f"{a.out}: {a.samples} samples")


if __name__ == "__main__":
    main()
