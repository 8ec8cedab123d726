"""Activation ranges for post-training quantization: run the float model, record max|x| of every value.

The ``quantize`` pass asks for one number per SSA value: the real magnitude its integer format must cover. It comes
from running the (not yet quantized) module in the functional simulator with exact nonlinearities over the
calibration samples. ``percentile`` < 100 takes that percentile of |x| per sample instead of the maximum, then the
maximum over samples (clipping rare outliers trades saturation for resolution).

Without user data, :func:`synthetic_inputs` makes deterministic samples from the input types: standard normal
floats, token ids uniform over the embedding table they index, and ones for other integer inputs (masks). Reports
say so ("calibration: synthetic").
"""

from __future__ import annotations

from collections.abc import Callable, Mapping

import numpy as np
from xdsl.dialects.builtin import IntegerType, ModuleOp, TensorType
from xdsl.ir import Operation, SSAValue

from compiler.dialect import dataflow as df
from compiler.simulate import Simulator, Tensor

__all__ = ["activation_ranges", "synthetic_inputs", "SYNTHETIC_SEED"]

SYNTHETIC_SEED = 0


def _np_dtype(typ: TensorType) -> np.dtype:
    el = typ.get_element_type()
    if isinstance(el, IntegerType):
        width = el.width.data
        return np.dtype(np.bool_) if width == 1 else np.dtype(f"int{max(8, width)}")
    return np.dtype(np.float32) if getattr(el, "bitwidth", 32) == 32 else np.dtype(np.float64)


def synthetic_inputs(module: ModuleOp, names: list[str], count: int, seed: int = SYNTHETIC_SEED
                     ) -> dict[str, np.ndarray]:
    """``count`` deterministic samples per ``main`` argument (leading sample axis), keyed by ``names``."""
    from compiler.simulate.engine import _main

    rng = np.random.default_rng(seed)
    block = _main(module).body.block
    out: dict[str, np.ndarray] = {}
    for name, arg in zip(names, block.args):
        typ = arg.type
        assert isinstance(typ, TensorType)
        shape, dtype = (count, *typ.get_shape()), _np_dtype(typ)
        rows = [u.operation.table.type.get_shape()[0] for u in arg.uses  # type: ignore[attr-defined]
                if isinstance(u.operation, df.EmbeddingOp) and u.operation.indices is arg]
        if dtype.kind == "f":
            out[name] = rng.standard_normal(shape).astype(dtype)
        elif rows:
            out[name] = rng.integers(0, min(rows), size=shape).astype(dtype)
        else:
            out[name] = np.ones(shape, dtype=dtype)
    return out


def activation_ranges(module: ModuleOp, weights: Mapping[str, np.ndarray], names: list[str],
                      samples: Mapping[str, np.ndarray], percentile: float = 100.0,
                      channels: dict[SSAValue, np.ndarray] | None = None,
                      statistic: Callable[[np.ndarray], float] | None = None,
                      rows: dict[SSAValue, list[np.ndarray]] | None = None) -> dict[SSAValue, float]:
    """max over samples of max|x| (or the ``percentile`` of |x|) for every float value of ``module``'s ``main``.

    ``channels``, if given, is filled with max|x| per index of the last axis (channel) of every float value.
    ``statistic``: the range of one sample's |x| (finite, below 1e30), instead of the max / percentile.
    ``rows``: for each value it holds as a key, the rows (last axis) of every sample are appended to its list.
    """
    sim = Simulator(module, weights, names, exact=True)
    ranges: dict[SSAValue, float] = {}

    def record(value: SSAValue, t: Tensor) -> None:
        data = t.data
        if data.dtype.kind != "f" or not data.size:
            return
        a = np.abs(data[np.isfinite(data)])
        # Masks hold -3.4e38 "minus infinity" entries; they are not a range anything is quantized to.
        a = a[a < 1e30]
        if not a.size:
            return
        if statistic is not None:
            m = statistic(a)
        else:
            m = float(a.max()) if percentile >= 100 else float(np.percentile(a, percentile))
        ranges[value] = max(ranges.get(value, 0.0), m)
        if channels is not None and data.ndim >= 2:
            per = np.abs(np.where(np.abs(data) < 1e30, data, 0)).reshape(-1, data.shape[-1]).max(axis=0)
            channels[value] = np.maximum(channels.get(value, per), per).astype(np.float64)
        if rows is not None and value in rows:
            rows[value].append(data.reshape(-1, data.shape[-1]).astype(np.float32))

    def observe(op: Operation, outs: list[Tensor]) -> None:
        for r, t in zip(op.results, outs):
            record(r, t)

    n = len(next(iter(samples.values())))
    for i in range(n):
        feeds = {k: v[i] for k, v in samples.items()}
        for arg, name in zip(sim.args, names):
            record(arg, Tensor(np.asarray(feeds[name])))
        sim.run(feeds, observe)
    return ranges
