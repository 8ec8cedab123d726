"""Calibration time per quantization recipe on the pretrained MiniLM (6 layers, seq 32, 16 calibration sentences).

The time is the ``quantize`` pass alone (float simulation of the calibration samples, the recipe's searches and
fits, the rewrite), measured around the pass, once per recipe (a recipe that takes a minute does not need three
runs to tell). Goal (the quantization issue): GPTQ within 60 s on 2 cores. The observers run a second calibration
pass (the entropy one a KL search per value and sample, compiler/quant_recipes.py).

    python benchmarks/bench_calibration.py [--only gptq]
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

MODEL = ROOT / "examples" / "models" / "minilm.onnx"
DATA = ROOT / "examples" / "data" / "minilm_sentences.npz"

#: recipe -> compile choices
RECIPES: dict[str, dict[str, str]] = {
    "minmax": {"quant": "int8"},
    "percentile": {"quant": "int8", "observer": "percentile"},
    "mse": {"quant": "int8", "observer": "mse"},
    "entropy": {"quant": "int8", "observer": "entropy"},
    "smoothquant": {"quant": "int8", "balance": "smoothquant"},
    "gptq": {"quant": "w4a8", "weight-rounding": "gptq"},
    "gptq-g128": {"quant": "w4a8", "weight-rounding": "gptq", "weight-group": "128"},
    "smoothquant+gptq-g32": {"quant": "w4a8", "balance": "smoothquant", "weight-rounding": "gptq",
                             "weight-group": "32"},
    "per-token+sq+gptq-g32": {"quant": "w4a8", "act-granularity": "per-token", "balance": "smoothquant",
                              "weight-rounding": "gptq", "weight-group": "32"},
}


def main(argv: list[str] | None = None) -> int:
    """Print the quantize pass's seconds per recipe."""
    from codesign.api import compile
    from compiler.passes.quantize import Quantize

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--only", action="append", choices=sorted(RECIPES), help="run only these recipes")
    args = parser.parse_args(argv)
    data = dict(np.load(DATA))
    spent: list[float] = []
    inner = Quantize.apply

    def timed(self, ctx, op) -> None:  # the pass alone, not the import, lowering or accuracy run
        start = time.perf_counter()
        inner(self, ctx, op)
        spent.append(time.perf_counter() - start)

    Quantize.apply = timed  # type: ignore[method-assign]
    n = len(next(iter(data.values())))
    print(f"calibration of {MODEL.name} on {n} sentences (quantize pass, seconds)")
    for name in args.only or RECIPES:
        spent.clear()
        compile(MODEL, calibrate=data, **RECIPES[name])
        print(f"  {name:<24} {sum(spent):7.1f} s", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
