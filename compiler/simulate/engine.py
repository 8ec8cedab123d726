"""The simulator's interpreter loop (values and the kernel registry: registry.py, re-exported here).

Values are :class:`Tensor` s: a NumPy array and, for quantized integers, its ``scale``. Scales are not stored in
the IR: they flow with the data, each kernel deriving its output scale from its inputs' (as the hardware's
fixed-point formats do); only the points where the compiler *chose* a scale (quantize, requant) carry it as an
attribute.

The interpreter walks ``main``'s block once per sample, calling ``KERNELS[op.name]`` for every op. Anything
that can be computed once per op (parsed attributes, dyadic multipliers, quantized weights) goes through
``SimContext.memo`` so a 16-sample run parses each op once. The built-in kernels are registered by the package
(compiler/simulate/__init__.py loads kernels.py, attention.py and moe.py), so they are there whenever this module is.
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np
from xdsl.dialects import func
from xdsl.dialects.builtin import ModuleOp, StringAttr
from xdsl.ir import Operation, SSAValue

from compiler.dialect import dataflow as df
from compiler.dialect.choices import LAYER_ATTR
from compiler.simulate._threads import single_threaded
from compiler.simulate.registry import KERNELS, Kernel, Observer, SimContext, Tensor, py_attr, register_kernel
from hw.errors import InputError

__all__ = ["Tensor", "SimContext", "Kernel", "Observer", "KERNELS", "register_kernel", "Simulator", "py_attr"]


def _main(module: ModuleOp) -> func.FuncOp:
    for op in module.walk():
        if isinstance(op, func.FuncOp):
            return op
    raise InputError("the module has no function to simulate")


class Simulator:
    """Executes a ``dataflow`` module on NumPy inputs; build once, ``run`` per sample.

    ``input_names`` / ``output_names`` name ``main``'s arguments and results (``ImportResult.input_names`` ...);
    without them the feeds are positional (``arg0`` ...).
    """

    def __init__(self, module: ModuleOp, weights: Mapping[str, np.ndarray], input_names: list[str] | None = None,
                 output_names: list[str] | None = None, *, exact: bool = False):
        self.fn = _main(module)
        self.ctx = SimContext(weights=weights, exact=exact)
        block = self.fn.body.block
        self.args = list(block.args)
        self.input_names = list(input_names) if input_names else [f"arg{i}" for i in range(len(self.args))]
        self.consts: dict[SSAValue, Tensor] = {}
        self.steps: list[tuple[Operation, Kernel]] = []
        self.returns: list[SSAValue] = []
        for op in block.ops:
            if isinstance(op, func.ReturnOp):
                self.returns = list(op.operands)
            elif isinstance(op, df.WeightOp):
                name = op.layer_name()
                if name not in weights:
                    raise InputError(f"weight '{name}' is not in the weight store")
                scale = weights.get(name + ".scale")
                self.consts[op.result] = Tensor(_aligned(weights[name]), None if scale is None else scale)
            else:
                kernel = KERNELS.get(op.name)
                if kernel is None:
                    layer = op.properties.get(LAYER_ATTR)
                    where = f" '{layer.data}'" if isinstance(layer, StringAttr) else ""
                    raise InputError(f"cannot simulate {op.name}{where}: no simulator kernel is registered for it")
                self.steps.append((op, kernel))
        self.output_names = list(output_names) if output_names else [f"out{i}" for i in range(len(self.returns))]

    def run(self, feeds: Mapping[str, np.ndarray], observer: Observer | None = None,
            overrides: Mapping[SSAValue, np.ndarray] | None = None) -> dict[str, np.ndarray]:
        """One sample: ``feeds`` maps input names to arrays of the model's input shapes; returns real outputs
        (``overrides``: :meth:`run_tensors`)."""
        return {name: t.real().astype(np.float32) if t.quantized else t.data
                for name, t in zip(self.output_names, self.run_tensors(feeds, observer, overrides))}

    def run_tensors(self, feeds: Mapping[str, np.ndarray], observer: Observer | None = None,
                    overrides: Mapping[SSAValue, np.ndarray] | None = None) -> list[Tensor]:
        """Like :meth:`run`, but the outputs as Tensors (integers and their scales, if quantized). ``overrides``
        replaces the data of those values (keeping the kernel's scale) before any later op reads them: how the host
        epilogue runs on values another machine computed (``codesign rtl --simulate``)."""
        values: dict[SSAValue, Tensor] = dict(self.consts)
        for arg, name in zip(self.args, self.input_names):
            if name not in feeds:
                raise InputError(f"no input '{name}' given to the simulator (given: {', '.join(feeds) or 'none'})")
            values[arg] = Tensor(np.asarray(feeds[name]))
        with single_threaded():
            for op, kernel in self.steps:
                try:
                    outs = kernel(op, [values[v] for v in op.operands], self.ctx)
                except (ValueError, FloatingPointError, IndexError) as err:
                    # Data-dependent: an index past its axis (GatherND / ScatterND read numpy's own IndexError),
                    # a value no kernel takes. onnxruntime refuses such a sample too.
                    raise InputError(f"simulating {op.name} '{_layer(op)}': {err}") from None
                if overrides:
                    outs = [Tensor(np.asarray(overrides[r]).astype(t.data.dtype).reshape(t.data.shape), t.scale)
                            if r in overrides else t for r, t in zip(op.results, outs)]
                for r, t in zip(op.results, outs):
                    values[r] = t
                if observer is not None:
                    observer(op, outs)
        return [values[v] for v in self.returns]

    def run_samples(self, samples: Mapping[str, np.ndarray], observer: Observer | None = None,
                    count: int | None = None) -> dict[str, np.ndarray]:
        """Run every sample of ``samples`` (arrays with a leading sample axis); outputs stacked the same way."""
        n = count if count is not None else len(next(iter(samples.values())))
        outs: dict[str, list[np.ndarray]] = {name: [] for name in self.output_names}
        for i in range(n):
            for name, value in self.run({k: v[i] for k, v in samples.items()}, observer).items():
                outs[name].append(value)
        return {name: np.stack(vals) for name, vals in outs.items()}


def _aligned(a: np.ndarray) -> np.ndarray:
    """``a`` itself if 64-byte aligned, else an aligned copy: BLAS runs several times slower on the odd offsets
    that views into an ONNX file's buffer have."""
    a = np.asarray(a)
    if a.ndim < 2 or a.ctypes.data % 64 == 0:
        return a
    raw = np.empty(a.nbytes + 64, dtype=np.uint8)
    offset = -raw.ctypes.data % 64
    out = raw[offset:offset + a.nbytes].view(a.dtype).reshape(a.shape)
    out[...] = a
    return out


def _layer(op: Operation) -> str:
    layer = op.properties.get(LAYER_ATTR)
    return layer.data if isinstance(layer, StringAttr) else op.name
