"""What a sweep leaves in its output folder, all rebuilt from the store after every run:

``results.csv``  one row per point: seq, model, each axis, feasible, reason, objectives, every metric, tier, seconds.
``pareto.csv``   the feasible points no other feasible point of the same model dominates on the objectives.
``pareto.png``   the objectives pairwise (all feasible points, the front highlighted); matplotlib, Agg.
``report.html``  self-contained: summary, Pareto table, Pareto and parallel-coordinates plots (base64 PNGs),
                 and the results table.
"""

from __future__ import annotations

import base64
import csv
import html
import io
import math
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from codesign.sweep.files import os_errors, write_atomic
from codesign.sweep.metrics import REPORT_METRICS, RESOURCE_METRICS, pareto_mask
from codesign.sweep.spec import Sweep

__all__ = ["result_rows", "write_outputs", "pareto_rows", "summary_table", "columns"]

_FIXED = ("seq", "model")


def result_rows(sweep: Sweep, stored: Mapping[str, Mapping[str, Any]]) -> list[dict[str, Any]]:
    """Flat rows (CSV-ready) for the stored points, in completion order."""
    rows = []
    for key, entry in sorted(stored.items(), key=lambda kv: (kv[1].get("seq") or 0, kv[0])):
        params, result = entry["params"], entry["result"]
        row: dict[str, Any] = {"seq": entry.get("seq"), "model": os.path.basename(params["model"])}
        row.update(result.get("metrics") or {})
        for axis in sweep.axes:  # after the metrics: an axis named like one (clock_mhz) shows the value asked for
            row[axis.name] = params.get(axis.name)
        row["feasible"] = bool(result.get("feasible"))
        row["reason"] = result.get("reason") or ""
        row["tier"] = result.get("tier") or ""
        row["seconds"] = round(float(result.get("seconds") or 0.0), 6)
        row["key"] = key
        rows.append(row)
    return rows


def columns(sweep: Sweep, rows: Sequence[Mapping[str, Any]]) -> list[str]:
    """Column order: fixed, axes, feasibility, objectives, known metrics, other metrics found, bookkeeping."""
    head = list(_FIXED) + [a.name for a in sweep.axes] + ["feasible", "reason"]
    objectives = [name for name, _ in sweep.objectives if name not in head]
    seen = {k for row in rows for k in row}
    known = [m for m in REPORT_METRICS + RESOURCE_METRICS if m in seen and m not in head]
    rest = sorted(k for k in seen if k not in set(head) | set(objectives) | set(known) | {"tier", "seconds", "key"})
    return head + objectives + [m for m in known if m not in objectives] + rest + ["tier", "seconds", "key"]


def pareto_rows(sweep: Sweep, rows: Sequence[Mapping[str, Any]]) -> list[Mapping[str, Any]]:
    """The feasible rows on the Pareto front of their model (objective directions from the sweep)."""
    names = [n for n, _ in sweep.objectives]
    directions = [d for _, d in sweep.objectives]
    by_model: dict[str, list[Mapping[str, Any]]] = {}
    for row in rows:
        if row["feasible"] and all(_finite(row.get(n)) for n in names):
            by_model.setdefault(row["model"], []).append(row)
    front = []
    for group in by_model.values():
        mask = pareto_mask([[float(r[n]) for n in names] for r in group], directions)
        front += [r for r, keep in zip(group, mask, strict=True) if keep]
    return sorted(front, key=lambda r: (r["model"], [float(r[n]) for n in names]))


def _finite(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def _write_csv(path: Path, cols: Sequence[str], rows: Sequence[Mapping[str, Any]]) -> None:
    buf = io.StringIO(newline="")
    writer = csv.DictWriter(buf, fieldnames=list(cols), extrasaction="ignore")
    writer.writeheader()
    for row in rows:
        writer.writerow({c: _cell(row.get(c)) for c in cols})
    write_atomic(path, buf.getvalue())  # a reader never sees half a file


def _cell(value: Any) -> Any:
    if value is None:
        return ""
    if isinstance(value, float):
        return repr(value)  # round-trips exactly
    return value


def _figure_png(fig: Any) -> bytes:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=110, bbox_inches="tight")
    return buf.getvalue()


