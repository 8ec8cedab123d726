"""Shared fixtures: the example models built by `make examples` and their manifest; the hypothesis profile.

Under CI (``CI`` set, as ``.ci/run`` runs) hypothesis draws the same examples on every run (``derandomize``): a
property test that found a new counterexample by chance would block an unrelated submission. Local runs keep
drawing new examples, which is how such bugs are found (the scheduler's double finish was).
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
from hypothesis import settings

settings.register_profile("ci", derandomize=True, database=None)
if os.environ.get("CI"):
    settings.load_profile("ci")

ROOT = Path(__file__).resolve().parent.parent
MODELS = ROOT / "examples" / "models"
DATA = ROOT / "examples" / "data"


def _require(path: Path) -> Path:
    if not path.exists():
        pytest.fail(f"{path} is missing: run `make examples` first (make test does it)")
    return path


@pytest.fixture(scope="session")
def models_dir() -> Path:
    """examples/models, built by `make examples`."""
    return _require(MODELS / "manifest.json").parent


@pytest.fixture(scope="session")
def manifest(models_dir: Path) -> dict:
    """examples/models/manifest.json: per-model family and config numbers."""
    return json.loads((models_dir / "manifest.json").read_text())


@pytest.fixture(scope="session")
def data_dir() -> Path:
    """examples/data, built by `make examples`."""
    return _require(DATA)


def model_path(name: str) -> Path:
    """Path of an example model, failing clearly when it was not built."""
    return _require(MODELS / name)


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption("--vcd", default=None, metavar="PATTERN",
                     help="write waveforms for RTL tests whose id contains PATTERN ('1' for all); see docs/RTL.md")


def pytest_configure(config: pytest.Config) -> None:
    pattern = config.getoption("--vcd")
    if pattern:
        import os

        os.environ["CODESIGN_VCD"] = pattern


@pytest.fixture(autouse=True)
def _calibration_cache_empty():
    """Every test calibrates and fits its weights as if first in its process: the process-wide calibration and
    weight-fit caches (compiler/calibration_cache.py, compiler/weight_fit_cache.py) would otherwise let one test's
    compile skip the memory refusals, spies and patches another test puts on the float runs and the fits.
    tests/test_calibration_cache.py tests the caches themselves."""
    from compiler.calibration_cache import CALIBRATIONS
    from compiler.weight_fit_cache import WEIGHT_FITS

    CALIBRATIONS.cache_clear()
    WEIGHT_FITS.cache_clear()
    yield

