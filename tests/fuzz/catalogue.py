"""Run every fuzz family and write a catalogue of the failures: one class per cause, each with its smallest
reproducer (argv and input files, written to a folder) and what happened.

    PYTHONPATH=. .venv/bin/python -m tests.fuzz.catalogue --out catalogue.md --repro repro/ [--scale 1]

The pytest suite stops at nothing either, but it reports per family; this groups across families and keeps inputs.
"""

from __future__ import annotations

import argparse
import os
import shlex
import shutil
import signal
import subprocess
import tempfile
import time
from collections import Counter, defaultdict
from pathlib import Path

from tests.conftest import ROOT
from tests.fuzz.families import FAMILIES, prepare_seeds
from tests.fuzz.harness import Failure, WorkerPool, collect_cases
from tests.fuzz_inputs import Case, write_files

# Which parallel branch owns a cause, by the file it escaped from (else by the family of the case).
_OWNERS = (("compiler/frontend", "frontend-robust"), ("codesign/accuracy", "frontend-robust"),
           ("codesign/sweep", "sweep-robust"), ("hw/targets", "cli-robust"), ("codesign/cli", "cli-robust"),
           ("compiler/pipeline", "cli-robust"))
_FAMILY_OWNERS = {"onnx-bytes": "frontend-robust", "onnx-proto": "frontend-robust", "npz": "frontend-robust",
                  "sweep": "sweep-robust"}


def _size(case: Case) -> int:
    return sum(len(v) for v in case.files().values()) + sum(len(a) for a in case.argv)


def _owner(failure: Failure) -> str:
    for prefix, owner in _OWNERS:
        if f" at {prefix}" in failure.signature:
            return owner
    return _FAMILY_OWNERS.get(failure.case.family, "cli-robust")


def verify(repro: Path, out: Path, timeout: float = 120.0) -> None:
    """Run every reproducer's ``run.sh`` in a fresh process and append what it did to ``out``: a failure that only
    shows after other cases ran in the same worker would not reproduce here."""
    lines = ["", "## Reproducers re-run in fresh processes", "", "| class | exit | last stderr line |",
             "| --- | --- | --- |"]
    for folder in sorted(p for p in repro.iterdir() if (p / "run.sh").exists()):
        proc = subprocess.Popen([str(folder / "run.sh")], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                text=True, errors="replace", start_new_session=True)
        try:
            stdout, stderr = proc.communicate(timeout=timeout)
            tail = [ln for ln in stderr.splitlines() if ln.strip()]
            exit_line = stdout.strip().splitlines()[-1] if stdout.strip() else "?"
            shown = " ".join(tail[-1].split())[:160].replace("|", "/") if tail else ""
            lines.append(f"| {folder.name} | {exit_line.removeprefix('exit ')} | `{shown}` |")
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)  # the shell and the python under it
            proc.communicate()
            lines.append(f"| {folder.name} | still running after {timeout:.0f} s (killed) | |")
        print(lines[-1], flush=True)
    with open(out, "a") as f:
        f.write("\n".join(lines) + "\n")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", required=True, help="markdown file to write")
    parser.add_argument("--repro", required=True, help="folder for one reproducer per class (replaced)")
    parser.add_argument("--scale", type=float, default=1.0, help="multiply every family's CI case count")
    parser.add_argument("--families", default=",".join(FAMILIES))
    parser.add_argument("--verify-only", action="store_true",
                        help="only re-run the reproducers already in --repro and append the results to --out")
    args = parser.parse_args()
    if args.verify_only:
        verify(Path(args.repro), Path(args.out))
        return

    seeds = Path(tempfile.mkdtemp(prefix="codesign-fuzz-seeds-"))
    prepare_seeds(seeds)
    failures: list[Failure] = []
    counts: dict[str, tuple[int, dict, float]] = {}
    with WorkerPool() as pool:
        for family in args.families.split(","):
            strategy, default = FAMILIES[family]
            cases = collect_cases(strategy, max(1, round(default * args.scale)))
            start = time.perf_counter()
            outcome = pool.run(cases)
            counts[family] = (outcome.cases, outcome.exits, time.perf_counter() - start)
            failures += outcome.failures
            print(f"{family}: {outcome.cases} cases, {len(outcome.failures)} failures, exits {outcome.exits}",
                  flush=True)
    shutil.rmtree(seeds, ignore_errors=True)

    groups: dict[tuple[str, str], list[Failure]] = defaultdict(list)
    for f in failures:
        groups[(f.kind, f.signature)].append(f)
    repro = Path(args.repro)
    shutil.rmtree(repro, ignore_errors=True)
    commit = subprocess.run(["git", "-C", str(ROOT), "rev-parse", "--short", "HEAD"], capture_output=True, check=False,
                            text=True).stdout.strip()
    total = sum(c for c, _, _ in counts.values())
    failing_cases = len({id(f.case) for f in failures})
    kinds = Counter(k for k, _ in groups)
    lines = ["# codesign CLI fuzz catalogue", "",
             f"Commit {commit} of branch fuzz, {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}; "
             f"`python -m tests.fuzz.catalogue --scale {args.scale:g}` (the CI budget is scale 1).", "",
             f"**{total} cases, {failing_cases} failing, {len(groups)} failure classes** "
             f"({', '.join(f'{v} {k}' for k, v in kinds.most_common())}).", "",
             "| family | cases | exits | wall s |", "| --- | ---: | --- | ---: |"]
    lines += [f"| {fam} | {c} | {', '.join(f'{k}: {v}' for k, v in sorted(ex.items()))} | {sec:.0f} |"
              for fam, (c, ex, sec) in counts.items()]
    lines += ["", "Each class: its smallest reproducer. Inputs are in the repro folder named; run its `run.sh` "
              "from anywhere (it runs `python -m codesign` in that folder, as the suite does). Cases are relative to "
              "the folder: `in/` holds the inputs, `out/` the requested outputs, `sentinel.txt` must not change.", ""]
    limit_kb = int(float(os.environ.get("CODESIGN_FUZZ_MEM_GB", "4")) * 2**20)
    order = sorted(groups.items(), key=lambda kv: (_owner(kv[1][0]), kv[0][0], -len(kv[1])))
    for n, ((kind, sig), group) in enumerate(order, 1):
        smallest = min(group, key=lambda f: _size(f.case))
        folder = repro / f"{n:03d}"
        write_files(smallest.case, folder)
        argv = " ".join(shlex.quote(a) for a in smallest.case.argv)
        # The workers' address-space limit, so a memory blow-up fails here too instead of calling the OOM killer.
        (folder / "run.sh").write_text(f"#!/bin/sh\nulimit -v {limit_kb} && cd \"$(dirname \"$0\")\" && "
                                       f"PYTHONPATH={ROOT} {ROOT}/.venv/bin/python -m codesign {argv}\n"
                                       "echo \"exit $?\"\n")
        (folder / "run.sh").chmod(0o755)
        families = Counter(f.case.family for f in group)
        lines += [f"## {n}. {kind}: {sig}", "",
                  f"- owner: {_owner(smallest)}; {len(group)} failing cases "
                  f"({', '.join(f'{k} {v}' for k, v in families.items())})",
                  f"- argv: `codesign {argv}`",
                  f"- input: {smallest.case.note[:600]}",
                  f"- reproducer: `{folder}/run.sh`",
                  f"- result: `{' '.join(smallest.detail.split())[:500]}`", ""]
    Path(args.out).write_text("\n".join(lines) + "\n")
    print(f"{total} cases, {failing_cases} failing, {len(groups)} classes -> {args.out}")
    verify(repro, Path(args.out))


if __name__ == "__main__":
    main()
