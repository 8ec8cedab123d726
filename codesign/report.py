"""Render a compile report: a rich per-layer table with totals, and the JSON file.

The report dict itself is built by the compiler's ``report`` step (compiler/summary.py); this module only presents
it, so the table and the JSON always show the same numbers.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table

__all__ = ["render_table", "write_json", "format_count"]


def format_count(value: float) -> str:
    """1234567 -> '1.23M' (SI suffixes, 3 significant digits)."""
    for div, suffix in ((1e12, "T"), (1e9, "G"), (1e6, "M"), (1e3, "k")):
        if abs(value) >= div:
            return f"{value / div:.3g}{suffix}"
    return f"{value:.3g}" if isinstance(value, float) and not float(value).is_integer() else str(int(value))


def render_table(report: dict[str, Any], console: Console, max_layers: int | None = None) -> None:
    """Print the per-layer table and the totals."""
    table = Table(title=f"{report['model']} on {report['target']} @ {report['clock_mhz']:g} MHz",
                  show_lines=False, header_style="bold")
    for col, justify in (("layer", "left"), ("op", "left"), ("unit", "left"), ("MACs", "right"),
                         ("off-chip B", "right"), ("compute", "right"), ("memory", "right"), ("cycles", "right"),
                         ("start", "right"), ("end", "right")):
        table.add_column(col, justify=justify, overflow="fold")  # type: ignore[arg-type]
    layers = report["layers"]
    shown = layers if max_layers is None else layers[:max_layers]
    for layer in shown:
        table.add_row(layer["name"], layer["op"], layer["unit"], format_count(layer["macs"]),
                      format_count(layer["bytes_offchip"]), format_count(layer["compute_cycles"]),
                      format_count(layer["memory_cycles"]), format_count(layer["cycles"]),
                      str(layer["start_cycle"]), str(layer["end_cycle"]))
    if len(shown) < len(layers):
        table.add_row(f"... {len(layers) - len(shown)} more (see --json)", "", "", "", "", "", "", "", "", "")
    console.print(table)
    totals = Table(show_header=False, box=None)
    totals.add_column(style="bold")
    totals.add_column()
    eff = report.get("roofline_efficiency")
    rows = [
        ("latency", f"{report['latency_cycles']:,} cycles = {report['latency_ms']:.4g} ms"),
        ("throughput", f"{report['throughput_per_s']:.4g} inferences/s" if report.get("throughput_per_s") else "-"),
        ("MACs", f"{report['macs']:,}"),
        ("off-chip traffic", f"{report['bytes_offchip']:,} bytes"),
        ("roofline bound", f"{report['roofline_cycles']:,} cycles ({report['roofline_bound']}-bound); "
                           f"schedule reaches {eff:.1%} of it" if eff else "-"),
        ("energy", f"{report['energy_mj']:.4g} mJ (" + ", ".join(
            f"{k} {v:.3g}" for k, v in report.get("energy_breakdown_mj", {}).items()) + ")"),
        ("patterns", ", ".join(f"{k} {v}" for k, v in report["patterns"].items())),
    ]
    if report.get("precision", "float32") != "float32":  # a half-precision export: say what the patterns compute in
        rows.append(("precision", f"{report['precision']} weights; recognised patterns and GEMMs compute in "
                                  "float32, other ops in their ONNX type"))
    if "resources" in report:
        rows.append(("resources", ", ".join(
            f"{k} {r['used']:,.0f}/{r['available']:,.0f} ({r['fraction']:.0%})" for k, r in report["resources"].items()
            if r.get("fraction") is not None)))
    detail = report.get("resources_detail")
    if detail:
        lane = detail["per_lane"]
        rows.append(("vector lanes", f"{detail['vector_lanes']} x ({', '.join(detail['lane_units']) or 'no units'}): "
                                     + ", ".join(f"{lane[r]:,.0f} {r.upper()}" for r in ("lut", "ff", "dsp"))
                                     + " each"))
    rows += _decode_rows(report)
    for note in report.get("import_notes", []):  # what the import rewrote (a quantized model's integer GEMMs)
        rows.append(("imported", note))
    for note in report.get("recognition_notes", []):  # what recognition left as generic ops, and why
        rows.append(("not recognised", note))
    if report.get("numerics", {}).get("float_blocks"):  # what --quant left float, in one line
        rows.append(("left float", report["numerics"]["float_blocks"]))
    for key, value in rows:
        totals.add_row(key, value)
    console.print(totals)
    auto = report.get("numerics", {}).get("quant_auto")
    if auto:
        from codesign.report_quant import quant_auto_table

        console.print(quant_auto_table(auto))


def _decode_rows(report: dict[str, Any]) -> list[tuple[str, str]]:
    """Per-token latency next to the prefill's, the KV cache, and the masked attention tiles skipped."""
    rows = []
    dec = report.get("decode")
    if dec:
        span = (f"cache {dec['cache_len_first']}" if dec["tokens"] == 1
                else f"{dec['tokens']} tokens, cache {dec['cache_len_first']}..{dec['cache_len_last']}")
        text = (f"{dec['per_token_ms_mean']:.4g} ms/token mean ({span}; first {dec['per_token_ms_first']:.4g}, "
                f"last {dec['per_token_ms_last']:.4g} ms)")
        if dec.get("source") == "prefill":
            text += f"; prefill of {dec['prefill_tokens']} tokens {dec['prefill_latency_ms']:.4g} ms"
        rows.append(("decode", text))
    kv = report.get("kv_cache")
    if kv:
        fits = ("fits on chip" if kv["fits_onchip"] else "off chip" if kv["fits_offchip"]
                else "exceeds off-chip memory")
        rows.append(("KV cache", f"{kv['capacity_bytes']:,} bytes at {kv['positions']} positions ({fits}); per token "
                                 f"reads {kv['read_bytes_per_token']:,}, writes {kv['write_bytes_per_token']:,} bytes"))
    att = report.get("attention")
    if att:
        rows.append(("masked tiles", f"{att['masked_tiles_skipped']:,} of {att['tiles_total']:,} attention tiles "
                                     f"skipped, {att['cycles_saved']:,} compute cycles saved"))
    return rows


def write_json(report: dict[str, Any], path: str | Path) -> None:
    """Write the report as indented, strict JSON (a non-finite number is ``null``), atomically (codesign/_io.py)."""
    from codesign._io import write_json_atomic

    write_json_atomic(path, report, indent=2)
