"""The calibration cache (compiler/calibration_cache.py): a hit gives the very model a miss gives, anything that
changes calibration misses, and nothing a caller does to what it got changes the cache. Checked by state (the
cache's counts, the IR, the weights, the report), never by timing."""

from __future__ import annotations

import json
from typing import Any

import numpy as np
import onnx
from onnx import numpy_helper
from xdsl.dialects.builtin import ModuleOp

from codesign.api import compile
from compiler.calibration_cache import CALIBRATIONS, Calibration, CalibrationCache, calibration_key, value_order
from compiler.pipeline import CompileResult
from tests.conftest import model_path

IVIT: dict[str, Any] = {"quant": "int8", "softmax": "shiftmax", "gelu": "shiftgelu", "layernorm": "ilayernorm"}


def _state(result: CompileResult) -> tuple[str, dict[str, tuple[str, tuple[int, ...], bytes]], str]:
    """Everything a compile produced that calibration could change: the IR, every weight (quantized codes,
    scales, multipliers) byte for byte, and the whole report."""
    weights = {k: (np.asarray(v).dtype.str, np.asarray(v).shape, np.asarray(v).tobytes())
               for k, v in result.env.weights.items()}
    return str(result.module), weights, json.dumps(result.report, sort_keys=True, default=repr)


def _counts() -> tuple[int, int, int]:
    info = CALIBRATIONS.cache_info()
    return info.hits, info.misses, info.currsize


def _vit_data(seed: int = 0, count: int = 2) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    return {"pixel_values": rng.standard_normal((count, 1, 3, 32, 32)).astype(np.float32)}


def test_a_hit_gives_the_model_a_miss_gives() -> None:
    CALIBRATIONS.cache_clear()
    cold = compile(model_path("vit_tiny.onnx"), **IVIT)
    assert _counts() == (0, 1, 1)
    warm = compile(model_path("vit_tiny.onnx"), target="fpga-zcu102", **IVIT)  # another target: same calibration
    assert _counts() == (1, 1, 1)
    again = compile(model_path("vit_tiny.onnx"), **IVIT)
    assert _counts() == (2, 1, 1)
    assert _state(again) == _state(cold)
    CALIBRATIONS.cache_clear()
    assert _state(compile(model_path("vit_tiny.onnx"), target="fpga-zcu102", **IVIT)) == _state(warm)
    assert _counts() == (0, 1, 1)


def test_a_hit_keeps_rows_observer_ranges_and_masks() -> None:
    """SmoothQuant and GPTQ fit on the cached rows, the percentile observer has its own ranges, an attention mask
    drops padding rows: all of it comes back the same."""
    CALIBRATIONS.cache_clear()
    rng = np.random.default_rng(1)
    ids = rng.integers(0, 1000, (3, 1, 16)).astype(np.int64)
    mask = np.ones_like(ids)
    mask[1, 0, 11:] = 0
    data = {"input_ids": ids, "attention_mask": mask, "token_type_ids": np.zeros_like(ids)}
    choices: dict[str, Any] = {"quant": "int8", "balance": "smoothquant", "observer": "percentile",
                               "weight-rounding": "gptq", "gelu": "shiftgelu"}
    cold = compile(model_path("bert_tiny.onnx"), calibrate=data, **choices)
    warm = compile(model_path("bert_tiny.onnx"), calibrate={k: v.copy() for k, v in data.items()}, **choices)
    assert _counts() == (1, 1, 1)
    assert _state(warm) == _state(cold)


def test_other_samples_options_or_weights_miss() -> None:
    CALIBRATIONS.cache_clear()
    vit = model_path("vit_tiny.onnx")
    base = compile(vit, calibrate=_vit_data(), **IVIT)
    assert _counts() == (0, 1, 1)
    changed = _vit_data()
    changed["pixel_values"][1, 0, 2, 31, 31] += 1e-3  # one input element of one sample
    compile(vit, calibrate=changed, **IVIT)
    assert _counts() == (0, 2, 2)
    compile(vit, calibrate=_vit_data(count=3), **IVIT)  # the same two samples and one more
    assert _counts() == (0, 3, 3)
    compile(vit, calibrate=_vit_data(), observer="mse", **IVIT)  # another calibration option
    assert _counts() == (0, 4, 4)
    compile(vit, calibrate=_vit_data(), **{**IVIT, "gelu": "ibert"})  # another module before quantize
    assert _counts() == (0, 5, 5)
    proto = onnx.load(str(vit))
    init = max(proto.graph.initializer, key=lambda t: int(np.prod(t.dims)))
    w = numpy_helper.to_array(init).copy()
    w.flat[0] = np.nextafter(w.flat[0], np.float32(np.inf))  # one weight, one ulp
    init.CopyFrom(numpy_helper.from_array(w, init.name))
    other = compile(proto, calibrate=_vit_data(), **IVIT)
    assert _counts() == (0, 6, 6)
    compile(vit, calibrate=_vit_data(), **IVIT)  # and the first one is still there
    assert _counts() == (1, 6, 6)
    assert other.report is not None and base.report is not None