def _pareto_png(sweep: Sweep, rows: Sequence[Mapping[str, Any]], front: Sequence[Mapping[str, Any]]) -> bytes:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = [n for n, _ in sweep.objectives]
    pairs = [(names[i], names[j]) for i in range(len(names)) for j in range(i + 1, len(names))] or [(names[0], None)]
    cols = min(3, len(pairs))
    nrows = math.ceil(len(pairs) / cols)
    fig, axes = plt.subplots(nrows, cols, figsize=(4.6 * cols, 3.8 * nrows), squeeze=False)
    feasible = [r for r in rows if r["feasible"]]
    infeasible = [r for r in rows if not r["feasible"]]
    front_keys = {r["key"] for r in front}
    for ax, (x, y) in zip(axes.flat, pairs, strict=False):
        def series(subset: Sequence[Mapping[str, Any]], name: str | None) -> list[float]:
            return [float(r[name]) if name else i for i, r in enumerate(subset)]

        infeasible_style = {"c": "#d62728", "marker": "x", "s": 10, "alpha": 0.35, "label": "infeasible"}
        for subset, style in ((infeasible, infeasible_style),
                              (feasible, {"c": "#9a9a9a", "s": 10, "alpha": 0.6, "label": "feasible"})):
            usable = [r for r in subset if _finite(r.get(x)) and (y is None or _finite(r.get(y)))]
            if usable:
                ax.scatter(series(usable, x), series(usable, y), **style)
        on_front = [r for r in feasible if r["key"] in front_keys]
        if on_front:
            on_front.sort(key=lambda r: float(r[x]))
            ax.plot(series(on_front, x), series(on_front, y), "o-", c="#1f77b4", ms=4, lw=1, label="Pareto")
        ax.set_xlabel(x)
        ax.set_ylabel(y or "point")
        for axis_name, setter in ((x, ax.set_xscale), (y, ax.set_yscale)):
            values = [float(r[axis_name]) for r in rows if axis_name and _finite(r.get(axis_name))]
            if values and min(values) > 0 and max(values) / min(values) > 100:
                setter("log")
        ax.grid(alpha=0.3)
    for ax in list(axes.flat)[len(pairs):]:
        ax.set_visible(False)
    axes.flat[0].legend(fontsize=8)
    fig.suptitle(f"{len(front)} Pareto points of {len(feasible)} feasible ({len(rows)} evaluated)")
    data = _figure_png(fig)
    plt.close(fig)
    return data


def _parallel_png(sweep: Sweep, rows: Sequence[Mapping[str, Any]], front: Sequence[Mapping[str, Any]]) -> bytes:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    dims = [a.name for a in sweep.axes] + [n for n, _ in sweep.objectives]
    feasible = [r for r in rows if r["feasible"]]
    scales = {}
    for d in dims:
        values = [r.get(d) for r in feasible]
        numbers = [v for v in values if v is not None]
        if all(_finite(v) for v in values) and values and len(numbers) == len(values):
            lo, hi = min(numbers), max(numbers)
            scales[d] = (lambda v, lo=lo, hi=hi: (float(v) - lo) / (hi - lo) if hi > lo else 0.5, f"{lo:.3g}",
                         f"{hi:.3g}")
        else:
            cats = sorted({str(v) for v in values})
            scales[d] = (lambda v, cats=cats: cats.index(str(v)) / max(len(cats) - 1, 1) if cats else 0.5,
                         cats[0] if cats else "", cats[-1] if cats else "")
    fig, ax = plt.subplots(figsize=(max(6, 1.6 * len(dims)), 4))
    front_keys = {r["key"] for r in front}
    xs = list(range(len(dims)))
    for r in feasible:
        on = r["key"] in front_keys
        ax.plot(xs, [scales[d][0](r.get(d)) for d in dims], c="#1f77b4" if on else "#b0b0b0",
                lw=1.2 if on else 0.5, alpha=0.9 if on else 0.35, zorder=2 if on else 1)
    ax.set_xticks(xs, dims, rotation=20, ha="right")
    for x, d in zip(xs, dims, strict=True):
        ax.axvline(x, c="k", lw=0.5)
        ax.text(x, -0.06, scales[d][1], ha="center", va="top", fontsize=7)
        ax.text(x, 1.04, scales[d][2], ha="center", va="bottom", fontsize=7)
    ax.set_ylim(-0.12, 1.12)
    ax.set_yticks([])
    ax.set_title("parallel coordinates (blue: Pareto front)")
    data = _figure_png(fig)
    plt.close(fig)
    return data


