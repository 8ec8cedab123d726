"""Chrome / Perfetto trace-event JSON of a schedule (open in ui.perfetto.dev or chrome://tracing).

One process per unit kind, one thread per unit instance, one complete ("X") event per task; timestamps are in
microseconds at the target clock, as the trace-event format expects. A task that read another row tile by row tile
while it ran (``hw.perf.scheduler``: streaming across tasks) names it in ``args["streams_from"]`` and is joined to it
by a flow arrow, so the overlap of vector work and the array shows as arrows between the two tracks; a GEMM's
mapping (``compiler/schedule/mapping.py``) is in its ``args["mapping"]``.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

__all__ = ["trace_events"]


def trace_events(schedule: Any, clock_mhz: float, model_name: str, plans: Iterable[Any] | None = None
                 ) -> dict[str, Any]:
    """The trace-event document for ``schedule`` (an ``hw.perf.scheduler.Schedule``); ``plans`` (the priced
    ``LayerPlan`` s) add each GEMM's mapping."""
    mapping = {t.name: str(p.detail["mapping"]) for p in plans or () if "mapping" in p.detail for t in p.tasks}
    units = sorted({t.unit for t in schedule.tasks})
    pid = {u: i + 1 for i, u in enumerate(units)}
    where = {t.name: t for t in schedule.tasks}
    events: list[dict[str, Any]] = []
    for unit in units:
        events.append({"ph": "M", "name": "process_name", "pid": pid[unit], "args": {"name": unit}})
    for number, task in enumerate(schedule.tasks):
        args: dict[str, Any] = {
            "start_cycle": task.start, "end_cycle": task.end, "compute_cycles": task.compute_cycles,
            "memory_cycles": task.memory_cycles, "bytes_in": task.bytes_in, "bytes_out": task.bytes_out}
        stream = getattr(task, "stream", ())
        if stream:
            args["streams_from"] = list(stream)
        if task.name in mapping:
            args["mapping"] = mapping[task.name]
        events.append({
            "ph": "X", "name": task.name, "cat": task.unit, "pid": pid[task.unit], "tid": task.instance,
            "ts": task.start / clock_mhz, "dur": max(task.end - task.start, 0) / clock_mhz, "args": args,
        })
        for k, name in enumerate(stream):
            producer = where[name]
            flow = {"name": "stream", "cat": "stream", "id": number * 64 + k}
            events.append({**flow, "ph": "s", "pid": pid[producer.unit], "tid": producer.instance,
                           "ts": producer.start / clock_mhz})
            events.append({**flow, "ph": "f", "bp": "e", "pid": pid[task.unit], "tid": task.instance,
                           "ts": task.start / clock_mhz})
    return {"traceEvents": events, "displayTimeUnit": "ns", "otherData": {"model": model_name, "clock_mhz": clock_mhz}}
