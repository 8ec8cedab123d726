"""`make bench`: run every benchmarks/bench_*.py in its own process and print their figures.

Separate processes keep one benchmark's imports and caches from flattering the next, and let each report its own
peak memory. A benchmark that fails is reported and makes the run exit non-zero, but does not stop the others.
"""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
ORDER = ["bench_compile", "bench_systolic", "bench_scheduler", "bench_simulate", "bench_calibration", "bench_moe",
         "bench_sweep", "bench_rtl", "bench_rtl_units"]


def main() -> int:
    found = {p.stem for p in HERE.glob("bench_*.py")}
    names = [n for n in ORDER if n in found] + sorted(found - set(ORDER))
    failed = []
    for name in names:
        print(f"=== {name}", flush=True)
        t = time.perf_counter()
        code = subprocess.call([sys.executable, "-c", f"import sys; sys.path.insert(0, {str(HERE)!r}); "
                                f"import {name}; {name}.main()"], cwd=HERE.parent)
        print(f"--- {name}: {'ok' if code == 0 else f'FAILED (exit {code})'} in {time.perf_counter() - t:.1f} s",
              flush=True)
        if code:
            failed.append(name)
    if failed:
        print(f"benchmarks failed: {', '.join(failed)}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
