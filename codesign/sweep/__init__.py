"""Design-space sweeps: a YAML space of targets, target keys and compile options, searched with Optuna, evaluated
on a process pool or a Dask cluster, stored in SQL, reported as CSV, Pareto plots and HTML.

``load_sweep(path)`` checks a sweep file; ``run_sweep(sweep, out)`` runs or resumes it; ``write_outputs`` writes
the files; ``codesign sweep`` (``cli.py``) does all three. See ``spec.py`` for the YAML, ``evaluate.py`` for how
points reuse hardware-independent compile work and ``accuracy.py`` for how accuracy is measured once per set of
compile choices.
"""

from codesign.sweep.accuracy import AccuracyRequest, measure_accuracy
from codesign.sweep.evaluate import PointRequest, evaluate_chunk, evaluate_report
from codesign.sweep.metrics import metrics_from_report, pareto_mask
from codesign.sweep.outputs import write_outputs
from codesign.sweep.runner import SweepOutcome, run_sweep
from codesign.sweep.spec import Sweep, SweepSpec, load_sweep, parse_sweep

__all__ = ["load_sweep", "parse_sweep", "Sweep", "SweepSpec", "run_sweep", "SweepOutcome", "write_outputs",
           "PointRequest", "evaluate_chunk", "evaluate_report", "AccuracyRequest", "measure_accuracy",
           "metrics_from_report", "pareto_mask"]
