"""Accuracy of design points: measured once per (model, compile choices), not once per point.

A sweep with ``inputs:`` runs its samples through the functional simulator and ONNX Runtime FP32 exactly as
``codesign compile --inputs`` does (``codesign.api.run_compile``; tests compare the sections), and attaches the flat
``accuracy.*`` metrics (``metrics.accuracy_metrics``) to every point with those choices. One thing differs: the ONNX
Runtime reference outputs (and intermediate tensors) depend only on the model and the samples, so a process computes
them once per model and reuses them for every set of choices (for ViT-Base on two images they are about half the cost).
Hardware axes do not change the numbers (see ``spec.py``), so the compile that measures them uses the sweep's first
target with its fixed ``set:`` overrides only: the result does not depend on which point asked first.

The runner asks for a combination's accuracy once (``AccuracyRequest``), stores the result in the sweep's database
(``Store.put_accuracy``) and holds that combination's points until it is back; a resumed sweep reads it from there.
Workers also keep results per process, for callers that measure directly.
"""

from __future__ import annotations

import json
import time
from collections import OrderedDict
from dataclasses import dataclass
from typing import Any

from codesign.sweep.metrics import accuracy_metrics
from hw.errors import InputError

__all__ = ["AccuracyRequest", "accuracy_key", "measure_accuracy", "clear_accuracy_cache"]

_CACHE_SIZE = 256  # results are a few KB each
_CACHE: OrderedDict[AccuracyRequest, dict[str, Any]] = OrderedDict()
# The last model's ONNX Runtime reference: ViT-Base's 151 intermediate tensors on two images are ~300 MB.
_REFERENCE: dict[tuple[Any, ...], list[Any]] = {}


def accuracy_key(model: str, choices: tuple[tuple[str, str], ...]) -> str:
    """The identity of a measurement within one sweep: canonical JSON of the model path and the compile choices
    (everything else that decides the numbers is fixed by the sweep's spec hash)."""
    return json.dumps({"model": model, "choices": dict(choices)}, sort_keys=True, separators=(",", ":"))


@dataclass(frozen=True)
class AccuracyRequest:
    """One measurement: the compile (model, target, fixed overrides, choices, shapes, calibration .npz) and the
    samples (``inputs`` .npz) it runs."""

    key: str
    model: str
    target: str
    inputs: str
    overrides: tuple[tuple[str, str], ...] = ()
    choices: tuple[tuple[str, str], ...] = ()
    shapes: tuple[tuple[str, tuple[int, ...]], ...] = ()
    calibrate: str | None = None


def measure_accuracy(request: AccuracyRequest) -> dict[str, Any]:
    """``{"key", "metrics", "section", "error", "seconds"}``: the flat ``accuracy.*`` metrics and the report's whole
    accuracy section (per output, per layer SQNR), or ``error``, the one line of an InputError. ``seconds`` is the
    wall time of the measurement (0 when this process had it already)."""
    cached = _CACHE.get(request)
    if cached is not None:
        _CACHE.move_to_end(request)
        return {**cached, "seconds": 0.0}
    start = time.perf_counter()
    result: dict[str, Any] = {"key": request.key, "metrics": {}, "section": None, "error": None}
    try:
        result["section"] = _section(request)
        result["metrics"] = accuracy_metrics(result["section"])
    except InputError as err:
        result["error"] = str(err)
    result["seconds"] = time.perf_counter() - start
    _CACHE[request] = result
    while len(_CACHE) > _CACHE_SIZE:
        _CACHE.popitem(last=False)
    return result


def _section(request: AccuracyRequest) -> dict[str, Any]:
    """``report["accuracy"]`` of ``codesign.api.run_compile`` with ``inputs``, the ONNX Runtime reference reused."""
    from codesign.accuracy import reference_outputs
    from codesign.api import compile_options, run_compile

    def reference(tensors: tuple[str, ...], samples: dict[str, Any]) -> list[Any]:
        key = (request.model, request.shapes, request.inputs, tensors)
        if key not in _REFERENCE:
            _REFERENCE.clear()
            _REFERENCE[key] = reference_outputs(request.model, samples, tensors)
        return _REFERENCE[key]

    options = compile_options(request.target, dict(request.overrides), dict(request.shapes), batch=None,
                              **dict(request.choices))  # pyright: ignore[reportArgumentType] (str choices by name)
    result, _ = run_compile(request.model, options, inputs=request.inputs, calibrate=request.calibrate,
                            reference=reference)
    assert result.report is not None
    return result.report["accuracy"]


def clear_accuracy_cache() -> None:
    """Drop this process's measured results and reference outputs (tests; memory)."""
    _CACHE.clear()
    _REFERENCE.clear()
