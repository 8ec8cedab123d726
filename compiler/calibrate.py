"""Activation ranges for post-training quantization: run the float model, record max|x| of every value.

The ``quantize`` pass asks for one number per SSA value: the real magnitude its integer format must cover. It comes
from running the (not yet quantized) module in the functional simulator with exact nonlinearities over the
calibration samples. ``percentile`` < 100 takes that percentile of |x| per sample instead of the maximum, then the
maximum over samples (clipping rare outliers trades saturation for resolution).

Without user data, :func:`synthetic_inputs` makes deterministic samples from the input types: standard normal
floats, token ids uniform over the embedding table they index, and ones for other integer inputs (masks). Reports
say so ("calibration: synthetic").

Both check their memory first (:func:`check_simulation_memory`): the simulator keeps every value of ``main`` alive
for a sample, so a ``--shape input_ids=1x1000000000`` compile would otherwise die in NumPy half-way through its
first sample (or take the machine's memory with it). The estimate is refused in one line, with its largest value.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence

import numpy as np
from xdsl.dialects.builtin import IntegerType, ModuleOp, StringAttr, TensorType
from xdsl.ir import Operation, SSAValue

from compiler.dialect import dataflow as df
from compiler.dialect.choices import LAYER_ATTR
from compiler.frontend.precision import is_float, mask_threshold
from compiler.limits import check_memory, format_bytes, format_shape
from compiler.npz import sample_feeds
from compiler.simulate import Simulator, Tensor

__all__ = ["activation_ranges", "synthetic_inputs", "simulation_bytes", "check_simulation_memory", "SYNTHETIC_SEED"]

#: ``activation_ranges``' observer holds |x|, its finite mask and the filtered copy of the value it looks at.
_OBSERVER_COPIES = 4

SYNTHETIC_SEED = 0


def _np_dtype(typ: TensorType) -> np.dtype:
    el = typ.get_element_type()
    if isinstance(el, IntegerType):
        width = el.width.data
        return np.dtype(np.bool_) if width == 1 else np.dtype(f"int{max(8, width)}")
    return np.dtype(np.float32) if getattr(el, "bitwidth", 32) == 32 else np.dtype(np.float64)


def _value_bytes(typ: TensorType) -> int:
    return math.prod(int(d) for d in typ.get_shape()) * _np_dtype(typ).itemsize


def simulation_bytes(module: ModuleOp) -> tuple[int, int, str]:
    """(bytes one sample's simulation holds, bytes of the largest value, that value described for messages).

    The simulator keeps every result of ``main`` until the sample ends; weights are not counted (they are in
    memory already).
    """
    from compiler.simulate.engine import _main

    total, largest, where = 0, 0, ""
    for op in _main(module).body.block.ops:
        if isinstance(op, df.WeightOp):
            continue
        for result in op.results:
            typ = result.type
            if not isinstance(typ, TensorType):
                continue
            size = _value_bytes(typ)
            total += size
            if size > largest:
                layer = op.properties.get(LAYER_ATTR) or op.attributes.get(LAYER_ATTR)
                name = f" '{layer.data}'" if isinstance(layer, StringAttr) else ""
                largest = size
                where = f"{op.name}{name} {format_shape(typ.get_shape())} {_np_dtype(typ).name}"
    for arg in _main(module).body.block.args:
        if isinstance(arg.type, TensorType):
            total += _value_bytes(arg.type)
    return total, largest, where


def check_simulation_memory(module: ModuleOp, samples: int, data_bytes: int, what: str) -> None:
    """Refuse, before anything is allocated, simulating ``samples`` samples whose inputs take ``data_bytes``
    (already held or about to be built) when one sample's values plus the observer's copies plus the data exceed
    the machine's available memory; ``what`` names the run (``calibration``, ``route-moe``)."""
    per_sample, largest, where = simulation_bytes(module)
    need = data_bytes + per_sample + _OBSERVER_COPIES * largest
    check_memory(f"{what} ({samples} samples, {format_bytes(data_bytes)} of inputs; simulating one sample holds "
                 f"{format_bytes(per_sample)}, the largest value {where} {format_bytes(largest)})", need)


def synthetic_inputs(module: ModuleOp, names: list[str], count: int, seed: int = SYNTHETIC_SEED
                     ) -> dict[str, np.ndarray]:
    """``count`` deterministic samples per ``main`` argument (leading sample axis), keyed by ``names``."""
    from compiler.simulate.engine import _main

    block = _main(module).body.block
    types = [a.type for a in block.args if isinstance(a.type, TensorType)]
    shapes = [(count, *t.get_shape()) for t in types]
    data_bytes = sum(_value_bytes(t) for t in types) * count
    # standard_normal draws float64 before the cast: the largest float input exists twice over for a moment
    data_bytes += max((math.prod(shape) * 8 for t, shape in zip(types, shapes) if _np_dtype(t).kind == "f"), default=0)
    # the quantize pass names arguments arg0...; the IR keeps the model's input names as hints
    shown = [a.name_hint or name for a, name in zip(block.args, names)]
    inputs = ", ".join(f"{name} {format_shape(shape)}" for name, shape in zip(shown, shapes))
    check_simulation_memory(module, count, data_bytes, f"calibration on synthetic data [{inputs}]")
    rng = np.random.default_rng(seed)
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
                      rows: dict[SSAValue, list[np.ndarray]] | None = None,
                      row_masks: np.ndarray | Sequence[np.ndarray] | None = None,
                      also: tuple[Callable[[np.ndarray], float], dict[SSAValue, float]] | None = None
                      ) -> dict[SSAValue, float]:
    """max over samples of max|x| (or the ``percentile`` of |x|) for every float value of ``module``'s ``main``.

    ``channels``, if given, is filled with max|x| per index of the last axis (channel) of every float value.
    ``statistic``: the range of one sample's |x| (finite, below ``mask_threshold``), instead of the max /
    percentile.
    ``rows``: for each value it holds as a key, the rows (last axis) of every sample are appended to its list.
    ``row_masks``: per sample, the positions that count (an attention mask: 0 marks padding the model never reads
    a result of); a value with one row per position is measured over those rows only.
    ``also``: (statistic, ranges): a second range per value, taken like ``statistic`` over the same values in the
    same runs (the int8 observer's next to the max: one simulation of the samples instead of two).
    """
    n = len(next(iter(samples.values())))
    check_simulation_memory(module, n, sum(int(v.nbytes) for v in samples.values()), "calibration")
    sim = Simulator(module, weights, names, exact=True)
    ranges: dict[SSAValue, float] = {}

    keep: list[np.ndarray | None] = [None]

    def record(value: SSAValue, t: Tensor) -> None:
        data = t.data
        if not is_float(data.dtype) or not data.size:
            return
        real = keep[0]
        if real is not None and data.ndim >= 2 and data.size // data.shape[-1] == real.size:
            data = data.reshape(-1, data.shape[-1])[real]
            if not data.size:
                return
        whole = np.abs(data)
        top = whole.max()
        # Masks hold "minus infinity" entries (-3.4e38, or -65504 in float16); they are not a range anything is
        # quantized to. Most values have none (and no NaN or inf): their max is below the threshold, nothing to filter.
        limit = mask_threshold(data.dtype)
        clean = bool(top < limit)
        a = whole.reshape(-1) if clean else whole[np.isfinite(data)]
        if not clean:
            a = a[a < limit]
        if not a.size:
            return
        if statistic is not None:
            m = statistic(a)
        elif percentile >= 100:
            m = float(top) if clean else float(a.max())
        else:
            m = float(np.percentile(a, percentile))
        ranges[value] = max(ranges.get(value, 0.0), m)
        if also is not None:
            also[1][value] = max(also[1].get(value, 0.0), also[0](a))
        if channels is not None and data.ndim >= 2:
            kept = whole if clean else np.abs(np.where(whole < limit, data, 0))
            per = kept.reshape(-1, data.shape[-1]).max(axis=0)
            prev = channels.get(value)
            channels[value] = (per if prev is None else np.maximum(prev, per)).astype(np.float64)
        if rows is not None and value in rows:
            rows[value].append(data.reshape(-1, data.shape[-1]).astype(np.float32))

    def observe(op: Operation, outs: list[Tensor]) -> None:
        for r, t in zip(op.results, outs):
            record(r, t)

    for i in range(n):
        keep[0] = None if row_masks is None else np.asarray(row_masks[i]).reshape(-1) != 0
        feeds = sample_feeds(samples, i)
        for arg, name in zip(sim.args, names):
            record(arg, Tensor(np.asarray(feeds[name])))
        sim.run(feeds, observe)
    return ranges
