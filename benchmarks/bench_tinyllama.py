"""Compile time and peak memory of a TinyLlama-shaped model (the model-generality issue's scale check).

TinyLlama-1.1B's shape: 22 layers, hidden 2048, FFN 5632, 32 query heads sharing 4 KV heads (grouped-query
attention), vocab 32000; sequence 512. Random weights (no download), exported once with the legacy exporter into
``build/bench/tinyllama`` (or the folder in ``CODESIGN_BENCH_TINYLLAMA``, to share one export between checkouts)
with its weights in external data (4.4 GB of float32), then compiled on ``fpga-u280``.

Printed: export seconds, compile seconds (a fresh process, as a user runs it) with its stages (ONNX load and
folding, recognition and dialect building, passes and report; wall and CPU seconds, the CPU figure being what a
busy machine does not inflate), the compile's peak resident memory and its ratio to the weights' bytes (goal:
compile <= 20 s, peak <= 1.5x the weights), and what the compile found (attention blocks recognized, MACs).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
OUT = Path(os.environ.get("CODESIGN_BENCH_TINYLLAMA", ROOT / "build" / "bench" / "tinyllama"))
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
import compiler.pipeline as pipeline

stages = {}


def timed(label, fn):
    def run(*args, **kwargs):
        wall, cpu = time.perf_counter(), time.process_time()
        try:
            return fn(*args, **kwargs)
        finally:
            stages[label] = (time.perf_counter() - wall, time.process_time() - cpu)
    return run


pipeline.load_graph = timed("load", pipeline.load_graph)
pipeline.build_module = timed("recognize+dialect", pipeline.build_module)
start, cpu = time.perf_counter(), time.process_time()
report = codesign.compile(sys.argv[1], "fpga-u280").report
seconds, cpu = time.perf_counter() - start, time.process_time() - cpu
stages["passes+report"] = (seconds - sum(w for w, _ in stages.values()), cpu - sum(c for _, c in stages.values()))
peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
print(json.dumps({"seconds": seconds, "cpu_seconds": cpu, "stages": stages, "peak_bytes": peak,
                  "patterns": report["patterns"], "macs": report["macs"], "latency_ms": report["latency_ms"]}))
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
    stages = ", ".join(f"{k} {w:.1f} s ({c:.1f} s CPU)" for k, (w, c) in got["stages"].items())
    print(f"  compile {got['seconds']:.1f} s, {got['cpu_seconds']:.1f} s CPU (goal <= 20): {stages}")
    print(f"  peak RSS {got['peak_bytes'] / 2**30:.2f} GiB = "
          f"{got['peak_bytes'] / weights:.2f}x the weights (goal <= 1.5x)")
    print(f"  recognized {got['patterns']}, {got['macs'] / 1e9:.1f} GMACs, {got['latency_ms']:.1f} ms on fpga-u280")


if __name__ == "__main__":
    main()