def _module_and_values() -> tuple[ModuleOp, dict[str, np.ndarray], list]:
    result = compile(model_path("vit_tiny.onnx"), stop_after="canonicalize")
    module = result.module
    return module, result.env.weights, value_order(module)


def test_the_key_hashes_weights_samples_names_and_options() -> None:
    module, weights, _ = _module_and_values()
    data = {"arg0": np.ones((2, 1, 3, 32, 32), np.float32)}
    key = calibration_key(module, weights, ["arg0"], data, {"percentile": 100.0})
    assert key == calibration_key(module, dict(weights), ["arg0"], {"arg0": data["arg0"].copy()},
                                  {"percentile": 100.0})
    name = next(iter(weights))
    bumped = {**weights, name: weights[name] + 1}
    assert key != calibration_key(module, bumped, ["arg0"], data, {"percentile": 100.0})
    assert key != calibration_key(module, weights, ["arg0"], {"arg0": data["arg0"][:1]}, {"percentile": 100.0})
    assert key != calibration_key(module, weights, ["x"], {"x": data["arg0"]}, {"percentile": 100.0})
    assert key != calibration_key(module, weights, ["arg0"], data, {"percentile": 99.9})
    assert key != calibration_key(module, weights, ["arg0"], {"arg0": data["arg0"].astype(np.float64)},
                                  {"percentile": 100.0})
    assert calibration_key(module, weights, ["arg0"], {"arg0": np.array([{}], dtype=object)}, {}) is None


def test_what_a_caller_edits_never_reaches_the_cache() -> None:
    module, _, values = _module_and_values()
    a, b = values[0], values[3]
    cache = CalibrationCache()
    ranges: dict[Any, Any] = {a: 2.0, b: np.float32(0.5)}  # a NumPy scalar as an observer may give
    found = Calibration(ranges=ranges, ranges8={b: 0.25},
                        channels={b: np.arange(4.0)}, rows={a: [np.ones((2, 3), np.float32)]})
    assert cache.put("k", module, found)
    found.channels[b][0] = 99.0  # the caller's own arrays are not the cache's
    got = cache.get("k", module)
    assert got is not None and got.ranges == {a: 2.0, b: np.float32(0.5)} and got.ranges8 == {b: 0.25}
    assert type(got.ranges[b]) is np.float32  # the number as it came, not a converted one
    got.ranges[a] = -1.0
    got.channels[b][:] = -1.0
    got.rows[a][0][:] = -1.0
    got.rows[a].append(np.zeros(1))
    again = cache.get("k", module)
    assert again is not None and again.ranges[a] == 2.0
    np.testing.assert_array_equal(again.channels[b], np.arange(4.0))
    assert len(again.rows[a]) == 1 and (again.rows[a][0] == 1).all()


def test_an_entry_that_does_not_fit_the_module_is_a_miss_not_an_error() -> None:
    small, _, values = _module_and_values()  # canonicalized: fewer values than the import's module
    big = compile(model_path("vit_tiny.onnx"), stop_after="import").module
    cache = CalibrationCache()
    last = value_order(big)[-1]
    assert len(values) < len(value_order(big))
    assert cache.put("k", big, Calibration(ranges={last: 1.0}, ranges8={}, channels={}, rows={}))
    assert cache.get("k", small) is None  # positions past the module's values: ignored
    assert cache.cache_info()[:2] == (0, 1)
    assert not cache.put("j", small, Calibration(ranges={last: 1.0}, ranges8={}, channels={}, rows={}))
    assert cache.get("j", small) is None and cache.cache_info().currsize == 1


def test_entries_are_bounded_by_bytes_least_recently_used_first_out() -> None:
    module, _, values = _module_and_values()
    v = values[1]
    cache = CalibrationCache(max_bytes=2 * 800)

    def entry() -> Calibration:
        return Calibration(ranges={v: 1.0}, ranges8={}, channels={v: np.zeros(100)}, rows={})  # 800 bytes

    assert cache.put("a", module, entry()) and cache.put("b", module, entry())
    assert cache.get("a", module) is not None  # a is now the most recent
    assert cache.put("c", module, entry())
    assert cache.get("b", module) is None and cache.get("a", module) is not None
    assert cache.cache_info().currsize == 2 and cache.cache_info().bytes == 1600
    assert not cache.put("big", module, Calibration(ranges={v: 1.0}, ranges8={}, channels={v: np.zeros(1000)},
                                                    rows={}))
    cache.cache_clear()
    assert cache.cache_info() == (0, 0, 0, 0)

