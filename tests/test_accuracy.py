"""Accuracy of the numerics choices on the pretrained MiniLM (16 sentences) against ONNX Runtime FP32.

Pins the numbers of benchmarks/accuracy_table.py that the README quotes: int8 with exact or approximate
nonlinearities keeps the mean per-token cosine (real tokens) >= 0.99 when calibrated on the evaluated sentences
(the ``--inputs`` default), the I-ViT set (shiftmax + shiftgelu + ilayernorm) included. ShiftGELU in I-ViT's
published row-max form (``shiftgelu-row``) does not: BERT's FFN activations reach +-25 and its sigmoid keeps only
~9.4 below the row maximum. Calibrated on 64 held-out sentences every int8 row loses 0.005-0.01 (per-tensor max
ranges from other sentences clip a few activations).
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest

from codesign.accuracy import evaluate, prepare_env, reference_outputs
from codesign.api import compile_options
from codesign.options import middle_passes
from compiler.pipeline import run_pipeline
from compiler.summary import build_report
from tests.conftest import DATA, model_path


@pytest.fixture(scope="module")
def minilm():
    data = dict(np.load(DATA / "minilm_sentences.npz"))
    return model_path("minilm.onnx"), data, reference_outputs(model_path("minilm.onnx"), data)


def _cosine(minilm, calibrate=None, **choices: str) -> float:
    model, data, ref = minilm
    opts: dict[str, Any] = choices
    options = compile_options(**opts)
    env, samples = prepare_env(model, None, data, calibrate, quantized=choices.get("quant", "none") != "none")
    assert samples is not None
    result = run_pipeline(model, options, middle=middle_passes(options), report=build_report, env=env)
    section, _ = evaluate(result, model, samples, layers=False, reference=ref)
    return section["outputs"]["last_hidden_state"]["cosine_mean_valid"]


@pytest.mark.slow
@pytest.mark.parametrize("choices, at_least", [
    ({}, 0.99999),
    ({"quant": "int8"}, 0.995),
    ({"quant": "int8", "softmax": "shiftmax", "layernorm": "ilayernorm"}, 0.99),
    ({"quant": "int8", "softmax": "ibert", "gelu": "ibert"}, 0.995),
    ({"quant": "int8", "softmax": "shiftmax", "gelu": "shiftgelu", "layernorm": "ilayernorm"}, 0.99),
    ({"quant": "none", "gelu": "shiftgelu"}, 0.99),
])
def test_minilm_cosine(minilm, choices: dict[str, str], at_least: float) -> None:
    assert _cosine(minilm, **choices) >= at_least


@pytest.mark.slow
def test_minilm_published_shiftgelu_is_what_the_readme_says(minilm) -> None:
    """The row-max form: measured 0.94 (README); the per-element form is the default because of this."""
    cosine = _cosine(minilm, quant="int8", softmax="shiftmax", gelu="shiftgelu-row", layernorm="ilayernorm")
    assert 0.9 <= cosine < 0.99


@pytest.mark.slow
def test_minilm_held_out_calibration(minilm) -> None:
    """Calibrated on 64 other sentences (examples/data/minilm_calibration.npz): measured 0.984 (int8 alone 0.991)."""
    calibrate = dict(np.load(DATA / "minilm_calibration.npz"))
    assert _cosine(minilm, calibrate, quant="int8", softmax="shiftmax", gelu="shiftgelu", layernorm="ilayernorm") \
        >= 0.98


def _idle_expert_ids(model) -> np.ndarray:
    """Token ids [1, 16] that leave an expert of switch_tiny idle: its legacy export then fails in onnxruntime."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.log_severity_level = 4
    sess = ort.InferenceSession(str(model), options, providers=["CPUExecutionProvider"])
    rng = np.random.default_rng(7)
    for _ in range(200):
        ids = rng.integers(0, 1024, size=(1, 16), dtype=np.int64)
        try:
            sess.run(None, {"input_ids": ids, "attention_mask": np.ones_like(ids)})
        except Exception:
            return ids
    raise AssertionError("no draw leaves an expert idle")


def test_onnxruntime_failure_is_one_line_naming_the_sample(tmp_path, capsys: pytest.CaptureFixture[str]) -> None:
    from codesign.cli import main

    model = model_path("switch_tiny.onnx")
    good = np.load(DATA / "switch_tiny_inputs.npz")["input_ids"][:1]
    ids = np.concatenate([good, _idle_expert_ids(model)[None]])
    data = tmp_path / "ids.npz"
    np.savez(data, input_ids=ids, attention_mask=np.ones_like(ids))
    assert main(["compile", str(model), "--inputs", str(data), "-q"]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1
    assert err.startswith("codesign: error: --inputs sample 1: onnxruntime failed on the FP32 reference model: "
                          "[ONNXRuntimeError] : 2 : INVALID_ARGUMENT : Non-zero status code returned while running "
                          "Split node.")
