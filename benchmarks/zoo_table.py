"""The model zoo's table for the README: every architecture of examples/zoo.py, compiled and checked.

For each architecture and variant (exporter; for text models with and without an attention_mask input): export
the tiny config (examples/zoo.py), compile it in float with the zoo's
sample as inputs and compare with what the PyTorch module runs (forward hooks for norms and GELUs, FlopCounterMode
for MACs), then compile it with the integer I-ViT numerics ("symbolic": the legacy export with symbolic batch and
sequence / image dims, compiled at the sample's shapes). Prints a markdown table (attention implementation the
transformers model ran, recognised / expected counts,
MACs within 0.5%, simulation cosine vs onnxruntime, int8 compile) and then the architectures that do not go through,
each with the one-line reason the export, the compile or a check stopped on.

    python benchmarks/zoo_table.py                # all architectures (~2 min on 2 idle cores)
    python benchmarks/zoo_table.py bert llama     # some
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from codesign.api import compile  # noqa: E402
from examples import zoo  # noqa: E402

KIND = {"encoder": "encoder", "decoder": "decoder", "encdec": "encoder-decoder", "vision": "vision",
        "speech": "speech", "speech-encdec": "speech encoder-decoder"}
MASK = {"mask": "attention_mask input (padded)", "nomask": "no mask input", "": ""}


def _image(name: str) -> str:
    """The input column of a model without an attention_mask choice: its image, video, waveform or mel features."""
    arch = zoo.ARCHS[name]
    if arch.kind == "speech":
        return f"input_values {zoo.WAVE} samples"
    if arch.kind == "speech-encdec":
        return f"input_features {zoo.MELS}x{zoo.FRAMES}, decoder_input_ids"
    frames = f"{arch.frames} frames of " if arch.frames else ""
    return f"pixel_values {frames}{arch.image}x{arch.image}"


EXPORTER = {"legacy": "legacy", "dynamo": "dynamo", "symbolic": "legacy, symbolic dims"}


def _line(err: BaseException, path: Path) -> str:
    """The error's first line, without the temporary folder (the file name stays)."""
    text = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
    text = text.replace(f"{path.parent}/", "")
    return f"{type(err).__name__}: {text}"[:200].replace("|", "/")


def check(name: str, variant: str, folder: Path) -> dict[str, Any]:
    """One row: the float compile's counts vs torch's, MACs, cosine, and whether int8 I-ViT compiles."""
    row: dict[str, Any] = {"name": name, "exporter": variant, "attn": "-"}
    path = folder / f"{name}_{variant.replace(':', '_')}.onnx"
    try:
        module = zoo.export(name, variant, path)
        want = zoo.expected(module, name, variant)
        row["attn"] = getattr(module.model.config, "_attn_implementation", None) or "-"
        samples = {k: v[None] for k, v in zoo.feeds(name, variant).items()}
        shapes = zoo.compile_shapes(name, variant)
        result = compile(path, inputs=samples, shapes=shapes)
        got = {k: result.imported.patterns[k] for k in ("attention", "layernorm", "gelu")}
        row.update(want=want, got=got, macs=result.report["macs"],
                   cosine=result.report["accuracy"]["outputs"]["last_hidden_state"]["cosine_min"])
        int8 = compile(path, inputs=samples, shapes=shapes, **zoo.INT8)
        row["int8"] = int8.imported.patterns["attention"] == want["attention"]
        row["int8_cosine"] = int8.report["accuracy"]["outputs"]["last_hidden_state"]["cosine_mean"]
    except Exception as err:  # a row per architecture: the failure is the row's content
        row["error"] = _line(err, path)
    return row


def problems(row: dict[str, Any]) -> str:
    """Empty if the row passes every check, else what failed."""
    if "error" in row:
        return row["error"]
    want, got, bad = row["want"], row["got"], []
    for key in ("attention", "layernorm", "gelu"):
        if got[key] != want[key]:
            bad.append(f"{key} recognised {got[key]} of {want[key]}")
    if abs(row["macs"] - want["macs"]) > 0.005 * want["macs"]:
        bad.append(f"MACs {row['macs']} vs FlopCounterMode {want['macs']}")
    if row["cosine"] < 0.9999:
        bad.append(f"cosine {row['cosine']:.6f} vs onnxruntime")
    if not row["int8"]:
        bad.append("int8 compile lost attentions")
    if row["int8_cosine"] < 0.9:
        bad.append(f"int8 cosine {row['int8_cosine']:.3f}")
    return "; ".join(bad)


def reason(row: dict[str, Any]) -> str:
    """Why a row does not go through, as examples/zoo_archs.py's FAILING says (for the variant, else the
    architecture)."""
    return zoo.FAILING.get(f"{row['name']} {row['exporter']}", zoo.FAILING.get(row["name"], "not in FAILING"))


def render(rows: list[dict[str, Any]]) -> str:
    ok = [r for r in rows if not problems(r)]
    lines = ["| architecture | kind | exporter | inputs | attn | attention | norm | GELU | MACs vs torch "
             "| cosine vs ORT | int8 I-ViT (mean cosine) |", "|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in ok:
        kind = zoo.ARCHS[r["name"]].kind
        w, g = r["want"], r["got"]
        exporter, _, mask = r["exporter"].partition(":")
        inputs = MASK[mask] or _image(r["name"])
        lines.append(f"| {r['name']} | {KIND[kind]} | {EXPORTER[exporter]} | {inputs} | {r['attn']} "
                     f"| {g['attention']}/{w['attention']} | {g['layernorm']}/{w['layernorm']} "
                     f"| {g['gelu']}/{w['gelu']} "
                     f"| {100 * (r['macs'] - w['macs']) / w['macs']:+.2f}% | {r['cosine']:.6f} "
                     f"| compiles ({r['int8_cosine']:.3f}) |")
    bad = [r for r in rows if problems(r)]
    if bad:
        lines += ["", "Not yet through:", ""]
        lines += [f"- {r['name']} ({r['exporter']}): {reason(r)}. Stopped on: "
                  f"{problems(r)}" for r in bad]
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("names", nargs="*", help="architectures (default: all of examples/zoo.py)")
    args = parser.parse_args()
    names = args.names or list(zoo.ARCHS)
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for name in names:
            for variant in zoo.variants(name):
                rows.append(check(name, variant, Path(tmp)))  # noqa: PERF401 (progress printed per row)
                print(f"{name} {variant}: {problems(rows[-1]) or 'ok'}", file=sys.stderr, flush=True)
    print(render(rows))


if __name__ == "__main__":
    main()
