"""The compile pipeline: an explicit, ordered list of named steps from ONNX to report numbers.

``import`` builds the dataflow module from ONNX; every middle step is a registered xDSL pass (compiler/passes/);
``report`` turns the schedule into numbers. Users can replace the middle (``passes=``), stop after any step, print
the IR after any step, and every step is verified before the next runs.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import onnx
from xdsl.dialects.builtin import ModuleOp
from xdsl.passes import ModulePass
from xdsl.utils.arg_spec import parse_pipeline
from xdsl.utils.exceptions import ArgSpecParseError, DiagnosticException, VerifyException

from compiler.context import CompileEnv, make_context
from compiler.frontend.onnx_loader import load_graph
from compiler.frontend.to_dialect import ImportResult, build_module
from compiler.passes import PASSES
from hw.errors import InputError

__all__ = ["DEFAULT_PASSES", "CompileOptions", "CompileResult", "run_pipeline", "parse_passes", "overrides_from"]

#: The middle of the default pipeline, in order. `import` comes before, `report` after.
DEFAULT_PASSES: tuple[str, ...] = ("canonicalize", "fuse", "tile", "schedule")


@dataclass(frozen=True)
class CompileOptions:
    """What a compile was asked to do. Validated once at the edge (CLI / API); passes trust it."""

    target: str = "fpga-u280"
    overrides: tuple[tuple[str, str], ...] = ()
    shapes: tuple[tuple[str, tuple[int, ...]], ...] = ()
    batch: int | None = None  # --batch: the leading dim of every input not given by --shape (samples per inference)
    passes: str | None = None
    stop_after: str | None = None
    print_ir_after: tuple[str, ...] = ()
    verify_each: bool = False  # verify after every pass (always after import and after the last pass)
    choices: tuple[tuple[str, str], ...] = ()  # numerics / attention choices, e.g. ("softmax", "shiftmax")
    decode_tokens: int | None = None  # --decode-tokens: per-token latency of N decode steps (schedule/decode.py)

    def choice(self, key: str, default: str) -> str:
        """The value chosen for ``key`` (e.g. ``softmax``), or ``default``."""
        return dict(self.choices).get(key, default)

    @property
    def quantized(self) -> bool:
        """True when ``--quant`` asks for an integer model (calibration data is then needed and checked)."""
        return self.choice("quant", "none") != "none"


@dataclass
class CompileResult:
    """Everything a compile produced; ``report`` is None when it stopped before the report step."""

    module: ModuleOp
    imported: ImportResult
    env: CompileEnv
    steps_run: list[str] = field(default_factory=list)
    report: dict[str, Any] | None = None


def parse_passes(spec: str) -> list[ModulePass]:
    """Parse ``'canonicalize,tile{target=fpga-u280}'`` against the registry."""
    try:
        specs = list(parse_pipeline(spec))
    except (Exception, ArgSpecParseError) as err:  # ArgSpecParseError derives from BaseException, not Exception
        raise InputError(f"--passes '{spec}': {_reason(err)}") from None
    out: list[ModulePass] = []
    for item in specs:
        loader = PASSES.get(item.name)
        if loader is None:
            raise InputError(f"--passes: unknown pass '{item.name}' (known: {', '.join(sorted(PASSES))})")
        try:
            out.append(loader().from_pass_spec(item))
        except (Exception, ArgSpecParseError) as err:
            raise InputError(f"--passes: pass '{item.name}': {_reason(err)}") from None
    return out


def _reason(err: BaseException) -> str:
    """The reason in an xDSL pipeline error: its last non-empty line (the first is a generic header, then the spec
    and a caret under the culprit)."""
    lines = [ln.strip() for ln in str(err).splitlines() if ln.strip() and set(ln.strip()) != {"^"}]
    return lines[-1] if lines else type(err).__name__


def _verify(module: ModuleOp, step: str) -> None:
    try:
        module.verify()
    except (VerifyException, DiagnosticException) as err:
        raise InputError(f"IR after step '{step}' does not verify: {str(err).strip().splitlines()[0]}") from None


def run_pipeline(
    source: str | os.PathLike[str] | onnx.ModelProto,
    options: CompileOptions,
    *,
    middle: Sequence[ModulePass] | None = None,
    on_ir: Callable[[str, ModuleOp], None] | None = None,
    report: Callable[[CompileEnv, ImportResult, ModuleOp], dict[str, Any]] | None = None,
    env: CompileEnv | None = None,
) -> CompileResult:
    """Run the pipeline on an ONNX model.

    ``middle`` replaces the default passes (already built, e.g. with options from the numerics flags); ``on_ir`` is
    called with (step, module) after each step named in ``options.print_ir_after``; ``report`` builds the report
    dict after the last pass.
    """
    passes = list(middle) if middle is not None else (
        parse_passes(options.passes) if options.passes else [PASSES[name]()() for name in DEFAULT_PASSES])
    names = ["import"] + [p.name for p in passes] + ["report"]
    for wanted in (options.stop_after, *options.print_ir_after):
        if wanted is not None and wanted not in names:
            raise InputError(f"no step '{wanted}' in this pipeline (steps: {', '.join(names)})")
    if report is not None and options.stop_after in (None, "report") and "schedule" not in names:
        given = f"--passes {options.passes}" if options.passes else "the pipeline"
        raise InputError(f"{given}: has no 'schedule' pass, and the report is built from the schedule; add it "
                         f"(e.g. '{','.join(names[1:-1] + ['schedule'])}') or stop earlier with --stop-after")
    ctx = make_context(env)
    if ctx.env.model is None:
        from hw.models import build_model
        from hw.targets import load_target

        ctx.env.target = load_target(options.target, dict(options.overrides))
        ctx.env.model = build_model(ctx.env.target)
        _check_fits_before_compile(ctx.env.model)
    ctx.env.options = dict(options.choices)
    if options.decode_tokens is not None:
        ctx.env.artifacts["decode_tokens"] = options.decode_tokens
    graph = load_graph(source, dict(options.shapes), options.batch)
    imported = build_module(graph)
    ctx.env.weights = imported.weights
    module = imported.module
    result = CompileResult(module=module, imported=imported, env=ctx.env)
    _verify(module, "import")
    result.steps_run.append("import")

    def after(step: str) -> bool:
        if on_ir is not None and step in options.print_ir_after:
            on_ir(step, module)
        return options.stop_after == step

    if after("import"):
        return result
    for i, p in enumerate(passes):
        p.apply(ctx, module)
        if options.verify_each or i == len(passes) - 1 or p.name in options.print_ir_after:
            _verify(module, p.name)
        result.steps_run.append(p.name)
        if after(p.name):
            return result
    if report is not None:
        result.report = report(ctx.env, result.imported, result.module)
    result.steps_run.append("report")
    after("report")
    return result


def _check_fits_before_compile(model: Any) -> None:
    """Refuse a target that cannot fit whatever the compile needs: for a model whose resources depend on the
    workload (the FPGA's vector lanes hold the units the compile uses) that is the design with empty lanes, a lower
    bound; the report step checks the design the compile actually needs (compiler/summary.py)."""
    from hw.models.base import WorkloadSizedModel

    if isinstance(model, WorkloadSizedModel):
        model.check_fits(())
    else:
        model.check_fits()


def overrides_from(pairs: Mapping[str, str] | Sequence[str]) -> tuple[tuple[str, str], ...]:
    """``{"gemm.rows": "16"}`` or ``["gemm.rows=16"]`` -> sorted (key, value) pairs."""
    if isinstance(pairs, Mapping):
        return tuple((str(k), str(v)) for k, v in pairs.items())
    out = []
    for text in pairs:
        key, sep, value = text.partition("=")
        if not sep or not key:
            raise InputError(f"--set {text}: expected KEY=VALUE, e.g. gemm.rows=16")
        out.append((key.strip(), value.strip()))
    return tuple(out)
