"""Accuracy and cost of every numerics choice on the pretrained MiniLM: prints a markdown table.

For each combination of ``--quant``, ``--softmax``, ``--gelu`` and ``--layernorm`` the model is compiled for the
target (default fpga-u280), run by the functional simulator on the 16 evaluation sentences and compared with ONNX
Runtime FP32. Quantized rows are calibrated twice: on the evaluated sentences themselves (what ``--inputs`` does when
no ``--calibrate`` is given) and on 64 held-out sentences (``--calibrate``, default
examples/data/minilm_calibration.npz). Columns: mean per-token cosine over real tokens (padding excluded) for both
calibrations; cosine over all rows and max |error| of ``last_hidden_state`` (calibrated on the evaluated sentences);
the target's latency / energy for the same compile.

    python benchmarks/accuracy_table.py            # each choice alone, per quant mode, plus the I-ViT / I-BERT sets
    python benchmarks/accuracy_table.py --full     # the full product (3 x 7 x 5 x 2 = 210 rows, ~8 min)
    python benchmarks/accuracy_table.py --recipes  # quantization recipes in the quantization issue's setting

``--recipes``: the model exported with its attention mask and with ``input_ids`` only (padding attended, built into
a temporary folder by examples/minilm_variants.py), both calibrated on 20 sentences unlike the evaluated ones;
columns: mean per-token cosine over the word tokens ([CLS], [SEP] and padding excluded) for each export, the
compile time (calibration and the recipe's searches included) and the target's latency of the input_ids-only one
(``--act-granularity per-token`` pays its row quantizers there).
"""

from __future__ import annotations

import argparse
import itertools
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from codesign.accuracy import evaluate, prepare_env, reference_outputs  # noqa: E402
from codesign.api import compile_options  # noqa: E402
from codesign.options import CHOICES, middle_passes  # noqa: E402
from compiler.pipeline import run_pipeline  # noqa: E402
from compiler.summary import build_report  # noqa: E402

MODEL = ROOT / "examples" / "models" / "minilm.onnx"
DATA = ROOT / "examples" / "data" / "minilm_sentences.npz"
CALIBRATION = ROOT / "examples" / "data" / "minilm_calibration.npz"
KEYS = ("quant", "softmax", "gelu", "layernorm")


def combos(full: bool) -> list[dict[str, str]]:
    """The rows: the full product, or each choice alone per quant mode plus the published sets."""
    values = {k: CHOICES[k][0] for k in KEYS}
    if full:
        return [dict(zip(KEYS, v)) for v in itertools.product(*(values[k] for k in KEYS))]
    rows = []
    for quant in values["quant"]:
        base = {"quant": quant, "softmax": "exact", "gelu": "exact", "layernorm": "exact"}
        rows.append(base)
        for key in ("softmax", "gelu", "layernorm"):
            rows += [{**base, key: v} for v in values[key] if v != "exact"]
        rows.append({**base, "softmax": "shiftmax", "gelu": "shiftgelu", "layernorm": "ilayernorm"})  # I-ViT
        rows.append({**base, "softmax": "shiftmax", "gelu": "shiftgelu-row", "layernorm": "ilayernorm"})
        rows.append({**base, "softmax": "ibert", "gelu": "ibert"})  # I-BERT
    return rows


#: (quant, softmax/gelu/layernorm set, recipe choices) rows of ``--recipes``.
IVIT = {"softmax": "shiftmax", "gelu": "shiftgelu", "layernorm": "ilayernorm"}
RECIPES: list[dict[str, str]] = [
    {"quant": "int8"},
    {"quant": "int8", "balance": "none"},
    {"quant": "int8", "observer": "mse"},
    {"quant": "int8", "balance": "smoothquant"},
    {"quant": "int8", **IVIT},
    {"quant": "int8", "balance": "smoothquant", **IVIT},
    {"quant": "int8", "act-granularity": "per-token"},
    {"quant": "int8", "act-granularity": "per-token", **IVIT},
    {"quant": "int8", "act-granularity": "per-token", "balance": "smoothquant"},
    {"quant": "int8", "act-granularity": "per-token", "balance": "smoothquant", **IVIT},
    {"quant": "w4a8", "act-granularity": "per-token", "balance": "smoothquant"},
    {"quant": "w4a8"},
    {"quant": "w4a8", "weight-rounding": "gptq"},
    {"quant": "w4a8", "balance": "smoothquant"},
    {"quant": "w4a8", "balance": "smoothquant", "weight-rounding": "gptq"},
    {"quant": "w4a8", "balance": "smoothquant", "weight-rounding": "gptq", "weight-group": "32"},
    {"quant": "w4a8", "act-granularity": "per-token", "balance": "smoothquant", "weight-rounding": "gptq",
     "weight-group": "32"},
]


