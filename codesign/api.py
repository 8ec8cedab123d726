"""The Python API: ``codesign.compile(model, target=..., example_inputs=...)``.

Accepts an ONNX path, an ``onnx.ModelProto`` or a ``torch.nn.Module`` (exported with ``torch.onnx.export``, the
legacy TorchScript exporter, opset 17: it is the one that exports every model family we support today).
"""

from __future__ import annotations

import io
import os
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import onnx

from compiler.pipeline import CompileOptions, CompileResult, overrides_from, run_pipeline
from compiler.summary import build_report
from hw.errors import InputError
from hw.models.base import workload_sized

__all__ = ["compile", "compile_options", "run_compile", "to_onnx"]


def to_onnx(model: Any, example_inputs: Any = None) -> str | os.PathLike[str] | onnx.ModelProto:
    """An ONNX path or proto for ``model``; exports a torch module with ``example_inputs``."""
    if isinstance(model, (str, os.PathLike, onnx.ModelProto)):
        return model
    try:
        import torch
    except ImportError:  # pragma: no cover - torch is a dependency
        torch = None
    if torch is not None and isinstance(model, torch.nn.Module):
        if example_inputs is None:
            raise InputError("compile(torch.nn.Module): pass example_inputs=(tensor, ...) to export it")
        args = example_inputs if isinstance(example_inputs, tuple) else (example_inputs,)
        buffer = io.BytesIO()
        model.eval()
        with torch.no_grad():
            # The TorchScript exporter writes to any binary file object; torch's stub names only paths.
            torch.onnx.export(model, args, buffer, opset_version=17, dynamo=False)  # pyright: ignore[reportArgumentType]
        return onnx.load_from_string(buffer.getvalue())
    raise InputError("compile(): expected an ONNX path, onnx.ModelProto or torch.nn.Module, "
                     f"got {type(model).__name__}")


def compile_options(target: str = "fpga-u280", overrides: Mapping[str, str] | Sequence[str] = (),
                    shapes: Mapping[str, Sequence[int]] | None = None, passes: str | None = None,
                    stop_after: str | None = None, print_ir_after: Sequence[str] = (), batch: int | None = None,
                    decode_tokens: int | None = None, **choices: str) -> CompileOptions:
    """Validated ``CompileOptions`` from plain Python values (``batch``: samples per inference, ``--batch``;
    ``decode_tokens``: per-token latency of that many decode steps, ``--decode-tokens``)."""
    from compiler.schedule.decode import MAX_DECODE_TOKENS

    if decode_tokens is not None and (isinstance(decode_tokens, bool) or not isinstance(decode_tokens, int)
                                      or not 1 <= decode_tokens <= MAX_DECODE_TOKENS):
        raise InputError(f"--decode-tokens {decode_tokens}: expected a whole number of tokens from 1 to "
                         f"{MAX_DECODE_TOKENS}")
    if batch is not None and (isinstance(batch, bool) or not isinstance(batch, int) or not 1 <= batch <= 1 << 20):
        raise InputError(f"--batch {batch}: expected a whole number of samples from 1 to {1 << 20}")
    return CompileOptions(
        target=target, overrides=overrides_from(overrides), batch=batch, decode_tokens=decode_tokens,
        shapes=tuple((k, tuple(int(d) for d in v)) for k, v in (shapes or {}).items()),
        passes=passes, stop_after=stop_after, print_ir_after=tuple(print_ir_after),
        # Python keywords cannot hold the CLI's hyphens: weight_group= is --weight-group
        choices=tuple(sorted((k.replace("_", "-"), str(v)) for k, v in choices.items() if v is not None)),
    )


