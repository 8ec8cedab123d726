"""Chrome / Perfetto trace-event JSON of a schedule (open in ui.perfetto.dev or chrome://tracing).

One process per unit kind, one thread per unit instance, one complete ("X") event per task; timestamps are in
microseconds at the target clock, as the trace-event format expects.
"""

from __future__ import annotations

from typing import Any

__all__ = ["trace_events"]


def trace_events(schedule: Any, clock_mhz: float, model_name: str) -> dict[str, Any]:
    """The trace-event document for ``schedule`` (an ``hw.perf.scheduler.Schedule``)."""
    units = sorted({t.unit for t in schedule.tasks})
    pid = {u: i + 1 for i, u in enumerate(units)}
    events: list[dict[str, Any]] = []
    for unit in units:
        events.append({"ph": "M", "name": "process_name", "pid": pid[unit], "args": {"name": unit}})
    for task in schedule.tasks:
        events.append({
            "ph": "X", "name": task.name, "cat": task.unit, "pid": pid[task.unit], "tid": task.instance,
            "ts": task.start / clock_mhz, "dur": max(task.end - task.start, 0) / clock_mhz,
            "args": {"start_cycle": task.start, "end_cycle": task.end, "compute_cycles": task.compute_cycles,
                     "memory_cycles": task.memory_cycles, "bytes_in": task.bytes_in, "bytes_out": task.bytes_out},
        })
    return {"traceEvents": events, "displayTimeUnit": "ns", "otherData": {"model": model_name, "clock_mhz": clock_mhz}}
