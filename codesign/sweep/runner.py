"""Run a sweep: ask the search for points, compute them on a process pool or a Dask cluster, store, tell, report.

One loop in the calling process owns the study and the store; workers only evaluate (``evaluate.evaluate_chunk``).
Points travel in chunks (one task, one IPC round trip and one database transaction per chunk), grouped by
(model, compile choices) so a worker reuses its cached prefix. A chunk is sized to take about 0.25 s. With
``inputs:``, each (model, compile choices) is first measured for accuracy once (``accuracy.py``, a task of its own,
stored in the database) and its points wait for that measurement, so every stored point carries its accuracy.

Restarting the same command resumes: finished points come from the store and are never computed again; points
that were being computed when the run died are computed now. The output folder remembers which sweep it holds (a
hash of the spec, ``sweep.json``) and refuses another one. A run killed outright (SIGKILL) leaves no process
behind: pool workers watch this process and exit with it (``lifeline.py``), and with them the fork server.
"""

from __future__ import annotations

import concurrent.futures as cf
import json
import multiprocessing
import os
import sys
import time
from collections import defaultdict
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from codesign.sweep.accuracy import AccuracyRequest, accuracy_key, measure_accuracy
from codesign.sweep.evaluate import PointRequest, evaluate_chunk
from codesign.sweep.files import OutFolder, check_out_dir, os_errors, strict_json
from codesign.sweep.lifeline import exit_with
from codesign.sweep.metrics import is_accuracy_metric
from codesign.sweep.search import Search, objective_values, point_key
from codesign.sweep.spec import Sweep, yaml_scalar
from codesign.sweep.store import Store
from hw.errors import InputError

__all__ = ["run_sweep", "SweepOutcome", "point_request", "accuracy_request", "finalize"]

_CHUNK_SECONDS = 0.25  # wall time a chunk should take: long enough to amortise IPC, short enough to commit often
_MAX_CHUNK = 64


@dataclass
class SweepOutcome:
    """What a run did: points stored in all (``done``), computed now (``computed``), answered from the store
    (``reused``), the rows of every stored point, and the run's wall time (s). With ``inputs:``, every stored
    accuracy measurement (``accuracy``: key -> result), how many (model, compile choices) were measured now
    (``accuracy_measured``, taking ``accuracy_seconds`` of worker time) and how many measurements stored by an
    earlier run served points computed now (``accuracy_reused``)."""

    done: int = 0
    computed: int = 0
    reused: int = 0
    skipped_elsewhere: int = 0
    seconds: float = 0.0
    compute_seconds: float = 0.0
    rows: dict[str, dict[str, Any]] = field(default_factory=dict)
    files: list[Path] = field(default_factory=list)
    tiers: dict[str, int] = field(default_factory=dict)
    accuracy: dict[str, dict[str, Any]] = field(default_factory=dict)
    accuracy_measured: int = 0
    accuracy_reused: int = 0
    accuracy_seconds: float = 0.0


# --- Executors --------------------------------------------------------------------------------------------------------


class _Inline:
    """``--workers 0``: evaluate in this process (debugging, tests)."""

    slots = 1

    def submit(self, points: list[PointRequest]) -> cf.Future:
        return self.call(evaluate_chunk, points)

    def call(self, fn: Callable[[Any], Any], arg: Any) -> cf.Future:
        future: cf.Future = cf.Future()
        future.set_result(fn(arg))
        return future

    def wait(self, futures: Iterable[Any]) -> set[Any]:
        return set(futures)

    def close(self) -> None:
        pass


class _Pool:
    """A local process pool whose workers come from a fork server.

    Plain fork is unsafe here: a process that has already run torch or OpenBLAS work (the Python API, a test run)
    holds thread pools that do not survive fork, and the child deadlocks in its first kernel. The fork server is a
    fresh interpreter that only imports the compiler (preload), so workers still start with it imported, cheaply.
    """

    def __init__(self, workers: int) -> None:
        if sys.platform.startswith("linux"):
            context = multiprocessing.get_context("forkserver")
            context.set_forkserver_preload(["compiler.pipeline", "codesign.sweep.evaluate", "codesign.sweep.accuracy"])
        else:
            context = multiprocessing.get_context()
        self.pool = cf.ProcessPoolExecutor(max_workers=workers, mp_context=context,
                                           initializer=exit_with, initargs=(os.getpid(),))
        self.slots = workers
        self.pool.submit(int).result()  # start the workers now

    def submit(self, points: list[PointRequest]) -> cf.Future:
        return self.pool.submit(evaluate_chunk, points)

    def call(self, fn: Callable[[Any], Any], arg: Any) -> cf.Future:
        return self.pool.submit(fn, arg)

    def wait(self, futures: Iterable[Any]) -> set[Any]:
        done, _ = cf.wait(list(futures), timeout=1.0, return_when=cf.FIRST_COMPLETED)
        return done

    def close(self) -> None:
        self.pool.shutdown(wait=True, cancel_futures=True)


