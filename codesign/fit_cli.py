"""``codesign fit`` on the command line: arguments, the table and the JSON of codesign/fit.py's search."""

from __future__ import annotations

import argparse
from typing import TYPE_CHECKING, Any

from rich.console import Console
from rich.table import Table

from codesign.options import CHOICES, validate_choice
from codesign.report import write_json

if TYPE_CHECKING:
    from codesign.fit import Design

__all__ = ["register"]

_RESOURCES = ("lut", "ff", "dsp", "bram18", "uram")


def _row(label: str, d: Design) -> list[str]:
    shares = [f"{d.fraction(r):.0%}" if d.fraction(r) is not None else "-" for r in _RESOURCES]
    return [label, f"{d.rows}x{d.cols}", str(d.lanes), f"{d.latency_ms:.3f}",
            f"{d.report.get('roofline_efficiency') or 0:.2f}", *shares]


def _cmd_fit(args: argparse.Namespace) -> int:
    # the pricing loads the compiler, ONNX and the sweep evaluator: `codesign --help` registers this command only
    from codesign.fit import ARRAY_SIZES, fit
    from compiler.frontend.onnx_loader import parse_shape_arg
    from compiler.pipeline import overrides_from

    choices = [(key, validate_choice(key, value)) for key in CHOICES
               if (value := getattr(args, key.replace("-", "_"), None)) is not None]
    result = fit(args.model, args.target, overrides_from(args.overrides), choices,
                 [parse_shape_arg(text) for text in args.shape])
    table = Table(title=f"{args.model} on {result.target}: designs that fit the device")
    for column in ("design", "array", "lanes", "latency ms", "roofline eff.", *(r.upper() for r in _RESOURCES)):
        table.add_column(column)
    table.add_row(*_row("largest", result.largest))
    table.add_row(*_row("fastest", result.fastest))
    Console(width=160).print(table)
    fitting = sum(d.fits for d in result.designs)
    print(f"{fitting} of {len(result.designs)} candidate designs fit: arrays {ARRAY_SIZES[0]} to {ARRAY_SIZES[-1]} "
          "per side with one lane per column, then lanes doubled on the largest array")
    if args.json:
        write_json({"target": result.target, "largest": _summary(result.largest), "fastest": _summary(result.fastest),
                    "designs": [_summary(d) for d in result.designs]}, args.json)
    return 0


def _summary(d: Design) -> dict[str, Any]:
    return {"rows": d.rows, "cols": d.cols, "lanes": d.lanes, "fits": d.fits, "latency_ms": d.latency_ms,
            "latency_cycles": d.report["latency_cycles"], "roofline_efficiency": d.report.get("roofline_efficiency"),
            "resources": d.report.get("resources", {})}


def register(sub: Any) -> None:
    """Add ``codesign fit`` to the CLI's subcommands."""
    p = sub.add_parser("fit", help="the largest array and lane count an FPGA device holds for a model")
    p.add_argument("model", help="ONNX file")
    p.add_argument("--target", default="fpga-u280", help="bundled FPGA target name or a target YAML path")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="override a target key before the search (repeatable)")
    p.add_argument("--shape", action="append", default=[], metavar="INPUT=DIMS",
                   help="concrete shape for an input with symbolic dims (repeatable)")
    for key, (valid, default) in sorted(CHOICES.items()):
        p.add_argument(f"--{key}", default=None, metavar="|".join(valid), help=f"default: {default}")
    p.add_argument("--json", help="write every priced design as JSON")
    p.set_defaults(func=_cmd_fit)
