"""Our mapping search side by side with ZigZag's (LOMA) on every distinct GEMM layer of ViT-Base and BERT-base.

Same array and buffers (fpga-u280 with one partition: 64 x 64 output stationary, benchmarks/zigzag/os_array.yaml),
ZigZag run from its own venv (`make .venv-zigzag/.installed`, zigzag-dse 3.9.1) by benchmarks/zigzag/runner.py for both
output-stationary orientations; its pick is the one its own latency estimate prefers. That mapping and the one our
search picks are priced alike by our exact model of that one array (hw.models.fpga: the RTL kernel's count of the
streaming array the target runs, gemm.fold_overlap), and the seconds per layer are compared. Printed, never
asserted. Skipped with a message when .venv-zigzag is missing.
"""

from __future__ import annotations

import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
ZIGZAG_PY = ROOT / ".venv-zigzag" / "bin" / "python"


def _gemms(path: str) -> list[tuple[int, int, int]]:
    """Distinct (m, n, k) of one batch item of every GEMM the compile of ``path`` runs (attention's included)."""
    from codesign.api import compile as compile_model
    from hw.perf.workload import GemmWork

    result = compile_model(path, quant="int8")
    found = {(w.m, w.n, w.k) for plan in result.env.plans for w in plan.works if isinstance(w, GemmWork)}
    return sorted(found)


def main() -> None:
    if not ZIGZAG_PY.exists():
        print("zigzag: .venv-zigzag missing (make .venv-zigzag/.installed); side by side skipped")
        return
    sys.path.insert(0, str(ROOT / "examples"))
    from export_bert import export_bert

    from compiler.schedule.mapping import mapping_space, search
    from hw.models import build_model
    from hw.perf.workload import GemmWork
    from hw.targets import load_target

    space = search.__wrapped__  # uncached, to time the search itself
    # ZigZag's array (benchmarks/zigzag/os_array.yaml) is one 64 x 64: the bundled target with one partition.
    model = build_model(load_target("fpga-u280", {"gemm.partitions": "1"}))
    mspace = mapping_space(model)
    assert mspace is not None

    def priced(m: int, n: int, k: int, transpose: bool) -> int:
        """Cycles of the GEMM in that orientation by our exact model of the array (its RTL kernel's count)."""
        return model.cost(GemmWork(m=n if transpose else m, n=m if transpose else n, k=k)).compute_cycles

    layers = [("vit-base", s) for s in _gemms(str(ROOT / "examples" / "models" / "vit_base.onnx"))]
    with tempfile.TemporaryDirectory() as tmp:
        bert = Path(tmp) / "bert.onnx"
        export_bert(bert, layers=1, hidden=768, heads=12, intermediate=3072, seq_len=128, vocab=1024,
                    max_positions=128)
        layers += [("bert-base", s) for s in _gemms(str(bert))]
    request = [[f"{model} {m}x{n}x{k}", m, n, k] for model, (m, n, k) in layers]
    runner = str(ROOT / "benchmarks" / "zigzag" / "runner.py")
    done = subprocess.run([str(ZIGZAG_PY), runner], input=json.dumps(request), capture_output=True, text=True,
                          check=True)
    runs = json.loads(done.stdout)
    print(f"{'layer (m x n x k)':<26} {'zigzag pick':<12} {'zz own cyc':>10} {'zz by ours':>10} {'ours':>10} "
          f"{'our map':<16} {'zz s':>6} {'our us':>7} {'x faster':>9}")
    worse = 0
    for (name, m, n, k) in request:
        pair = [r for r in runs if r["name"] == name]
        pick = min(pair, key=lambda r: (r["latency"], r["transpose"]))
        zz_ours = priced(m, n, k, pick["transpose"])
        work = GemmWork(m=m, n=n, k=k)
        reps = 200
        t = time.perf_counter()
        for _ in range(reps):
            chosen = space(work, mspace)
        ours_s = (time.perf_counter() - t) / reps
        zz_s = sum(r["seconds"] for r in pair) / len(pair)
        ours = priced(m, n, k, chosen.transpose)
        worse += ours > zz_ours
        print(f"{name:<26} {'os^T' if pick['transpose'] else 'os':<12} {pick['latency']:>10,.0f} {zz_ours:>10,} "
              f"{ours:>10,} {chosen.label():<16} {zz_s:>6.2f} {ours_s * 1e6:>7.0f} {zz_s / ours_s:>9,.0f}")
    print(f"zigzag: ours worse than ZigZag's pick (priced by our model) on {worse} of {len(request)} layers")


if __name__ == "__main__":
    main()
