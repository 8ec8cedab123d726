"""``--inputs`` / ``--outputs`` / ``--calibrate``: run the compiled model on data and measure its accuracy.

The data convention (examples/README.md): an ``.npz`` with one array per model input, keyed by the input's name,
shaped [N, *input shape] (a leading sample axis). Files are checked once, here, before anything runs; every problem
is an InputError naming the file, the input and what was expected.

With ``--inputs`` the functional simulator runs the compiled module (quantized / approximated as chosen) on every
sample and ONNX Runtime runs the original model (FP32, or FP16 / BF16 as exported; a quantized file with its own
quantized ops, which ``accuracy.reference`` then says) on the same samples (the onnx
package's reference evaluator when onnxruntime refuses the model's IR version or opset: codesign/reference_onnx.py;
``accuracy.reference`` names the engine). The report's
``accuracy`` section holds:

* ``outputs``: per model output, the cosine similarity of each row (last axis: a token's hidden state, a logit
  vector; a last axis of fewer than 16 values, such as an image's width, is merged with the axes before it:
  compiler/output_rows.py) averaged over rows (``cosine_mean``; ``cosine_mean_valid`` over the rows an
  ``attention_mask`` input marks as real tokens, padding excluded), its minimum, the max |error|, the output's max
  |value|, and for classifier outputs (rank 2 per sample) the top-1 agreement. In an output holding masked
  scores (infinite, NaN, or a mask's "minus infinity": ``precision.mask_threshold``) those positions are compared
  as masked or not: ``masked`` counts the reference's, ``masked_mismatch`` the positions masked on one side only,
  and the other figures cover the rest;
* ``layers``: per IR op that computes an ONNX tensor of the original model, SQNR = 10 log10(sum ref^2 / sum err^2)
  in dB over all samples and the max |error| (intermediate tensors are fetched from ONNX Runtime by name); with an
  ``attention_mask`` input, ``sqnr_valid_db`` is the same over real tokens only, for tensors whose leading axes are
  the mask's ([batch, seq, ...]): padding rows of a quantized BERT carry most of its error and would hide where the
  real tokens lose accuracy. Each layer also says why it may lose: ``channel_ratio``, the max over its channels
  (last axis) of the FP32 max |x| divided by their median (outlier channels), and ``clipped``, the fraction of its
  values saturated where the compiled model requantizes it for a consumer (an int8 GEMM input, a kernel input).
"""

from __future__ import annotations

import math
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import onnx

from codesign._io import atomic_output
from codesign.reference_onnx import ENGINE as EVALUATOR
from codesign.reference_onnx import evaluator_outputs, is_version_refusal
from compiler.calibrate import check_simulation_memory
from compiler.context import CompileEnv
from compiler.dialect import dataflow as df
from compiler.dialect.choices import LAYER_ATTR
from compiler.frontend.merged_decoder import check_switch_samples
from compiler.frontend.onnx_checks import check_elem_type
from compiler.frontend.onnx_loader import read_model
from compiler.frontend.precision import MASKED, mask_threshold, precision_label, weights_precision
from compiler.npz import read_npz, sample_feeds
from compiler.output_rows import as_rows
from compiler.simulate import Simulator
from hw.errors import InputError, first_line

__all__ = ["model_signature", "load_samples", "prepare_env", "sample_shapes", "evaluate", "References",
           "reference_outputs", "write_outputs", "render_accuracy"]

Signature = list[tuple[str, tuple[int | None, ...], np.dtype]]


def model_signature(source: Any, shapes: Mapping[str, Sequence[int]] | None = None) -> Signature:
    """(name, dims, dtype) of each real input of the ONNX model (``None`` for a symbolic dim, unless ``shapes``)."""

    model, name = read_model(source, external=False)
    inits = {i.name for i in model.graph.initializer}
    out: Signature = []
    for inp in model.graph.input:
        if inp.name in inits:
            continue
        tt = inp.type.tensor_type
        check_elem_type(tt.elem_type, f"input '{inp.name}'", name)
        dims = tuple(d.dim_value if d.HasField("dim_value") and d.dim_value > 0 else None for d in tt.shape.dim)
        if shapes and inp.name in shapes:
            dims = tuple(int(d) for d in shapes[inp.name])
        out.append((inp.name, dims, np.dtype(onnx.helper.tensor_dtype_to_np_dtype(tt.elem_type))))
    return out


