"""Rows of a model output that an accuracy cosine is taken over.

The accuracy report (codesign/accuracy.py) and the automatic quantization recipe (compiler/quant_auto.py) both judge
a compiled model by the cosine similarity between its outputs and the exported model's, row by row: a token's
hidden state, a logit vector, a probability row. A row is the output's last axis when that axis is a feature
vector, but an image output [C, H, W] ends in a spatial axis: a head that leaves a 2x2 map has rows of 2 values,
whose cosine is +1 or -1 by the sign of one element (cosine_min -0.99999 on models whose whole-output cosine is
0.99). Over n values of independent error the cosine's spread falls as 1 / sqrt(n), so a row of fewer than
``ROW_MIN`` values is merged with the axes before it until it holds ``ROW_MIN`` (or the whole sample): token-major
outputs (hidden sizes >= 16) keep their per-token rows, a 7x7 map's rows become one channel's map, and a 2x2 map
becomes the whole sample.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np

__all__ = ["ROW_MIN", "row_length", "as_rows"]

#: the fewest values a cosine row holds (merged from trailing axes); 16 keeps every transformer's hidden size
ROW_MIN = 16


def row_length(shape: Sequence[int]) -> int:
    """Values per cosine row of one sample's output of ``shape``: the product of its trailing axes, taken from the
    last until it reaches ``ROW_MIN`` or covers the sample (1 for a scalar)."""

    length = 1
    for dim in reversed(tuple(shape)):
        length *= int(dim)
        if length >= ROW_MIN:
            break
    return max(length, 1)


def as_rows(value: np.ndarray, sample_axes: int = 0) -> np.ndarray:
    """``value`` as float64 [rows, row_length], rows never crossing the leading ``sample_axes`` axes."""

    width = row_length(value.shape[sample_axes:])
    count = math.prod(value.shape) // width if value.size else 0
    return np.asarray(value, np.float64).reshape(count, width)
