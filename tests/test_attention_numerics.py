"""Reordered (Edge-MoE) and tiled (flash) attention against the standard order, in float64 and in the simulator."""

from __future__ import annotations

import numpy as np
import pytest

from compiler.simulate.attention import (
    edge_moe_attention,
    edge_moe_visit_order,
    flash_attention,
    standard_attention64,
)


def _qkv(seed: int, b=2, h=3, sq=13, sk=11, dh=8, dv=6):
    rng = np.random.default_rng(seed)
    return rng.normal(size=(b, h, sq, dh)), rng.normal(size=(b, h, sk, dh)), rng.normal(size=(b, h, sk, dv))


@pytest.mark.parametrize("lanes", [1, 2, 3, 4, 7, 16])
def test_edge_moe_order_equals_standard_attention(lanes):
    q, k, v = _qkv(lanes)
    want = standard_attention64(q, k, v, 0.3)
    assert np.max(np.abs(edge_moe_attention(q, k, v, 0.3, lanes) - want)) < 1e-13


@pytest.mark.parametrize("tiles", [(1, 1), (4, 3), (5, 11), (13, 4), (16, 16)])
def test_flash_tiles_equal_standard_attention(tiles):
    q, k, v = _qkv(sum(tiles))
    want = standard_attention64(q, k, v, 0.25)
    assert np.max(np.abs(flash_attention(q, k, v, 0.25, *tiles) - want)) < 1e-13


def test_masks_and_causal_rows_agree():
    q, k, v = _qkv(9, sq=10, sk=10)
    mask = np.where(np.triu(np.ones((10, 10), dtype=bool), 1), -np.inf, 0.0)
    pad = np.zeros((2, 1, 1, 10))
    pad[..., -3:] = -1e9
    for m in (mask, pad):
        want = standard_attention64(q, k, v, 0.5, m)
        assert np.max(np.abs(edge_moe_attention(q, k, v, 0.5, 4, m) - want)) < 1e-13
        assert np.max(np.abs(flash_attention(q, k, v, 0.5, 3, 4, m) - want)) < 1e-13


def test_large_scores_stay_exact_with_the_running_max():
    q, k, v = _qkv(3)
    want = standard_attention64(q * 30, k, v, 1.0)
    assert np.allclose(edge_moe_attention(q * 30, k, v, 1.0, 4), want, rtol=0, atol=1e-12)
    assert np.allclose(flash_attention(q * 30, k, v, 1.0, 4, 4), want, rtol=0, atol=1e-12)


@pytest.mark.parametrize("lanes", [2, 4, 5])
def test_edge_moe_lanes_share_one_key_per_step_and_load_at_most_one_query(lanes):
    sq, sk = 3 * lanes, 9
    order = edge_moe_visit_order(sq, sk, lanes)
    for i in range(sq):  # each query visits every key once, starting at its lane index
        assert sorted(order[i]) == list(range(sk)) and order[i, 0] == i % lanes
    for group in range(sq // lanes):
        for tau in range(sk + lanes - 1):  # lane o starts o steps late
            keys = {order[group * lanes + o, tau - o] for o in range(lanes) if 0 <= tau - o < sk}
            assert keys == {tau % sk}
            assert sum(1 for o in range(lanes) if tau - o == 0) <= 1  # new Q vectors this step


@pytest.mark.slow
def test_simulator_gives_the_same_model_output_for_every_order(models_dir):
    from compiler.context import make_context
    from compiler.frontend.onnx_loader import load_graph
    from compiler.frontend.to_dialect import build_module
    from compiler.passes.set_attention import SetAttention
    from compiler.simulate import Simulator

    x = np.random.default_rng(0).normal(size=(1, 3, 32, 64)).astype(np.float32)
    outs = {}
    for algorithm in ("standard", "edge-moe", "flash"):
        imp = build_module(load_graph(models_dir / "m3vit_tiny.onnx"))
        SetAttention(algorithm=algorithm, tile_q=4, tile_k=3).apply(make_context(), imp.module)
        sim = Simulator(imp.module, imp.weights, imp.input_names, imp.output_names)
        outs[algorithm] = next(iter(sim.run({"pixel_values": x}).values()))
    for algorithm in ("edge-moe", "flash"):
        assert np.allclose(outs[algorithm], outs["standard"], rtol=1e-5, atol=1e-5)
