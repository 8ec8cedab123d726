"""Edge-MoE online softmax: float64 reference vs two-pass softmax; integer version vs base2_softmax."""

from __future__ import annotations

import math
from fractions import Fraction

import numpy as np
import torch
from hypothesis import assume, given, settings
from hypothesis import strategies as st

from compiler.numerics import base2_softmax, dyadic, online_softmax, online_softmax_float, online_softmax_stats

TABLE = [round(2 ** (j / 16) * 2**15) for j in range(17)]


def exact_terms(row: list[int], scale: float) -> tuple[list[int], list[int], int]:
    """Per element (P_j, k_j) against the final integer max m, from base2's definition in Python ints."""
    m_c, e_c = dyadic(scale * math.log2(math.e) * 256)
    u = [min(max(round(Fraction(v * m_c, 2**e_c)), -(2**31)), 2**31 - 1) for v in row]
    m = max(-((-v) // 256) for v in u)
    ps, ks = [], []
    for v in u:
        d = v - m * 256
        i, t = divmod(d % 256, 16)
        ps.append(TABLE[i] + (((TABLE[i + 1] - TABLE[i]) * t) >> 4))
        ks.append(-(d // 256))
    return ps, ks, m


@st.composite
def score_rows(draw: st.DrawFn) -> tuple[np.ndarray, float]:
    rows, width = draw(st.integers(1, 3)), draw(st.integers(1, 32))
    span = draw(st.sampled_from([3, 200, 5000, 2**20]))
    rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
    x = rng.integers(-span, span, size=(rows, width), endpoint=True)
    order = draw(st.sampled_from(["random", "ascending", "descending"]))
    if order != "random":  # ascending: a new max at every step, the most rescales
        x = np.sort(x, axis=-1)
        x = x if order == "ascending" else x[:, ::-1].copy()
    return x, draw(st.floats(min_value=-12.0, max_value=0.0).map(lambda t: 2.0**t))


# ---- float64 reference ------------------------------------------------------------------------------------


@settings(max_examples=100, deadline=None)
@given(score_rows())
def test_online_float_equals_two_pass_softmax(case: tuple[np.ndarray, float]) -> None:
    x_int, scale = case
    x = torch.from_numpy(x_int).double() * scale
    # below -512 - 600 Edge-MoE's fixed start makes exp(x - m) underflow: the documented limit
    assume(float(x.amax(-1).min()) > -1112.0)
    p, m, inv_s = online_softmax_float(x)
    ref = torch.softmax(x, dim=-1)
    assert torch.allclose(p, ref, rtol=1e-12, atol=1e-15)
    assert torch.equal(m, torch.clamp(x.amax(-1, keepdim=True), min=-512.0))
    assert torch.allclose(inv_s, 1 / torch.exp(x - m).sum(-1, keepdim=True), rtol=1e-12)


def test_online_float_rows_below_edge_moe_initial_max() -> None:
    """Every x <= -512: Edge-MoE never takes the new-max branch; the result is still the softmax."""
    x = torch.tensor([[-600.0, -601.0, -599.5], [-512.0, -512.0, -513.0]])
    p, m, _ = online_softmax_float(x)
    assert m.flatten().tolist() == [-512.0, -512.0]
    assert torch.allclose(p, torch.softmax(x.double(), -1), rtol=1e-12)


# ---- integer version -----------------------------------------------------------------------------------


@settings(max_examples=300, deadline=None)
@given(score_rows(), st.sampled_from([8, 16]))
def test_online_integer_sum_is_bracketed_by_the_two_pass_sums(case: tuple[np.ndarray, float], out_bits: int) -> None:
    """sum_j floor(P_j / 2^k_j) <= s_online <= floor(sum_j P_j / 2^k_j), the max is base2's, and
    online y <= two-pass y element by element, by at most what s_online - s_two_pass explains."""
    x, scale = case
    s, m = online_softmax_stats(torch.from_numpy(x), scale)
    y, out_scale = online_softmax(torch.from_numpy(x), scale, out_bits)
    y2, out_scale2 = base2_softmax(torch.from_numpy(x), scale, out_bits)
    assert out_scale == out_scale2
    for r, row in enumerate(x.tolist()):
        ps, ks, m_ref = exact_terms(row, scale)
        two_pass = sum(p >> min(k, 62) for p, k in zip(ps, ks, strict=True))
        top = max(ks)  # floor(sum P_j / 2^k_j) with integers: shift everything onto 2^-top
        upper = sum(p << (top - k) for p, k in zip(ps, ks, strict=True)) >> top
        assert int(m[r, 0]) == m_ref
        assert two_pass <= int(s[r, 0]) <= upper
        assert int(s[r, 0]) - two_pass < len(row)
    assert bool((y <= y2).all()) and bool((y >= 0).all())


def test_online_integer_equals_two_pass_when_no_rescale_truncates() -> None:
    """A descending row never rescales, so the sums, and the outputs, are identical."""
    x = torch.tensor([[900, 400, 0, -3000, -3001]])
    s, _ = online_softmax_stats(x, 1e-2)
    assert torch.equal(online_softmax(x, 1e-2, 16)[0], base2_softmax(x, 1e-2, 16)[0])
    assert int(s) == sum(exact_p >> k for exact_p, k in zip(*exact_terms(x[0].tolist(), 1e-2)[:2], strict=True))


def test_online_integer_is_close_to_float_softmax() -> None:
    """Ascending rows (a rescale at every key) of 197 keys: the truncations cost at most N LSBs of s."""
    gen = torch.Generator().manual_seed(9)
    x = torch.sort(torch.round(torch.randn(16, 197, generator=gen) * 3 / 1e-2).long(), dim=-1).values
    y, out_scale = online_softmax(x, 1e-2, 16)
    err = (y.double() * out_scale - torch.softmax(x.double() * 1e-2, dim=-1)).abs()
    assert float(err.max()) < 4e-3
