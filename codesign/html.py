"""A self-contained HTML report: totals, per-layer breakdown chart, roofline plot and schedule timeline.

Charts are drawn with matplotlib (Agg) and inlined as base64 PNGs, so the file can be mailed or attached to a CI run
without the images next to it.
"""

from __future__ import annotations

import base64
import html
import io
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

__all__ = ["write_html", "charts"]


def _png(fig) -> str:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=110, bbox_inches="tight")
    plt.close(fig)
    return base64.b64encode(buf.getvalue()).decode()


def _breakdown(report: dict[str, Any]) -> str:
    """Cycles per op kind, compute vs memory-stall, as stacked bars."""
    by_op: dict[str, list[int]] = {}
    for layer in report["layers"]:
        kind = layer["op"].split("+")[0].split(".")[0]
        entry = by_op.setdefault(kind, [0, 0])
        entry[0] += layer["compute_cycles"]
        entry[1] += max(layer["cycles"] - layer["compute_cycles"], 0)
    kinds = sorted(by_op, key=lambda k: -sum(by_op[k]))
    fig, ax = plt.subplots(figsize=(8, 3.2))
    compute = [by_op[k][0] for k in kinds]
    stall = [by_op[k][1] for k in kinds]
    ax.bar(kinds, compute, label="compute")
    ax.bar(kinds, stall, bottom=compute, label="waiting for memory")
    ax.set_ylabel("cycles")
    ax.set_title("Where the cycles go (per op kind)")
    ax.legend()
    return _png(fig)


def _roofline(report: dict[str, Any]) -> str:
    """Each GEMM-bearing layer at (MACs per off-chip byte, achieved MACs per cycle) under the target's roofs."""
    peak = report["peak_macs_per_cycle"]
    bandwidth = report["offchip_bytes_per_cycle"]
    fig, ax = plt.subplots(figsize=(6, 4))
    points = [(layer["macs"] / max(layer["bytes_offchip"], 1), layer["macs"] / max(layer["cycles"], 1), layer["op"])
              for layer in report["layers"] if layer["macs"]]
    xs = [p[0] for p in points] or [1.0]
    lo, hi = min(xs + [peak / bandwidth]) / 4, max(xs + [peak / bandwidth]) * 4
    grid = [lo * (hi / lo) ** (i / 100) for i in range(101)]
    ax.plot(grid, [min(peak, bandwidth * g) for g in grid], color="black", label="roofline")
    for kind in sorted({p[2] for p in points}):
        sel = [p for p in points if p[2] == kind]
        ax.scatter([p[0] for p in sel], [p[1] for p in sel], s=14, label=kind)
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel("arithmetic intensity (MACs / off-chip byte)")
    ax.set_ylabel("MACs / cycle")
    ax.set_title(f"Roofline: peak {peak:g} MACs/cycle, {bandwidth:.4g} B/cycle")
    ax.legend(fontsize=7)
    return _png(fig)


def _timeline(schedule: Any) -> str:
    """Gantt chart of the schedule: one row per unit instance."""
    rows = sorted({(t.unit, t.instance) for t in schedule.tasks})
    index = {r: i for i, r in enumerate(rows)}
    fig, ax = plt.subplots(figsize=(9, 0.5 + 0.45 * len(rows)))
    colors = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    for task in schedule.tasks:
        row = index[(task.unit, task.instance)]
        ax.broken_barh([(task.start, max(task.end - task.start, 1))], (row - 0.4, 0.8),
                       color=colors[row % len(colors)])
    ax.set_yticks(range(len(rows)), [f"{u}[{i}]" for u, i in rows])
    ax.set_xlabel("cycle")
    ax.set_title("Schedule timeline")
    return _png(fig)


def charts(report: dict[str, Any], schedule: Any) -> dict[str, str]:
    """name -> base64 PNG of each chart."""
    return {"breakdown": _breakdown(report), "roofline": _roofline(report), "timeline": _timeline(schedule)}


def write_html(report: dict[str, Any], schedule: Any, path: str | Path) -> None:
    """Write the report, its charts inlined, to ``path``."""
    images = charts(report, schedule)
    esc = html.escape
    totals = [
        ("latency", f"{report['latency_cycles']:,} cycles = {report['latency_ms']:.4g} ms"),
        ("MACs", f"{report['macs']:,}"), ("off-chip bytes", f"{report['bytes_offchip']:,}"),
        ("roofline", f"{report['roofline_cycles']:,} cycles ({report['roofline_bound']}-bound)"),
        ("energy", f"{report['energy_mj']:.4g} mJ"),
        ("patterns", ", ".join(f"{k} {v}" for k, v in report["patterns"].items())),
    ]
    for name, res in report.get("resources", {}).items():
        totals.append((name, f"{res['used']:,.0f} / {res['available']:,.0f}"))
    rows = "".join(
        f"<tr><td>{esc(ly['name'])}</td><td>{esc(ly['op'])}</td><td>{ly['macs']:,}</td><td>{ly['bytes_offchip']:,}</td>"
        f"<td>{ly['compute_cycles']:,}</td><td>{ly['memory_cycles']:,}</td><td>{ly['cycles']:,}</td>"
        f"<td>{ly['start_cycle']:,}</td><td>{ly['end_cycle']:,}</td></tr>"
        for ly in report["layers"])
    doc = f"""<!doctype html>
<html><head><meta charset="utf-8"><title>{esc(report['model'])} on {esc(report['target'])}</title>
<style>body{{font-family:sans-serif;margin:2em}}table{{border-collapse:collapse;font-size:12px}}
td,th{{border:1px solid #ccc;padding:2px 6px;text-align:right}}td:first-child,td:nth-child(2){{text-align:left}}</style>
</head><body>
<h1>{esc(report['model'])} on {esc(report['target'])} @ {report['clock_mhz']:g} MHz</h1>
<table>{''.join(f'<tr><th>{esc(k)}</th><td>{esc(v)}</td></tr>' for k, v in totals)}</table>
<h2>Breakdown</h2><img src="data:image/png;base64,{images['breakdown']}">
<h2>Roofline</h2><img src="data:image/png;base64,{images['roofline']}">
<h2>Schedule</h2><img src="data:image/png;base64,{images['timeline']}">
<h2>Layers</h2><table><tr><th>layer</th><th>op</th><th>MACs</th><th>off-chip B</th><th>compute</th><th>memory</th>
<th>cycles</th><th>start</th><th>end</th></tr>{rows}</table>
</body></html>
"""
    from codesign._io import write_text_atomic

    write_text_atomic(path, doc)
