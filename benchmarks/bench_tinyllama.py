"""Compile time and peak memory of a TinyLlama-shaped model (the model-generality issue's scale check).

TinyLlama-1.1B's shape: 22 layers, hidden 2048, FFN 5632, 32 query heads sharing 4 KV heads (grouped-query
attention), vocab 32000; sequence 512. Random weights (no download), exported once with the legacy exporter into
``build/bench/tinyllama`` with its weights in external data (4.4 GB of float32), then compiled on ``fpga-u280``.

Printed: export seconds, compile seconds (a fresh process, as a user runs it), the compile's peak resident memory
and its ratio to the weights' bytes (goal: compile <= 20 s, peak <= 1.5x the weights), and what the compile found
(attention blocks recognized, KV heads, MACs).
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
OUT = ROOT / "build" / "bench" / "tinyllama"
LAYERS, HIDDEN, FFN, HEADS, KV_HEADS, VOCAB, SEQ = 22, 2048, 5632, 32, 4, 32000, 512


def _export(path: Path) -> float:
    """Export the model with external data; seconds taken (0 when the export is already there)."""
    if path.exists():
        return 0.0
    import torch
    import transformers as tf

    start = time.perf_counter()
    config = tf.LlamaConfig(vocab_size=VOCAB, hidden_size=HIDDEN, intermediate_size=FFN, num_hidden_layers=LAYERS,
                            num_attention_heads=HEADS, num_key_value_heads=KV_HEADS, max_position_embeddings=2048,
                            attn_implementation="sdpa")
    torch.manual_seed(0)
    model = tf.LlamaModel(config).eval()

    class _Wrap(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.model = model

        def forward(self, input_ids: torch.Tensor) -> torch.Tensor:
            mask = torch.ones_like(input_ids)
            return self.model(input_ids=input_ids, attention_mask=mask, use_cache=False).last_hidden_state

    path.parent.mkdir(parents=True, exist_ok=True)
    ids = torch.zeros(1, SEQ, dtype=torch.long)
    with torch.no_grad():
        torch.onnx.export(_Wrap().eval(), (ids,), str(path), opset_version=17, dynamo=False,
                          input_names=["input_ids"], output_names=["hidden"])
    return time.perf_counter() - start


_COMPILE = """
import json, resource, sys, time
import codesign
start = time.perf_counter()
report = codesign.compile(sys.argv[1], "fpga-u280").report
seconds = time.perf_counter() - start
peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
print(json.dumps({"seconds": seconds, "peak_bytes": peak, "patterns": report["patterns"], "macs": report["macs"],
                  "latency_ms": report["latency_ms"]}))
"""


def main() -> None:
    path = OUT / "tinyllama.onnx"
    exported = _export(path)
    weights = sum(p.stat().st_size for p in OUT.iterdir() if p.is_file() and p != path) or path.stat().st_size
    done = subprocess.run([sys.executable, "-c", _COMPILE, str(path)], cwd=ROOT, capture_output=True, text=True)
    if done.returncode:
        print(done.stderr.strip().splitlines()[-1] if done.stderr.strip() else f"compile exit {done.returncode}")
        raise SystemExit(1)
    got = json.loads(done.stdout.strip().splitlines()[-1])
    print(f"TinyLlama shape ({LAYERS} layers, hidden {HIDDEN}, FFN {FFN}, {HEADS}/{KV_HEADS} heads, seq {SEQ}): "
          f"export {exported:.0f} s (0 = reused), weights {weights / 2**30:.2f} GiB")
    print(f"  compile {got['seconds']:.1f} s (goal <= 20), peak RSS {got['peak_bytes'] / 2**30:.2f} GiB = "
          f"{got['peak_bytes'] / weights:.2f}x the weights (goal <= 1.5x)")
    print(f"  recognized {got['patterns']}, {got['macs'] / 1e9:.1f} GMACs, {got['latency_ms']:.1f} ms on fpga-u280")


if __name__ == "__main__":
    main()