def recipes_table(target: str, only: list[int] | None = None, header: bool = True) -> None:
    """The ``--recipes`` table (module docstring); ``only``: these rows of :data:`RECIPES` (0-based), in order."""
    sys.path.insert(0, str(ROOT / "examples"))
    from minilm_variants import export_ids_only, unlike_calibration

    data = dict(np.load(DATA))
    word = ((data["attention_mask"] == 1) & (data["input_ids"] != 101) & (data["input_ids"] != 102)).reshape(-1)
    calib = unlike_calibration()
    with tempfile.TemporaryDirectory() as tmp:
        ids_model = export_ids_only(Path(tmp) / "minilm_ids.onnx")
        variants = {"ids": (ids_model, {"input_ids": data["input_ids"]}, {"input_ids": calib["input_ids"]}),
                    "mask": (MODEL, data, calib)}
        refs = {k: reference_outputs(m, d) for k, (m, d, _) in variants.items()}
        if header:
            print("| recipe | cosine, input_ids only | cosine, with attention_mask | compile s (input_ids only) "
                  f"| latency ms ({target}) |")
            print("| --- | ---: | ---: | ---: | ---: |")
        for row in [RECIPES[i] for i in only] if only is not None else RECIPES:
            got, seconds = {}, 0.0
            for key, (model, samples, cal) in variants.items():
                options = compile_options(target, **row)
                env, checked = prepare_env(model, None, samples, cal, quantized=True)
                start = time.time()
                result = run_pipeline(model, options, middle=middle_passes(options), report=build_report, env=env)
                if key == "ids":
                    seconds = time.time() - start
                    latency = float(result.report["latency_ms"])
                _, outs = evaluate(result, model, checked, layers=False, reference=refs[key])
                a = outs["last_hidden_state"].reshape(word.size, -1).astype(np.float64)
                b = np.stack([r["last_hidden_state"] for r in refs[key]]).reshape(word.size, -1).astype(np.float64)
                cos = (a * b).sum(1) / np.linalg.norm(a, axis=1) / np.linalg.norm(b, axis=1)
                got[key] = float(cos[word].mean())
            name = " ".join(f"--{k} {v}" for k, v in row.items())
            print(f"| `{name}` | {got['ids']:.4f} | {got['mask']:.4f} | {seconds:.1f} | {latency:.4f} |", flush=True)


def main(argv: list[str] | None = None) -> int:
    """Print the markdown table (stdout) and progress (stderr)."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--full", action="store_true", help="every combination")
    parser.add_argument("--recipes", action="store_true", help="quantization recipes in the issue's setting")
    parser.add_argument("--rows", help="with --recipes: only these rows (0-based, comma-separated), no header")
    parser.add_argument("--target", default="fpga-u280")
    parser.add_argument("--samples", type=int, default=16, help="sentences to use (at most 16)")
    parser.add_argument("--calibrate", default=str(CALIBRATION), help="held-out calibration .npz")
    args = parser.parse_args(argv)
    if args.recipes:
        only = [int(i) for i in args.rows.split(",")] if args.rows else None
        recipes_table(args.target, only, header=only is None)
        return 0
    data = {k: v[: args.samples] for k, v in np.load(DATA).items()}
    reference = reference_outputs(MODEL, data)
    print("| quant | softmax | gelu | layernorm | cosine (tokens) | cosine, held-out calibration | cosine (all rows) "
          "| max abs err | latency ms | energy mJ |")
    print("| --- | --- | --- | --- | ---: | ---: | ---: | ---: | ---: | ---: |")

    def run(row: dict[str, str], calibrate: str | None) -> tuple[dict, dict]:
        options = compile_options(args.target, **{k: v for k, v in row.items()})
        env, samples = prepare_env(MODEL, None, data, calibrate, quantized=row["quant"] != "none")
        result = run_pipeline(MODEL, options, middle=middle_passes(options), report=build_report, env=env)
        section, _ = evaluate(result, MODEL, samples, layers=False, reference=reference)
        return section["outputs"]["last_hidden_state"], result.report

    for row in combos(args.full):
        start = time.time()
        out, report = run(row, None)
        held = f"{run(row, args.calibrate)[0]['cosine_mean_valid']:.4f}" if row["quant"] != "none" else "n/a"
        print(f"| {row['quant']} | {row['softmax']} | {row['gelu']} | {row['layernorm']} | "
              f"{out['cosine_mean_valid']:.4f} | {held} | {out['cosine_mean']:.4f} | "
              f"{out['max_abs_error']:.3g} | {report['latency_ms']:.3f} | {report['energy_mj']:.2f} |", flush=True)
        print(f"  {row} {time.time() - start:.1f} s", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
