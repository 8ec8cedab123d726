"""``codesign rtl ... --system [--simulate]``: the command (checks, build, write, simulate, print); the design is
codesign/rtl_system.py's, the simulation codesign/rtl_simulate.py's."""

from __future__ import annotations

import argparse
import sys
from typing import Any

from codesign.rtl_simulate import simulate
from codesign.rtl_system import build_design, first_feeds, host_values, sample_image, write_system
from hw.errors import InputError

__all__ = ["run_system_cli"]


def run_system_cli(args: argparse.Namespace) -> int:
    """``codesign rtl ... --system [--simulate]``: checks, build, write, simulate, print."""
    from codesign.cli import _output_path

    if args.kernel:
        raise InputError("rtl: --system builds a model's accelerator; it takes a model, not --kernel")
    if not args.model:
        raise InputError("rtl --system: give a model (an ONNX file)")
    given = [args.model] + [p for p in (args.inputs, args.calibrate) if p]
    outputs = {flag: _output_path(path, given, flag) for flag, path in (("--json", args.json),
                                                                       ("--outputs", args.outputs)) if path}
    if (args.outputs or args.json) and not args.simulate:
        raise InputError(f"rtl: {'--outputs' if args.outputs else '--json'} reports a simulation; add --simulate")
    if args.outputs and not args.inputs:
        raise InputError("--outputs needs --inputs (the samples to run)")
    design = build_design(args)
    if args.simulate and design.lacks:
        first = design.lacks[0]
        from hw.rtl.system.support import BUILT

        raise InputError(f"system RTL: {first['op']} '{first['layer']}': instruction {first['instruction']} is a "
                         f"{first['lacks']}, which the top level does not build yet (it runs {BUILT}); write the "
                         "program without --simulate")
    feeds, image_inputs = first_feeds(design)
    image = sample_image(design, host_values(design, feeds))
    manifest = write_system(args.out, design, image, image_inputs)
    report = None
    if args.simulate:
        report = simulate(design, args.sim, outputs.get("--outputs"), outputs.get("--json"))
    if not args.quiet:
        _print(manifest, args.out, report)
    return 0


def _print(manifest: dict[str, Any], out: str, report: dict[str, Any] | None) -> None:
    from rich.console import Console
    from rich.table import Table

    console = Console() if sys.stdout.isatty() else Console(width=160)
    c = manifest["config"]
    console.print(f"cds1_system {c['rows']}x{c['cols']} (sp {c['sp_rows']} rows, acc {c['acc_rows']}, const "
                  f"{c['const_rows']}), {manifest['program']['instructions']} instructions, DRAM image "
                  f"{manifest['program']['dram_bytes']} bytes: written to {out}")
    if report is None:
        for note in manifest["notes"]:
            console.print(f"note: {note}")
        return
    table = Table(title=f"RTL cycles ({report['simulator']}, {report['samples']} sample(s)) vs the model's")
    for column in ("layer", "op", "rtl cycles", "model cycles"):
        table.add_column(column, justify="left" if column in ("layer", "op") else "right")
    show = lambda v: "" if v is None else f"{v:,}"  # noqa: E731
    for layer in report["layers"]:
        table.add_row(layer["name"], layer["op"], show(layer["rtl_cycles"]), show(layer["latency_cycles"]))
    table.add_row("total", "", show(report["rtl_cycles"]), show(report["latency_cycles"]))
    table.add_row("  of it the host's ops (the top level runs none)", "", "",
                  show(report["host_latency_cycles"]))
    table.add_row("  the device's", "", show(report["rtl_cycles"]), show(report["device_latency_cycles"]))
    console.print(table)
