"""``codesign sweep SWEEP.yaml --out DIR``: the command line of design-space sweeps (registered by codesign.cli)."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

__all__ = ["register"]


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add the ``sweep`` subcommand."""
    p = subparsers.add_parser("sweep", help="explore a design space from a YAML file (grid, random, NSGA-II, TPE)")
    p.add_argument("spec", help="sweep YAML (see examples/sweeps/)")
    p.add_argument("--out", required=True, help="output folder: study.db, results.csv, pareto.csv/png, report.html")
    p.add_argument("--workers", type=int, default=None,
                   help="local worker processes (default: one per CPU core; 0 = in this process)")
    p.add_argument("--scheduler", help="Dask scheduler address (tcp://host:8786): run on that cluster instead")
    p.add_argument("--storage", help="SQLAlchemy URL of the point store (default: sqlite:///OUT/study.db), e.g. "
                                     "postgresql://host/db to share one sweep between machines")
    p.add_argument("-q", "--quiet", action="store_true", help="no progress bar and no summary table")
    p.set_defaults(func=_cmd_sweep)


def _cmd_sweep(args: argparse.Namespace) -> int:
    from rich.console import Console
    from rich.progress import (
        BarColumn,
        MofNCompleteColumn,
        Progress,
        TextColumn,
        TimeElapsedColumn,
        TimeRemainingColumn,
    )

    from codesign.sweep.outputs import summary_table, write_outputs
    from codesign.sweep.runner import run_sweep
    from codesign.sweep.spec import load_sweep

    sweep = load_sweep(args.spec)
    out = Path(args.out)
    console = Console(stderr=True)
    progress = Progress(TextColumn("[bold]sweep"), BarColumn(), MofNCompleteColumn(),
                        TextColumn("{task.fields[rate]:.1f} points/s"), TimeElapsedColumn(), TextColumn("ETA"),
                        TimeRemainingColumn(), console=console, disable=args.quiet or not console.is_terminal)
    task = progress.add_task("sweep", total=sweep.total, rate=0.0)

    def on_progress(done: int, total: int, rate: float) -> None:
        if not progress.live.is_started and not progress.disable:
            progress.start()  # after the workers are forked: rich's refresh thread must not be forked with them
        progress.update(task, completed=done, total=total, rate=rate)

    try:
        outcome = run_sweep(sweep, out, workers=args.workers, scheduler=args.scheduler, storage=args.storage,
                            on_progress=on_progress)
    finally:
        progress.stop()
    rows, front, files = write_outputs(sweep, outcome.rows, out)
    if not args.quiet:
        stdout = Console(width=None if sys.stdout.isatty() else 160)
        stdout.print(summary_table(sweep, rows, front))
        rate = outcome.computed / outcome.seconds if outcome.seconds else 0.0
        tiers = ", ".join(f"{k} {v}" for k, v in sorted(outcome.tiers.items())) or "none"
        stdout.print(f"{outcome.computed} points computed now ({rate:.1f} points/s; tiers: {tiers}), "
                     f"{outcome.done - outcome.computed} from earlier runs; "
                     f"{sum(1 for r in rows if r['feasible'])} feasible. Wrote " + ", ".join(str(f) for f in files))
        if sweep.measures_accuracy and sweep.inputs is not None:
            stdout.print(f"accuracy on {Path(sweep.inputs).name}: {len(outcome.accuracy)} (model, compile choices) "
                         f"measured, {outcome.accuracy_measured} of them now ({outcome.accuracy_seconds:.1f} s)")
        if outcome.skipped_elsewhere:
            stdout.print(f"{outcome.skipped_elsewhere} points are being computed by another runner")
    return 0
