"""The search: Optuna samplers propose design points, finished points are told back.

``grid`` is Optuna's ``GridSampler`` (every point once, in a seeded shuffled order), ``random`` ``RandomSampler``,
``nsga2`` ``NSGAIISampler`` and ``tpe`` ``TPESampler``. Constraints reach the samplers through
``Trial.set_constraint`` (Optuna 5's replacement for ``constraints_func``): NSGA-II and TPE prefer feasible points.

The study lives in memory; the store (``store.py``) is the durable record. On a restart the study is rebuilt:
model-based samplers get every stored point as a finished trial (``Study.add_trial``); the grid restarts its seeded
order and every point already stored is answered from the store instead of being computed again.
"""

from __future__ import annotations

import json
import math
import warnings
from collections.abc import Mapping
from typing import Any, Literal

import optuna
from optuna.distributions import BaseDistribution, CategoricalDistribution, FloatDistribution, IntDistribution
from optuna.trial import TrialState

from codesign.sweep.spec import Sweep

__all__ = ["Search", "point_key", "point_params", "objective_values"]


class _GridSampler(optuna.samplers.GridSampler):
    """GridSampler for an ask/tell loop: the loop stops itself once the grid is asked, and ``Study.stop`` (which
    the stock sampler calls when the grid is exhausted) only works inside ``Study.optimize``."""

    def after_trial(self, study: Any, trial: Any, state: Any, values: Any) -> None:
        return None


def point_key(params: Mapping[str, Any]) -> str:
    """The identity of a design point: canonical JSON of its parameters (model path included)."""
    return json.dumps(dict(params), sort_keys=True, separators=(",", ":"))


def point_params(sweep: Sweep, trial_params: Mapping[str, Any]) -> dict[str, Any]:
    """The full parameters of a point: the trial's, plus the model when only one is swept."""
    params = dict(trial_params)
    if len(sweep.models) == 1:
        params["model"] = sweep.models[0]
    return params


class Search:
    """An in-memory Optuna study over ``sweep``'s space; ``stored`` maps keys to finished points (store rows)."""

    def __init__(self, sweep: Sweep, stored: Mapping[str, Mapping[str, Any]]) -> None:
        optuna.logging.set_verbosity(optuna.logging.WARNING)
        self.sweep = sweep
        self.distributions = self._distributions()
        strategy, seed = sweep.spec.strategy, sweep.spec.seed
        if strategy == "grid":
            space = {name: list(d.choices) for name, d in self.distributions.items()}  # type: ignore[attr-defined]
            sampler: optuna.samplers.BaseSampler = _GridSampler(space, seed=seed)
        elif strategy == "random":
            sampler = optuna.samplers.RandomSampler(seed=seed)
        elif strategy == "nsga2":
            sampler = optuna.samplers.NSGAIISampler(seed=seed, population_size=max(4, min(50, sweep.total // 5)))
        else:
            sampler = optuna.samplers.TPESampler(seed=seed, n_startup_trials=max(5, min(20, sweep.total // 10)))
        directions: list[Literal["minimize", "maximize"]] = [
            "minimize" if d == "min" else "maximize" for _, d in sweep.objectives]
        self.study = optuna.create_study(directions=directions, sampler=sampler)
        self.asked = 0
        if strategy != "grid":
            for entry in stored.values():
                self._add_stored(entry)

    def _distributions(self) -> dict[str, BaseDistribution]:
        out: dict[str, BaseDistribution] = {}
        if len(self.sweep.models) > 1:
            out["model"] = CategoricalDistribution(list(self.sweep.models))
        for axis in self.sweep.axes:
            if axis.values is not None:
                out[axis.name] = CategoricalDistribution(list(axis.values))
            else:
                r = axis.range
                assert r is not None
                if r.is_int:
                    out[axis.name] = IntDistribution(int(r.min), int(r.max), log=r.log, step=int(r.step or 1))
                else:
                    out[axis.name] = FloatDistribution(float(r.min), float(r.max), log=r.log,
                                                       step=float(r.step) if r.step else None)
        return out

    def ask(self) -> tuple[Any, dict[str, Any]]:
        """(trial, full point parameters) of the next point the sampler proposes."""
        with warnings.catch_warnings():
            # Optuna warns when a sampler falls back to independent sampling; that is expected here.
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
            trial = self.study.ask(self.distributions)
        self.asked += 1
        return trial, point_params(self.sweep, trial.params)

    def tell(self, trial: Any, outcome: Mapping[str, Any]) -> None:
        """Tell a finished point: ``outcome`` is a stored result (``values`` or None, ``constraints``)."""
        values = outcome.get("values")
        for name, violation in (outcome.get("constraints") or {}).items():
            trial.set_constraint(name, float(violation))
        if values is None:
            self.study.tell(trial, state=TrialState.FAIL)
        else:
            self.study.tell(trial, list(values))

    def _add_stored(self, entry: Mapping[str, Any]) -> None:
        params = {k: v for k, v in entry["params"].items() if k in self.distributions}
        if len(params) != len(self.distributions):
            return
        result = entry["result"]
        values = result.get("values")
        try:
            trial = optuna.trial.create_trial(
                state=TrialState.COMPLETE if values is not None else TrialState.FAIL,
                values=list(values) if values is not None else None, params=params,
                distributions=self.distributions, constraints=dict(result.get("constraints") or {}) or None)
        except ValueError:  # a value outside today's distributions: the point stays in the results, not the study
            return
        self.study.add_trial(trial)


def objective_values(sweep: Sweep, metrics: Mapping[str, float]) -> list[float] | None:
    """The objective vector of a point, or None when a metric is missing or not finite."""
    out = []
    for name, _ in sweep.objectives:
        value = metrics.get(name)
        if value is None or not math.isfinite(value):
            return None
        out.append(float(value))
    return out
