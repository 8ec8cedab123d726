"""What the quantize pass and the recipes it mixes in (compiler/quant_activation.py) both need: an integer value's
format, the names and types they read off the IR, and GPTQ's dampening. A module of its own so that neither imports
the other."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
from xdsl.dialects.builtin import StringAttr, TensorType
from xdsl.ir import Operation, SSAValue

from compiler.dialect.choices import LAYER_ATTR

__all__ = ["GPTQ_DAMP", "PER_TOKEN_ATTR", "Fmt", "layer_of", "shape_of", "tensor_type"]

#: A ``dataflow.gemm`` attribute {offset, unsigned, shift} (integers): its 16-bit input is quantized per token to int8
#: inside the GEMM and the result rescaled per row (compiler/numerics/pertoken.py has the arithmetic). Here, not in
#: the simulator that reads it, so that the lowering can test for it without loading the simulator (and torch).
PER_TOKEN_ATTR = "per_token"

#: GPTQ's dampening, as a fraction of the Hessian's mean diagonal. GPTQ's 0.01 assumes thousands of calibration
#: rows; with a few hundred for up to 1536 inputs H is rank-deficient and GPTQ fits the calibration rows. On MiniLM
#: (w4a8, SmoothQuant, 20 unlike sentences, cosine on the evaluated ones) 0.01 / 0.1 / 1.0 measured 0.901 / 0.926 /
#: 0.933.
GPTQ_DAMP = 1.0


def shape_of(v: SSAValue) -> list[int]:
    """The static shape of a tensor value."""
    return list(v.type.get_shape())  # type: ignore[attr-defined]


def tensor_type(v: SSAValue, el: Any) -> TensorType:
    """``v``'s shape with element type ``el``."""
    return TensorType(el, shape_of(v))


def layer_of(op: Operation) -> str:
    """The op's ``layer`` name (its op name when it has none)."""
    attr = op.properties.get(LAYER_ATTR)
    return attr.data if isinstance(attr, StringAttr) else op.name


@dataclass
class Fmt:
    """An integer value's format: ``bits`` wide, real = int * scale (float, per-channel array on the last axis, or
    a grouped GEMM's [G, 1, N] per group and channel)."""

    bits: int
    scale: float | np.ndarray

    @property
    def per_tensor(self) -> bool:
        return np.ndim(self.scale) == 0
