"""The sweeps shipped in examples/sweeps/ validate (those using compile options wait for the areas that add them)."""

from __future__ import annotations

from pathlib import Path

import pytest

from codesign.sweep.spec import load_sweep
from hw.errors import InputError

ROOT = Path(__file__).resolve().parents[1]
EXAMPLES = sorted((ROOT / "examples" / "sweeps").glob("*.yaml"))


@pytest.mark.parametrize("path", EXAMPLES, ids=[p.stem for p in EXAMPLES])
def test_example_sweep_validates(path, monkeypatch):
    monkeypatch.chdir(ROOT)
    models = [ROOT / "examples" / "models" / name for name in ("vit_base.onnx", "m3vit.onnx")]
    if not all(m.exists() for m in models):
        pytest.fail("run `make examples` first")
    try:
        sweep = load_sweep(path)
    except InputError as err:
        if "unknown compile option" in str(err):
            pytest.fail(f"compile option not registered: {err}")
        raise
    assert sweep.total > 0 and sweep.objectives
