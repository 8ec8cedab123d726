"""Functional simulator speed vs ONNX Runtime FP32 on the pretrained MiniLM (16 sentences, 6 layers, seq 32).

Both run single-threaded (the simulator always does, see compiler/simulate/_threads.py; ONNX Runtime is given
intra_op_num_threads=1), one sample at a time, best of ``--repeat`` runs. Goal: the simulation within 3x of
ONNX Runtime FP32, both the float model and the int8 I-ViT one (int8 GEMMs, requants, Shiftmax, ShiftGELU,
I-LayerNorm, all bit-exact to compiler.numerics).

    python benchmarks/bench_simulate.py
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


def _best(fn, repeat: int) -> float:
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return min(times)


def main(argv: list[str] | None = None) -> int:
    """Print seconds per 16 samples for ONNX Runtime, the float simulation and the int8 simulation."""
    import onnxruntime as ort

    from codesign.api import compile
    from compiler.simulate import Simulator

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args(argv)
    data = dict(np.load(DATA))
    n = len(data["input_ids"])
    options = ort.SessionOptions()
    options.intra_op_num_threads = 1
    options.inter_op_num_threads = 1
    sess = ort.InferenceSession(str(MODEL), options, providers=["CPUExecutionProvider"])
    t_ort = _best(lambda: [sess.run(None, {k: v[i] for k, v in data.items()}) for i in range(n)], args.repeat)
    rows = [("onnxruntime fp32", t_ort)]
    for label, choices in (("simulator fp32", {}),
                           ("simulator int8 I-ViT", {"quant": "int8", "softmax": "shiftmax", "gelu": "shiftgelu",
                                                     "layernorm": "ilayernorm"})):
        result = compile(MODEL, **choices)
        sim = Simulator(result.module, result.env.weights, result.imported.input_names,
                        result.imported.output_names)
        rows.append((label, _best(lambda sim=sim: sim.run_samples(data), args.repeat)))
    print(f"MiniLM, {n} samples, best of {args.repeat}:")
    for label, seconds in rows:
        print(f"  {label:22s} {seconds * 1e3:8.1f} ms  ({seconds / t_ort:5.2f}x onnxruntime)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
