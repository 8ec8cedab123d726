"""A weight GEMM layer of the backend and what its code generators share (``gemm.py`` output stationary,
``gemm_ws.py`` weight stationary): the layer itself, its placed regions and constant table, and the table's
rows per column fold."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from compiler.backend.image import Region
from hw.isa import Space

__all__ = ["CONST_PER_FOLD", "GemmLayer", "Prepared"]

CONST_PER_FOLD = 3
"""Constant-memory rows per column fold of a GEMM layer's table: bias, requant multipliers, shifts."""


@dataclass(frozen=True)
class GemmLayer:
    """One integer GEMM and what the IR fuses behind it.

    ``weights``: K x N signed ``in_bits`` integers; ``bias``: N accumulator integers or None; ``requant``: the
    dyadic ``(m, e)`` (scalars or N-vectors) and ``out_bits`` of a fused requant, or None (int32 output).
    """

    name: str
    m: int
    weights: np.ndarray
    bias: np.ndarray | None = None
    requant: tuple[np.ndarray, np.ndarray, int] | None = None

    @property
    def k(self) -> int:
        return int(self.weights.shape[0])

    @property
    def n(self) -> int:
        return int(self.weights.shape[1])


@dataclass(frozen=True)
class Prepared:
    """A GEMM layer's placed regions and constant table (:meth:`ProgramBuilder.prepare`): ``x`` / ``w`` / ``y``
    (input, weights, output), the output's bits and bytes, where a requant's output is staged, the column folds,
    whether the requant is per channel, and the constant row the table starts at."""

    x: Region
    w: Region
    y: Region
    out_bits: int
    out_bytes: int
    stage_space: Space
    n_folds: int
    per_channel: bool
    const_base: int
