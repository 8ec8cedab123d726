"""The ``--quant auto`` table: each GEMM's weight recipe, its SQNR and hardware cost, and the cheaper candidates it
passed over (the report's ``numerics.quant_auto``, compiler/quant_auto.py)."""

from __future__ import annotations

from typing import Any

from rich.table import Table

__all__ = ["quant_auto_table"]


def _cost(c: dict[str, Any]) -> str:
    cycles = f", {c['cycles']:,} cyc" if "cycles" in c else ""
    return f"{c['recipe']} {c['sqnr_db']:.1f} dB {c['weight_bytes']:,} B{cycles}"


def quant_auto_table(section: dict[str, Any]) -> Table:
    """One row per GEMM: the recipe chosen, its weight SQNR (dB, the GEMM alone), weight + scale bytes, the group
    rescale's multiply-adds, cycles on the target, and every candidate as ``recipe SQNR bytes cycles``."""
    met = "met" if section["met"] else "NOT met"
    table = Table(title=f"--quant auto: output cosine {section['output_cosine']:.4f} on the calibration data, target "
                        f"{section['accuracy_target']:g} {met}; weights {section['weight_bytes']:,} B "
                        f"(all int8: {section['weight_bytes_all_w8']:,} B); {section['probes']} probes",
                  header_style="bold")
    for col, justify in (("layer", "left"), ("recipe", "left"), ("SQNR dB", "right"), ("weight B", "right"),
                         ("group MACs", "right"), ("cycles", "right"), ("candidates", "left")):
        table.add_column(col, justify=justify, overflow="fold")  # type: ignore[arg-type]
    for layer in section["layers"]:
        table.add_row(layer["layer"], layer["recipe"], f"{layer['sqnr_db']:.1f}", f"{layer['weight_bytes']:,}",
                      f"{layer['group_macs']:,}", f"{layer['cycles']:,}" if "cycles" in layer else "-",
                      "; ".join(_cost(c) for c in layer["candidates"]))
    return table
