"""Time hw.perf.systolic against SCALE-Sim v3 on the same GEMM layers; print cycles and seconds.

Ours runs on GEMM 256x256x256 (32x32 array, os and ws) and on the ViT-B QKV projection
(M=197, N=2304, K=768). SCALE-Sim runs on the 256 GEMM only (the QKV layer takes it minutes and
over a gigabyte, docs/SOURCES.md [18]), through ``tests/scalesim_oracle.py`` in ``.venv-scalesim``
with traces off. Its time is the ``run_scale`` call alone; the process start-up is printed apart.

Run: ``.venv/bin/python benchmarks/bench_systolic.py`` (``make .venv-scalesim/.installed`` first
for the SCALE-Sim column).
"""

from __future__ import annotations

import json
import subprocess
import time
import timeit
from pathlib import Path

from hw.perf.systolic import systolic_cycles

ROOT = Path(__file__).resolve().parent.parent
ORACLE = ROOT / "tests" / "scalesim_oracle.py"
SCALESIM_PY = ROOT / ".venv-scalesim" / "bin" / "python"

LAYERS = {  # name -> (m, n, k, rows, cols, dataflow)
    "gemm256 os 32x32": (256, 256, 256, 32, 32, "os"),
    "gemm256 ws 32x32": (256, 256, 256, 32, 32, "ws"),
    "vit-b qkv os 32x32": (197, 2304, 768, 32, 32, "os"),
    "vit-b qkv ws 32x32": (197, 2304, 768, 32, 32, "ws"),
}
SCALESIM_LAYERS = ("gemm256 os 32x32", "gemm256 ws 32x32")


def _time_ours(case: tuple, calls: int = 100_000) -> float:
    """Seconds per call, the best of five batches of ``calls``."""
    timer = timeit.Timer(lambda: systolic_cycles(*case))
    return min(timer.repeat(repeat=5, number=calls)) / calls


def _run_scalesim(cases: list[tuple]) -> tuple[list[dict], float] | None:
    """SCALE-Sim results (one separate run per layer) and the whole process's wall seconds."""
    if not SCALESIM_PY.exists():
        return None
    start = time.perf_counter()
    proc = subprocess.run([str(SCALESIM_PY), str(ORACLE), "-"], input=json.dumps(cases),
                          capture_output=True, text=True, check=True, cwd=ROOT)
    return json.loads(proc.stdout), time.perf_counter() - start


def main() -> dict[str, dict]:
    """Print a table of cycles and seconds per layer for both models; return the same numbers."""
    results: dict[str, dict] = {}
    for name, case in LAYERS.items():
        results[name] = {"ours_cycles": systolic_cycles(*case), "ours_s": _time_ours(case)}

    scalesim = _run_scalesim([LAYERS[name] for name in SCALESIM_LAYERS])
    if scalesim is None:
        print(f"SCALE-Sim column skipped: {SCALESIM_PY} missing, run `make .venv-scalesim/.installed`")
        process_s = None
    else:
        reports, process_s = scalesim
        for name, report in zip(SCALESIM_LAYERS, reports):
            results[name]["scalesim_cycles"] = report["cycles"]
            results[name]["scalesim_s"] = report["run_seconds"]

    print(f"{'layer':<20} {'ours cycles':>12} {'ours s/layer':>13} "
          f"{'SCALE-Sim cycles':>17} {'SCALE-Sim s/layer':>18} {'speed-up':>10}")
    for name, r in results.items():
        ss_cycles = f"{r['scalesim_cycles']:,}" if "scalesim_cycles" in r else "-"
        ss_s = f"{r['scalesim_s']:.2f}" if "scalesim_s" in r else "-"
        speedup = f"{r['scalesim_s'] / r['ours_s']:.1e}x" if "scalesim_s" in r else "-"
        same = "" if r.get("scalesim_cycles", r["ours_cycles"]) == r["ours_cycles"] else "  MISMATCH"
        print(f"{name:<20} {r['ours_cycles']:>12,} {r['ours_s']:>13.2e} "
              f"{ss_cycles:>17} {ss_s:>18} {speedup:>10}{same}")
    if process_s is not None:
        run_s = sum(results[name]["scalesim_s"] for name in SCALESIM_LAYERS)
        print(f"SCALE-Sim process wall time {process_s:.2f} s, of which start-up and I/O "
              f"{process_s - run_s:.2f} s (traces off, 64 KB SRAMs, CALC bandwidth)")
    return results


if __name__ == "__main__":
    main()
