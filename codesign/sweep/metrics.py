"""The flat metric namespace sweeps optimise over, constraints on it, and Pareto fronts.

A compile report (``compiler.summary.build_report``) is nested; a sweep needs one number per name:

==========================  ==================================================================================
``latency_ms``              one inference, ms                 ``latency_cycles``   the same in target cycles
``energy_mj``               one inference, mJ                 ``energy.<part>``    its breakdown (mac, static ...)
``throughput_per_s``        inferences/s                      ``macs``             multiply-accumulates
``bytes_offchip``           bytes to and from off-chip memory ``roofline_efficiency``  roofline cycles / cycles
``roofline_cycles``         cycles at the roofline            ``clock_mhz``        the target clock, MHz
``peak_macs_per_cycle``     MACs/cycle at full utilisation    ``offchip_bytes_per_cycle``  bytes/cycle
``dsp`` ``lut`` ``ff`` ...  resources used (FPGA targets)     ``dsp_fraction`` ... used / available
``edp``                     energy-delay product, mJ x ms     ``area_mm2``         die area, mm^2 (ASIC targets)
``area.<part>``             its breakdown (pe_array, sram_act ...; ASIC targets)
==========================  ==================================================================================

Accuracy, for sweeps with ``inputs:`` (samples run by the functional simulator and by ONNX Runtime in FP32, exactly
as ``codesign compile --inputs`` does; codesign/accuracy.py), on the model's *first* output:

==========================  ==================================================================================
``accuracy.cosine``         cosine similarity per row (last axis: a token's hidden state, a logit vector) of
                            simulated vs FP32, averaged over rows of all samples; over the real tokens only when
                            the model has an ``attention_mask`` input (``cosine_mean_valid``, else ``cosine_mean``)
``accuracy.cosine_min``     the smallest row cosine, padding rows included (``cosine_min``)
``accuracy.max_abs_err``    max |simulated - FP32| over all elements (``max_abs_error``)
``accuracy.top1``           fraction of samples whose argmax agrees (``top1_agreement``); classifiers only
==========================  ==================================================================================

A name a report lacks (``dsp`` on a GPU, ``accuracy.top1`` on a non-classifier) is absent from that point's
metrics: an objective or constraint on it makes the point infeasible, with the reason recorded.
"""

from __future__ import annotations

import math
import operator
import re
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from hw.errors import InputError

__all__ = ["REPORT_METRICS", "RESOURCE_METRICS", "ACCURACY_METRICS", "FAMILIES", "metrics_from_report",
           "accuracy_metrics", "is_accuracy_metric", "check_metric_name",
           "Constraint", "parse_constraint", "fit_violation", "pareto_mask", "dominates"]

#: Top-level numeric report fields, by their report names.
REPORT_METRICS = ("latency_ms", "latency_cycles", "energy_mj", "throughput_per_s", "macs", "bytes_offchip",
                  "roofline_efficiency", "roofline_cycles", "clock_mhz", "peak_macs_per_cycle",
                  "offchip_bytes_per_cycle", "edp", "area_mm2")
#: Resource names (``report["resources"][name]["used"]``); ``<name>_fraction`` is used / available.
RESOURCE_METRICS = ("dsp", "lut", "ff", "bram18", "uram")
#: Accuracy metric -> the field of the first output's row in ``report["accuracy"]["outputs"]`` it is read from.
ACCURACY_METRICS = {"accuracy.cosine": "cosine_mean", "accuracy.cosine_min": "cosine_min",
                    "accuracy.max_abs_err": "max_abs_error", "accuracy.top1": "top1_agreement"}
#: Prefixes whose leaves are metrics when a report has them.
FAMILIES = ("energy.", "area.")

_OPS: dict[str, Callable[[float, float], bool]] = {
    "<=": operator.le, ">=": operator.ge, "<": operator.lt, ">": operator.gt, "==": operator.eq, "!=": operator.ne,
}
_CONSTRAINT = re.compile(r"^\s*([A-Za-z_][\w.]*)\s*(<=|>=|==|!=|<|>)\s*([-+]?[\d.]+(?:[eE][-+]?\d+)?)\s*$")


def _number(value: Any) -> float | None:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    return float(value) if math.isfinite(value) else None


def _leaves(prefix: str, tree: Any, out: dict[str, float]) -> None:
    if isinstance(tree, Mapping):
        for key, value in tree.items():
            _leaves(f"{prefix}.{key}", value, out)
    else:
        number = _number(tree)
        if number is not None:
            out[prefix] = number


def metrics_from_report(report: Mapping[str, Any]) -> dict[str, float]:
    """The flat metrics of one compile report (names in the module doc); absent or non-numeric fields are left out."""
    out: dict[str, float] = {}
    for name in REPORT_METRICS:
        number = _number(report.get(name))
        if number is not None:
            out[name] = number
    for name, entry in (report.get("resources") or {}).items():
        used = _number(entry.get("used"))
        if used is not None:
            out[name] = used
        fraction = _number(entry.get("fraction"))
        if fraction is not None:
            out[f"{name}_fraction"] = fraction
    _leaves("energy", report.get("energy_breakdown_mj") or {}, out)
    _leaves("area", report.get("area_breakdown_mm2") or {}, out)
    if isinstance(report.get("accuracy"), Mapping):
        out.update(accuracy_metrics(report["accuracy"]))
    return out


