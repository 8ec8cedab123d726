"""The ``codesign`` command line: compile, opt, targets (rtl, sweep and fit register themselves here too).

Every problem with what the user gave us is an ``InputError``: one line on stderr, exit status 2. ``main`` is the one
error boundary (codesign/boundary.py): an OSError or a library's error on the user's files is also one line and status
2; anything else is a bug, reported in one line with the path of the saved traceback, status 3.
"""

from __future__ import annotations

import argparse
import io
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any, NoReturn

from rich.console import Console

from hw.errors import InputError

__all__ = ["main", "build_parser"]


class _Parser(argparse.ArgumentParser):
    """argparse that reports usage errors as one line, exit 2, like every other input error."""

    def error(self, message: str) -> NoReturn:
        raise InputError(f"{self.prog}: {message} (see {self.prog} --help)")


def _print_ir(module: Any, generic: bool) -> str:
    from xdsl.printer import Printer

    out = io.StringIO()
    Printer(stream=out, print_generic_format=generic, print_properties_as_attributes=generic).print_op(module)
    out.write("\n")
    return out.getvalue()


def _output_path(path: str, inputs: Sequence[str], flag: str) -> Path:
    """Where to write ``flag``'s output; never over one of the user's inputs, parent must exist."""
    out = Path(path)
    for given in inputs:
        if Path(given).exists() and out.exists() and out.resolve() == Path(given).resolve():
            raise InputError(f"{flag} {path}: refusing to overwrite the input file")
    if not out.parent.exists():
        raise InputError(f"{flag} {path}: directory {out.parent} does not exist")
    if out.is_dir():
        raise InputError(f"{flag} {path}: is a directory")
    return out


def _add_compile_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("model", help="ONNX file")
    p.add_argument("--target", default="fpga-u280", help="bundled target name or a target YAML path")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="override a target key by dotted path, e.g. gemm.rows=16 (repeatable)")
    p.add_argument("--shape", action="append", default=[], metavar="INPUT=DIMS",
                   help="concrete shape for an input with symbolic dims, e.g. input_ids=1x128, or the size of a "
                   "symbolic dim by its name for every input, e.g. past_sequence_length=8 (repeatable)")
    p.add_argument("--batch", type=int, default=None, metavar="N",
                   help="samples per inference: the leading dim of every input (a dynamic batch axis); weights are "
                   "read once per batch and the report's throughput counts N samples")
    p.add_argument("--decode-tokens", type=int, default=None, metavar="N",
                   help="also report per-token (decode) latency for N generated tokens: a prefill export is "
                   "re-planned at one row per step against a KV cache of S..S+N-1 positions; a decode-step export "
                   "(past_key_values inputs) continues from its cache length")
    p.add_argument("--passes", help="replace the default passes, e.g. 'canonicalize,fuse,tile,schedule'")
    p.add_argument("--stop-after", metavar="STEP", help="stop after this pipeline step")
    p.add_argument("--print-ir-after", action="append", default=[], metavar="STEP",
                   help="print the IR after this step to stdout (repeatable)")
    p.add_argument("--inputs", metavar="NPZ", help="run the compiled model on these samples (arrays keyed by input "
                   "name, leading sample axis) and report accuracy vs the FP32 model")
    p.add_argument("--outputs", metavar="NPZ", help="write the simulated outputs (keyed by output name, leading "
                   "sample axis); needs --inputs")
    p.add_argument("--calibrate", metavar="NPZ", help="calibrate activation ranges on these samples (default: "
                   "the --inputs, else synthetic data)")
    from codesign.options import CHOICES

    for key, (valid, default) in sorted(CHOICES.items()):
        p.add_argument(f"--{key}", default=None, metavar="|".join(valid), help=f"default: {default}")


def _compile_options(args: argparse.Namespace):
    from codesign.api import compile_options
    from codesign.options import CHOICES, validate_choice
    from compiler.frontend.onnx_loader import parse_shape_arg

    shapes = dict(parse_shape_arg(s) for s in args.shape)
    from codesign.options_numerics import refuse_unread_choices

    choices = {}
    for key in CHOICES:
        value = getattr(args, key.replace("-", "_"), None)
        if value is not None:
            choices[key] = validate_choice(key, value)
    refuse_unread_choices(choices)
    return compile_options(args.target, args.overrides, shapes, args.passes, args.stop_after,
                           args.print_ir_after, batch=args.batch,
                           decode_tokens=getattr(args, "decode_tokens", None), **choices)


