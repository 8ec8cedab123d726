"""The sweep YAML: schema, loading with line numbers, and the checks that run before any point is evaluated.

A sweep file names models, a base target, the axes of the design space, objectives, constraints and a search
strategy (see ``examples/sweeps/``)::

    models: [examples/models/vit_base.onnx]
    target: fpga-u280
    space:
      gemm.rows: [8, 16, 32, 64]              # any --set key of the base target
      clock_mhz: {min: 150, max: 350, step: 50}
      compile.softmax: [exact, shiftmax]      # any compile option (codesign.options.CHOICES)
      target: [fpga-u280, npu-xdna]           # several targets: every other hardware axis must suit each
    objectives: {latency_ms: min, energy_mj: min}
    constraints: ["fits", "accuracy.cosine >= 0.99"]
    inputs: examples/data/vit_base_images.npz  # optional: samples to measure accuracy on (--inputs)
    calibrate: calibration.npz                # optional: quantization calibration samples (--calibrate)
    shapes: {input_ids: [1, 128]}             # optional: --shape; a symbolic dim by name: {past_sequence_length: 8}
    strategy: grid                            # grid | random | nsga2 | tpe
    budget: 500                               # distinct points, for the non-grid strategies
    seed: 0

``inputs`` follows ``codesign compile --inputs``: an .npz with one array per model input, keyed by the input's name,
shaped [N, *input shape], checked against every model here by codesign.accuracy's own checks. With it, every point
is compiled as ``codesign compile --inputs`` compiles it (the samples also calibrate quantization and measure MoE
routing unless ``calibrate`` is given) and carries the ``accuracy.*`` metrics (codesign/sweep/metrics.py):

``accuracy.cosine``       mean per-row cosine of the first output vs ONNX Runtime FP32 (real tokens only when the
                          model has an ``attention_mask`` input)
``accuracy.cosine_min``   the smallest row cosine
``accuracy.max_abs_err``  max |simulated - FP32|
``accuracy.top1``         top-1 agreement (classifier outputs only)

Accuracy depends on the model and the compile choices, not on hardware axes (the reordered attention kernels that
read target keys are exact rearrangements up to float64 rounding), so it is measured once per (model, compile
choices): on the first target with the fixed ``set:`` overrides, stored with the sweep and attached to every point
with those choices. An objective or constraint on ``accuracy.*`` without ``inputs`` is refused before anything runs.

Every problem is an ``InputError`` naming ``file:line`` and the key path. The YAML is read with the target loader's
line-keeping reader (``hw.targets.loader``), so both kinds of file explain themselves the same way.
"""

from __future__ import annotations

import hashlib
import json
import math
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from codesign.sweep.metrics import Constraint, check_metric_name, is_accuracy_metric, parse_constraint
from compiler.frontend.onnx_loader import check_shape_names
from hw.errors import InputError
from hw.targets import load_target

# The target loader's reader and explainer are reused, not copied: one place decides how YAML errors read.
from hw.targets.loader import _explain, _to_data, compose_yaml  # noqa: PLC2701

__all__ = ["SweepSpec", "Range", "check_range", "Axis", "Sweep", "load_sweep", "parse_sweep", "yaml_scalar",
           "STRATEGIES"]

STRATEGIES = ("grid", "random", "nsga2", "tpe")
Scalar = bool | int | float | str
_MAX_GRID = 1_000_000  # a grid larger than this is a typo in a step, not a plan