def _html_table(cols: Sequence[str], rows: Sequence[Mapping[str, Any]], limit: int = 2000) -> str:
    head = "".join(f"<th>{html.escape(c)}</th>" for c in cols)
    body = []
    for row in rows[:limit]:
        cells = []
        for c in cols:
            v = row.get(c)
            text = f"{v:.6g}" if isinstance(v, float) else ("" if v is None else str(v))
            cells.append(f"<td>{html.escape(text)}</td>")
        body.append("<tr>" + "".join(cells) + "</tr>")
    more = f"<p>{len(rows) - limit} more rows in results.csv</p>" if len(rows) > limit else ""
    return f"<table><thead><tr>{head}</tr></thead><tbody>{''.join(body)}</tbody></table>{more}"


def _report_html(sweep: Sweep, cols: Sequence[str], rows: Sequence[Mapping[str, Any]],
                 front: Sequence[Mapping[str, Any]], pngs: Mapping[str, bytes]) -> str:
    shown = [c for c in cols if c not in ("key", "seconds", "tier")]
    images = "".join(f'<h2>{html.escape(title)}</h2><img alt="{html.escape(title)}" '
                     f'src="data:image/png;base64,{base64.b64encode(data).decode()}">' for title, data in pngs.items())
    feasible = sum(1 for r in rows if r["feasible"])
    objectives = ", ".join(f"{n} ({d})" for n, d in sweep.objectives)
    return f"""<!DOCTYPE html>
<html><head><meta charset="utf-8"><title>sweep {html.escape(sweep.source)}</title>
<style>body{{font-family:sans-serif;margin:2em}}table{{border-collapse:collapse;font-size:12px}}
td,th{{border:1px solid #ccc;padding:2px 6px;text-align:right}}th{{background:#eee;position:sticky;top:0}}
img{{max-width:100%}}</style></head><body>
<h1>Design-space sweep: {html.escape(sweep.source)}</h1>
<p>{len(rows)} points evaluated, {feasible} feasible, {len(front)} on the Pareto front.
Strategy {html.escape(sweep.spec.strategy)}; objectives {html.escape(objectives)};
constraints {html.escape(', '.join(c.name for c in sweep.constraints) or 'none')}; spec hash {sweep.spec_hash}.</p>
{images}
<h2>Pareto front</h2>{_html_table(shown, front)}
<h2>All points</h2>{_html_table(shown, rows)}
</body></html>
"""


def write_outputs(sweep: Sweep, stored: Mapping[str, Mapping[str, Any]], out: Path
                  ) -> tuple[list[dict[str, Any]], list[Mapping[str, Any]], list[Path]]:
    """Write results.csv, pareto.csv, pareto.png and report.html, each atomically and never through a symlink
    (``files.write_atomic``); returns (rows, Pareto rows, files written). Raises ``InputError`` naming the file
    that cannot be written (read-only folder, full disk)."""
    rows = result_rows(sweep, stored)
    cols = columns(sweep, rows)
    front = pareto_rows(sweep, rows)
    files = [out / "results.csv", out / "pareto.csv", out / "pareto.png", out / "report.html"]
    _write_csv(files[0], cols, rows)
    _write_csv(files[1], cols, front)
    pngs: dict[str, bytes] = {}
    if any(r["feasible"] for r in rows):
        pngs["Pareto front"] = _pareto_png(sweep, rows, front)
        pngs["Parallel coordinates"] = _parallel_png(sweep, rows, front)
        write_atomic(files[2], pngs["Pareto front"])
    else:
        with os_errors(files[2], "cannot remove"):
            files[2].unlink(missing_ok=True)  # a stale plot from an earlier run would mislead (a symlink: the link)
        files.pop(2)
    write_atomic(out / "report.html", _report_html(sweep, cols, rows, front, pngs))
    return rows, front, files


def summary_table(sweep: Sweep, rows: Sequence[Mapping[str, Any]], front: Sequence[Mapping[str, Any]],
                  limit: int = 15) -> Any:
    """A rich Table of the Pareto front (first ``limit`` rows) with the axes and objectives."""
    from rich.table import Table

    feasible = sum(1 for r in rows if r["feasible"])
    table = Table(title=f"Pareto front: {len(front)} of {feasible} feasible points ({len(rows)} evaluated)")
    cols = ((["model"] if len(sweep.models) > 1 else []) + [a.name for a in sweep.axes]
            + [n for n, _ in sweep.objectives])
    for c in cols:
        table.add_column(c, justify="right")
    for row in front[:limit]:
        table.add_row(*[f"{row.get(c):.4g}" if isinstance(row.get(c), float) else str(row.get(c)) for c in cols])
    if len(front) > limit:
        table.caption = f"... {len(front) - limit} more in pareto.csv"
    return table
