"""Per-token dynamic int8 activations (--act-granularity per-token, compiler/numerics/pertoken.py) and the calibrated
GELU correction (compiler/quant_recipes.gelu_correction): exact integer semantics, the simulator equal to the
oracle, the cost on every target model, one-line errors."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest
import torch
from xdsl.ir import SSAValue

import compiler.numerics.pertoken as P
from codesign.api import compile
from codesign.cli import main
from compiler.dialect import dataflow as df
from compiler.dialect.op_base import shape_of
from compiler.quant_recipes import gelu_correction
from compiler.simulate import approx as A
from compiler.simulate import intkernels as K
from compiler.simulate.kernels import PER_TOKEN_ATTR
from hw.errors import InputError
from tests.conftest import model_path
from tests.ir_values import attr_int, attr_ints, elem_type, weight_layer


@pytest.mark.parametrize("offset,unsigned", [(0, False), (37, True)])
def test_numpy_kernel_equals_the_oracle(offset: int, unsigned: bool) -> None:
    rng = np.random.default_rng(0)
    x = rng.integers(-(1 << 15), 1 << 15, (64, 48)) // rng.integers(1, 2000, (64, 1))  # rows of very unequal range
    if unsigned:
        x = np.maximum(x, -offset)
    x[3] = 0  # an all-zero row: step 1, codes 0
    w = rng.integers(-128, 128, (48, 24))
    for shift in (0, 3):
        want = P.per_token_gemm(torch.from_numpy(x), torch.from_numpy(w), offset, unsigned, shift).numpy()
        np.testing.assert_array_equal(K.per_token_gemm(x, w, offset, unsigned, shift), want)


@pytest.mark.parametrize("offset,unsigned", [(0, False), (37, True)])
def test_grouped_numpy_kernel_equals_the_oracle(offset: int, unsigned: bool) -> None:
    """--weight-group on the per-token path: grouped partial sums times their multipliers, then the row rescale; the
    static offset term over the scaled weight. Equal to the oracle, and to the ungrouped product by codes * q."""
    from compiler.quant_groups import group_matmul

    rng = np.random.default_rng(5)
    x = rng.integers(-(1 << 15), 1 << 15, (16, 100)) // rng.integers(1, 2000, (16, 1))
    if unsigned:
        x = np.maximum(x, -offset)
    w = rng.integers(-8, 8, (100, 12))
    q = rng.integers(1, 256, (4, 12))  # 100 rows in groups of 32: a short last group
    full = w * np.repeat(q, 32, axis=0)[:100]
    for shift in (0, 4):
        want = P.per_token_gemm(torch.from_numpy(x), torch.from_numpy(w), offset, unsigned, shift,
                                group_scales=torch.from_numpy(q), group=32).numpy()
        got = K.per_token_gemm(x, w, offset, unsigned, shift, lambda a, b: group_matmul(a, b, q, 32), full.sum(axis=0))
        np.testing.assert_array_equal(got, want)
        np.testing.assert_array_equal(want, P.per_token_gemm(torch.from_numpy(x), torch.from_numpy(full), offset,
                                                             unsigned, shift).numpy())


def test_rows_get_their_own_step_and_the_product_is_close() -> None:
    rng = np.random.default_rng(1)
    x = np.concatenate([rng.integers(-30000, 30000, (1, 64)), rng.integers(-200, 200, (1, 64))])
    q, t = P.quantize_rows(torch.from_numpy(x))
    assert t.reshape(-1).tolist() == [int(np.ceil(np.abs(x[0]).max() / 127)), int(np.ceil(np.abs(x[1]).max() / 127))]
    # each row fills its own int8 grid: at least half of it (t is an integer count of input steps)
    assert int(q.abs().max(dim=1).values.min()) >= 64 and int(q.abs().max()) == 127
    w = rng.integers(-127, 128, (64, 16))
    got = P.per_token_gemm(torch.from_numpy(x), torch.from_numpy(w)).numpy()
    ref = x @ w
    rel = np.abs(got - ref).max(axis=1) / np.abs(ref).max(axis=1)
    assert (rel < 0.05).all()  # the quiet row keeps its precision next to the loud one
    # unsigned codes with an offset: a GELU-like row >= -offset uses 0..255 and the offset is undone exactly
    xu = rng.integers(-50, 20000, (4, 64))
    qu, _ = P.quantize_rows(torch.from_numpy(xu), offset=50, unsigned=True)
    assert int(qu.min()) >= 0 and int(qu.max()) > 250  # all 256 codes in use, not the signed half
    got_u = P.per_token_gemm(torch.from_numpy(xu), torch.from_numpy(w), offset=50, unsigned=True).numpy()
    assert np.abs(got_u - xu @ w).max() / np.abs(xu @ w).max() < 0.02


def _choices(dashed: dict[str, str]) -> dict[str, Any]:
    """Compile choices whose dashed names are no Python keywords, typed for ``**`` into compile's keywords."""
    return dict(dashed)


