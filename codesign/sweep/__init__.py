"""Design-space sweeps: a YAML space of targets, target keys and compile options, searched with Optuna, evaluated
on a process pool or a Dask cluster, stored in SQL, reported as CSV, Pareto plots and HTML.

``load_sweep(path)`` checks a sweep file; ``run_sweep(sweep, out)`` runs or resumes it; ``write_outputs`` writes
the files; ``codesign sweep`` (``cli.py``) does all three. See ``spec.py`` for the YAML, ``evaluate.py`` for how
points reuse hardware-independent compile work and ``accuracy.py`` for how accuracy is measured once per set of
compile choices.

The names below load their module on first use (PEP 562): ``codesign --help`` imports the sweep's CLI module, which
should not load Optuna, the compiler and the plotting libraries to add one subcommand.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from codesign.sweep.accuracy import AccuracyRequest, measure_accuracy
    from codesign.sweep.evaluate import PointRequest, evaluate_chunk, evaluate_report
    from codesign.sweep.metrics import metrics_from_report, pareto_mask
    from codesign.sweep.outputs import write_outputs
    from codesign.sweep.runner import SweepOutcome, run_sweep
    from codesign.sweep.spec import Sweep, SweepSpec, load_sweep, parse_sweep

__all__ = ["load_sweep", "parse_sweep", "Sweep", "SweepSpec", "run_sweep", "SweepOutcome", "write_outputs",
           "PointRequest", "evaluate_chunk", "evaluate_report", "AccuracyRequest", "measure_accuracy",
           "metrics_from_report", "pareto_mask"]

_HOMES = {
    "AccuracyRequest": "accuracy", "measure_accuracy": "accuracy", "PointRequest": "evaluate",
    "evaluate_chunk": "evaluate", "evaluate_report": "evaluate", "metrics_from_report": "metrics",
    "pareto_mask": "metrics", "write_outputs": "outputs", "SweepOutcome": "runner", "run_sweep": "runner",
    "Sweep": "spec", "SweepSpec": "spec", "load_sweep": "spec", "parse_sweep": "spec",
}


def __getattr__(name: str) -> Any:
    home = _HOMES.get(name)
    if home is None:
        raise AttributeError(f"module 'codesign.sweep' has no attribute {name!r}")
    value = getattr(importlib.import_module(f"codesign.sweep.{home}"), name)
    globals()[name] = value
    return value
