"""The CLI fuzz suite: malformed ONNX, npz, target YAML, --set and other flags, MLIR, pass pipelines and sweep specs.

Every case must exit 0, or 2 with one line naming the culprit: never a traceback, a hang, a memory blow-up, an
orphan process or a file touched outside the requested output (the oracle: tests/fuzz/harness.py). Cases are drawn
by hypothesis, derandomized (the same cases everywhere), and run in worker processes with an address-space limit.
The CI budget is about 2,200 cases; ``make fuzz`` multiplies it (``CODESIGN_FUZZ_SCALE``). A failing test lists
every failing case grouped by cause; ``CODESIGN_FUZZ_LOG=path.jsonl`` also writes them all to a file.
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import time
from collections import Counter
from pathlib import Path

import pytest

from tests.conftest import model_path
from tests.fuzz.harness import WorkerPool, collect_cases, examples, run_cases
from tests.fuzz.text_inputs import mlir_cases, passes_cases, set_cases, set_mlir_seeds, sweep_cases, \
    target_yaml_cases
from tests.fuzz_inputs import npz_cases, onnx_bytes_cases, onnx_proto_cases, tiny_model

pytestmark = pytest.mark.fuzz

# Cases per family in CI: 2,200 in all, about 3 minutes on 2 cores (the sweeps and --inputs cases are the slow ones).
FAMILIES = {
    "onnx-bytes": (onnx_bytes_cases(), 350),
    "onnx-proto": (onnx_proto_cases(), 400),
    "npz": (npz_cases(), 250),
    "target-yaml": (target_yaml_cases(), 300),
    "set": (set_cases(), 300),
    "mlir": (mlir_cases(), 300),
    "passes": (passes_cases(), 150),
    "sweep": (sweep_cases(), 150),
}


def emit_mlir(model: Path, folder: Path, generic: bool = False) -> str:
    """The IR ``codesign compile --emit-mlir`` writes for ``model``: the MLIR family's seed."""
    from codesign.cli import main

    out = folder / f"{model.stem}{'-generic' if generic else ''}.mlir"
    with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()) as err:
        rc = main(["compile", str(model), "-q", "--emit-mlir", str(out)] + (["--mlir-generic"] if generic else []))
    assert rc == 0, err.getvalue()
    return out.read_text()


@pytest.fixture(scope="module")
def pool(tmp_path_factory: pytest.TempPathFactory):
    import onnx

    folder = tmp_path_factory.mktemp("fuzz-seeds")
    tiny = folder / "tiny.onnx"
    onnx.save(tiny_model(), tiny)
    set_mlir_seeds({"tiny": emit_mlir(tiny, folder), "tiny-generic": emit_mlir(tiny, folder, generic=True),
                    "vit_tiny": emit_mlir(model_path("vit_tiny.onnx"), folder)})
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
                                "cpu_s": round(outcome.cpu_s, 2), "wall_s": round(time.perf_counter() - start, 2)})
                    + "\n")
    assert outcome.cases == len(cases)
    kinds = Counter(f.kind for f in outcome.failures)
    assert not outcome.failures, f"{family}: {dict(kinds)}\n" + _summary(outcome.failures)
