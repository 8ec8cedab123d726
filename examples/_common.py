"""Shared plumbing for the example exporters: seeding, re-initialisation, export, onnxruntime checks.

Every exporter in `examples/` builds a torch module, runs it on fixed sample inputs and hands back an `Exported`
record. `build_models.py` then checks the ONNX file against the torch outputs with onnxruntime and writes the
manifest. Keeping the check outside the exporters lets each exporter stay a plain function that tests can import.
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import os
import random
import warnings
from collections import Counter
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

# Set before transformers is imported anywhere: the examples must never reach the Hub.
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")

import numpy as np
import onnx
import torch

Exporter = Literal["legacy", "dynamo"]
Attn = Literal["eager", "sdpa"]

#: Opset of the TorchScript ("legacy") exporter; 17 is the first with LayerNormalization.
LEGACY_OPSET = 17
#: Opset of the torch.export ("dynamo") exporter; 18 is the lowest it emits natively (no version conversion).
DYNAMO_OPSET = 18


@dataclass
class Exported:
    """What an exporter hands back: the file it wrote, the inputs it traced with and torch's outputs for them.

    `meta` is copied into the manifest as is (family, config numbers, exporter, attention spelling, ...).
    `extra_files` lists side files that belong to the model (external weight data), relative to the model's folder.
    """

    path: Path
    feeds: dict[str, np.ndarray]
    expected: dict[str, np.ndarray]
    meta: dict[str, Any]
    extra_files: list[str] = field(default_factory=list)


def seed_all(seed: int) -> None:
    """Seed every RNG an exporter touches so that a rebuild gives the same weights and inputs."""
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def reinit_(model: torch.nn.Module, seed: int) -> None:
    """Draw fan-in scaled weights and non-zero biases / norm parameters, in place.

    Why: HF's default init (std 0.02, zero biases, LayerNorm at 1/0) makes attention nearly uniform and leaves
    every bias at zero, so a compiler bug that drops a bias or mis-scales a softmax would go unnoticed. Distinct
    random values also stop the legacy exporter from de-duplicating equal initializers behind Identity nodes.
    """
    gen = torch.Generator().manual_seed(seed)

    def normal_(t: torch.Tensor, std: float, mean: float = 0.0) -> None:
        t.copy_(torch.randn(t.shape, generator=gen) * std + mean)

    with torch.no_grad():
        for module in model.modules():
            if isinstance(module, torch.nn.Linear | torch.nn.Conv2d):
                fan_in = module.weight[0].numel()
                normal_(module.weight, fan_in**-0.5)
                if module.bias is not None:
                    normal_(module.bias, 0.02)
            elif type(module).__name__ == "Conv1D":  # transformers' GPT-2 Linear, stored transposed: [in, out]
                normal_(module.weight, module.weight.shape[0] ** -0.5)
                normal_(module.bias, 0.02)
            elif isinstance(module, torch.nn.LayerNorm) and module.elementwise_affine:
                normal_(module.weight, 0.05, mean=1.0)
                if module.bias is not None:
                    normal_(module.bias, 0.02)
            elif type(module).__name__.endswith("LayerNorm") and isinstance(getattr(module, "weight", None),
                                                                           torch.nn.Parameter):
                normal_(module.weight, 0.05, mean=1.0)  # T5/Switch RMS norm: scale only, no bias


@contextlib.contextmanager
def quiet() -> Iterator[None]:
    """Silence exporter and loader chatter (tracer warnings, torchvision registration notes, load reports).

    Why: a build prints one line per model; hundreds of TracerWarnings about Python control flow on static shapes
    would bury real failures. Errors still propagate.
    """
    names = ["torch.onnx", "torch.export", "torch._dynamo", "torch.fx", "onnxscript", "transformers"]
    loggers = [logging.getLogger(n) for n in names]
    levels = [lg.level for lg in loggers]
    for lg in loggers:
        lg.setLevel(logging.ERROR)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            yield
    finally:
        for lg, level in zip(loggers, levels, strict=True):
            lg.setLevel(level)


def export_onnx(
    module: torch.nn.Module,
    args: Sequence[torch.Tensor],
    path: Path,
    *,
    input_names: Sequence[str],
    output_names: Sequence[str],
    exporter: Exporter,
    dynamic_axes: Mapping[str, Mapping[int, str]] | None = None,
    opset: int | None = None,
) -> None:
    """Export `module` to a single self-contained ONNX file at `path` with the chosen exporter.

    `opset` (default `LEGACY_OPSET` / `DYNAMO_OPSET`): 23 makes the dynamo exporter write SDPA as the ONNX
    ``Attention`` function op and ``nn.RMSNorm`` as ``RMSNormalization``, which the loader expands
    (compiler/frontend/onnx_functions.py); 18 lets the legacy exporter write ``F.fold`` as ``Col2Im``.

    The file is written next to its final name and renamed, so an interrupted build never leaves a truncated
    model that a later (cached) build would trust.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    module.eval()
    with quiet(), torch.no_grad():
        if exporter == "legacy":
            torch.onnx.export(
                module, tuple(args), str(tmp), input_names=list(input_names), output_names=list(output_names),
                opset_version=opset or LEGACY_OPSET, dynamo=False, do_constant_folding=True,
                dynamic_axes={k: dict(v) for k, v in dynamic_axes.items()} if dynamic_axes else None,
            )
        elif exporter == "dynamo":
            if dynamic_axes:
                raise ValueError("dynamic axes are only wired for the legacy exporter")
            torch.onnx.export(
                module, tuple(args), str(tmp), input_names=list(input_names), output_names=list(output_names),
                opset_version=opset or DYNAMO_OPSET, dynamo=True, external_data=False, verbose=False,
            )
        else:
            raise ValueError(f"unknown exporter {exporter!r}; expected 'legacy' or 'dynamo'")
    os.replace(tmp, path)