def _fmt(dims: Sequence[int | None]) -> str:
    return "x".join("?" if d is None else str(d) for d in dims)


def load_samples(path: str | os.PathLike[str] | Mapping[str, np.ndarray], flag: str, signature: Signature,
                 calibration: bool = False) -> dict[str, np.ndarray]:
    """The arrays of ``path`` for the model's inputs, checked against ``signature``; ``flag`` names the option.

    ``calibration``: also refuse data a range cannot be learnt from (a constant float input, or all inputs
    constant).
    """
    if isinstance(path, Mapping):
        where, raw = f"{flag} <arrays>", {k: np.asarray(v) for k, v in path.items()}
    else:
        where = f"{flag} {path}"
        raw = read_npz(path, where)
    data: dict[str, np.ndarray] = {}
    for name, dims, dtype in signature:
        if name not in raw:
            raise InputError(f"{where}: no array for model input '{name}' (arrays: {', '.join(sorted(raw)) or 'none'})")
        arr = raw[name]
        if arr.dtype != dtype:
            raise InputError(f"{where}: input '{name}' has dtype {arr.dtype}, expected {dtype}")
        if arr.ndim != len(dims) + 1 or any(d is not None and d != g for d, g in zip(dims, arr.shape[1:])):
            raise InputError(f"{where}: input '{name}' has shape {_fmt(arr.shape)}, expected N{'x' if dims else ''}"
                             f"{_fmt(dims)} (a leading sample axis, then the model input's shape)")
        if arr.shape[0] == 0:
            raise InputError(f"{where}: input '{name}' has no samples")
        data[name] = arr
    counts = {name: len(arr) for name, arr in data.items()}
    if len(set(counts.values())) > 1:
        shown = ", ".join(f"{k} {v}" for k, v in counts.items())
        raise InputError(f"{where}: inputs have different sample counts ({shown})")
    check_switch_samples(data, where)  # an Optimum merged decoder's branch switch against its caches
    if calibration:
        # an empty input (a prompt step's KV cache of 0 positions) holds no value to learn a range from, nor a constant
        constant = {name: bool((arr == arr.reshape(-1)[0]).all()) for name, arr in data.items() if arr.size}
        for name, arr in data.items():
            if arr.dtype.kind == "f" and constant.get(name, False):
                raise InputError(f"{where}: input '{name}' is constant ({arr.reshape(-1)[0]:g}); "
                                 "calibration needs varied data")
        if data and all(constant.values()):
            raise InputError(f"{where}: every input is constant; calibration needs varied data")
    return data


def prepare_env(source: Any, shapes: Mapping[str, Sequence[int]] | None, inputs: Any, calibrate: Any,
                quantized: bool) -> tuple[Any, dict[str, np.ndarray] | None]:
    """A CompileEnv carrying the calibration data (``env.artifacts["calibration"]``), and the checked ``inputs``.

    Calibration data is ``calibrate`` if given, else ``inputs``; ``None`` env when there is neither.
    """

    if inputs is None and calibrate is None:
        return None, None
    signature = model_signature(source, shapes)
    samples = load_samples(inputs, "--inputs", signature, calibration=quantized and calibrate is None) \
        if inputs is not None else None
    env = CompileEnv()
    if calibrate is not None:
        calib = load_samples(calibrate, "--calibrate", signature, calibration=True)
        label = Path(calibrate).name if not isinstance(calibrate, Mapping) else "calibration arrays"
    else:
        calib, label = samples, "inputs"
    env.artifacts["calibration"] = {"names": [s[0] for s in signature], "data": calib, "source": label}
    return env, samples


def sample_shapes(source: Any, options: Any, env: Any, samples: Mapping[str, np.ndarray] | None) -> Any:
    """``options`` (a ``CompileOptions``) with the symbolic input dims no ``--shape`` names read off the samples
    (``--inputs``, else ``--calibrate``; compiler/frontend/input_shapes.py ``dims_from_samples``): a model exported
    with dynamic axes compiles at the shape it is run on, as onnxruntime sizes it by its feeds."""
    import dataclasses

    from compiler.frontend.input_shapes import dims_from_samples

    data, flag = (samples, "--inputs") if samples is not None else (
        env.artifacts["calibration"]["data"] if env is not None else None, "--calibrate")
    if not data:
        return options
    model, name = read_model(source, external=False)
    given = dict(options.shapes)
    found = dims_from_samples(model, given, name, {i.name for i in model.graph.initializer},
                              {k: v.shape for k, v in data.items()}, flag, options.batch)
    return dataclasses.replace(options, shapes=tuple(given.items()) + tuple(found.items())) if found else options