@pytest.fixture(scope="module")
def per_token_vit():
    rng = np.random.default_rng(2)
    data = {"pixel_values": rng.standard_normal((3, 1, 3, 32, 32)).astype(np.float32)}
    return compile(model_path("vit_tiny.onnx"), quant="int8", gelu="shiftgelu", inputs=data, calibrate=data,
                   **_choices({"act-granularity": "per-token"})), data


def test_simulator_equals_the_oracle_on_every_per_token_gemm(per_token_vit) -> None:
    from compiler.simulate import Simulator, Tensor

    result, data = per_token_vit
    sim = Simulator(result.module, result.env.weights, result.imported.input_names, result.imported.output_names)
    values: dict[SSAValue, Tensor] = dict(sim.consts)
    seen = {"per_token": 0, "unsigned": 0}

    def observe(op, outs):
        for r, t in zip(op.results, outs):
            values[r] = t
        if isinstance(op, df.GemmOp) and PER_TOKEN_ATTR in op.attributes:
            p = attr_ints(op, PER_TOKEN_ATTR)
            x, w = values[op.lhs].data, values[op.rhs].data
            bias = values[op.bias].data if op.bias is not None else None
            want = P.per_token_gemm(torch.from_numpy(x), torch.from_numpy(w.astype(np.int64)), p["offset"],
                                    bool(p["unsigned"]), p["shift"],
                                    None if bias is None else torch.from_numpy(bias.astype(np.int64)))
            np.testing.assert_array_equal(outs[0].data, want.numpy())
            assert elem_type(op.lhs) == "i16"
            seen["per_token"] += 1
            seen["unsigned"] += int(p["unsigned"])

    feeds = {k: v[0] for k, v in data.items()}
    values.update({a: Tensor(feeds[n]) for a, n in zip(sim.args, sim.input_names)})
    sim.run(feeds, observe)
    assert seen["per_token"] == sum(isinstance(o, df.GemmOp) and isinstance(o.rhs.owner, df.WeightOp)
                                    for o in result.module.walk()) > 0
    assert seen["unsigned"] > 0  # the GELU-fed fc2 takes unsigned codes
    numerics = result.report["numerics"]
    assert numerics["activation_granularity"] == "per-token"
    assert any("gelu_gain" in v for v in numerics["recipe_per_layer"].values())


