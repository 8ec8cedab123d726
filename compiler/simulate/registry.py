"""What a simulator kernel sees and returns, and the registry the interpreter (engine.py) looks kernels up in.

A value is a :class:`Tensor`: a NumPy array plus, for quantized integers, its ``scale`` (a float per tensor, or an
array that broadcasts against the data, e.g. one scale per output channel), so ``data * scale`` is the real value.
Floats and plain integers (token ids, masks) have ``scale = None``.

Kernel modules (kernels.py, attention.py, moe.py, and any other area adds) import this module, not the
interpreter, so the interpreter's package can load them without an import cycle.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from xdsl.dialects.builtin import ArrayAttr, DenseArrayBase, DictionaryAttr, FloatAttr, IntegerAttr, StringAttr
from xdsl.ir import Attribute, Operation

__all__ = ["Tensor", "SimContext", "Kernel", "Observer", "KERNELS", "register_kernel", "py_attr"]


@dataclass
class Tensor:
    """A simulated value: ``data`` and, for quantized integers, the real value of one step (``scale``)."""

    data: np.ndarray
    scale: float | np.ndarray | None = None

    @property
    def quantized(self) -> bool:
        """True for integer data with a scale (its real value is ``data * scale``)."""
        return self.scale is not None

    def step(self) -> float | np.ndarray:
        """``scale`` of quantized data (a kernel on the integer path asks for it here, so "not quantized" is an error
        rather than a silent ``None``)."""
        if self.scale is None:
            raise ValueError("a kernel asked for the scale of unquantized data")
        return self.scale

    def real(self) -> np.ndarray:
        """The real value: ``data * scale`` in float64 for quantized data, else ``data`` itself."""
        if self.scale is None:
            return self.data
        return self.data.astype(np.float64) * self.scale


@dataclass
class SimContext:
    """What kernels may read besides their inputs: the weights, per-op memo, and the run mode.

    ``exact``: ignore every ``approx`` / ``softmax`` choice and compute nonlinearities in float (the FP reference the
    calibration observes).
    """

    weights: Mapping[str, np.ndarray]
    exact: bool = False
    _memo: dict[int, dict[str, Any]] = field(default_factory=dict)

    def memo(self, op: Operation) -> dict[str, Any]:
        """A dict private to ``op`` that lives as long as the simulator (cache parsed attributes here)."""
        return self._memo.setdefault(id(op), {})


#: A kernel computes one op: ``fn(op, inputs, ctx) -> outputs`` (one Tensor per result, in order).
Kernel = Callable[[Operation, list[Tensor], SimContext], list[Tensor]]
#: An observer sees every op after it ran: ``fn(op, outputs)``. Return value ignored.
Observer = Callable[[Operation, list[Tensor]], None]

KERNELS: dict[str, Kernel] = {}


def register_kernel(op_name: str, fn: Kernel | None = None, *, replace: bool = False) -> Any:
    """Register ``fn`` as the kernel of ops named ``op_name`` (e.g. ``"dataflow.moe"``); usable as a decorator.

    Registering a name twice is an error unless ``replace=True`` (so two modules cannot silently fight over one op).
    """

    def add(kernel: Kernel) -> Kernel:
        if op_name in KERNELS and not replace and KERNELS[op_name] is not kernel:
            raise ValueError(f"a simulator kernel for {op_name} is already registered")
        KERNELS[op_name] = kernel
        return kernel

    return add(fn) if fn is not None else add


def py_attr(attr: Attribute) -> Any:
    """A Python / NumPy value of an xDSL attribute as the frontend stores ONNX attributes (see to_dialect._attr)."""
    if isinstance(attr, IntegerAttr):
        return int(attr.value.data)
    if isinstance(attr, FloatAttr):
        return float(attr.value.data)
    if isinstance(attr, StringAttr):
        return attr.data
    if isinstance(attr, DenseArrayBase):
        vals = attr.get_values()
        is_int = all(isinstance(v, int) for v in vals)
        return np.array(vals, dtype=np.int64 if is_int else np.float64)
    if isinstance(attr, ArrayAttr):
        return [py_attr(a) for a in attr.data]
    if isinstance(attr, DictionaryAttr):
        return {k: py_attr(v) for k, v in attr.data.items()}
    raise TypeError(f"cannot read attribute {attr}")
