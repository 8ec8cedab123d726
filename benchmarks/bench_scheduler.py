"""Time `hw.perf.scheduler.schedule` on a synthetic ViT-Base-like graph of about 600 tasks.

Run ``python benchmarks/bench_scheduler.py``; `main` prints one line and returns the figures. The graph mimics what
the compiler lowers a 12-layer ViT-Base (197 tokens, width 768, 12 heads, int8) to: per layer a layernorm, the QKV
projection, per head QK^T / softmax / A.V, the output projection, a residual add, a second layernorm, the MLP with
GELU and a second residual add, each GEMM followed by a requantize. Weight-carrying GEMMs are tiled to a 256 KiB buffer.
"""

from __future__ import annotations

import math
import statistics
import sys
import time
from pathlib import Path

if __package__ in (None, ""):  # run as a script from a checkout
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from hw.perf.scheduler import Machine, Task, schedule  # noqa: E402

BUFFER_BYTES = 256 * 1024


def vit_base_tasks(layers: int = 12, heads: int = 12, tokens: int = 197, width: int = 768) -> list[Task]:
    """A transformer-encoder task graph: ``layers * (14 + 3 * heads) + 2`` tasks (602 for ViT-Base)."""
    macs_per_cycle = 64 * 64
    head_dim = width // heads
    act = tokens * width

    def gemm(name: str, m: int, n: int, k: int, deps: tuple[str, ...], weights: bool = True) -> Task:
        weight_bytes = n * k if weights else 0
        return Task(
            name, "gemm", math.ceil(m * n * k / macs_per_cycle), weight_bytes + m * k, m * n, deps,
            tiles=max(1, math.ceil(weight_bytes / BUFFER_BYTES)),
        )  # fmt: skip

    def vector(name: str, elements: int, deps: tuple[str, ...], per_element: int = 1) -> Task:
        return Task(name, "vector", math.ceil(elements * per_element / 32), 0, 0, deps)

    tasks = [Task("patch_embed", "gemm", math.ceil(act * 768 / macs_per_cycle), 768 * width + act, act)]
    x = "patch_embed"
    for layer in range(layers):
        p = f"l{layer}."
        tasks.append(vector(p + "ln1", act, (x,), per_element=3))
        tasks.append(gemm(p + "qkv", tokens, 3 * width, width, (p + "ln1",)))
        tasks.append(vector(p + "qkv.rq", 3 * act, (p + "qkv",)))
        for h in range(heads):
            q = f"{p}h{h}."
            tasks.append(gemm(q + "qk", tokens, tokens, head_dim, (p + "qkv.rq",), weights=False))
            tasks.append(vector(q + "softmax", tokens * tokens, (q + "qk",), per_element=4))
            tasks.append(gemm(q + "av", tokens, head_dim, tokens, (q + "softmax",), weights=False))
        tasks.append(gemm(p + "proj", tokens, width, width, tuple(f"{p}h{h}.av" for h in range(heads))))
        tasks.append(vector(p + "proj.rq", act, (p + "proj",)))
        tasks.append(vector(p + "add1", act, (p + "proj.rq", x)))
        tasks.append(vector(p + "ln2", act, (p + "add1",), per_element=3))
        tasks.append(gemm(p + "fc1", tokens, 4 * width, width, (p + "ln2",)))
        tasks.append(vector(p + "fc1.rq", 4 * act, (p + "fc1",)))
        tasks.append(vector(p + "gelu", 4 * act, (p + "fc1.rq",), per_element=2))
        tasks.append(gemm(p + "fc2", tokens, width, 4 * width, (p + "gelu",)))
        tasks.append(vector(p + "fc2.rq", act, (p + "fc2",)))
        tasks.append(vector(p + "add2", act, (p + "fc2.rq", p + "add1")))
        tasks.append(Task(p + "spill", "dma", 0, 0, act, (p + "add2",)))
        x = p + "add2"
    tasks.append(gemm("head", 1, 1000, width, (x,)))
    return tasks


def main(repeats: int = 20) -> dict[str, float]:
    """Schedule the ViT-Base graph ``repeats`` times; print and return the task count, makespan and timings (ms)."""
    tasks = vit_base_tasks()
    machine = Machine(units={"gemm": 2, "vector": 1, "dma": 1}, offchip_bytes_per_cycle=64.0)
    result = schedule(tasks, machine)  # warm-up
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        result = schedule(tasks, machine)
        times.append((time.perf_counter() - t0) * 1e3)
    figures = {
        "tasks": len(tasks),
        "tiles": sum(t.tiles for t in tasks),
        "makespan_cycles": result.makespan,
        "median_ms": statistics.median(times),
        "min_ms": min(times),
    }
    print(
        f"scheduler: {figures['tasks']} tasks ({figures['tiles']} tiles), makespan {result.makespan} cycles, "
        f"median {figures['median_ms']:.1f} ms, min {figures['min_ms']:.1f} ms over {repeats} runs"
    )
    return figures


if __name__ == "__main__":
    main()