def compile(model: Any, target: str = "fpga-u280", example_inputs: Any = None, *,
            overrides: Mapping[str, object] | Sequence[str] = (), shapes: Mapping[str, Sequence[int]] | None = None,
            passes: str | None = None, stop_after: str | None = None, inputs: Any = None, outputs: Any = None,
            calibrate: Any = None, batch: int | None = None, decode_tokens: int | None = None,
            **choices: str) -> CompileResult:
    """Compile ``model`` for ``target`` (a bundled name or a YAML path) and return the result with its report.

    ``overrides`` are dotted target keys (``{"gemm.rows": 16}``), ``batch`` the samples per inference (the leading
    dim of every input, which the export must leave dynamic; weights are read once per batch), ``shapes`` concrete
    input shapes for symbolic
    dims, ``choices`` the compiler options (``softmax="shiftmax"``, ``weight_group="64"`` for ``--weight-group``,
    ...). ``inputs`` (an .npz path or a dict of
    arrays with a leading sample axis) runs the compiled model and puts its accuracy vs FP32 into
    ``report["accuracy"]`` (simulated outputs in ``result.env.artifacts["outputs"]``, also written to the
    ``outputs`` .npz path if given); ``calibrate`` likewise gives quantization calibration data (default: ``inputs``).
    Raises ``hw.errors.InputError`` on bad input.
    """
    options = compile_options(target, {k: str(v) for k, v in dict(overrides).items()} if isinstance(overrides, Mapping)
                              else overrides, shapes, passes, stop_after, batch=batch, decode_tokens=decode_tokens,
                              **choices)
    from codesign.options_numerics import refuse_unread_choices

    refuse_unread_choices(dict(options.choices))
    if outputs is not None and inputs is None:
        raise InputError("compile(outputs=...) needs inputs=... (the samples to run)")
    result, sim_outputs = run_compile(to_onnx(model, example_inputs), options, inputs=inputs, calibrate=calibrate)
    if outputs is not None and sim_outputs is not None:
        from pathlib import Path

        from codesign.accuracy import write_outputs

        write_outputs(Path(outputs), sim_outputs)
    return result


def _check_design_fits(result: CompileResult) -> None:
    """Refuse a compiled design that does not fit its device. The pipeline refused up front only what cannot fit
    whatever the compile needs; an FPGA's vector lanes hold the units this compile uses (report
    ``resources_detail``), known after scheduling. Sweeps price such points instead (codesign/sweep/evaluate.py)."""
    from compiler.summary import report_lane_units

    model = workload_sized(result.env.model)
    units = report_lane_units(model, result.report) if result.report is not None else None
    if units is not None and model is not None:
        model.check_fits(units)


def run_compile(source: Any, options: CompileOptions, *, inputs: Any = None, calibrate: Any = None,
                on_ir: Callable[[str, Any], None] | None = None,
                reference: Callable[[tuple[str, ...], dict[str, Any]], list[Any]] | None = None,
                ) -> tuple[CompileResult, dict[str, Any] | None]:
    """The compile behind ``codesign compile``, ``compile()`` and sweep accuracy: calibration / routing data, the
    pipeline, then (with ``inputs``) the simulated outputs and their accuracy against FP32 in ``report["accuracy"]``.

    ``reference(tensors, samples)``, if given, supplies the ONNX Runtime outputs (``codesign.accuracy.
    reference_outputs``) for those samples and intermediate tensors, so a caller compiling one model many times
    (a sweep) can reuse them. Returns the result and the simulated outputs (None without ``inputs``).
    """
    from codesign.options import middle_passes

    env = samples = None
    if inputs is not None or calibrate is not None:
        # codesign.accuracy loads the simulator and torch, which only a compile given samples needs
        from codesign.accuracy import prepare_env, sample_shapes

        env, samples = prepare_env(source, dict(options.shapes), inputs, calibrate, quantized=options.quantized)
        options = sample_shapes(source, options, env, samples)
    result = run_pipeline(source, options, middle=middle_passes(options), on_ir=on_ir, report=build_report, env=env)
    _check_design_fits(result)
    sim_outputs = None
    if samples is not None and result.report is not None:
        from codesign.accuracy import compared_tensors, evaluate

        refs = reference(compared_tensors(result.imported), samples) if reference is not None else None
        result.report["accuracy"], sim_outputs = evaluate(result, source, samples, reference=refs)
        result.report["accuracy"]["calibration"] = result.report.get("numerics", {}).get("calibration")
        result.env.artifacts["outputs"] = sim_outputs
    return result, sim_outputs
