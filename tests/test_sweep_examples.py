"""The sweeps shipped in examples/sweeps/ validate (those using compile options wait for the areas that add them)."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest

from codesign.sweep.spec import load_sweep
from hw.errors import InputError

ROOT = Path(__file__).resolve().parents[1]
EXAMPLES = sorted((ROOT / "examples" / "sweeps").glob("*.yaml"))


def write_sweep_inputs() -> Path:
    """examples/data/vit_base_images.npz, written (once) by examples/make_sweep_inputs.py."""
    spec = importlib.util.spec_from_file_location("make_sweep_inputs", ROOT / "examples" / "make_sweep_inputs.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.write_vit_base_images()


@pytest.mark.parametrize("path", EXAMPLES, ids=[p.stem for p in EXAMPLES])
def test_example_sweep_validates(path, monkeypatch):
    monkeypatch.chdir(ROOT)
    models = [ROOT / "examples" / "models" / name for name in ("vit_base.onnx", "m3vit.onnx")]
    if not all(m.exists() for m in models):
        pytest.fail("run `make examples` first")
    write_sweep_inputs()
    try:
        sweep = load_sweep(path)
    except InputError as err:
        if "unknown compile option" in str(err):
            pytest.fail(f"compile option not registered: {err}")
        raise
    assert sweep.total > 0 and sweep.objectives


def test_vit_base_example_measures_accuracy(monkeypatch):
    monkeypatch.chdir(ROOT)
    write_sweep_inputs()
    sweep = load_sweep(ROOT / "examples" / "sweeps" / "vit_base_u280.yaml")
    assert sweep.inputs == str(ROOT / "examples" / "data" / "vit_base_images.npz")
    assert [c.name for c in sweep.constraints] == ["fits", "accuracy.cosine >= 0.99"]
    assert sweep.total == 4 * 4 * 5 * 3 * 2
