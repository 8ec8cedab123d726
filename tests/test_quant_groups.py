"""compiler/quant_groups.py and ``--weight-group``: the two-level group format, its exact integer datapath in the
simulator against compiler.numerics.group_gemm, GPTQ that keeps to the format, the group scales costed on every
target kind, and the CLI (compile accepts it, rtl refuses it in one line)."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest
import torch
from xdsl.ir import SSAValue

from codesign.api import compile
from codesign.cli import main
from compiler.dialect import dataflow as df
from compiler.numerics import group_gemm
from compiler.quant_groups import (
    GROUP_ATTR,
    GROUP_SCALE_SUFFIX,
    SCALE_BITS_ATTR,
    fit_grouped,
    group_matmul,
    group_scale_bits,
    quantize_grouped,
    split_scales,
)
from compiler.quant_recipes import quantize_weight
from compiler.schedule.plan import LayerPlan
from hw.perf.workload import GemmWork, VectorWork
from hw.targets import bundled_targets
from tests.conftest import model_path
from tests.ir_values import attr_int, elem_type, weight_layer


def _rowwise_weight(rng: np.random.Generator, k: int = 256, n: int = 48) -> np.ndarray:
    """A weight whose input rows differ 30x in magnitude (what per-channel int4 steps handle worst)."""
    return rng.standard_normal((k, n)) * np.repeat(rng.uniform(0.1, 3.0, k // 32), 32)[:, None]


def test_scale_bits_keep_the_int32_accumulator_exact() -> None:
    assert group_scale_bits(384, 4) == 8 and group_scale_bits(1536, 4) == 8
    for k in (384, 1536, 8192, 9000, 40000, 10**6, 3 * 10**6):
        b = group_scale_bits(k, 4)
        if b:
            assert k * 128 * 8 * ((1 << b) - 1) < 2**31
            assert b == 8 or k * 128 * 8 * ((1 << (b + 1)) - 1) >= 2**31
    assert group_scale_bits(3 * 10**6, 4) == 0


def test_split_scales_never_shrinks_a_step() -> None:
    rng = np.random.default_rng(0)
    step = rng.uniform(1e-4, 1.0, (6, 40))
    q, s_n = split_scales(step, 8)
    assert q.min() >= 1 and q.max() <= 255 and q.dtype.kind == "i"
    assert np.all(q * s_n >= step * (1 - 1e-9))
    np.testing.assert_allclose((q * s_n).max(axis=0), step.max(axis=0))  # the largest group is exact
    assert np.all(q * s_n - step <= s_n * (1 + 1e-9))  # and the others at most one s_n above


def test_groups_beat_one_step_per_channel_on_uneven_rows() -> None:
    rng = np.random.default_rng(1)
    w = _rowwise_weight(rng)
    codes, s = quantize_weight(w, 4)
    per_channel = np.linalg.norm(w - codes * s)
    errors = []
    for group in (128, 64, 32):
        g = quantize_grouped(w, 4, group)
        assert g.codes.min() >= -8 and g.codes.max() <= 7
        assert g.q.shape == (256 // group, 48)
        errors.append(np.linalg.norm(w - g.real()))
    assert errors[0] < per_channel and errors[2] < errors[1] < errors[0]
    assert errors[2] < 0.6 * per_channel


def test_group_matmul_equals_the_integer_oracle() -> None:
    rng = np.random.default_rng(2)
    for k, group in ((256, 32), (100, 32), (384, 128)):  # 100: a short last group
        x = rng.integers(-128, 128, (3, 5, k))
        w = rng.integers(-8, 8, (k, 24))
        q = rng.integers(1, 256, (-(-k // group), 24))
        bias = rng.integers(-1000, 1000, 24)
        want = group_gemm(torch.from_numpy(x), torch.from_numpy(w), torch.from_numpy(q), group,
                          torch.from_numpy(bias)).numpy()
        got = group_matmul(x, w, q, group) + bias
        np.testing.assert_array_equal(got, want)
        full = np.repeat(q, group, axis=0)[:k] * w  # the same as one product with the multipliers folded in
        np.testing.assert_array_equal(got, x @ full + bias)


def test_group_gemm_refuses_bad_shapes_and_int32_overflow() -> None:
    x = torch.full((1, 64), 127)
    w = torch.full((64, 2), 7)
    with pytest.raises(ValueError, match="q must be"):
        group_gemm(x, w, torch.ones((3, 2), dtype=torch.int64), 32)
    with pytest.raises(ValueError, match="leaves int32"):
        group_gemm(x, w, torch.full((2, 2), 2**20), 32)


def test_gptq_keeps_the_two_level_grid_and_beats_nearest() -> None:
    rng = np.random.default_rng(3)
    x = rng.standard_normal((512, 128)) @ rng.standard_normal((128, 128))  # correlated inputs
    w = _rowwise_weight(rng, 128, 32)
    near = fit_grouped(w, 4, 32)
    gptq = fit_grouped(w, 4, 32, x, damp=0.01)
    assert near is not None and gptq is not None
    np.testing.assert_array_equal(gptq.s_n, near.s_n)
    assert gptq.q.dtype.kind == "i" and gptq.q.min() >= 1 and gptq.q.max() <= 255
    assert gptq.codes.min() >= -8 and gptq.codes.max() <= 7 and np.array_equal(gptq.codes, np.round(gptq.codes))
    e_near = np.linalg.norm(x @ w - x @ near.real())
    e_gptq = np.linalg.norm(x @ w - x @ gptq.real())
    assert e_gptq < 0.8 * e_near


def test_gptq_inverse_factor_and_act_order() -> None:
    """The upper Cholesky factor of H^-1 from one Cholesky of the reversed H equals GPTQ's (inv, then Cholesky);
    act-order keeps the codes and the group layout (rows stay in their groups) and does not round worse."""
    from compiler.quant_recipes import _upper_cholesky_of_inverse, gptq_quantize

    rng = np.random.default_rng(5)
    x = (rng.standard_normal((400, 96)) * rng.uniform(0.1, 5, 96)) @ rng.standard_normal((96, 96))
    h = x.T @ x + np.eye(96)
    ref = np.linalg.cholesky(np.linalg.inv(h)).T
    np.testing.assert_allclose(_upper_cholesky_of_inverse(h), ref, rtol=0, atol=1e-8 * np.abs(ref).max())
    w = _rowwise_weight(rng, 96, 40)
    errs = []
    for act_order in (False, True):
        q, s = gptq_quantize(w, x, 4, group=32, damp=0.1, act_order=act_order)
        assert s.shape == (3, 40) and q.min() >= -8 and q.max() <= 7
        errs.append(np.linalg.norm(x @ w - x @ (q * np.repeat(s, 32, axis=0))))
    assert errs[1] <= 1.1 * errs[0]


# ----- the compiled model -----------------------------------------------------------------------------------------

def _bert_data() -> dict[str, np.ndarray]:
    rng = np.random.default_rng(0)
    ids = rng.integers(0, 1000, (4, 1, 16)).astype(np.int64)
    return {"input_ids": ids, "attention_mask": np.ones_like(ids), "token_type_ids": np.zeros_like(ids)}


def _grouped(group: str) -> dict[str, Any]:
    """The ``--weight-group`` choice for ``group`` ("none": the per-channel default, no choice given)."""
    return {"weight-group": group} if group != "none" else {}


@pytest.fixture(scope="module")
def grouped_bert():
    data = _bert_data()
    return {group: compile(model_path("bert_tiny.onnx"), quant="w4a8", balance="smoothquant", inputs=data,
                           **_grouped(group))
            for group in ("none", "32")}


def test_grouped_gemms_are_simulated_exactly(grouped_bert) -> None:
    """Every grouped GEMM the simulator ran equals compiler.numerics.group_gemm on the integers it read."""
    from compiler.simulate import Simulator, Tensor

    result = grouped_bert["32"]
    numerics = result.report["numerics"]
    assert numerics["weight_group"] == 32
    assert all(v.get("weight_group") == 32 for v in numerics["recipe_per_layer"].values() if "weight_group" in v)
    data = _bert_data()
    sim = Simulator(result.module, result.env.weights, result.imported.input_names, result.imported.output_names)
    values: dict[SSAValue, Tensor] = dict(sim.consts)
    seen = []

    def observe(op, outs):
        for r, t in zip(op.results, outs):
            values[r] = t
        if isinstance(op, df.GemmOp) and GROUP_ATTR in op.attributes:
            ins = [values[v] for v in op.operands]
            wname = weight_layer(op.rhs)
            q = result.env.weights[wname + GROUP_SCALE_SUFFIX]
            group = attr_int(op, GROUP_ATTR)
            assert attr_int(op, SCALE_BITS_ATTR) == 8 and 1 <= q.min() and q.max() <= 255
            want = group_gemm(torch.from_numpy(ins[0].data), torch.from_numpy(ins[1].data), torch.from_numpy(q),
                              group, torch.from_numpy(ins[2].data) if len(ins) > 2 else None)
            np.testing.assert_array_equal(outs[0].data, want.numpy())
            assert np.abs(ins[1].data).max() <= 8 and elem_type(op.rhs) == "i4"
            seen.append(op)

    feeds = {k: v[0] for k, v in data.items()}
    values.update({a: Tensor(feeds[n]) for a, n in zip(sim.args, sim.input_names)})
    sim.run(feeds, observe)
    assert len(seen) == 12  # bert_tiny's 12 static GEMMs: K = 128 or 512, all > 32


def test_groups_are_more_accurate(grouped_bert) -> None:
    cos = {g: r.report["accuracy"]["outputs"]["last_hidden_state"]["cosine_mean"] for g, r in grouped_bert.items()}
    assert cos["32"] > cos["none"]


def _gemm_layers(result) -> dict[str, LayerPlan]:
    return {p.name: p for p in result.env.plans if p.op.startswith("gemm")}


def test_group_scales_are_costed_on_the_requant_path_and_as_weight_bytes(grouped_bert) -> None:
    flat, grouped = _gemm_layers(grouped_bert["none"]), _gemm_layers(grouped_bert["32"])
    assert set(flat) == set(grouped)
    checked = 0
    for name, plan in grouped.items():
        gemm = next(w for w in plan.works if isinstance(w, GemmWork))
        if gemm.w_bits != 4:
            continue
        g = -(-gemm.k // 32)
        rescale = [w for w in plan.works if isinstance(w, VectorWork) and w.kind == "requant"
                   and w.elements == gemm.batch * gemm.m * gemm.n * g]
        assert plan.op.startswith("gemm+group-scale") and len(rescale) == 1
        assert rescale[0].rows == gemm.batch * gemm.m * g
        assert plan.weight_bytes == flat[name].weight_bytes + g * gemm.n  # 8-bit multipliers
        checked += 1
    assert checked == 12
    assert grouped_bert["32"].report["bytes_offchip"] > grouped_bert["none"].report["bytes_offchip"]


@pytest.mark.slow
@pytest.mark.parametrize("target", sorted(bundled_targets()))
def test_every_target_kind_prices_the_group_rescale(target: str) -> None:
    """On every bundled target the grouped design costs at least the per-channel one, and more energy: the
    rescale's multiply-adds and the multipliers' bytes are priced, not dropped."""
    data = _bert_data()
    reports = {}
    for group in ("none", "32"):
        reports[group] = compile(model_path("bert_tiny.onnx"), target=target, quant="w4a8", calibrate=data,
                                 **_grouped(group)).report
    assert reports["32"]["latency_cycles"] >= reports["none"]["latency_cycles"]
    assert reports["32"]["bytes_offchip"] > reports["none"]["bytes_offchip"]
    assert reports["32"]["energy_mj"] > reports["none"]["energy_mj"]


def test_cli_accepts_groups_and_rtl_refuses_them_in_one_line(tmp_path, capsys) -> None:
    model = str(model_path("bert_tiny.onnx"))
    assert main(["compile", model, "--quant", "w4a8", "--weight-group", "48", "-q"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "--weight-group 48" in err[0]
    assert main(["rtl", model, "--quant", "w4a8", "--weight-group", "32", "--out", str(tmp_path / "rtl")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "--weight-group 32" in err[0] and "rtl" in err[0]
    assert not (tmp_path / "rtl").exists() or not any((tmp_path / "rtl").iterdir())


# ----- the issue's MiniLM setting (tests/test_quant_recipes.py's fixture) --------------------------------------------

from tests.test_quant_recipes import _word_cosine, issue_setting  # noqa: E402,F401  (the fixture, shared)


@pytest.mark.slow
@pytest.mark.parametrize(("variant", "granularity", "floor"), [("ids", "per-tensor", 0.98),
                                                               ("mask", "per-tensor", 0.975),
                                                               ("ids", "per-token", 0.98),
                                                               ("mask", "per-token", 0.98)])
def test_minilm_w4a8_with_groups(issue_setting, variant: str, granularity: str, floor: float) -> None:  # noqa: F811
    """w4a8, SmoothQuant, GPTQ on the group grid (act-order, clip search), a step per 32 input rows: measured 0.9812
    (input_ids only) and 0.9780 (with the attention mask; 0.9774 before calibration left out the padding rows),
    against 0.910 / 0.933 with one int4 step per output channel. The issue's 0.98 with the mask needs per-token
    activations as well (a row max and a per-row step, costed): 0.9833 (input_ids only) and 0.9820 (mask).
    Int8 with SmoothQuant alone measured 0.9936 / 0.9957 (static): the rest is the int4 weights' rounding."""
    assert _word_cosine(issue_setting, variant, quant="w4a8", balance="smoothquant", **{"weight-rounding": "gptq",
                        "weight-group": "32", "act-granularity": granularity}) >= floor
