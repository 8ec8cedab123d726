"""Write examples/data/switch_tiny_inputs.npz: token-id samples for switch_tiny.onnx, for real MoE routing traces.

Each array has a leading sample axis followed by the model's input shape (README "Sample data"): ``input_ids``
int64 [N, 1, 16] drawn uniformly from the 1024-token vocabulary with a fixed seed, ``attention_mask`` all ones.
Only draws that reach every expert of every layer are kept: the legacy export unrolled the expert loop for the
experts its trace input reached, so ONNX Runtime fails on an input that leaves an expert idle (examples/
export_switch.py); the compiler's recognised MoE has no such limit, but ``--inputs`` also runs the ONNX reference.
``codesign compile examples/models/switch_tiny.onnx --inputs examples/data/switch_tiny_inputs.npz`` runs the router
on them in the functional simulator and reports the measured routing.

Usage: python examples/make_switch_inputs.py [--samples 8] [--out examples/data/switch_tiny_inputs.npz] [--model ...]
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np

SEQ_LEN, VOCAB, SEED = 16, 1024, 7
HERE = Path(__file__).resolve().parent


def make_inputs(samples: int = 8, seed: int = SEED, model: Path | None = None) -> dict[str, np.ndarray]:
    """``samples`` deterministic switch_tiny feeds with a leading sample axis; with ``model``, only draws that the
    ONNX file can run (every expert reached)."""
    rng = np.random.default_rng(seed)
    sess = None
    if model is not None:
        import onnxruntime as ort

        options = ort.SessionOptions()
        options.log_severity_level = 4  # the rejected draws fail by design; keep their errors off the console
        sess = ort.InferenceSession(str(model), options, providers=["CPUExecutionProvider"])
    kept: list[np.ndarray] = []
    for _ in range(200 * samples):
        ids = rng.integers(0, VOCAB, size=(1, SEQ_LEN), dtype=np.int64)
        if sess is not None:
            try:
                sess.run(None, {"input_ids": ids, "attention_mask": np.ones_like(ids)})
            except Exception:  # onnxruntime's Split error: an idle expert
                continue
        kept.append(ids)
        if len(kept) == samples:
            break
    else:
        raise RuntimeError(f"only {len(kept)} of {samples} draws reach every expert")
    stacked = np.stack(kept)
    return {"input_ids": stacked, "attention_mask": np.ones_like(stacked)}


def main() -> None:
    """CLI: write the npz."""
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--samples", type=int, default=8)
    p.add_argument("--out", type=Path, default=HERE / "data" / "switch_tiny_inputs.npz")
    p.add_argument("--model", type=Path, default=HERE / "models" / "switch_tiny.onnx")
    a = p.parse_args()
    a.out.parent.mkdir(parents=True, exist_ok=True)
    np.savez(a.out, **make_inputs(a.samples, model=a.model if a.model.exists() else None))
    print(f"{a.out}: {a.samples} samples")


if __name__ == "__main__":
    main()
