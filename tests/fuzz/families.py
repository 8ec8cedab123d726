"""The fuzz families, their CI budgets, and the seeds they need before any case is drawn."""

from __future__ import annotations

import contextlib
import io
from pathlib import Path

import onnx

from tests.conftest import model_path
from tests.fuzz.text_inputs import mlir_cases, passes_cases, set_cases, set_mlir_seeds, sweep_cases, target_yaml_cases
from tests.fuzz_inputs import npz_cases, onnx_bytes_cases, onnx_proto_cases, tiny_model

__all__ = ["FAMILIES", "prepare_seeds"]

# Cases per family in CI: 2,200 in all. Most cases cost 10-50 ms of CPU in a warm worker (an --inputs or sweep case
# up to ~0.5 s), so the suite takes about two minutes on 2 idle cores.
FAMILIES = {
    "onnx-bytes": (onnx_bytes_cases(), 350),
    "onnx-proto": (onnx_proto_cases(), 400),
    "npz": (npz_cases(), 250),
    "target-yaml": (target_yaml_cases(), 300),
    "set": (set_cases(), 300),
    "mlir": (mlir_cases(), 300),
    "passes": (passes_cases(), 150),
    "sweep": (sweep_cases(), 150),
}


def emit_mlir(model: Path, folder: Path, generic: bool = False) -> str:
    """The IR ``codesign compile --emit-mlir`` writes for ``model``: the MLIR family's seed."""
    from codesign.cli import main

    out = folder / f"{model.stem}{'-generic' if generic else ''}.mlir"
    with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()) as err:
        rc = main(["compile", str(model), "-q", "--emit-mlir", str(out)] + (["--mlir-generic"] if generic else []))
    if rc != 0:
        raise RuntimeError(f"cannot emit the MLIR seed of {model}: {err.getvalue()}")
    return out.read_text()


def prepare_seeds(folder: Path) -> None:
    """Emit the real IR the MLIR family mutates (tiny model, plain and generic; the example ViT) into ``folder``."""
    tiny = folder / "tiny.onnx"
    onnx.save(tiny_model(), tiny)
    set_mlir_seeds({"tiny": emit_mlir(tiny, folder), "tiny-generic": emit_mlir(tiny, folder, generic=True),
                    "vit_tiny": emit_mlir(model_path("vit_tiny.onnx"), folder)})
