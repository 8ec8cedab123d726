"""Sigmoid routers (DeepSeek-V3, GLM-4-MoE): transformers' own GLM-4-MoE block, with a nonzero selection bias,
expert groups and a routed scale, is recognised as one gated ``dataflow.moe`` whose ``router`` attribute holds them,
simulates equal to onnxruntime in float and runs integer under ``--quant int8``; the routing reference picks by the
biased scores and weights by the unbiased ones."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest
import torch
from xdsl.dialects.builtin import IntegerType

from codesign.api import compile
from compiler.dialect import dataflow as df
from compiler.numerics.router import Scoring, route

pytestmark = pytest.mark.slow  # imports transformers

D, E, K, T = 32, 8, 2, 12


def test_sigmoid_route_picks_by_biased_scores_and_weights_by_the_unbiased_ones() -> None:
    z = np.array([[0.0, 1.0, 2.0, -1.0]])
    r = route(z, 2, scoring=Scoring(bias=(5.0, 0.0, 0.0, 0.0), scale=2.0))
    assert r.experts.tolist() == [[0, 2]]  # the bias lifts expert 0 over expert 1
    s = 1 / (1 + np.exp(-z[0]))
    np.testing.assert_allclose(r.weights[0], 2.0 * s[[0, 2]])
    # scores .50 .73 .88 .27: group {0, 1} sums 1.23, group {2, 3} 1.15, so the top 2 come from {0, 1} (not 2, 1)
    grouped = route(z, 2, scoring=Scoring(groups=2, topk_groups=1))
    assert sorted(grouped.experts[0].tolist()) == [0, 1]
    assert sorted(route(z, 2, scoring=Scoring()).experts[0].tolist()) == [1, 2]
    renorm = route(z, 2, renormalize=True, scoring=Scoring(scale=3.0))
    np.testing.assert_allclose(renorm.weights.sum(), 3.0)


def _glm4_block(tmp_path, exporter: str = "legacy"):  # noqa: ANN001, ANN202
    import transformers

    from examples._common import export_onnx

    settings: dict[str, Any] = {"hidden_size": D, "n_routed_experts": E, "num_experts_per_tok": K,
                                "moe_intermediate_size": 16, "n_group": 4, "topk_group": 2,
                                "routed_scaling_factor": 2.5, "norm_topk_prob": True,
                                "experts_implementation": "batched_mm"}  # batched_mm: the default loop uses histc
    config = transformers.Glm4MoeConfig(**settings)
    from transformers.models.glm4_moe.modeling_glm4_moe import Glm4MoeMoE

    torch.manual_seed(0)
    block = Glm4MoeMoE(config).eval()
    with torch.no_grad():
        for p in block.parameters():
            p.copy_(torch.randn(p.shape) / p.shape[-1] ** 0.5)
        block.gate.e_score_correction_bias.copy_(torch.randn(E) * 0.5)
    path = tmp_path / "glm4_moe_block.onnx"
    x = torch.randn(1, T, D, generator=torch.Generator().manual_seed(1))
    export_onnx(block, [x], path, input_names=["x"], output_names=["y"], exporter=exporter)  # type: ignore[arg-type]
    return path, block, x


@pytest.mark.parametrize("exporter", ["legacy", "dynamo"])
def test_glm4_moe_block_is_a_gated_moe_with_a_sigmoid_router(tmp_path, exporter: str) -> None:
    """The dynamo export gates with a Gemm reading the [E, D] gate transposed (transB) and gathers each routed
    token's expert weights (GatherND of the stacked [E, 2H, D] / [E, D, H] constants): the same block."""
    path, block, x = _glm4_block(tmp_path, exporter)
    result = compile(path, inputs={"x": x.numpy()[None]})
    (op,) = [o for o in result.module.walk() if isinstance(o, df.MoeOp)]
    scoring = op.scoring()
    assert op.gated() and scoring is not None and op.renormalize_value()
    assert (scoring.groups, scoring.topk_groups, scoring.scale) == (4, 2, 2.5)
    np.testing.assert_allclose(scoring.bias, block.gate.e_score_correction_bias.numpy(), rtol=1e-6)  # type: ignore[arg-type]
    assert result.report is not None
    assert result.report["accuracy"]["outputs"]["y"]["cosine_min"] >= 0.99999
    samples = {"x": np.stack([torch.randn(1, T, D, generator=torch.Generator().manual_seed(s)).numpy()
                              for s in range(4)])}
    quant = compile(path, inputs=samples, quant="int8")
    (qop,) = [o for o in quant.module.walk() if isinstance(o, df.MoeOp)]
    assert isinstance(qop.input.type.get_element_type(), IntegerType)  # type: ignore[attr-defined]
    assert qop.scoring() == scoring
    assert quant.report is not None and "float_blocks" not in quant.report["numerics"]
    assert quant.report["accuracy"]["outputs"]["y"]["cosine_min"] >= 0.98
