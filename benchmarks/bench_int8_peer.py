"""int8 post-training quantization next to a peer's: codesign's ``--quant int8`` and onnxruntime's own
``quantize_static`` on the same models, calibration samples and held-out samples.

For each model (tiny zoo configs, seeded random weights, the legacy exporter: examples/zoo.py), 4 calibration and 4
held-out samples are drawn (token ids over the vocabulary, standard-normal images); both tools calibrate on the
first four and are scored on the other four by the mean per-row cosine of the model's output against onnxruntime
FP32 (rows as the accuracy report takes them: compiler/output_rows.py). The peer is onnxruntime.quantization, run by
onnxruntime itself, in two settings: ``quantize_static`` in QDQ format with per-channel int8 weights and per-tensor
int8 activations (MinMax calibration, its default) on the ops codesign quantizes (MatMul, Gemm, Conv; quantizing
every op it can also quantizes the attention mask's additions, which collapses GPT-2 and LLaMA), and
``quantize_dynamic`` (per-inference activation ranges: no calibration, the usual CPU choice for transformers).
The two are not the same datapath: onnxruntime's QDQ quantizes the GEMMs' inputs and computes everything else in
float, codesign's int8 is the accelerator's integer datapath (GEMM outputs requantized, 16-bit residual adds), so it
has more rounding points. Three of codesign's recipes are shown: the default ``--balance repq`` (one step per GEMM
input channel at its calibrated max, RepQ-ViT, for inputs with an outlier channel: maxima spread to 4x their median;
one step per tensor otherwise), ``--balance none`` (one step per tensor) and ``--balance smoothquant`` (SmoothQuant's
per-GEMM migration or one step per tensor, whichever the calibration rows favour; searched at compile time). Each
with static int8 steps (``per-tensor`` rows) and with ``--act-granularity per-token`` (``per-token`` rows: each GEMM
input row quantized to int8 on its own step at run time, from a 16-bit grid that the recipe sets per tensor or per
channel; onnxruntime's columns stay empty there). Per-channel maxima from a few calibration rows overfit them: on
held-out samples a channel that was quiet in calibration clips, which is why ``repq`` keeps them for outliers.

    python benchmarks/bench_int8_peer.py             # bert, gpt2, llama, vit, mobilevit (~1.5 min idle)
    python benchmarks/bench_int8_peer.py vit swin
"""

from __future__ import annotations

import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from codesign.accuracy import _cosine_rows  # noqa: E402
from codesign.api import compile  # noqa: E402
from compiler.quant_activation import GRANULARITY  # noqa: E402
from examples import zoo  # noqa: E402
from examples.zoo_archs import VOCAB  # noqa: E402

__all__ = ["MODELS", "main", "samples"]

#: model -> the zoo variant it is exported as.
MODELS = {"bert": "legacy:mask", "gpt2": "legacy:mask", "llama": "legacy:mask", "vit": "legacy", "mobilevit": "legacy"}
N_CALIB, N_EVAL = 4, 4


def samples(template: dict[str, np.ndarray], count: int, seed: int) -> dict[str, np.ndarray]:
    """``count`` samples shaped like ``template`` ([count, *shape] per input): token ids over the vocabulary, masks
    kept as they are, floats standard normal."""
    rng = np.random.default_rng(seed)
    out: dict[str, np.ndarray] = {}
    for name, value in template.items():
        if np.issubdtype(value.dtype, np.integer) and name in ("input_ids", "decoder_input_ids"):
            out[name] = rng.integers(0, VOCAB, size=(count, *value.shape)).astype(value.dtype)
        elif np.issubdtype(value.dtype, np.floating):
            out[name] = rng.standard_normal((count, *value.shape)).astype(value.dtype)
        else:
            out[name] = np.repeat(value[None], count, axis=0)
    return out


def _peer_cosines(path: Path, calib: dict[str, np.ndarray], held: dict[str, np.ndarray], tmp: Path
                  ) -> tuple[float, float]:
    """(quantize_static's, quantize_dynamic's) mean per-row cosine on the held-out samples."""
    import onnxruntime as ort
    from onnxruntime.quantization import (
        CalibrationDataReader,
        QuantFormat,
        QuantType,
        quantize_dynamic,
        quantize_static,
    )

    class Reader(CalibrationDataReader):
        def __init__(self) -> None:
            self.it = iter([{k: v[i] for k, v in calib.items()} for i in range(N_CALIB)])

        def get_next(self) -> dict[str, np.ndarray] | None:
            return next(self.it, None)

    static, dynamic = tmp / f"{path.stem}_ort_static.onnx", tmp / f"{path.stem}_ort_dynamic.onnx"
    with np.errstate(all="ignore"):  # its zero-point arithmetic on all-equal tensors
        quantize_static(str(path), str(static), Reader(), quant_format=QuantFormat.QDQ, per_channel=True,
                        activation_type=QuantType.QInt8, weight_type=QuantType.QInt8,
                        op_types_to_quantize=["MatMul", "Gemm", "Conv"])
        quantize_dynamic(str(path), str(dynamic), weight_type=QuantType.QInt8)
    feeds = [{k: v[i] for k, v in held.items()} for i in range(N_EVAL)]

    def run(model: Path) -> np.ndarray:
        session = ort.InferenceSession(str(model), providers=["CPUExecutionProvider"])
        return np.stack([np.asarray(session.run(None, f)[0], np.float64) for f in feeds])

    want = run(path)
    return float(_cosine_rows(run(static), want).mean()), float(_cosine_rows(run(dynamic), want).mean())


def main(names: list[str] | None = None) -> None:
    import logging

    logging.getLogger("root").setLevel(logging.ERROR)  # onnxruntime.quantization logs every node it skips
    names = names or list(MODELS)
    print(f"int8 PTQ, mean per-row output cosine vs onnxruntime FP32 on {N_EVAL} held-out samples "
          f"(both calibrated on the same {N_CALIB})")
    print(f"{'model':<10} {'activations':<11} {'int8 (repq)':>12} {'none':>8} {'smoothquant':>12} "
          f"{'ORT quantize_static':>20} {'ORT quantize_dynamic':>21} {'seconds':>8}")
    with tempfile.TemporaryDirectory() as tmp_dir:
        tmp = Path(tmp_dir)
        for name in names:
            variant = MODELS.get(name, "legacy")
            start = time.perf_counter()
            path = tmp / f"{name}.onnx"
            zoo.export(name, variant, path)
            template = zoo.feeds(name, variant)
            calib, held = samples(template, N_CALIB, 1), samples(template, N_EVAL, 2)
            for granularity in GRANULARITY:
                ours, choices = [], {"act-granularity": granularity}
                for balance in ("repq", "none", "smoothquant"):
                    report = compile(str(path), "fpga-u280", inputs=held, calibrate=calib, quant="int8",
                                     balance=balance, **choices).report
                    assert report is not None
                    ours.append(next(iter(report["accuracy"]["outputs"].values()))["cosine_mean"])
                peers = f"{'':>20} {'':>21}"
                if granularity == "per-tensor":
                    static, dynamic = _peer_cosines(path, calib, held, tmp)
                    peers = f"{static:>20.4f} {dynamic:>21.4f}"
                print(f"{name:<10} {granularity:<11} {ours[0]:>12.4f} {ours[1]:>8.4f} {ours[2]:>12.4f} {peers} "
                      f"{time.perf_counter() - start:>8.1f}", flush=True)

if __name__ == "__main__":
    main(sys.argv[1:] or None)