class References(list[dict[str, np.ndarray]]):
    """:func:`reference_outputs`' result: one dict of arrays per sample; ``engine`` names what computed them."""

    def __init__(self, runs: Sequence[dict[str, np.ndarray]] = (), engine: str = "onnxruntime") -> None:
        super().__init__(runs)
        self.engine = engine


def reference_outputs(source: Any, samples: Mapping[str, np.ndarray], extra: Sequence[str] = ()
                      ) -> References:
    """ONNX Runtime outputs of the model as exported (FP32, or FP16 / BF16 for a half-precision export), and the
    ``extra`` intermediate tensors, for every sample; the onnx package's reference evaluator when onnxruntime
    refuses the model's IR version or opset (codesign/reference_onnx.py)."""
    import onnxruntime as ort

    model = source if isinstance(source, onnx.ModelProto) else onnx.load(str(source))
    model = onnx.ModelProto.FromString(model.SerializeToString())
    known = {o.name for o in model.graph.output}
    produced = {o for node in model.graph.node for o in node.output}  # the frontend also names tensors it makes
    for name in extra:
        if name not in known and name in produced:
            # untyped: onnxruntime infers each type (a float16 model's tensors are float16, not FLOAT)
            model.graph.output.append(onnx.ValueInfoProto(name=name))
    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL  # keep intermediates by name
    options.log_severity_level = 4  # its failures become our one-line InputError; keep its log off stderr
    label = precision_label(weights_precision(
        (onnx.helper.tensor_dtype_to_np_dtype(t.data_type), math.prod(t.dims)) for t in model.graph.initializer
        if t.data_type != onnx.TensorProto.STRING))
    try:
        sess = ort.InferenceSession(model.SerializeToString(), options, providers=["CPUExecutionProvider"])
    except Exception as err:  # onnxruntime's exceptions share no base class but Exception
        if is_version_refusal(err):  # a model newer than onnxruntime: the ONNX project's evaluator instead
            return References(evaluator_outputs(model, samples, label), engine=EVALUATOR)
        hint = "; onnxruntime's CPU provider lacks most bfloat16 kernels" if label == "BF16" else ""
        raise InputError(f"onnxruntime cannot load the {label} reference model: {first_line(err)}{hint}") from None
    names = [o.name for o in sess.get_outputs()]
    n = len(next(iter(samples.values())))
    outs = References(engine="onnxruntime")
    for i in range(n):
        try:
            run = sess.run(None, sample_feeds(samples, i))
            outs.append({name: np.asarray(value) for name, value in zip(names, run)})
        except Exception as err:
            # e.g. a legacy-exported MoE whose unrolled expert loop fails on an input that leaves an expert idle
            raise InputError(f"--inputs sample {i}: onnxruntime failed on the {label} reference model: "
                             f"{first_line(err)}") from None
    return outs