class _Dask:
    """Workers of a Dask distributed cluster (``--scheduler tcp://host:8786``); caches live in each worker process."""

    def __init__(self, address: str) -> None:
        try:
            from distributed import Client
        except ImportError:  # pragma: no cover - a dependency
            raise InputError("--scheduler needs dask[distributed]") from None
        try:
            self.client = Client(address, timeout="5s", set_as_default=False)
        except (OSError, TimeoutError, ValueError) as err:
            raise InputError(f"--scheduler {address}: cannot connect ({str(err).splitlines()[0] or 'timed out'})"
                             ) from None
        # A synchronous Client returns the dict; distributed types the call as maybe-a-coroutine for async clients.
        threads = sum(self.client.nthreads().values())  # pyright: ignore[reportAttributeAccessIssue]
        if threads == 0:
            self.client.close()
            raise InputError(f"--scheduler {address}: the cluster has no workers")
        self.slots = threads

    def submit(self, points: list[PointRequest]) -> Any:
        return self.client.submit(evaluate_chunk, points, pure=False)

    def call(self, fn: Callable[[Any], Any], arg: Any) -> Any:
        return self.client.submit(fn, arg, pure=False)

    def wait(self, futures: Iterable[Any]) -> set[Any]:
        # Polling keeps this client private (distributed.wait needs a process-wide default client).
        futures = list(futures)
        deadline = time.monotonic() + 1.0
        while True:
            done = {f for f in futures if f.done()}
            if done or time.monotonic() > deadline:
                return done
            time.sleep(0.002)

    def close(self) -> None:
        self.client.close()


def _executor(workers: int | None, scheduler: str | None) -> Any:
    if scheduler:
        return _Dask(scheduler)
    n = (os.cpu_count() or 1) if workers is None else workers
    if n < 0:
        raise InputError(f"--workers {n}: must be >= 0 (0 = in this process)")
    return _Inline() if n == 0 else _Pool(n)


# --- Points -------------------------------------------------------------------------------------------------------


def point_request(sweep: Sweep, params: dict[str, Any], key: str) -> PointRequest:
    """What a worker needs to evaluate the point with ``params`` (full parameters, model included)."""
    target = params.get("target", sweep.targets[0])
    overrides = dict(sweep.fixed_set)
    choices = dict(sweep.fixed_compile)
    for axis in sweep.axes:
        if axis.kind == "hw":
            overrides[axis.name] = yaml_scalar(params[axis.name])
        elif axis.kind == "compile":
            choices[axis.name.removeprefix("compile.")] = str(params[axis.name])
    return PointRequest(key=key, model=params["model"], target=str(target), overrides=tuple(overrides.items()),
                        choices=tuple(sorted(choices.items())), shapes=sweep.shapes, calibrate=sweep.calibrate,
                        inputs=sweep.inputs)


def accuracy_request(sweep: Sweep, point: PointRequest) -> AccuracyRequest:
    """The accuracy measurement ``point`` shares with every point of its (model, compile choices): compiled for the
    sweep's first target with the fixed ``set:`` overrides only (accuracy.py)."""
    assert sweep.inputs is not None
    return AccuracyRequest(key=accuracy_key(point.model, point.choices), model=point.model, target=sweep.targets[0],
                           inputs=sweep.inputs, overrides=sweep.fixed_set, choices=point.choices,
                           shapes=point.shapes, calibrate=point.calibrate)


def _uses_accuracy(sweep: Sweep) -> bool:
    return any(is_accuracy_metric(n) for n, _ in sweep.objectives) or any(
        c.metric is not None and is_accuracy_metric(c.metric) for c in sweep.constraints)