def test_grouped_per_token_gemms_are_simulated_exactly_and_costed() -> None:
    """w4a8, per-token activations and a weight step per 32 input rows (the issue's MiniLM recipe on ViT): every
    static GEMM carries both, the simulator equals numerics.per_token_gemm with the group multipliers, and the
    plan prices the row quantizer and the group rescale."""
    from compiler.quant_groups import GROUP_ATTR, GROUP_SCALE_SUFFIX
    from compiler.simulate import Simulator, Tensor

    rng = np.random.default_rng(3)
    data = {"pixel_values": rng.standard_normal((2, 1, 3, 32, 32)).astype(np.float32)}
    result = compile(model_path("vit_tiny.onnx"), quant="w4a8", inputs=data, calibrate=data, balance="smoothquant",
                     **_choices({"act-granularity": "per-token", "weight-group": "32", "weight-rounding": "gptq"}))
    sim = Simulator(result.module, result.env.weights, result.imported.input_names, result.imported.output_names)
    values: dict[SSAValue, Tensor] = dict(sim.consts)
    seen: list[str] = []

    def observe(op, outs):
        for r, t in zip(op.results, outs):
            values[r] = t
        if isinstance(op, df.GemmOp) and PER_TOKEN_ATTR in op.attributes and GROUP_ATTR in op.attributes:
            p = attr_ints(op, PER_TOKEN_ATTR)
            x, w = values[op.lhs].data, values[op.rhs].data
            q = result.env.weights[weight_layer(op.rhs) + GROUP_SCALE_SUFFIX]
            bias = values[op.bias].data if op.bias is not None else None
            want = P.per_token_gemm(torch.from_numpy(x), torch.from_numpy(w.astype(np.int64)), p["offset"],
                                    bool(p["unsigned"]), p["shift"],
                                    None if bias is None else torch.from_numpy(bias.astype(np.int64)),
                                    torch.from_numpy(q.astype(np.int64)), attr_int(op, GROUP_ATTR))
            np.testing.assert_array_equal(outs[0].data, want.numpy())
            assert np.abs(w).max() <= 8 and q.min() >= 1 and q.max() <= 255
            seen.append(df.str_attr(op, "layer"))

    feeds = {k: v[0] for k, v in data.items()}
    values.update({a: Tensor(feeds[n]) for a, n in zip(sim.args, sim.input_names)})
    sim.run(feeds, observe)
    static = [o for o in result.module.walk() if isinstance(o, df.GemmOp) and isinstance(o.rhs.owner, df.WeightOp)
              and shape_of(o.rhs)[0] > 32]
    assert len(seen) == len(static) > 0
    ops = [lay["op"] for lay in result.report["layers"] if lay["op"].startswith("rowquant+gemm")]
    assert sum("group-scale" in op for op in ops) == len(seen)
    assert result.report["numerics"]["weight_group"] == 32


@pytest.mark.parametrize("target", ["fpga-u280", "gpu-a100", "npu-xdna", "asic-systolic", "optical-4f"])
def test_per_token_is_costed_on_every_target(target: str) -> None:
    reports = {g: compile(model_path("vit_tiny.onnx"), quant="int8", target=target,
                          **_choices({"act-granularity": g})).report for g in ("per-tensor", "per-token")}
    token = [lay for lay in reports["per-token"]["layers"] if lay["op"].startswith("rowquant+gemm")]
    assert token and all(lay["macs"] > 0 for lay in token)
    assert not any(lay["op"].startswith("rowquant") for lay in reports["per-tensor"]["layers"])
    assert reports["per-token"]["latency_cycles"] > reports["per-tensor"]["latency_cycles"]
    assert reports["per-token"]["macs"] == reports["per-tensor"]["macs"]
    cost = reports["per-token"]["numerics"]["per_token_cost"]
    assert cost["gemms"] == len(token) and cost["row_quantizer_cycles"] > 0
    assert "per_token_cost" not in reports["per-tensor"]["numerics"]


def test_bad_granularity_is_one_line(capsys) -> None:
    with pytest.raises(InputError, match="granularity=per-row: unknown choice"):
        compile(model_path("vit_tiny.onnx"), passes="canonicalize,quantize{granularity=per-row},schedule")
    assert main(["compile", str(model_path("vit_tiny.onnx")), "--quant", "int8", "--act-granularity", "bogus"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "--act-granularity bogus" in err[0]


def test_gelu_correction_halves_shiftgelu_error_and_leaves_exact_alone() -> None:
    rng = np.random.default_rng(3)
    rows = rng.standard_normal((64, 256)) * 1.5 - 1.0
    bits, s = A.gelu_input_format("shiftgelu", float(np.abs(rows).max()))
    gain, offset = gelu_correction(lambda q, sc: A.gelu_int("shiftgelu", q, sc), rows, bits, s)
    assert 1.0 < gain < 1.1 and 0 < offset < 0.05
    q = np.clip(np.round(rows / s), -(1 << (bits - 1)), (1 << (bits - 1)) - 1).astype(np.int64)
    y, ys = A.gelu_int("shiftgelu", q, s)
    ref = A.gelu_reference(q * s, "exact")
    before = np.sqrt(((y * ys - ref) ** 2).mean())
    after = np.sqrt(((gain * y * ys + offset - ref) ** 2).mean())
    assert after < 0.6 * before
    assert gelu_correction(lambda q, sc: A.gelu_int("exact", q, sc), rows, 16, 8 / 32767) == (1.0, 0.0)
