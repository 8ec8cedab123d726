"""Evaluate design points: the same numbers as ``codesign compile``, without redoing work that hardware does not change.

A compile is ``import -> canonicalize -> numerics / structure passes -> fuse -> tile -> schedule -> report``. Each
worker process keeps, per (model, compile choices, shapes), the module after the hardware-independent prefix (a
``Prefix``): the passes before the first one that reads the target. Which passes read it is found by running them
against a target that raises when touched (``set-attention`` does for flash and edge-moe: lanes and tile sizes are
target keys). The module after ``fuse`` is kept too when fuse reads no target.
A point then costs, from the fastest tier down:

``plan``      price the cached hardware plan of the post-fuse module (``compiler.schedule.plan``: lowering reads no
              target, so one plan serves every design point; each distinct work item is priced once), schedule,
              report: no clone, no IR writes.
``prefix``    clone the prefix module and run fuse / tile / schedule / report for real.
``full``      the whole pipeline, when a prefix pass turned out to read the target (then no prefix is sound).

A schedule is reused when tasks and machine are identical (e.g. a clock-only change). The ``plan`` tier is checked
against the ``prefix`` tier on the first point of every (prefix, target kind) in each process; if it differs it is
dropped for that prefix. Results are therefore exactly what a fresh compile reports (tests compare report dicts).

Everything here runs in worker processes (local pool or Dask); caches are per process.
"""

from __future__ import annotations

import copy
import time
from collections import OrderedDict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any, cast

import yaml
from pydantic import ValidationError

from codesign.sweep.metrics import fit_violation, metrics_from_report
from compiler.context import CompileEnv, make_context
from compiler.schedule.lower import plan_module
from compiler.schedule.mapping import mapping_objective
from compiler.schedule.plan import Plan, machine, price
from compiler.summary import build_report, report_lane_units
from hw.errors import InputError
from hw.models import build_model
from hw.models.base import AcceleratorModel
from hw.perf.scheduler import schedule
from hw.targets import load_target
from hw.targets.loader import _set, _split_key, load_yaml  # noqa: PLC2701 - the loader's own override semantics
from hw.targets.schema import TARGET_KINDS, Target

__all__ = ["PointRequest", "evaluate_chunk", "evaluate_report", "fast_target", "clear_caches",
           "HARDWARE_PASSES"]

#: Passes that read the target. The cached prefix ends before the first of them, or earlier, at the first pass
#: found to read the target (e.g. set-attention sizing flash tiles from the target's buffers).
HARDWARE_PASSES = ("fuse", "tile", "schedule")
_PLAN_PASSES = ["fuse", "tile", "schedule"]  # the plan tier replays exactly this tail
_PREFIX_CACHE_SIZE = 6  # ViT-Base prefixes hold ~350 MB of weights each
_SCHEDULE_MEMO_SIZE = 512


@dataclass(frozen=True)
class PointRequest:
    """One design point: model path, target name or path, target overrides and compile choices (sorted pairs)."""

    key: str
    model: str
    target: str
    overrides: tuple[tuple[str, str], ...] = ()
    choices: tuple[tuple[str, str], ...] = ()
    shapes: tuple[tuple[str, tuple[int, ...]], ...] = ()
    calibrate: str | None = None  # .npz of calibration samples for quantization (codesign compile --calibrate)
    inputs: str | None = None  # .npz of samples (codesign compile --inputs): calibrate unless ``calibrate`` is given


# --- Targets ----------------------------------------------------------------------------------------------------------

_BASE_TARGETS: dict[str, dict[str, Any]] = {}


def fast_target(name: str, overrides: Sequence[tuple[str, str]]):
    """``load_target(name, dict(overrides))`` without re-reading YAML: the base target's validated data, the
    overrides applied the loader's way, validated once. Equal to ``load_target``'s result (tested); on any
    validation problem ``load_target`` itself runs so the message is the loader's."""
    base = _BASE_TARGETS.get(name)
    if base is None:
        base = _BASE_TARGETS[name] = load_target(name).model_dump()
    data = copy.deepcopy(base)
    try:
        for key, value in overrides:
            _set(data, _split_key(key), load_yaml(value, f"--set {key}"), f"--set {key}={value}")
        return TARGET_KINDS[data["kind"]].model_validate(data)
    except (ValidationError, InputError, KeyError, TypeError, yaml.YAMLError):
        return load_target(name, dict(overrides))


# --- The prefix and its plan --------------------------------------------------------------------------------------


class _TargetUsed(Exception):
    """A pass in the prefix read the target: the prefix is not hardware-independent."""


class _NoTarget:
    def __getattr__(self, name: str) -> Any:
        raise _TargetUsed(name)


def _no_target() -> tuple[Target, AcceleratorModel]:
    """A target and model that raise ``_TargetUsed`` on any use, typed as what they stand in for."""
    return cast(Target, _NoTarget()), cast(AcceleratorModel, _NoTarget())