def finalize(sweep: Sweep, row: dict[str, Any], accuracy: dict[str, Any] | None = None) -> dict[str, Any]:
    """A worker's row plus what the sweep decides: constraint violations, feasibility, reason, objective values.
    ``accuracy`` (a ``measure_accuracy`` result) adds its ``accuracy.*`` metrics; a failed measurement makes the
    point infeasible when an objective or constraint needs accuracy, and is kept as ``accuracy_error``."""
    result = dict(row)
    result.pop("key", None)
    constraints: dict[str, float] = {}
    reasons: list[str] = []
    if accuracy is not None and row["error"] is None:
        row = {**row, "metrics": {**row["metrics"], **accuracy["metrics"]}}
        result["metrics"] = row["metrics"]
        if accuracy["error"] is not None:
            result["accuracy_error"] = accuracy["error"]
            if _uses_accuracy(sweep):
                reasons.append(f"accuracy not measured: {accuracy['error']}")
    if row["error"] is not None:
        reasons.append(row["error"])
    else:
        for c in sweep.constraints:
            violation, reason = c.violation(row["metrics"], row["fits"], row["fit_excess"])
            constraints[c.name] = violation
            if reason:
                reasons.append(row["fit_message"] or reason if c.metric is None else reason)
    values = objective_values(sweep, row["metrics"]) if row["error"] is None else None
    if values is None and row["error"] is None:
        missing = [n for n, _ in sweep.objectives if n not in row["metrics"]]
        reasons.append(f"objective {', '.join(missing) or 'value'} not reported")
    result.update(constraints=constraints, values=values, feasible=not reasons, reason="; ".join(reasons) or None)
    return result


# --- The loop -----------------------------------------------------------------------------------------------------


def run_sweep(sweep: Sweep, out: Path, *, workers: int | None = None, scheduler: str | None = None,
              storage: str | None = None, on_progress: Callable[[int, int, float], None] | None = None
              ) -> SweepOutcome:
    """Run (or resume) ``sweep`` into ``out``; ``on_progress(done, total, points_per_s)`` after each chunk.

    Everything that can be wrong with the input is checked before anything is written: the output folder, then the
    executor (an unreachable scheduler), then a ``--storage`` URL. A run that fails before its first point leaves
    the folder as it found it (``files.OutFolder.abandon``). Ctrl-C stops cleanly: finished points are stored,
    claims released, and KeyboardInterrupt re-raised. A full disk or a lost database is one ``InputError`` line.
    """
    start = time.perf_counter()
    resume = check_out_dir(out, sweep.spec_hash)
    executor = _executor(workers, scheduler)
    folder: OutFolder | None = None
    store = None
    spec_json = strict_json(sweep.spec.model_dump(mode="json"), sort_keys=True)
    try:
        if storage is not None:  # a bad URL is refused before the folder is touched
            store = Store(storage, sweep.spec_hash, spec_json)
        marker = None if resume else {"spec_hash": sweep.spec_hash, "source": sweep.source,
                                      "storage": storage or "study.db", "spec": json.loads(spec_json)}
        folder = OutFolder(out, marker)
        try:
            if store is None:
                with os_errors(out / "study.db", "cannot open the point store"):
                    store = Store(f"sqlite:///{(out / 'study.db').resolve()}", sweep.spec_hash, spec_json,
                                  exclusive=True, label=str(out / "study.db"))
        except BaseException:
            if not resume:
                folder.abandon()  # nothing stored yet: leave the folder as this run found it
            raise
        try:
            outcome = _loop(sweep, executor, store, on_progress)
            outcome.rows = store.done()
            outcome.accuracy = store.accuracy() if sweep.measures_accuracy else {}
        except Exception as err:
            store.raise_input_error(err)  # a full disk or a lost database server: one line, not a traceback
            raise
        outcome.done = len(outcome.rows)
        outcome.seconds = time.perf_counter() - start
        return outcome
    finally:
        executor.close()
        if store is not None:
            store.close()
        if folder is not None:
            folder.release()