def save_with_external_data(path: Path, *, size_threshold: int = 1024) -> str:
    """Re-save the ONNX file at `path` with tensors of >= `size_threshold` bytes in one side file; return its name.

    Small tensors stay inline, as onnx does by default, so loaders must handle both kinds in one model.
    """
    model = onnx.load(str(path))
    data_name = path.name + ".data"
    (path.parent / data_name).unlink(missing_ok=True)  # onnx appends to an existing data file
    onnx.save_model(model, str(path), save_as_external_data=True, all_tensors_to_one_file=True,
                    location=data_name, size_threshold=size_threshold)
    os.chmod(path.parent / data_name, 0o644)  # onnx creates it owner-only; other users' test runs must read it
    return data_name


def torch_outputs(module: torch.nn.Module, args: Sequence[torch.Tensor], names: Sequence[str]) -> dict[str, np.ndarray]:
    """Run `module` once in eval mode and key its output tensor(s) by the ONNX output names."""
    with torch.no_grad():
        out = module.eval()(*args)
    outs = out if isinstance(out, tuple | list) else (out,)
    return {n: o.detach().numpy() for n, o in zip(names, outs, strict=True)}


def ort_max_abs_diff(path: Path, feeds: Mapping[str, np.ndarray], expected: Mapping[str, np.ndarray]) -> float:
    """Run the ONNX file in onnxruntime (CPU, basic optimisations only) and return max |ort - torch| over outputs."""
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_BASIC
    opts.intra_op_num_threads = 2
    opts.log_severity_level = 3
    sess = ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])
    got = sess.run(list(expected), dict(feeds))
    return max(float(np.max(np.abs(g.astype(np.float64) - expected[n]))) for g, n in zip(got, expected, strict=True))


def io_signature(model: onnx.ModelProto) -> dict[str, list[dict[str, Any]]]:
    """Graph inputs (initializers excluded) and outputs with their element type and shape (symbolic dims as str)."""
    inits = {i.name for i in model.graph.initializer}

    def describe(vi: onnx.ValueInfoProto) -> dict[str, Any]:
        tt = vi.type.tensor_type
        dims: list[int | str] = [d.dim_param if d.HasField("dim_param") else d.dim_value for d in tt.shape.dim]
        return {"name": vi.name, "dtype": onnx.helper.tensor_dtype_to_np_dtype(tt.elem_type).name, "shape": dims}

    return {
        "inputs": [describe(v) for v in model.graph.input if v.name not in inits],
        "outputs": [describe(v) for v in model.graph.output],
    }


def op_histogram(model: onnx.ModelProto) -> dict[str, int]:
    """Count node op types in the main graph and in local functions (dynamo may emit some), sorted by name."""
    counts = Counter(n.op_type for n in model.graph.node)
    for fn in model.functions:
        counts.update(n.op_type for n in fn.node)
    return dict(sorted(counts.items()))


def sha256_file(path: Path) -> str:
    """Hex SHA-256 of a file, read in 1 MiB chunks (the ViT-Base file is ~350 MB)."""
    h = hashlib.sha256()
    with path.open("rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()
