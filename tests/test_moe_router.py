"""Router semantics (compiler/numerics/router.py): ties, capacity overflow and drops, no-renormalisation, image
routing, and dispatch/combine round trips."""

from __future__ import annotations

import numpy as np
import pytest

from compiler.numerics.router import capacity_of, combine, dispatch, expert_ffn, moe_reference, route, softmax64


def test_ties_go_to_the_lower_expert_index():
    logits = np.array([[1.0, 3.0, 3.0, 3.0], [2.0, 2.0, 0.0, 2.0]])
    r = route(logits, top_k=2, mode="task")
    assert r.experts.tolist() == [[1, 2], [0, 1]]


def test_task_mode_weights_are_full_softmax_probabilities_not_renormalised():
    logits = np.array([[0.5, 2.0, 1.0, -1.0]])
    r = route(logits, top_k=2, mode="task")
    p = softmax64(logits)[0]
    assert r.experts.tolist() == [[1, 2]]
    assert r.weights[0].tolist() == pytest.approx([p[1], p[2]], abs=1e-15)
    assert r.weights.sum() < 1.0
    renorm = route(logits, top_k=2, renormalize=True)
    assert renorm.weights.sum() == pytest.approx(1.0)


def test_capacity_overflow_drops_later_tokens_first_choices_before_second():
    # every token prefers expert 0, then expert 1; capacity ceil(1.0 * 4 * 2 / 4) = 2 per expert
    logits = np.tile(np.array([[3.0, 2.0, 0.0, -1.0]]), (4, 1))
    r = route(logits, top_k=2, mode="token", capacity_factor=1.0)
    assert r.capacity == 2 == capacity_of(4, 4, 2, 1.0)
    assert r.kept.tolist() == [[True, True], [True, True], [False, False], [False, False]]
    assert r.tokens_per_expert().tolist() == [2, 2, 0, 0]
    assert r.requested_per_expert().tolist() == [4, 4, 0, 0]
    assert r.dropped() == 4
    assert np.all(r.weights[2:] == 0)


def test_dropped_tokens_contribute_nothing_to_the_block_output():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(6, 8))
    gate = np.zeros((8, 4))
    gate[:, 0] = 1.0  # make expert 0 win for positive-sum tokens
    w1, w2 = rng.normal(size=(4, 8, 16)), rng.normal(size=(4, 16, 8))
    y, r = moe_reference(x, gate, w1, w2, top_k=1, capacity=1, activation="relu")
    dropped = ~r.kept[:, 0]
    assert dropped.any()
    assert np.all(y[dropped] == 0)


def test_image_mode_sends_every_token_of_an_image_to_the_image_experts():
    rng = np.random.default_rng(1)
    logits = rng.normal(size=(2 * 5, 6))
    r = route(logits, top_k=2, mode="image", images=2)
    pooled = logits.reshape(2, 5, 6).mean(axis=1)
    for img in range(2):
        want = np.argsort(-pooled[img], kind="stable")[:2]
        assert (r.experts[img * 5:(img + 1) * 5] == want).all()
    assert r.tokens_per_expert().sum() == 2 * 10


@pytest.mark.parametrize("top_k", [1, 2, 3])
def test_dispatch_then_combine_with_identity_experts_returns_the_input(top_k):
    rng = np.random.default_rng(top_k)
    x = rng.normal(size=(12, 5))
    r = route(rng.normal(size=(12, 4)), top_k=top_k, renormalize=True)
    queues = dispatch(x, r)
    assert sum(len(q) for q in queues) == 12 * top_k
    assert all(np.array_equal(q, x[idx]) for q, idx in zip(queues, r.queues()))
    assert np.allclose(combine(queues, r, x.shape), x, atol=1e-14)


def test_moe_reference_equals_the_dense_every_expert_formula():
    rng = np.random.default_rng(3)
    x = rng.normal(size=(1, 7, 6))
    gate, w1, w2 = rng.normal(size=(6, 5)), rng.normal(size=(5, 6, 9)), rng.normal(size=(5, 9, 6))
    b1, b2 = rng.normal(size=(5, 9)), rng.normal(size=(5, 6))
    y, r = moe_reference(x, gate, w1, w2, b1=b1, b2=b2, top_k=2, mode="task", activation="gelu")
    dense = np.stack([expert_ffn(x[0], w1[e], w2[e], b1[e], b2[e], "gelu") for e in range(5)], axis=1)
    comb = np.zeros((7, 5))
    np.put_along_axis(comb, r.experts, r.weights, axis=1)
    assert np.allclose(y[0], np.einsum("te,ted->td", comb, dense), atol=1e-12)


def test_route_rejects_bad_arguments():
    with pytest.raises(ValueError, match="top_k=5 must be in 1..4"):
        route(np.zeros((2, 4)), top_k=5)
    with pytest.raises(ValueError, match="do not split into 3 images"):
        route(np.zeros((4, 4)), top_k=1, mode="image", images=3)
