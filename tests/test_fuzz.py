"""The CLI fuzz suite: malformed ONNX, npz, target YAML, --set and other flags, MLIR, pass pipelines and sweep specs.

Every case must exit 0, or 2 with one line naming the culprit: never a traceback, a hang, a memory blow-up, an
orphan process or a file touched outside the requested output (the oracle: tests/fuzz/harness.py). Cases are drawn
by hypothesis, derandomized (the same cases everywhere), and run in worker processes with an address-space limit.
The CI budget is about 2,200 cases; ``make fuzz`` multiplies it (``CODESIGN_FUZZ_SCALE``). A failing test lists
every failing case grouped by cause; ``CODESIGN_FUZZ_LOG=path.jsonl`` also writes them all to a file.
"""

from __future__ import annotations

import json
import os
import time
from collections import Counter
from pathlib import Path

import pytest

from tests.fuzz.families import FAMILIES, prepare_seeds
from tests.fuzz.harness import WorkerPool, collect_cases, examples, run_cases

pytestmark = pytest.mark.fuzz


@pytest.fixture(scope="module")
def pool(tmp_path_factory: pytest.TempPathFactory):
    prepare_seeds(tmp_path_factory.mktemp("fuzz-seeds"))
    with WorkerPool() as workers:
        yield workers


def _summary(failures: list) -> str:
    groups: dict[tuple[str, str], list] = {}
    for f in failures:
        groups.setdefault((f.kind, f.signature), []).append(f)
    lines = [f"{len(failures)} failing cases in {len(groups)} classes:"]
    for (kind, sig), group in sorted(groups.items(), key=lambda kv: -len(kv[1])):
        first = group[0]
        lines.append(f"  [{len(group)}x] {kind}: {sig}\n      argv: {' '.join(first.case.argv)}\n"
                     f"      input: {first.case.note[:300]}\n      {first.detail[:300]}")
    return "\n".join(lines)


@pytest.mark.parametrize("family", list(FAMILIES))
def test_fuzz(family: str, pool: WorkerPool) -> None:
    strategy, default = FAMILIES[family]
    cases = collect_cases(strategy, examples(default))
    log = os.environ.get("CODESIGN_FUZZ_LOG")
    start = time.perf_counter()
    outcome = run_cases(pool, cases, Path(log) if log else None)
    stats = os.environ.get("CODESIGN_FUZZ_STATS")
    if stats:
        with open(stats, "a") as f:
            f.write(json.dumps({"family": family, "cases": outcome.cases, "failures": len(outcome.failures),
                                "cpu_s": round(outcome.cpu_s, 2), "exits": outcome.exits,
                                "messages": sorted(set(outcome.messages)), "wall_s": round(time.perf_counter() - start, 2)})
                    + "\n")
    assert outcome.cases == len(cases)
    kinds = Counter(f.kind for f in outcome.failures)
    assert not outcome.failures, f"{family}: {dict(kinds)}\n" + _summary(outcome.failures)
