"""Golden IR tests (FileCheck style): every tests/filecheck/<pass>.mlir runs its `// RUN:` line through `codesign opt`
and the `filecheck` package, like MLIR's lit tests. The file name is the pass name."""

from __future__ import annotations

import os
import shlex
import subprocess
import sys
from pathlib import Path

import pytest

HERE = Path(__file__).resolve().parent / "filecheck"
BIN = Path(sys.executable).parent
CASES = sorted(HERE.glob("*.mlir"))


def test_every_filecheck_file_names_a_registered_pass():
    from compiler.passes import PASSES

    assert CASES
    for case in CASES:
        assert case.stem in PASSES, f"{case.name}: no pass named {case.stem}"


@pytest.mark.parametrize("case", CASES, ids=[c.stem for c in CASES])
def test_filecheck(case: Path):
    run = next(line for line in case.read_text().splitlines() if line.startswith("// RUN:"))
    command = run.removeprefix("// RUN:").strip().replace("%s", shlex.quote(str(case)))
    env = dict(os.environ, PATH=f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}")
    result = subprocess.run(command, shell=True, capture_output=True, text=True, env=env, timeout=120)
    assert result.returncode == 0, f"{case.name}: {command}\n{result.stdout}\n{result.stderr}"