def accuracy_metrics(section: Mapping[str, Any]) -> dict[str, float]:
    """The ``accuracy.*`` metrics (module doc) of a report's accuracy section (``codesign.accuracy.evaluate``)."""
    outputs = section.get("outputs") or {}
    if not outputs:
        return {}
    first = next(iter(outputs.values()))  # the model's first output: outputs keep the model's order
    out: dict[str, float] = {}
    for name, field in ACCURACY_METRICS.items():
        value = first.get("cosine_mean_valid", first.get(field)) if name == "accuracy.cosine" else first.get(field)
        number = _number(value)
        if number is not None:
            out[name] = number
    return out


def is_accuracy_metric(name: str) -> bool:
    """True for names measured by running samples (``accuracy.*``): they need the sweep's ``inputs:``."""
    return name.startswith("accuracy.")


def check_metric_name(name: str) -> str:
    """``name`` if it is in the namespace (module doc); else InputError listing the known names."""
    if name in REPORT_METRICS or name in RESOURCE_METRICS:
        return name
    if name.endswith("_fraction") and name.removesuffix("_fraction") in RESOURCE_METRICS:
        return name
    if name in ACCURACY_METRICS or any(name.startswith(f) and len(name) > len(f) for f in FAMILIES):
        return name
    known = ", ".join(REPORT_METRICS + RESOURCE_METRICS + tuple(f + "*" for f in FAMILIES) + tuple(ACCURACY_METRICS))
    raise InputError(f"'{name}' is not a report field (known: {known})")


@dataclass(frozen=True)
class Constraint:
    """``fits`` (the design fits the target) or ``<metric> <op> <number>``."""

    text: str
    metric: str | None = None  # None for "fits"
    op: str = ""
    bound: float = 0.0

    @property
    def name(self) -> str:
        """The constraint as written, whitespace normalised (column and Optuna constraint key)."""
        return "fits" if self.metric is None else f"{self.metric} {self.op} {self.bound:g}"

    def violation(self, metrics: Mapping[str, float], fits: bool, fit_excess: float) -> tuple[float, str | None]:
        """(violation >= 0, reason): 0 when met; else how far off, relative to the bound (Optuna's constraint
        value: larger is worse), and a one-line reason. ``fit_excess`` is the fit test's own measure."""
        if self.metric is None:
            return (0.0, None) if fits else (max(fit_excess, 1e-9), "does not fit")
        value = metrics.get(self.metric)
        if value is None:
            return 1.0, f"{self.metric} not reported"
        if _OPS[self.op](value, self.bound):
            return 0.0, None
        gap = abs(value - self.bound) / max(abs(self.bound), 1e-12)
        return max(gap, 1e-9), f"{self.metric} = {value:.6g}, needs {self.op} {self.bound:g}"


def parse_constraint(text: str) -> Constraint:
    """``"fits"`` or ``"<metric> <op> <number>"`` (op one of <= >= < > == !=); InputError otherwise."""
    if not isinstance(text, str):
        raise InputError("expected a string such as 'fits' or 'latency_ms <= 5'")
    if text.strip() == "fits":
        return Constraint(text="fits")
    match = _CONSTRAINT.match(text)
    if match is None:
        raise InputError(f"'{text}': expected 'fits' or '<metric> <op> <number>' (op: {' '.join(_OPS)})")
    metric, op, bound = match.groups()
    check_metric_name(metric)
    try:
        value = float(bound)
    except ValueError:
        raise InputError(f"'{text}': '{bound}' is not a number") from None
    return Constraint(text=text, metric=metric, op=op, bound=value)


def fit_violation(resources: Mapping[str, tuple[float, float]], fits: bool) -> float:
    """How far a design overflows its device: max over resources of used / available - 1 (0 when it fits; 1 when
    the model says it does not fit without naming a resource)."""
    worst = max((used / available - 1.0 for used, available in resources.values() if available > 0), default=0.0)
    if fits:
        return 0.0
    return worst if worst > 0 else 1.0


def dominates(a: Sequence[float], b: Sequence[float], signs: Sequence[float]) -> bool:
    """True when ``a`` is no worse than ``b`` everywhere and better somewhere (``signs``: +1 minimise, -1 maximise)."""
    better = False
    for x, y, s in zip(a, b, signs, strict=True):
        if s * x > s * y:
            return False
        if s * x < s * y:
            better = True
    return better


def pareto_mask(points: Sequence[Sequence[float]], directions: Iterable[str]) -> list[bool]:
    """For each objective vector, whether no other vector dominates it (``directions``: ``min`` / ``max`` each).
    Equal vectors do not dominate each other, so duplicates are all kept."""
    signs = [1.0 if d == "min" else -1.0 for d in directions]
    order = sorted(range(len(points)), key=lambda i: [s * v for s, v in zip(signs, points[i], strict=True)])
    front: list[int] = []
    # Sorted lexicographically, a point can only be dominated by one before it, and only by a front member.
    for i in order:
        if not any(dominates(points[j], points[i], signs) for j in front):
            front.append(i)
    keep = set(front)
    return [i in keep for i in range(len(points))]
