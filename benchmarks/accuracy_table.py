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
"""

from __future__ import annotations

import argparse
import itertools
import sys
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


def main(argv: list[str] | None = None) -> int:
    """Print the markdown table (stdout) and progress (stderr)."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--full", action="store_true", help="every combination")
    parser.add_argument("--target", default="fpga-u280")
    parser.add_argument("--samples", type=int, default=16, help="sentences to use (at most 16)")
    parser.add_argument("--calibrate", default=str(CALIBRATION), help="held-out calibration .npz")
    args = parser.parse_args(argv)
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