def _cmd_compile(args: argparse.Namespace) -> int:
    from codesign._io import write_json_atomic, write_text_atomic
    from codesign.report import render_table, write_json
    from codesign.trace import trace_events

    given = [args.model] + [p for p in (args.inputs, args.calibrate) if p]
    outputs = {flag: _output_path(path, given, flag) for flag, path in (
        ("--json", args.json), ("--emit-mlir", args.emit_mlir), ("--trace", args.trace),
        ("--html", getattr(args, "html", None)), ("--outputs", args.outputs)) if path}
    if args.outputs and not args.inputs:
        raise InputError("--outputs needs --inputs (the samples to run)")
    options = _compile_options(args)
    console = Console() if sys.stdout.isatty() else Console(width=160)

    def on_ir(step: str, module: Any) -> None:
        sys.stdout.write(f"// ----- IR after {step} -----\n" + _print_ir(module, args.mlir_generic))

    from codesign.api import run_compile

    result, sim_outputs = run_compile(args.model, options, inputs=args.inputs, calibrate=args.calibrate, on_ir=on_ir)
    if sim_outputs is not None and "--outputs" in outputs:
        # codesign.accuracy loads the simulator (and torch): only a run with --inputs needs it
        from codesign.accuracy import write_outputs

        write_outputs(outputs["--outputs"], sim_outputs)
    if "--emit-mlir" in outputs:
        write_text_atomic(outputs["--emit-mlir"], _print_ir(result.module, args.mlir_generic))
    if result.report is None:
        console.print(f"stopped after '{result.steps_run[-1]}' (steps run: {', '.join(result.steps_run)})")
        return 0
    report = result.report
    if not args.quiet:
        render_table(report, console, max_layers=args.max_layers)
        if "accuracy" in report:
            from codesign.accuracy import render_accuracy

            render_accuracy(report["accuracy"], console)
    if "--json" in outputs:
        write_json(report, outputs["--json"])
    if "--trace" in outputs:
        write_json_atomic(outputs["--trace"], trace_events(result.env.schedule, report["clock_mhz"], report["model"],
                                                          result.env.plans),
                          indent=None)
    if "--html" in outputs:
        from codesign.html import write_html

        write_html(report, result.env.schedule, outputs["--html"])
    return 0


def _cmd_opt(args: argparse.Namespace) -> int:
    from xdsl.parser import Parser
    from xdsl.utils.exceptions import DiagnosticException, ParseError, VerifyException

    from codesign._io import write_text_atomic
    from codesign.mlir_text import read_mlir
    from compiler.context import make_context
    from compiler.pipeline import parse_passes

    path = Path(args.file)
    out = _output_path(args.output, [args.file], "-o") if args.output else None
    text = read_mlir(path)  # size, nesting and string literals checked before xDSL sees the text
    passes = parse_passes(args.passes) if args.passes else []
    ctx = make_context(None)
    ctx.env = None  # type: ignore[assignment]  # passes needing weights must say so under `opt`
    try:
        module = Parser(ctx, text, name=str(path)).parse_module()
    except ParseError as err:
        raise InputError(f"{path}: {_one_line(err)}") from None
    except (VerifyException, DiagnosticException) as err:  # e.g. an integer out of its type's range
        raise InputError(f"{path}: {_one_line(err)}") from None
    except (AssertionError, ValueError, KeyError, OverflowError) as err:  # xDSL's format parsers assert on some
        # malformed input; an integer past Python's limits overflows its range computation
        raise InputError(f"{path}: cannot parse: {_one_line(err) or 'malformed operation'}") from None
    try:
        module.verify()
        for p in passes:
            p.apply(ctx, module)
            module.verify()
    except (VerifyException, DiagnosticException) as err:
        raise InputError(f"{path}: {_one_line(err)}") from None
    text = _print_ir(module, args.mlir_generic)
    if out is not None:
        write_text_atomic(out, text)
    else:
        sys.stdout.write(text)
    return 0


def _one_line(err: BaseException) -> str:
    from codesign.boundary import one_line

    return one_line(err)


def _cmd_targets(args: argparse.Namespace) -> int:
    from rich.table import Table

    from hw.targets import bundled_targets

    table = Table(title="bundled targets (use --target NAME, or a YAML path)")
    table.add_column("name", style="bold")
    table.add_column("summary")
    table.add_column("device used by the default design")
    for name, summary in bundled_targets().items():
        table.add_row(name, summary, _device_use(name))
    Console().print(table)
    return 0


def _device_use(name: str) -> str:
    """'DSP 23%, LUT 5%, ...' of a bundled target's default design on its device (empty for targets without one):
    how much of the chip is left for a bigger design (``codesign fit`` finds the largest)."""
    from hw.models import build_model
    from hw.targets import load_target

    resources = build_model(load_target(name)).resources()
    shares = sorted(((used / avail, r) for r, (used, avail) in resources.items() if avail), reverse=True)
    return ", ".join(f"{r.upper()} {share:.0%}" for share, r in shares)


