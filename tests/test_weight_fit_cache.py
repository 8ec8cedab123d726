"""The weight-fit cache (compiler/weight_fit_cache.py): a repeated compile gets the very weights a first one fits,
anything a fit depends on changes the key, and nothing a caller does to what it got changes the cache. Checked by
state (the cache's counts, the IR, the weights, the report), never by timing."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest

from codesign.api import compile
from compiler.calibration_cache import CALIBRATIONS
from compiler.weight_fit_cache import WEIGHT_FITS, fit_key, fit_static_weight
from tests.conftest import model_path
from tests.test_calibration_cache import IVIT, _state

SETUPS: dict[str, tuple[str, dict[str, Any]]] = {
    "ivit": ("vit_tiny.onnx", IVIT),
    "w4a8-groups-gptq": ("bert_tiny.onnx", {"quant": "w4a8", "weight-group": "32", "weight-rounding": "gptq"}),
    "per-token-smoothquant": ("bert_tiny.onnx", {"quant": "int8", "act-granularity": "per-token",
                                                 "balance": "smoothquant"}),
}


@pytest.mark.parametrize("setup", list(SETUPS))
def test_a_hit_gives_the_weights_a_miss_gives(setup: str) -> None:
    model, choices = SETUPS[setup]
    cold = compile(model_path(model), **choices)
    fits = WEIGHT_FITS.cache_info()
    assert fits.hits == 0 and fits.misses == fits.currsize > 0 and fits.bytes > 0
    CALIBRATIONS.cache_clear()  # calibrated again, fitted from the cache
    warm = compile(model_path(model), target="fpga-zcu102", **choices)
    again = WEIGHT_FITS.cache_info()
    assert again.hits == fits.misses and again.misses == fits.misses and again.currsize == fits.currsize
    assert _state(compile(model_path(model), **choices)) == _state(cold)
    WEIGHT_FITS.cache_clear()
    assert _state(compile(model_path(model), target="fpga-zcu102", **choices)) == _state(warm)


def test_the_key_hashes_the_weight_its_row_steps_rows_and_widths() -> None:
    rng = np.random.default_rng(0)
    w = rng.standard_normal((64, 16)).astype(np.float32)
    steps = rng.uniform(0.5, 2.0, 64)
    rows = rng.standard_normal((8, 64))
    key = fit_key(w, steps, 8, 0, rows, 8)
    assert key == fit_key(w.copy(), steps.copy(), 8, 0, rows.copy(), 8)
    bumped = w.copy()
    bumped.flat[5] = np.nextafter(bumped.flat[5], np.float32(np.inf))  # one weight, one ulp
    others = [fit_key(bumped, steps, 8, 0, rows, 8), fit_key(w, None, 8, 0, rows, 8),
              fit_key(w, steps * 2, 8, 0, rows, 8), fit_key(w, steps, 8, 0, None, 8),
              fit_key(w, steps, 4, 0, rows, 8), fit_key(w, steps, 8, 32, rows, 8), fit_key(w, steps, 8, 0, rows, 9),
              fit_key(w.astype(np.float64), steps, 8, 0, rows, 8), fit_key(w.reshape(16, 64), steps, 8, 0, rows, 8)]
    assert key not in others and len(set(others)) == len(others)
    assert fit_key(np.array([{}], dtype=object), None, 8, 0, None, 8) is None


def test_what_a_caller_edits_never_reaches_the_cache() -> None:
    w = np.random.default_rng(1).standard_normal((32, 8)).astype(np.float32)
    first = fit_static_weight(w, None, 8, 0, None, 8)
    assert WEIGHT_FITS.cache_info()[:3] == (0, 1, 1)
    assert first.codes.dtype == np.int8 and not first.codes.flags.writeable
    with pytest.raises(ValueError):
        first.codes[0, 0] = 0
    scale = first.scale.copy()
    first.scale[:] = -1.0  # the caller's own steps
    second = fit_static_weight(w, None, 8, 0, None, 8)
    assert WEIGHT_FITS.cache_info()[:3] == (1, 1, 1)
    np.testing.assert_array_equal(second.scale, scale)
    np.testing.assert_array_equal(second.codes, first.codes)
    # the codes and steps are those of the float64 fit: |w - codes * scale| within half a step per column
    assert (np.abs(w - second.codes * second.scale) <= second.scale / 2 + 1e-7).all()