class _Strict(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class Range(_Strict):
    """``{min, max, step?, log?}``: ints when min, max (and step) are ints. A grid needs ``step``; the other
    strategies sample the range (log-uniformly with ``log: true``). The schema takes any numbers; ``check_range``
    refuses what no sweep can use (non-finite bounds, a step <= 0, max < min, too many steps) with one line
    naming the key, so none of that reaches ``values()``."""

    min: int | float
    max: int | float
    step: int | float | None = None
    log: bool = False

    @property
    def is_int(self) -> bool:
        """True when every bound is an int (the axis then takes ints)."""
        return all(isinstance(v, int) and not isinstance(v, bool) for v in (self.min, self.max, self.step or 1))

    def values(self) -> list[int | float] | None:
        """The grid points min, min+step, ... <= max; None without a step. Call ``check_range`` first."""
        if self.step is None:
            return None
        count = int(math.floor((self.max - self.min) / self.step + 1e-9)) + 1
        if self.is_int:
            return [int(self.min + i * self.step) for i in range(count)]
        # Round away float noise so 0.1-steps print as 0.3, not 0.30000000000000004.
        return [round(self.min + i * self.step, 12) for i in range(count)]


def check_range(rng: Range, where: str, key: str) -> None:
    """Refuse a range no sweep can use, naming ``key`` (``space.clock_mhz``): ``InputError``."""
    for field in ("min", "max", "step"):
        value = getattr(rng, field)
        if value is not None and not math.isfinite(value):
            raise InputError(f"{where}: {key}.{field}: must be a finite number, got {value}")
    if rng.step is not None and rng.step <= 0:
        raise InputError(f"{where}: {key}.step: must be > 0, got {rng.step}")
    if rng.max < rng.min:
        raise InputError(f"{where}: {key}.max: must be >= min ({rng.min}), got {rng.max}")
    if rng.step is not None:
        try:
            count = (rng.max - rng.min) / rng.step + 1
        except OverflowError:  # ints too large for a float
            count = math.inf
        if not count <= _MAX_GRID:  # also catches an overflow to inf
            raise InputError(f"{where}: {key}: {rng.min} to {rng.max} in steps of {rng.step} is about {count:.3g} "
                             f"points (over {_MAX_GRID:,}); use a larger step")


class SweepSpec(_Strict):
    """The sweep file as written (validated, defaults filled)."""

    models: Annotated[list[str], Field(min_length=1)]
    target: str | None = None
    set: dict[str, Scalar] = Field(default_factory=dict)
    compile: dict[str, str] = Field(default_factory=dict)
    #: input name -> dims, or a symbolic dim's name -> its size (every input dim of that name, like --shape NAME=N)
    shapes: dict[str, list[int] | int] = Field(default_factory=dict)
    calibrate: str | None = None
    inputs: str | None = None
    space: Annotated[dict[str, Annotated[list[Scalar], Field(min_length=1)] | Range], Field(min_length=1)]
    objectives: Annotated[dict[str, Literal["min", "max"]], Field(min_length=1)]
    constraints: list[str] = Field(default_factory=list)
    strategy: Literal["grid", "random", "nsga2", "tpe"] = "grid"
    budget: Annotated[int, Field(gt=0)] | None = None
    seed: int = 0

    @field_validator("models", mode="before")
    @classmethod
    def _one_model(cls, value: Any) -> Any:
        return [value] if isinstance(value, str) else value


@dataclass(frozen=True)
class Axis:
    """One swept dimension. ``kind``: ``target`` (the target itself), ``compile`` (a compiler choice) or ``hw`` (a
    dotted target key). ``values`` lists the choices (None for a sampled range), ``range`` the sampled range."""

    name: str
    kind: Literal["target", "compile", "hw"]
    values: tuple[Scalar, ...] | None
    range: Range | None
    line: int


@dataclass(frozen=True)
class Sweep:
    """A checked sweep: everything the runner needs, nothing it must re-validate.

    ``models`` are resolved paths; ``targets`` the target names a point may use; ``fixed_set`` / ``fixed_compile``
    apply to every point; ``calibrate`` / ``inputs`` are resolved, checked .npz paths; ``spec_hash`` identifies the
    sweep (budget excluded, so raising it continues a sweep).
    """

    spec: SweepSpec
    source: str
    models: tuple[str, ...]
    targets: tuple[str, ...]
    axes: tuple[Axis, ...]
    objectives: tuple[tuple[str, str], ...]
    constraints: tuple[Constraint, ...]
    fixed_set: tuple[tuple[str, str], ...]
    fixed_compile: tuple[tuple[str, str], ...]
    shapes: tuple[tuple[str, tuple[int, ...]], ...]
    calibrate: str | None
    spec_hash: str
    inputs: str | None = None

    @property
    def measures_accuracy(self) -> bool:
        """True when points carry ``accuracy.*`` metrics (the sweep has ``inputs``)."""
        return self.inputs is not None

    @property
    def grid_size(self) -> int | None:
        """Points in the full grid (models x axes), or None when an axis is a sampled range."""
        n = len(self.models)
        for axis in self.axes:
            if axis.values is None:
                return None
            n *= len(axis.values)
        return n

    @property
    def total(self) -> int:
        """Points this sweep evaluates: the grid, or the budget capped by the size of a finite space."""
        size = self.grid_size
        if self.spec.strategy == "grid":
            assert size is not None
            return size
        assert self.spec.budget is not None
        return min(self.spec.budget, size) if size is not None else self.spec.budget


def yaml_scalar(value: Scalar) -> str:
    """``value`` as the YAML scalar text ``load_target`` overrides take (``16``, ``true``, ``ws``)."""
    return value if isinstance(value, str) else json.dumps(value)


def load_sweep(path: str | Path) -> Sweep:
    """Read, validate and check a sweep YAML file (see the module doc). Raises ``InputError``."""
    path = Path(path)
    if not path.is_file():
        raise InputError(f"{path}: sweep file not found")
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise InputError(f"{path}: cannot read sweep file: {exc}") from None
    return parse_sweep(text, str(path), base_dir=path.parent)


def parse_sweep(text: str, display: str = "<sweep>", base_dir: Path | None = None) -> Sweep:
    """``load_sweep`` on YAML text; ``display`` names it in messages, ``base_dir`` is where relative model paths
    are also looked for (after the working directory)."""
    root = compose_yaml(text, display)  # the target loader's limits: no tags, bounded aliases and depth
    if root is None:
        raise InputError(f"{display}:1: empty sweep file")
    if not isinstance(root, yaml.MappingNode):
        raise InputError(f"{display}:{root.start_mark.line + 1}: expected a mapping (models, target, space, ...)")
    lines: dict[tuple[Any, ...], int] = {(): root.start_mark.line + 1}
    data = _to_data(root, (), lines, display)
    try:
        spec = SweepSpec.model_validate(data)
    except ValidationError as exc:
        raise InputError(_explain(exc, SweepSpec, display, lines, {})) from None
    return _check(spec, root, lines, display, base_dir)


# --- Checks beyond the schema -----------------------------------------------------------------------------------------


def _check(spec: SweepSpec, root: yaml.Node, lines: dict, display: str, base_dir: Path | None) -> Sweep:
    def at(*path: Any) -> str:
        return f"{display}:{_line(root, path, lines)}"

    models = tuple(_model_path(m, base_dir, at("models", i)) for i, m in enumerate(spec.models))
    if len(set(models)) != len(models):
        raise InputError(f"{at('models')}: models: a model is listed twice")
    if "model" in spec.space:
        raise InputError(f"{at('space', 'model')}: space.model: list models under 'models:', not as an axis")

    target_axis = spec.space.get("target")
    if target_axis is not None:
        if isinstance(target_axis, Range) or not all(isinstance(t, str) for t in target_axis):
            raise InputError(f"{at('space', 'target')}: space.target: expected a list of target names or paths")
        targets = tuple(str(t) for t in target_axis)
    elif spec.target is not None:
        targets = (spec.target,)
    else:
        raise InputError(f"{at()}: missing required key 'target' (or a 'target' axis under space)")
    for i, name in enumerate(targets):
        where = at("space", "target", i) if target_axis is not None else at("target")
        _wrap(where, lambda n=name: load_target(n))

    fixed_set = tuple((k, yaml_scalar(v)) for k, v in spec.set.items())
    for key, value in fixed_set:
        for name in targets:
            _wrap(at("set", key), lambda n=name, k=key, v=value: load_target(n, {k: v}), f"set.{key}", name)

    from codesign.options import CHOICES, validate_choice

    fixed_compile = tuple(sorted(spec.compile.items()))
    for key, value in fixed_compile:
        _wrap(at("compile", key), lambda k=key, v=value: validate_choice(k, v), f"compile.{key}")

    axes = []
    for name, raw in spec.space.items():
        where = at("space", name)
        rng = raw if isinstance(raw, Range) else None
        if rng is not None:
            check_range(rng, where, f"space.{name}")
        elif any(isinstance(v, float) and not math.isfinite(v) for v in raw):
            raise InputError(f"{where}: space.{name}: values must be finite numbers, got {list(raw)}")
        values = tuple(raw) if isinstance(raw, list) else (tuple(rng.values() or ()) if rng and rng.step else None)
        if values is not None and len(set(map(repr, values))) != len(values):
            raise InputError(f"{where}: space.{name}: a value is listed twice")
        probe = values if values is not None else (rng.min, rng.max)  # type: ignore[union-attr]
        if name == "target":
            kind = "target"
        elif name.startswith("compile."):
            kind = "compile"
            choice = name.removeprefix("compile.")
            if choice not in CHOICES:
                known = ", ".join(f"compile.{c}" for c in sorted(CHOICES)) or "none"
                raise InputError(f"{where}: space.{name}: unknown compile option '{choice}' (known: {known})")
            if values is None:
                raise InputError(f"{where}: space.{name}: a compile option takes a list of choices, not a range")
            for v in values:
                _wrap(where, lambda v=v, choice=choice: validate_choice(choice, str(v)), f"space.{name}")
            values = tuple(str(v) for v in values)
        else:
            kind = "hw"
            for target in targets:
                for v in probe:
                    _wrap(where, lambda t=target, v=v, name=name: load_target(t, {name: yaml_scalar(v)}),
                          f"space.{name}", target)
        if values is None and spec.strategy == "grid":
            raise InputError(f"{where}: space.{name}: strategy grid needs a list or a range with a step")
        axes.append(Axis(name=name, kind=kind, values=values, range=None if values is not None else rng,
                         line=_line(root, ("space", name), lines)))

    objectives = []
    for metric, direction in spec.objectives.items():
        _wrap(at("objectives", metric), lambda m=metric: check_metric_name(m), "objectives")
        if is_accuracy_metric(metric) and spec.inputs is None:
            raise InputError(f"{at('objectives', metric)}: objectives.{metric} {_NEEDS_INPUTS}")
        objectives.append((metric, direction))
    constraints = tuple(_wrap(at("constraints", i), lambda t=text: parse_constraint(t), f"constraints[{i}]")
                        for i, text in enumerate(spec.constraints))
    for i, c in enumerate(constraints):
        if c.metric is not None and is_accuracy_metric(c.metric) and spec.inputs is None:
            raise InputError(f"{at('constraints', i)}: constraints[{i}]: {c.metric} {_NEEDS_INPUTS}")
    if spec.strategy != "grid" and spec.budget is None:
        raise InputError(f"{at('strategy')}: strategy {spec.strategy} needs a budget (number of points)")
    given = {k: [v] if isinstance(v, int) else v for k, v in spec.shapes.items()}
    for name, dims in given.items():
        if not dims or any(d < 0 for d in dims):
            raise InputError(f"{at('shapes', name)}: shapes.{name}: dims must be ints >= 0 (0 only for an empty KV "
                             "cache's length)")

    shapes = tuple((k, tuple(v)) for k, v in given.items())
    for name, _ in shapes:
        for model in models:
            _wrap(at("shapes", name), lambda m=model, n=name: check_shape_names(m, {n: dict(shapes)[n]}),
                  f"shapes.{name}")
    quantized = any(v != "none" for k, v in fixed_compile if k == "quant") or any(
        v != "none" for a in axes if a.name == "compile.quant" for v in a.values or ())
    calibrate = _samples(spec.calibrate, "calibrate", models, shapes, base_dir, at("calibrate"), True)
    inputs = _samples(spec.inputs, "inputs", models, shapes, base_dir, at("inputs"),
                      quantized and calibrate is None)
    sweep = Sweep(spec=spec, source=display, models=models, targets=targets, axes=tuple(axes),
                  objectives=tuple(objectives), constraints=constraints, fixed_set=fixed_set,
                  fixed_compile=fixed_compile, shapes=shapes, calibrate=calibrate, inputs=inputs, spec_hash="")
    if spec.strategy == "grid" and (sweep.grid_size or 0) > _MAX_GRID:
        raise InputError(f"{at('space')}: space: the grid has {sweep.grid_size:,} points (over {_MAX_GRID:,})")
    return _with_hash(sweep)


def _with_hash(sweep: Sweep) -> Sweep:
    """``sweep`` with ``spec_hash``: sha256 of what decides the points and their numbers (not the budget)."""
    spec = sweep.spec.model_dump(mode="json")
    spec.pop("budget", None)
    spec["models"] = list(sweep.models)
    spec["calibrate"] = sweep.calibrate
    spec["inputs"] = sweep.inputs
    if sweep.inputs is None:
        del spec["inputs"]  # sweeps written before ``inputs`` existed keep their hash (and their output folders)
    digest = hashlib.sha256(json.dumps(spec, sort_keys=True).encode()).hexdigest()[:16]
    return Sweep(**{**sweep.__dict__, "spec_hash": digest})


def _wrap(where: str, check: Any, key: str | None = None, target: str | None = None) -> Any:
    """Run ``check``; an InputError from it is re-raised with the sweep file's location in front."""
    try:
        return check()
    except InputError as err:
        message = str(err)
        # load_target names the override as '--set k=v' (the loader a shape as '--shape k=...'); in a sweep file the
        # culprit is the key's line.
        message = re.sub(r"^--(set|shape) [^:]*: ", "", message)
        prefix = f"{key}: " if key and not message.startswith(key) else ""
        suffix = f" (target {target})" if target and len(message) < 400 else ""
        raise InputError(f"{where}: {prefix}{message}{suffix}") from None


_NEEDS_INPUTS = ("needs samples to run: add 'inputs: <file>.npz' to the sweep (arrays keyed by model input name, "
                 "leading sample axis, as for codesign compile --inputs)")


def _samples(name: str | None, key: str, models: tuple[str, ...], shapes: tuple[tuple[str, tuple[int, ...]], ...],
             base_dir: Path | None, where: str, calibration: bool) -> str | None:
    """The resolved path of the ``key`` .npz (``inputs`` / ``calibrate``), checked against every model by the
    checks ``codesign compile --inputs / --calibrate`` run (``calibration``: also refuse constant data)."""
    if name is None:
        return None
    from codesign.accuracy import load_samples, model_signature

    path = _model_path(name, base_dir, where, key)
    for model in models:
        try:
            load_samples(path, f"{key}:", model_signature(model, dict(shapes)), calibration=calibration)
        except InputError as err:
            # The CLI's message, with the file as written in the sweep and the model it was checked against.
            detail = str(err).removeprefix(f"{key}: {path}: ")
            suffix = f" (model {Path(model).name})" if len(models) > 1 else ""
            raise InputError(f"{where}: {key}: {name}: {detail}{suffix}") from None
    return path


def _model_path(name: str, base_dir: Path | None, where: str, key: str = "models") -> str:
    """``name`` resolved against the working directory, then the sweep file's folder."""
    for candidate in (Path(name), (base_dir / name) if base_dir else None):
        if candidate is not None and candidate.is_file():
            return str(candidate.resolve())
    raise InputError(f"{where}: {key}: {name}: no such file")


def _line(root: yaml.Node, path: tuple[Any, ...], lines: dict) -> int:
    """1-based line of ``path``: a mapping key's line, or a list item's own line (flow lists share one)."""
    if path in lines:
        return lines[path]
    node: yaml.Node | None = root
    for part in path:
        if isinstance(node, yaml.MappingNode):
            node = next((v for k, v in node.value if isinstance(k, yaml.ScalarNode) and k.value == str(part)), None)
        elif isinstance(node, yaml.SequenceNode) and isinstance(part, int) and part < len(node.value):
            node = node.value[part]
        else:
            node = None
        if node is None:
            break
    if node is not None:
        return node.start_mark.line + 1
    for n in range(len(path) - 1, -1, -1):
        if path[:n] in lines:
            return lines[path[:n]]
    return 1