def _cosine_rows(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Cosine of each row (compiler/output_rows.py) of ``a`` and ``b``, both [samples, *output shape]."""
    a, b = as_rows(a, 1), as_rows(b, 1)
    den = np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1)
    return np.where(den > 0, (a * b).sum(axis=1) / np.where(den > 0, den, 1), 1.0)


def compared_tensors(imported: Any) -> tuple[str, ...]:
    """The intermediate ONNX tensors :func:`evaluate` compares (every tensor an IR op computes, outputs aside), in
    the order ``reference_outputs`` must be given them."""
    return tuple(sorted(t for t in imported.tensor_layers if t not in imported.output_names))


def evaluate(result: Any, source: Any, samples: Mapping[str, np.ndarray], layers: bool = True,
             reference: list[dict[str, np.ndarray]] | None = None) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
    """Run the compiled module and the exported model (onnxruntime, in the model's own precision) on ``samples``:
    (the report's accuracy section, outputs).

    ``layers=False`` skips the per-layer comparison; ``reference`` reuses ``reference_outputs`` of an earlier call.
    """

    imported = result.imported
    check_simulation_memory(result.module, len(next(iter(samples.values()))),
                            sum(int(np.asarray(v).nbytes) for v in samples.values()), "--inputs simulation")
    sim = Simulator(result.module, result.env.weights, imported.input_names, imported.output_names)
    tensors = compared_tensors(imported) if layers else ()
    want = {imported.tensor_layers[t]: t for t in tensors}
    refs = reference if reference is not None else reference_outputs(source, samples, tensors)
    stats: dict[str, list[float]] = {}
    current: dict[str, np.ndarray] = {}
    masks = samples.get("attention_mask")
    row_mask: list[np.ndarray | None] = [None]
    chan_max: dict[str, np.ndarray] = {}
    saturated: dict[str, list[int]] = {}

    def observe(op: Any, outs: list[Any]) -> None:
        layer = op.properties.get(LAYER_ATTR)
        if layer is not None and outs and isinstance(op, (df.RequantOp, df.ElementwiseOp)):
            _count_saturated(layer.data, op, outs[0].data, saturated)
        if layer is None or isinstance(op, df.WeightOp) or layer.data not in want or not outs:
            return
        ref = current.get(want[layer.data])
        got = outs[0].real()
        if ref is None or ref.shape != got.shape or ref.dtype.kind != "f" or not np.isfinite(ref).all() \
                or np.abs(ref).max(initial=0) >= MASKED:
            return
        err = got.astype(np.float64) - ref
        if ref.ndim >= 2 and ref.shape[-1] > 1:
            per = np.abs(ref.reshape(-1, ref.shape[-1])).max(axis=0)
            prev = chan_max.get(layer.data)
            chan_max[layer.data] = per if prev is None else np.maximum(prev, per)
        acc = stats.setdefault(layer.data, [0.0, 0.0, 0.0, 0.0, 0.0, 0.0])
        acc[0] += float((ref.astype(np.float64) ** 2).sum())
        acc[1] += float((err**2).sum())
        acc[2] = max(acc[2], float(np.abs(err).max(initial=0)))
        mask = row_mask[0]
        if mask is not None and ref.ndim > mask.ndim and ref.shape[:mask.ndim] == mask.shape:
            valid = mask.reshape(-1).astype(bool)
            acc[3] += float((ref.reshape(mask.size, -1)[valid].astype(np.float64) ** 2).sum())
            acc[4] += float((err.reshape(mask.size, -1)[valid] ** 2).sum())
            acc[5] = 1.0

    outs: dict[str, list[np.ndarray]] = {name: [] for name in imported.output_names}
    for i, ref in enumerate(refs):
        current.clear()
        current.update(ref)
        row_mask[0] = np.asarray(masks[i]) if masks is not None else None
        for name, value in sim.run(sample_feeds(samples, i), observe).items():
            outs[name].append(value)
    stacked = {name: np.stack(v) for name, v in outs.items()}
    mask = samples.get("attention_mask")
    engine = refs.engine if isinstance(refs, References) else "onnxruntime"
    label = f"{engine} {precision_label(imported.precision)}" + (" with the file's quantized ops" * imported.quantized)
    section: dict[str, Any] = {"reference": label,
                               "samples": len(refs), "outputs": {}, "layers": []}
    for name, got in stacked.items():
        ref = np.stack([r[name] for r in refs]).astype(np.float64)
        if got.size == 0:  # an empty output (a merged decoder's unused cache slot): nothing to compare
            section["outputs"][name] = {"elements": 0}
            continue
        extra: dict[str, Any] = {}
        # Masked scores as an output (the ONNX Attention op's qk_matmul_output): -inf in one runtime, the float
        # type's lowest value in another. Such positions are compared as masked or not, the rest by value.
        limit = mask_threshold(np.asarray(refs[0][name]).dtype)
        masked_ref, masked_got = ~(np.abs(ref) < limit), ~(np.abs(got) < limit)
        if masked_ref.any() or masked_got.any():
            either = masked_ref | masked_got
            same = masked_ref & masked_got & ((np.sign(got) == np.sign(ref)) | (np.isnan(got) & np.isnan(ref)))
            extra = {"masked": int(masked_ref.sum()), "masked_mismatch": int((either & ~same).sum())}
            got, ref = np.where(either, 0.0, got), np.where(either, 0.0, ref)
        cos = _cosine_rows(got, ref)
        row: dict[str, Any] = {"cosine_mean": float(cos.mean()), "cosine_min": float(cos.min()),
                               "max_abs_error": float(np.abs(got - ref).max()),
                               "max_abs_value": float(np.abs(ref).max()), **extra}
        if mask is not None and mask.size == cos.size:
            valid = mask.reshape(-1).astype(bool)
            if valid.any():
                row["cosine_mean_valid"] = float(cos[valid].mean())
        if got.ndim == 3 and got.shape[-1] > 1:  # [samples, batch, classes]: a classifier
            row["top1_agreement"] = float((got.argmax(-1) == ref.argmax(-1)).mean())
        section["outputs"][name] = row
    for layer, (sig, err, worst, sig_valid, err_valid, masked) in stats.items():
        entry = {"name": layer, "tensor": want[layer], "sqnr_db": _sqnr(sig, err), "max_abs_error": worst}
        if masked:
            entry["sqnr_valid_db"] = _sqnr(sig_valid, err_valid)
        if layer in chan_max and float(np.median(chan_max[layer])) > 0:
            entry["channel_ratio"] = float(chan_max[layer].max() / np.median(chan_max[layer]))
        hit, total = saturated.get(layer, (0, 0))
        if total:
            entry["clipped"] = hit / total
        section["layers"].append(entry)
    return section, stacked


def _count_saturated(name: str, op: Any, data: np.ndarray, into: dict[str, list[int]]) -> None:
    """Count ``op``'s integer outputs at the ends of their range, under the layer it requantizes: the quantize pass
    names a requant or quantize cast ``<producer layer>.requant<bits>[c]`` / ``.quant<bits>``."""

    base, sep, tail = name.rpartition(".requant")
    if not sep:
        base, sep, tail = name.rpartition(".quant")
    if not sep or not tail[:1].isdigit() or data.dtype.kind not in "iu" or not data.size:
        return
    bits = df.int_bits(op.results[0])
    if bits is None:
        return
    top = (1 << (bits - 1)) - 1
    acc = into.setdefault(base, [0, 0])
    acc[0] += int(((data >= top) | (data <= -top - 1)).sum())
    acc[1] += int(data.size)


def _sqnr(signal: float, noise: float) -> float | None:
    return 10 * math.log10(signal / noise) if noise > 0 and signal > 0 else None


def write_outputs(path: Path, outputs: Mapping[str, np.ndarray]) -> None:
    """``outputs`` (name -> [N, ...]) as an .npz, the same convention as ``--inputs``; atomic (codesign/_io.py)."""

    with atomic_output(path) as fh:
        np.savez(fh, **outputs)  # pyright: ignore[reportArgumentType] - numpy's stub reads **arrays as allow_pickle


def render_accuracy(section: Mapping[str, Any], console: Any, worst: int = 5) -> None:
    """The accuracy section as a small table: each output, then the ``worst`` layers by SQNR (over real tokens
    where the model has an attention mask)."""
    from rich.table import Table

    table = Table(title=f"accuracy vs {section['reference']} ({section['samples']} samples"
                        + (f", calibration: {section['calibration']}" if section.get("calibration") else "") + ")")
    for col in ("output / layer", "cosine mean", "cosine (valid rows)", "cosine min", "top-1", "SQNR dB",
                "SQNR (valid rows)", "max |err|", "channel max/median", "clipped"):
        table.add_column(col, justify="left" if col == "output / layer" else "right")
    num = lambda v, f: "" if v is None else format(v, f)  # noqa: E731
    for name, row in section["outputs"].items():
        table.add_row(name if row.get("elements") != 0 else f"{name} (empty)", num(row.get("cosine_mean"), ".4f"),
                      num(row.get("cosine_mean_valid"), ".4f"), num(row.get("cosine_min"), ".4f"),
                      num(row.get("top1_agreement"), ".3f"), "", "", num(row.get("max_abs_error"), ".3g"), "", "")

    def key(r: Mapping[str, Any]) -> float:
        return r["sqnr_valid_db"] if r.get("sqnr_valid_db") is not None else r["sqnr_db"]

    layers = sorted((r for r in section["layers"] if r["sqnr_db"] is not None), key=key)
    for row in layers[:worst]:
        table.add_row(f"  {row['name']}", "", "", "", "", num(row["sqnr_db"], ".1f"),
                      num(row.get("sqnr_valid_db"), ".1f"), num(row["max_abs_error"], ".3g"),
                      num(row.get("channel_ratio"), ".1f"), num(row.get("clipped"), ".2%"))
    console.print(table)