@dataclass
class Prefix:
    """The module after the hardware-independent passes of one (model, choices, shapes), and what it needs.

    ``plan`` is the hardware plan of the module after ``fuse`` (None when fuse reads the target or the tail is not
    fuse/tile/schedule); ``verified`` maps a tier to the target kinds it was checked on, ``broken`` lists the
    tiers that failed a check."""

    options: Any  # CompileOptions
    module: Any | None  # None: no sound prefix, compile in full
    imported: Any
    env: CompileEnv | None
    hw_passes: list[Any]
    plan: Plan | None = None
    verified: dict[str, set[str]] = field(default_factory=dict)
    broken: set[str] = field(default_factory=set)


_PREFIXES: OrderedDict[tuple[Any, ...], Prefix] = OrderedDict()
_SCHEDULES: OrderedDict[tuple[Any, ...], Any] = OrderedDict()


def clear_caches() -> None:
    """Drop every per-process cache (tests; memory), measured accuracy and calibrations included."""
    from codesign.sweep.accuracy import clear_accuracy_cache
    from compiler.calibration_cache import CALIBRATIONS
    from compiler.weight_fit_cache import WEIGHT_FITS

    _PREFIXES.clear()
    _SCHEDULES.clear()
    _BASE_TARGETS.clear()
    clear_accuracy_cache()
    CALIBRATIONS.cache_clear()
    WEIGHT_FITS.cache_clear()


def _options(point: PointRequest):
    from codesign.api import compile_options

    # A sweep point is one sample per inference: its choices are compiler choices, never ``batch``.
    # the choices are strings by name; none is named decode_tokens (a sweep prices one inference)
    return compile_options(point.target, dict(point.overrides), dict(point.shapes), batch=None,
                           **dict(point.choices))  # pyright: ignore[reportArgumentType]


def _prefix(point: PointRequest) -> Prefix:
    key = (point.model, point.choices, point.shapes, point.calibrate, point.inputs)
    cached = _PREFIXES.get(key)
    if cached is not None:
        _PREFIXES.move_to_end(key)
        return cached
    from codesign.options import middle_passes
    from compiler.pipeline import run_pipeline

    options = _options(point)
    passes = middle_passes(options)
    env = _start_env(point, options)
    env.target, env.model = _no_target()
    try:
        result = run_pipeline(point.model, options, middle=[], env=env)
    except _TargetUsed:  # the import itself read the target: nothing can be shared
        prefix = Prefix(options=options, module=None, imported=None, env=None, hw_passes=passes)
    else:
        # The prefix ends at the first pass that reads the target (fuse at the latest): found by running the
        # passes against a target that raises when touched, each on a copy so a pass stopped half-way leaves
        # nothing behind.
        module, ctx, split = result.module, make_context(result.env), 0
        for p in passes:
            if p.name in HARDWARE_PASSES:
                break
            trial = module.clone()
            try:
                p.apply(ctx, trial)
            except _TargetUsed:
                break
            trial.verify()
            module, split = trial, split + 1
        prefix = Prefix(options=options, module=module, imported=result.imported, env=result.env,
                        hw_passes=passes[split:])
    if prefix.module is not None and [p.name for p in prefix.hw_passes] == _PLAN_PASSES:
        fused = _fused(prefix)
        if fused is not None:
            prefix.plan = plan_module(fused, getattr(prefix.env, "weights", None))
    _PREFIXES[key] = prefix
    while len(_PREFIXES) > _PREFIX_CACHE_SIZE:
        _PREFIXES.popitem(last=False)
    return prefix


def _start_env(point: PointRequest, options: Any) -> CompileEnv:
    """The env a compile starts from: calibration data as ``codesign compile --inputs / --calibrate`` loads it (the
    inputs calibrate quantization and measure MoE routing unless calibration samples are given)."""
    if point.calibrate is None and point.inputs is None:
        return CompileEnv()
    from codesign.accuracy import prepare_env

    env, _ = prepare_env(point.model, dict(point.shapes), point.inputs, point.calibrate,
                         quantized=options.quantized)
    return env


def _fused(prefix: Prefix) -> Any | None:
    """The prefix module after ``fuse``, or None when fuse reads the target (then it must run per point)."""
    assert prefix.module is not None and prefix.env is not None
    module = prefix.module.clone()
    target, model = _no_target()
    env = CompileEnv(weights=prefix.env.weights, target=target, model=model, options=dict(prefix.env.options))
    try:
        prefix.hw_passes[0].apply(make_context(env), module)
    except _TargetUsed:
        return None
    return module