def _cmd_ops(args: argparse.Namespace) -> int:
    from compiler.frontend.ort_contrib import EXPANDED_OPS
    from compiler.frontend.ort_gather_block import GATHER_BLOCK_OP
    from compiler.frontend.ort_nbits import NBITS_OP
    from compiler.frontend.qoperator import QOPERATOR_OPS
    from compiler.frontend.to_dialect import supported_onnx_ops

    for group, ops in supported_onnx_ops().items():
        print(f"{group}: {', '.join(sorted(ops))}")
    # rewritten into standard ops at load (compiler/frontend/ort_*.py, qoperator.py, static_if.py)
    contrib = sorted(EXPANDED_OPS | {NBITS_OP, GATHER_BLOCK_OP})
    print(f"onnxruntime com.microsoft ops (as their standard definitions): {', '.join(contrib)}")
    print(f"onnxruntime QOperator format (as its QDQ form): {', '.join(sorted(QOPERATOR_OPS))}")
    print("control flow: If whose condition the input shapes decide (as the branch it takes)")
    return 0


def build_parser() -> argparse.ArgumentParser:
    """The argument parser with every subcommand."""
    parser = _Parser(prog="codesign", description="Hardware co-design compiler for transformer accelerators.")
    sub = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)
    p = sub.add_parser("compile", help="compile an ONNX model onto a target and report cycles, energy, resources")
    _add_compile_args(p)
    p.add_argument("--json", help="write the report as JSON")
    p.add_argument("--emit-mlir", help="write the final IR")
    p.add_argument("--mlir-generic", action="store_true", help="print IR in MLIR's generic form")
    p.add_argument("--trace", help="write a Chrome/Perfetto trace of the schedule")
    p.add_argument("--html", help="write a self-contained HTML report with charts")
    p.add_argument("--max-layers", type=int, default=None, help="show at most this many layers in the table")
    p.add_argument("-q", "--quiet", action="store_true", help="print no table")
    p.set_defaults(func=_cmd_compile)
    p = sub.add_parser("opt", help="parse, verify, transform and print dataflow IR (like mlir-opt)")
    p.add_argument("file", help=".mlir file")
    p.add_argument("--passes", help="comma-separated passes, e.g. 'canonicalize,schedule{target=fpga-u280}'")
    p.add_argument("--mlir-generic", action="store_true", help="print in MLIR's generic form")
    p.add_argument("-o", "--output", help="write here instead of stdout")
    p.set_defaults(func=_cmd_opt)
    p = sub.add_parser("targets", help="list the bundled targets")
    p.set_defaults(func=_cmd_targets)
    p = sub.add_parser("ops", help="list the ONNX op types the frontend supports")
    p.set_defaults(func=_cmd_ops)
    for register in _extensions():
        register(sub)
    return parser


def _extensions():
    """Subcommands that live in their own modules (rtl, sweep), registered if present."""
    import importlib

    for module in ("codesign.rtl_cli", "codesign.sweep.cli", "codesign.fit_cli"):
        try:
            mod = importlib.import_module(module)
        except ModuleNotFoundError as err:
            if err.name != module and not module.startswith(str(err.name)):
                raise
            continue
        yield mod.register


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``codesign`` console script; returns the exit status.

    The one error boundary: bad input or environment (``InputError``, an ``OSError`` on a user's path, an error
    raised by onnx, yaml, xDSL, protobuf or numpy on what the user gave) is one line and status 2; anything else is a
    bug in codesign: one line saying so and where the full traceback was saved, status 3. ``BaseException`` is caught
    too (xDSL's ``ArgSpecParseError`` derives from it), except ``SystemExit`` (``--help``) and ``KeyboardInterrupt``.
    """
    args: argparse.Namespace | None = None
    try:
        args = build_parser().parse_args(argv)
        return int(args.func(args) or 0)
    except InputError as err:
        return _user_error(str(err))
    except KeyboardInterrupt:
        print("codesign: interrupted", file=sys.stderr)
        return 130
    except SystemExit:
        raise
    except BaseException as err:  # noqa: BLE001 - this is the boundary
        from codesign.boundary import describe_environment_error, report_bug

        message = describe_environment_error(err, _culprit(args))
        if message is not None:
            return _user_error(message)
        print(f"codesign: {report_bug(err, argv if argv is not None else sys.argv[1:])}", file=sys.stderr)
        return 3


def _user_error(message: str) -> int:
    print(f"codesign: error: {' '.join(message.split())}", file=sys.stderr)
    return 2


def _culprit(args: argparse.Namespace | None) -> str | None:
    """The main input of the command that failed (its model, .mlir file or sweep spec), to name in a message."""
    for name in ("model", "file", "spec"):
        value = getattr(args, name, None)
        if isinstance(value, str) and value:
            return value
    return None


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
