"""The hypothesis strategy the row-wise integer kernels' property tests share (Shiftmax, ShiftGELU): small integer
matrices in a named value regime, hypothesis choosing shape, regime and seed, numpy filling them in (fast)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np
from hypothesis import strategies as st

INT32_MIN, INT32_MAX = -(2**31), 2**31 - 1
EXTREMES = np.array([INT32_MIN, INT32_MIN + 1, -1, 0, 1, INT32_MAX - 1, INT32_MAX], dtype=np.int64)
"""The int32 corners: both ends, one step in, and -1, 0, 1."""


@st.composite
def regime_rows(draw: st.DrawFn, ranges: Mapping[str, tuple[int, int]], kinds: Sequence[str]) -> np.ndarray:
    """A [1..4, 1..24] int64 matrix of one regime from ``kinds``: a name of ``ranges`` (uniform in that closed
    range), ``"constant"`` (one int32 value everywhere) or ``"extremes"`` (drawn from EXTREMES)."""
    rows, width = draw(st.integers(1, 4)), draw(st.integers(1, 24))
    kind = draw(st.sampled_from(list(kinds)))
    rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
    if kind == "constant":
        return np.full((rows, width), draw(st.integers(INT32_MIN, INT32_MAX)), dtype=np.int64)
    if kind == "extremes":
        return rng.choice(EXTREMES, size=(rows, width))
    lo, hi = ranges[kind]
    return rng.integers(lo, hi, size=(rows, width), endpoint=True)
