"""Hardware-level descriptions of work, built by the compiler from IR ops and priced by target models.

They are deliberately free of compiler concepts: a target model sees shapes, bit widths and element counts, never
an IR op. Sizes are in elements unless a name says bytes.
"""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["GemmWork", "VectorWork", "MoveWork", "Work"]


@dataclass(frozen=True)
class GemmWork:
    """``batch`` independent products of an (m x k) by a (k x n) matrix.

    ``weights_static`` is true when the right operand is a model weight (it can be preloaded and
    reused), false for activation-by-activation products such as QK^T and A.V inside attention.
    """

    m: int
    n: int
    k: int
    batch: int = 1
    in_bits: int = 8
    w_bits: int = 8
    acc_bits: int = 32
    weights_static: bool = True

    @property
    def macs(self) -> int:
        """Multiply-accumulates of the whole product."""
        return self.batch * self.m * self.n * self.k


@dataclass(frozen=True)
class VectorWork:
    """Element-wise or row-wise work for the vector / special-function unit.

    ``kind`` names the function (``softmax``, ``gelu``, ``layernorm``, ``add``, ``router`` ...), ``approx`` the
    hardware approximation chosen by the compiler (``exact``, ``shiftmax`` ...), which sets the cost per element.
    ``rows`` is the number of independent rows for row-wise kinds (softmax, layernorm): each costs a reduction.
    """

    kind: str
    elements: int
    rows: int = 1
    approx: str = "exact"
    bits: int = 8
    row_length: int = 0
    """Values per row (the last dimension) where the planner records it, else 0; with ``in_bits`` and
    ``out_bits`` (the input's and the result's element bits, 0 where not recorded) only ``gemm.execute_queue``'s
    pricing of the system's vector layers reads it (``hw.perf.vec_queue``)."""
    in_bits: int = 0
    out_bits: int = 0
    row_kernel: int = 0
    """The longest row the program's row kernels are built for on the system top level (its longest Shiftmax or
    I-LayerNorm row; I-LayerNorm's dividers are sized by it), recorded by the planner for norms; 0: this row's own.
    Read likewise."""
    quant: str = ""
    """An integer op's role: ``tensor`` (a requant with one multiplier for the tensor), ``add`` / ``add_channel``
    (a residual add, per-tensor / per-channel multipliers), ``island`` (a ``quantize`` closing a ``dequantize`` ->
    moves -> ``quantize`` island), ``island_member`` (that island's ``dequantize``), ``rope`` (an integer rotary
    embedding's multiplies and add), ``mul`` (a product of two integer activations), "" for others; read
    likewise."""


@dataclass(frozen=True)
class MoveWork:
    """Pure data movement (reshape, transpose, gather, concat) of ``bytes`` bytes on chip; ``quant``
    ``island_member`` for a move inside a ``dequantize`` -> moves -> ``quantize`` island (``VectorWork.quant``),
    ``transposed`` for a transpose of integers that moves the last axis (the system's copy layers through a
    transposing ``LOAD``: ``rows`` x ``row_length`` result elements of ``bits``), which only ``gemm.execute_queue``'s
    pricing reads."""

    kind: str
    bytes: int
    quant: str = ""
    rows: int = 0
    row_length: int = 0
    bits: int = 0


Work = GemmWork | VectorWork | MoveWork