def _loop(sweep: Sweep, executor: Any, store: Store, on_progress: Callable[[int, int, float], None] | None
          ) -> SweepOutcome:
    stored = store.done()
    search = Search(sweep, stored)
    outcome = SweepOutcome()
    total = sweep.total
    grid = sweep.spec.strategy == "grid"
    seq = store.max_seq()
    done_keys = set(stored)
    waiting: dict[str, list[Any]] = {}  # key in flight -> trials to tell when it is back
    in_flight: dict[Any, list[PointRequest]] = {}
    # Accuracy (sweeps with inputs): measured once per (model, choices); that combination's points are held back
    # (``parked``) until its measurement is back, so every stored point carries it.
    accuracy: dict[str, dict[str, Any]] = store.accuracy() if sweep.measures_accuracy else {}
    measuring: dict[Any, str] = {}  # future -> accuracy key
    parked: dict[str, list[PointRequest]] = {}
    accounted: set[str] = set()  # accuracy keys counted in outcome.accuracy_measured / _reused
    per_point = 0.01  # s, running estimate of a point's cost, sizes the chunks
    stall = 0
    model_based = sweep.spec.strategy in ("nsga2", "tpe")
    t0 = time.perf_counter()
    new_done = 0

    def progress() -> None:
        if on_progress is not None:
            rate = new_done / max(time.perf_counter() - t0, 1e-9)
            on_progress(min(len(done_keys), total), total, rate)

    def can_ask() -> bool:
        if grid:
            return search.asked < total
        return len(done_keys) + len(waiting) < total and stall < 50 + 10 * total

    def chunk_size() -> int:
        size = max(1, min(_MAX_CHUNK, int(_CHUNK_SECONDS / max(per_point, 1e-4))))
        # A model-based sampler should see results before it proposes much more.
        return min(size, 4) if model_based else size

    def dispatch(group: list[PointRequest]) -> None:
        size = chunk_size()
        for i in range(0, len(group), size):
            chunk = group[i:i + size]
            in_flight[executor.submit(chunk)] = chunk

    def route(group: list[PointRequest]) -> None:
        """Dispatch one (model, choices) group, or hold it until its accuracy is measured."""
        if not sweep.measures_accuracy:
            return dispatch(group)
        key = accuracy_key(group[0].model, group[0].choices)
        if key not in accuracy and key not in parked:
            accuracy.update(store.accuracy([key]))  # measured by another runner meanwhile
        if key in accuracy:
            if key not in accounted:
                accounted.add(key)
                outcome.accuracy_reused += 1
            return dispatch(group)
        if key not in parked:
            parked[key] = []
            measuring[executor.call(measure_accuracy, accuracy_request(sweep, group[0]))] = key
        parked[key].extend(group)

    def measured(future: Any) -> None:
        key = measuring.pop(future)
        result = future.result()
        store.put_accuracy(key, result)
        accuracy[key] = result
        accounted.add(key)
        outcome.accuracy_measured += 1
        outcome.accuracy_seconds += result["seconds"]
        dispatch(parked.pop(key))

    def busy() -> int:
        size = chunk_size()
        return len(in_flight) + len(measuring) + sum(-(-len(g) // size) for g in parked.values())

    progress()
    try:
        while True:
            free = executor.slots * 2 - busy()
            if free > 0 and can_ask():
                want = chunk_size() * free
                fresh: list[tuple[str, dict[str, Any]]] = []
                while len(fresh) < want and can_ask():
                    trial, params = search.ask()
                    key = point_key(params)
                    if key in done_keys:
                        stored_row = stored.get(key)
                        if stored_row is not None:
                            search.tell(trial, stored_row["result"])
                        outcome.reused += 1
                        stall += 1
                    elif key in waiting:
                        waiting[key].append(trial)
                        stall += 1
                    else:
                        waiting[key] = [trial]
                        fresh.append((key, params))
                        stall = 0
                if fresh:
                    claimed, finished = store.claim(fresh)
                    for key, entry in finished.items():  # done by another runner meanwhile
                        stored[key] = entry
                        done_keys.add(key)
                        for trial in waiting.pop(key, []):
                            search.tell(trial, entry["result"])
                    mine = set(claimed)
                    for key, _ in fresh:
                        if key not in mine and key not in finished:
                            waiting.pop(key, None)  # being computed by a live runner elsewhere
                            outcome.skipped_elsewhere += 1
                    requests = [point_request(sweep, params, key) for key, params in fresh if key in mine]
                    groups: dict[tuple[Any, ...], list[PointRequest]] = defaultdict(list)
                    for req in requests:
                        groups[(req.model, req.choices)].append(req)  # one prefix per chunk
                    for group in groups.values():
                        route(group)
                    continue
            if not in_flight and not measuring:
                if can_ask():
                    continue
                break
            for future in executor.wait([*in_flight, *measuring]):
                if future in measuring:
                    measured(future)
                    continue
                chunk = {req.key: req for req in in_flight.pop(future)}
                rows = future.result()
                results = []
                for row in rows:
                    seq += 1
                    req = chunk[row["key"]]
                    found = accuracy.get(accuracy_key(req.model, req.choices)) if sweep.measures_accuracy else None
                    result = finalize(sweep, row, found)
                    results.append((row["key"], seq, result))
                    outcome.compute_seconds += row["seconds"]
                    outcome.tiers[row["tier"] or "error"] = outcome.tiers.get(row["tier"] or "error", 0) + 1
                store.finish(results)
                for key, _, result in results:
                    done_keys.add(key)
                    stored[key] = {"result": result}
                    for trial in waiting.pop(key, []):
                        search.tell(trial, result)
                new_done += len(rows)
                outcome.computed += len(rows)
                per_point = 0.7 * per_point + 0.3 * (sum(r["seconds"] for r in rows) / max(len(rows), 1))
            progress()
    except BaseException:
        store.release(waiting)
        raise
    return outcome