def _plan_report(prefix: Prefix, target: Any, model: Any) -> dict[str, Any]:
    """The report by the ``plan`` tier: the cached plan priced on ``model``, scheduled (memoised), reported."""
    assert prefix.plan is not None and prefix.env is not None
    options = prefix.env.options
    plans = price(prefix.plan, model, str(options.get("mapping", "search")), mapping_objective(options))
    tasks = [t for plan in plans for t in plan.tasks]
    mach = machine(model)
    memo_key = (id(prefix), tuple(sorted(mach.units.items())), mach.offchip_bytes_per_cycle, mach.double_buffered,
                tuple((t.name, t.unit, t.compute_cycles, t.tiles, t.bytes_in, t.bytes_out, t.deps, t.stream,
                       t.rows, t.block_rows) for t in tasks))
    sched = _SCHEDULES.get(memo_key)
    if sched is None:
        sched = schedule(tasks, mach)
        _SCHEDULES[memo_key] = sched
        while len(_SCHEDULES) > _SCHEDULE_MEMO_SIZE:
            _SCHEDULES.popitem(last=False)
    env = _point_env(prefix, target, model)
    env.plans, env.schedule = plans, sched
    return build_report(env, prefix.imported)


def _point_env(prefix: Prefix, target: Any, model: Any) -> CompileEnv:
    assert prefix.env is not None
    # Report sections written by prefix passes (accuracy ...) are per point: copy so no point sees another's.
    artifacts = {k: (dict(v) if isinstance(v, dict) else v) for k, v in prefix.env.artifacts.items()}
    return CompileEnv(weights=prefix.env.weights, target=target, model=model, options=dict(prefix.env.options),
                      artifacts=artifacts)


def _prefix_report(prefix: Prefix, target: Any, model: Any) -> dict[str, Any]:
    env = _point_env(prefix, target, model)
    ctx = make_context(env)
    assert prefix.module is not None
    module = prefix.module.clone()
    for p in prefix.hw_passes:
        p.apply(ctx, module)
    return build_report(env, prefix.imported, module)


def _full_report(point: PointRequest, target: Any, model: Any) -> dict[str, Any]:
    from codesign.options import middle_passes
    from compiler.pipeline import run_pipeline

    options = _options(point)
    # A preset env skips the fit check: a sweep records non-fitting designs with their numbers.
    env = _start_env(point, options)
    env.target, env.model = target, model
    result = run_pipeline(point.model, options, middle=middle_passes(options), report=build_report, env=env)
    assert result.report is not None
    return result.report


def evaluate_report(point: PointRequest, tier: str | None = None) -> tuple[dict[str, Any], str, Any]:
    """(report, tier used, model) for ``point``; ``tier`` forces one of ``plan`` / ``prefix`` / ``full`` (unchecked;
    for tests and benchmarks). Raises InputError for a bad point."""
    target = fast_target(point.target, point.overrides)
    model = build_model(target)
    if tier == "full":
        return _full_report(point, target, model), "full", model
    prefix = _prefix(point)
    if prefix.module is None:
        return _full_report(point, target, model), "full", model
    if tier == "prefix":
        return _prefix_report(prefix, target, model), tier, model
    if tier == "plan":
        return _plan_report(prefix, target, model), tier, model
    if "plan" not in prefix.broken and prefix.plan is not None:
        try:
            report = _plan_report(prefix, target, model)
        except InputError:
            raise
        except Exception:  # noqa: BLE001 - a plan this tier cannot price is dropped, not trusted
            prefix.broken.add("plan")
        else:
            if target.kind in prefix.verified.get("plan", set()):
                return report, "plan", model
            reference = _prefix_report(prefix, target, model)
            if report == reference:
                prefix.verified.setdefault("plan", set()).add(target.kind)
                return report, "plan", model
            prefix.broken.add("plan")
            return reference, "prefix", model
    return _prefix_report(prefix, target, model), "prefix", model


def evaluate_chunk(points: Iterable[PointRequest]) -> list[dict[str, Any]]:
    """Evaluate points in order; one dict per point: ``key``, ``metrics`` (flat, see ``metrics``), ``fits``,
    ``fit_excess``, ``fit_message``, ``error`` (an InputError's one line, else None), ``tier``, ``seconds``.
    A point that does not fit is still priced (samplers learn from it); the runner marks it infeasible."""
    out = []
    for point in points:
        start = time.perf_counter()
        row: dict[str, Any] = {"key": point.key, "metrics": {}, "fits": False, "fit_excess": 0.0,
                               "fit_message": None, "error": None, "tier": None}
        try:
            report, row["tier"], model = evaluate_report(point)
            # The compiled design's fit: an FPGA's vector lanes hold the units its report lists (compiler/summary.py).
            lane_units = report_lane_units(model, report)
            units = () if lane_units is None else (lane_units,)
            try:
                model.check_fits(*units)
                row["fits"] = True
            except InputError as err:
                row["fit_message"] = str(err)
            row["fit_excess"] = fit_violation(model.resources(*units), row["fits"])
            row["metrics"] = metrics_from_report(report)
        except InputError as err:
            row["error"] = str(err)
        row["seconds"] = time.perf_counter() - start
        out.append(row)
    return out

