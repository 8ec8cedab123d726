"""Design points per second of `codesign sweep` on ViT-Base (examples/models/vit_base.onnx).

Run ``python benchmarks/bench_sweep.py [--workers N] [--quick]``; ``main`` prints a few lines and returns the figures:

* hardware-only axes (gemm.rows x gemm.cols x clock_mhz x gemm.dataflow, 240 points): every point reuses the cached
  hardware-independent prefix; end to end (process start-up, prefix build in each worker, store, outputs) and in
  steady state (from the first stored point on);
* hardware-only axes without a clock axis (144 points, each its own schedule);
* axes that need recompiles: compile.softmax (exact, shiftmax, online) x compile.gelu (exact, shiftgelu) x two array
  sizes, or two models while no compile option is registered; each new (model, choices) builds a prefix (import and
  the hardware-independent passes) in each worker that meets it;
* accuracy as a constraint (``inputs:`` two ViT-Base images, ``accuracy.cosine >= 0.99``): compile.softmax x
  compile.attention x two array sizes; each (softmax, attention) is simulated once, the figure is the sweep's wall
  time and the worker time of one measurement (``--quick``: two softmax choices);
* the cost of one point by evaluation tier, in this process (ms), ``full`` being a fresh compile.
"""

from __future__ import annotations

import argparse
import itertools
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

if __package__ in (None, ""):  # run as a script from a checkout
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from codesign.sweep.evaluate import PointRequest, clear_caches, evaluate_report  # noqa: E402
from codesign.sweep.runner import run_sweep  # noqa: E402
from codesign.sweep.spec import parse_sweep  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
VIT_BASE = ROOT / "examples" / "models" / "vit_base.onnx"
VIT_TINY = ROOT / "examples" / "models" / "vit_tiny.onnx"


def _sweep_rate(text: str, workers: int) -> dict[str, float]:
    """Run the sweep ``text`` into a fresh folder: points, end-to-end and steady-state points/s, and the accuracy
    measurements made (count, worker seconds)."""
    sweep = parse_sweep(text, "bench.yaml")
    marks: list[tuple[float, int]] = []
    with tempfile.TemporaryDirectory() as tmp:
        start = time.perf_counter()
        outcome = run_sweep(sweep, Path(tmp) / "out", workers=workers,
                            on_progress=lambda done, total, rate: marks.append((time.perf_counter(), done)))
        end = time.perf_counter()
    first = next(((t, d) for t, d in marks if d > 0), (end, 0))
    steady = (outcome.computed - first[1]) / max(end - first[0], 1e-9)
    return {"points": outcome.computed, "end_to_end": outcome.computed / (end - start), "steady": steady,
            "seconds": end - start, "tiers": dict(outcome.tiers), "accuracy_measured": outcome.accuracy_measured,
            "accuracy_seconds": outcome.accuracy_seconds}


def with_accuracy(workers: int, quick: bool = False) -> dict[str, float]:
    """A sweep constrained on accuracy: each (softmax, attention) simulated once on two ViT-Base images."""
    from codesign.options import CHOICES

    sys.path.insert(0, str(ROOT / "examples"))
    from make_sweep_inputs import write_vit_base_images

    images = write_vit_base_images()
    softmax = [v for v in (["exact", "online"] if quick else ["exact", "shiftmax", "online"])
               if v in CHOICES.get("softmax", ((), ""))[0]]
    return _sweep_rate(f"""
models: [{VIT_BASE}]
target: fpga-u280
space:
  gemm.rows: [16, 32]
  compile.softmax: {softmax}
  compile.attention: [standard, edge-moe]
objectives: {{latency_ms: min, energy_mj: min, dsp: min}}
constraints: ["fits", "accuracy.cosine >= 0.99"]
inputs: {images}
""", workers)


def hardware_only(workers: int, quick: bool = False) -> dict[str, float]:
    """Points/s for axes that only change the target."""
    rows = [8, 16, 32, 64]
    return _sweep_rate(f"""
models: [{VIT_BASE}]
target: fpga-u280
space:
  gemm.rows: {rows[:2] if quick else rows}
  gemm.cols: {rows}
  clock_mhz: {{min: 150, max: 350, step: 50}}
  gemm.dataflow: [os, ws, is]
objectives: {{latency_ms: min, energy_mj: min, dsp: min}}
constraints: [fits]
""", workers)


