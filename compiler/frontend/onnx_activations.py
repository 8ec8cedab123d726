"""NumPy semantics of ONNX's element-wise activation and trigonometric ops, and of its variadic element-wise ops.

Exporters write ``nn.ELU``, ``nn.LeakyReLU``, ``nn.PReLU``, ``nn.SELU``, ``nn.CELU`` and ``torch.atan`` as single
ONNX nodes (dynamo also ``nn.Mish``); every op here computes what the ONNX operator specification
(onnx/onnx ``docs/Operators.md``) defines, in the input's dtype, so the loader can fold them and the simulator can
run them as generic element-wise ops. ``ELEMENTWISE_KINDS`` names each op's ``dataflow.elementwise`` kind
(compiler/dialect/choices.py says which of them are piecewise linear, which the schedule prices like a multiply).
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

__all__ = ["ACTIVATION_OPS", "ELEMENTWISE_KINDS"]

Array = np.ndarray
_Op = Callable[[Sequence[Array], dict[str, Any]], list[Array]]


def _same(x: Array, y: Any) -> list[Array]:
    return [np.asarray(y).astype(x.dtype, copy=False)]


def _alpha(attrs: dict[str, Any], default: float) -> float:
    return float(attrs.get("alpha", default))


def _elu(i: Sequence[Array], a: dict[str, Any]) -> list[Array]:
    x = i[0]
    return _same(x, np.where(x > 0, x, _alpha(a, 1.0) * np.expm1(np.minimum(x, 0))))


def _selu(i: Sequence[Array], a: dict[str, Any]) -> list[Array]:
    x = i[0]
    alpha, gamma = _alpha(a, 1.67326319217681884765625), float(a.get("gamma", 1.05070102214813232421875))
    return _same(x, gamma * np.where(x > 0, x, alpha * np.expm1(np.minimum(x, 0))))


def _celu(i: Sequence[Array], a: dict[str, Any]) -> list[Array]:
    x, alpha = i[0], _alpha(a, 1.0)
    return _same(x, np.maximum(x, 0) + np.minimum(0, alpha * np.expm1(np.minimum(x, 0) / alpha)))


def _leaky_relu(i: Sequence[Array], a: dict[str, Any]) -> list[Array]:
    x = i[0]
    return _same(x, np.where(x >= 0, x, x * x.dtype.type(_alpha(a, 0.01))))


def _prelu(i: Sequence[Array], a: dict[str, Any]) -> list[Array]:
    x, slope = i[0], i[1]
    return _same(x, np.where(x >= 0, x, x * slope.astype(x.dtype, copy=False)))


def _thresholded_relu(i: Sequence[Array], a: dict[str, Any]) -> list[Array]:
    x = i[0]
    return _same(x, np.where(x > _alpha(a, 1.0), x, 0))


def _shrink(i: Sequence[Array], a: dict[str, Any]) -> list[Array]:
    x, bias, lambd = i[0], float(a.get("bias", 0.0)), float(a.get("lambd", 0.5))
    return _same(x, np.where(x < -lambd, x + bias, np.where(x > lambd, x - bias, 0)))


def _mish(i: Sequence[Array], a: dict[str, Any]) -> list[Array]:
    x = i[0]
    return _same(x, x * np.tanh(np.logaddexp(0, x)))  # softplus without overflow for large x


def _swish(i: Sequence[Array], a: dict[str, Any]) -> list[Array]:
    x = i[0]
    return _same(x, x / (1 + np.exp(-_alpha(a, 1.0) * x)))


def _softsign(i: Sequence[Array], a: dict[str, Any]) -> list[Array]:
    x = i[0]
    return _same(x, x / (1 + np.abs(x)))


def _unary(fn: Callable[[Array], Array]) -> _Op:
    return lambda i, a: _same(i[0], fn(i[0]))


def _variadic(fn: Callable[[Array, Array], Array], mean: bool = False) -> _Op:
    """Sum / Mean / Max / Min over any number of broadcast inputs (ONNX's variadic form)."""
    def run(i: Sequence[Array], a: dict[str, Any]) -> list[Array]:
        args = [x for x in i if x is not None]
        out = functools.reduce(fn, args)
        if mean:
            out = out / len(args)
        return _same(args[0], out)

    return run


ACTIVATION_OPS: dict[str, _Op] = {
    "Elu": _elu, "Selu": _selu, "Celu": _celu, "LeakyRelu": _leaky_relu, "PRelu": _prelu,
    "ThresholdedRelu": _thresholded_relu, "Shrink": _shrink, "Mish": _mish, "Swish": _swish, "Softsign": _softsign,
    "Tan": _unary(np.tan), "Asin": _unary(np.arcsin), "Acos": _unary(np.arccos), "Atan": _unary(np.arctan),
    "Sinh": _unary(np.sinh), "Cosh": _unary(np.cosh), "Asinh": _unary(np.arcsinh), "Acosh": _unary(np.arccosh),
    "Atanh": _unary(np.arctanh),
    "Sum": _variadic(np.add), "Mean": _variadic(np.add, mean=True), "Max": _variadic(np.maximum),
    "Min": _variadic(np.minimum),
}

#: ONNX op -> ``dataflow.elementwise`` kind, for the activations above (Sum / Mean / Max / Min with other than two
#: inputs are rewritten into binary ops first: compiler/frontend/variadic.py).
ELEMENTWISE_KINDS: dict[str, str] = {
    "Elu": "elu", "Selu": "selu", "Celu": "celu", "LeakyRelu": "leaky_relu", "PRelu": "prelu",
    "ThresholdedRelu": "thresholded_relu", "Shrink": "shrink", "Mish": "mish", "Swish": "swish",
    "Softsign": "softsign", "Tan": "tan", "Asin": "asin", "Acos": "acos", "Atan": "atan", "Sinh": "sinh",
    "Cosh": "cosh", "Asinh": "asinh", "Acosh": "acosh", "Atanh": "atanh",
}