def hardware_only_distinct(workers: int) -> dict[str, float]:
    """Points/s for hardware axes where every point needs its own schedule (no clock axis to share one)."""
    return _sweep_rate(f"""
models: [{VIT_BASE}]
target: fpga-u280
space:
  gemm.rows: [8, 16, 32, 64]
  gemm.cols: [8, 16, 32, 64]
  gemm.dataflow: [os, ws, is]
  buffers.weight_kb: [128, 512, 2048]
objectives: {{latency_ms: min, energy_mj: min, dsp: min}}
constraints: [fits]
""", workers)


def recompiles(workers: int) -> tuple[str, dict[str, float]]:
    """Points/s for axes that change the compile itself."""
    from codesign.options import CHOICES

    wanted = {"softmax": ["exact", "shiftmax", "online"], "gelu": ["exact", "shiftgelu"]}
    axes = [(name, [v for v in values if v in CHOICES[name][0]]) for name, values in wanted.items() if name in CHOICES]
    if axes:
        lines = "\n".join(f"  compile.{name}: {values}" for name, values in axes)
        return " x ".join(f"compile.{name}" for name, _ in axes), _sweep_rate(f"""
models: [{VIT_BASE}]
target: fpga-u280
space:
{lines}
  gemm.rows: [16, 32]
objectives: {{latency_ms: min, energy_mj: min}}
""", workers)
    return "models (no compile option registered yet)", _sweep_rate(f"""
models: [{VIT_BASE}, {VIT_TINY}]
target: fpga-u280
space:
  gemm.rows: [8, 16, 32, 64]
  gemm.cols: [8, 16, 32, 64]
objectives: {{latency_ms: min, energy_mj: min}}
""", workers)


def tier_costs(repeats: int = 7) -> dict[str, float]:
    """Median ms per point of each evaluation tier on ViT-Base, after warm-up, distinct array sizes each time."""
    clear_caches()
    sizes = list(itertools.product([8, 16, 32, 64], [8, 16, 32, 64]))
    out = {}
    for tier in ("plan", "prefix", "full"):
        times = []
        for i in range(repeats if tier != "full" else 2):
            r, c = sizes[i % len(sizes)]
            point = PointRequest(key="b", model=str(VIT_BASE), target="fpga-u280",
                                 overrides=(("gemm.rows", str(r)), ("gemm.cols", str(c)), ("clock_mhz", str(200 + i))))
            evaluate_report(point, tier if tier != "full" else "prefix")  # warm the prefix
            t = time.perf_counter()
            evaluate_report(point, tier)
            times.append(time.perf_counter() - t)
        out[tier] = statistics.median(times) * 1e3
    return out


def main(argv: list[str] | None = None) -> dict[str, object]:
    """Print and return the figures (see the module doc)."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workers", type=int, default=os.cpu_count() or 1)
    parser.add_argument("--quick", action="store_true", help="a smaller hardware-only grid")
    args = parser.parse_args(argv)
    if not VIT_BASE.exists():
        raise SystemExit("examples/models/vit_base.onnx is missing: run `make examples`")
    hw = hardware_only(args.workers, args.quick)
    print(f"hardware-only axes: {hw['points']} points in {hw['seconds']:.1f} s, {hw['end_to_end']:.0f} points/s end "
          f"to end, {hw['steady']:.0f} points/s steady ({args.workers} workers; tiers {hw['tiers']})")
    hd = hardware_only_distinct(args.workers)
    print(f"hardware-only axes, a new schedule every point: {hd['points']} points in {hd['seconds']:.1f} s, "
          f"{hd['end_to_end']:.0f} points/s end to end, {hd['steady']:.0f} points/s steady")
    label, rc = recompiles(args.workers)
    print(f"recompile axes ({label}): {rc['points']} points in {rc['seconds']:.1f} s, {rc['end_to_end']:.1f} "
          f"points/s end to end, {rc['steady']:.1f} steady (tiers {rc['tiers']})")
    acc = with_accuracy(args.workers, args.quick)
    print(f"accuracy constraint ({acc['accuracy_measured']} softmax x attention simulated on 2 images, "
          f"{acc['accuracy_seconds'] / max(acc['accuracy_measured'], 1):.1f} s each): {acc['points']} points in "
          f"{acc['seconds']:.1f} s")
    tiers = tier_costs()
    print("one point by tier, ms: " + ", ".join(f"{k} {v:.1f}" for k, v in tiers.items()))
    try:
        load = os.getloadavg()[0]
        print(f"(load average {load:.1f} on {os.cpu_count()} cores while measuring)")
    except OSError:
        pass
    return {"hardware_only": hw, "hardware_only_distinct": hd, "recompiles": rc, "accuracy": acc, "tiers_ms": tiers}


if __name__ == "__main__":
    main()
