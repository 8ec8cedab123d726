"""NumPy semantics of the ONNX ops transformer exports use.

Three consumers need to *run* ONNX ops one node at a time: constant folding of shape subgraphs, the frontend's
semantic pattern checks (does this Erf/Mul/Add region really compute GELU?) and the functional simulator for the
generic ops it does not specialise. onnx.reference builds a whole evaluator per call and onnxruntime a session,
both far too slow for thousands of single-node evaluations, hence this table. Semantics follow the ONNX operator
spec (opset 13-21); anything not here is reported by name, never guessed.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import onnx

from compiler.frontend.onnx_activations import ACTIVATION_OPS
from compiler.frontend.onnx_index_ops import INDEX_OPS
from compiler.frontend.onnx_reference import UnsupportedOp, narrow, run_reference
from compiler.frontend.onnx_resize import resize, resize_refusal
from compiler.limits import check_tensor

__all__ = ["ONNX_OPS", "run_node", "onnx_dtype", "UnsupportedOp", "conv_pads", "resize_refusal"]

Array = np.ndarray


def onnx_dtype(elem_type: int) -> np.dtype:
    """NumPy dtype of an ONNX TensorProto element type."""
    return np.dtype(onnx.helper.tensor_dtype_to_np_dtype(elem_type))


def _erf(x: Array) -> Array:
    # torch here, not at module level: only running an Erf or a Conv needs it, and loading torch costs seconds of
    # start-up that a float compile, which never runs one, should not pay.
    import torch

    return torch.special.erf(torch.from_numpy(np.ascontiguousarray(x))).numpy()


def _axes(attrs: dict[str, Any], inputs: Sequence[Array | None], pos: int = 1) -> list[int] | None:
    if len(inputs) > pos and inputs[pos] is not None:
        return [int(a) for a in np.asarray(inputs[pos]).reshape(-1)]
    if "axes" in attrs:
        return [int(a) for a in attrs["axes"]]
    return None


def _lowest(dtype: np.dtype) -> Any:
    """The identity of a max over ``dtype``: -inf for floats, the smallest value otherwise (False for bool)."""
    return -np.inf if dtype.kind == "f" else (False if dtype.kind == "b" else np.iinfo(dtype).min)


def _highest(dtype: np.dtype) -> Any:
    """The identity of a min over ``dtype``: +inf for floats, the largest value otherwise (True for bool)."""
    return np.inf if dtype.kind == "f" else (True if dtype.kind == "b" else np.iinfo(dtype).max)


def _reduce(fn: Callable[..., Array], identity: Callable[[np.dtype], Any] | None = None,
            ) -> Callable[[Sequence[Array], dict[str, Any]], list[Array]]:
    """An ONNX Reduce* op computing ``fn``; ``identity(dtype)`` is its value over an empty set (ONNX defines it for
    max, min and log-sum-exp, where NumPy refuses an empty reduction)."""
    def run(inputs: Sequence[Array], attrs: dict[str, Any]) -> list[Array]:
        x = inputs[0]
        axes = _axes(attrs, inputs)
        keep = bool(attrs.get("keepdims", 1))
        if axes is None or len(axes) == 0:
            if attrs.get("noop_with_empty_axes", 0):
                return [x]
            axes_t = None
        else:
            axes_t = tuple(a % x.ndim for a in axes)
        if x.size == 0 and identity is not None:  # ONNX: a reduction over an empty set is the op's identity
            shape = np.sum(np.zeros(x.shape, np.int8), axis=axes_t, keepdims=keep).shape
            return [np.full(shape, identity(x.dtype), dtype=x.dtype)]
        return [np.asarray(fn(x, axis=axes_t, keepdims=keep)).astype(x.dtype)]

    return run


def _log_sum_exp(x: Array, axis: tuple[int, ...] | None, keepdims: bool) -> Array:
    """log(sum(exp(x))) shifted by the max, as runtimes compute it (no overflow for large x)."""
    m = np.max(x, axis=axis, keepdims=True)
    m = np.where(np.isfinite(m), m, 0)
    out = np.log(np.sum(np.exp(x - m), axis=axis, keepdims=True)) + m
    return out if keepdims else np.squeeze(out, axis=axis)


def _reshape(inputs: Sequence[Array], attrs: dict[str, Any]) -> list[Array]:
    x, shape = inputs[0], [int(s) for s in inputs[1]]
    if not attrs.get("allowzero", 0):
        shape = [x.shape[i] if s == 0 else s for i, s in enumerate(shape)]
    return [x.reshape(shape)]


def _slice(inputs: Sequence[Array], attrs: dict[str, Any]) -> list[Array]:
    x = inputs[0]
    starts, ends = [int(v) for v in inputs[1]], [int(v) for v in inputs[2]]
    axes = [int(v) for v in inputs[3]] if len(inputs) > 3 and inputs[3] is not None else list(range(len(starts)))
    steps = [int(v) for v in inputs[4]] if len(inputs) > 4 and inputs[4] is not None else [1] * len(starts)
    index: list[slice] = [slice(None)] * x.ndim
    for start, end, axis, step in zip(starts, ends, axes, steps):
        dim = x.shape[axis]
        # ONNX clamps with INT64 sentinels; Python slicing clamps the same way once they fit in range.
        start = max(min(start, dim), -dim - 1)
        end = max(min(end, dim), -dim - 1)
        index[axis % x.ndim] = slice(start, end, step)
    return [x[tuple(index)]]


def _split(inputs: Sequence[Array], attrs: dict[str, Any], n_out: int) -> list[Array]:
    x = inputs[0]
    axis = int(attrs.get("axis", 0)) % x.ndim
    if len(inputs) > 1 and inputs[1] is not None:
        sizes = [int(s) for s in inputs[1]]
    elif "split" in attrs:
        sizes = [int(s) for s in attrs["split"]]
    else:
        n = int(attrs.get("num_outputs", n_out))
        chunk = -(-x.shape[axis] // n)
        sizes = [min(chunk, x.shape[axis] - i * chunk) for i in range(n)]
    return list(np.split(x, np.cumsum(sizes)[:-1], axis=axis))








def _softmax(inputs: Sequence[Array], attrs: dict[str, Any]) -> list[Array]:
    x = inputs[0]
    axis = int(attrs.get("axis", -1))
    e = np.exp(x - x.max(axis=axis, keepdims=True))
    return [(e / e.sum(axis=axis, keepdims=True)).astype(x.dtype)]


def _layernorm(inputs: Sequence[Array], attrs: dict[str, Any]) -> list[Array]:
    x, scale = inputs[0], inputs[1]
    bias = inputs[2] if len(inputs) > 2 and inputs[2] is not None else None
    axis = int(attrs.get("axis", -1)) % x.ndim
    axes = tuple(range(axis, x.ndim))
    mean = x.mean(axis=axes, keepdims=True)
    var = ((x - mean) ** 2).mean(axis=axes, keepdims=True)
    y = (x - mean) / np.sqrt(var + float(attrs.get("epsilon", 1e-5))) * scale
    return [(y + bias if bias is not None else y).astype(x.dtype)]


def _gelu(inputs: Sequence[Array], attrs: dict[str, Any]) -> list[Array]:
    x = inputs[0]
    if attrs.get("approximate", "none") == "tanh":
        y = 0.5 * x * (1 + np.tanh(np.sqrt(2 / np.pi) * (x + 0.044715 * x**3)))
    else:
        y = 0.5 * x * (1 + _erf(x / np.sqrt(2)))
    return [y.astype(x.dtype)]


def _gemm(inputs: Sequence[Array], attrs: dict[str, Any]) -> list[Array]:
    a, b = inputs[0], inputs[1]
    a = a.T if attrs.get("transA", 0) else a
    b = b.T if attrs.get("transB", 0) else b
    y = float(attrs.get("alpha", 1.0)) * (a @ b)
    if len(inputs) > 2 and inputs[2] is not None:
        y = y + float(attrs.get("beta", 1.0)) * inputs[2]
    return [y.astype(a.dtype)]


def _scalar_int(value: Array, op: str, what: str) -> int:
    """The one integer of a scalar or one-element input (exporters give CumSum's axis and Trilu's k as [1])."""
    flat = np.asarray(value).reshape(-1)
    if flat.size != 1:
        raise ValueError(f"{op}: {what} must hold one integer, got shape {list(np.shape(value))}")
    return int(flat[0])


def _trilu(inputs: Sequence[Array], attrs: dict[str, Any]) -> list[Array]:
    x = inputs[0]
    k = _scalar_int(inputs[1], "Trilu", "k") if len(inputs) > 1 and inputs[1] is not None else 0
    return [np.triu(x, k) if attrs.get("upper", 1) else np.tril(x, k)]


def _cumsum(inputs: Sequence[Array], attrs: dict[str, Any]) -> list[Array]:
    x, axis = inputs[0], _scalar_int(inputs[1], "CumSum", "axis")
    if attrs.get("reverse", 0):
        x = np.flip(x, axis)
    y = np.cumsum(x, axis=axis, dtype=x.dtype)
    if attrs.get("exclusive", 0):
        y = y - x
    if attrs.get("reverse", 0):
        y = np.flip(y, axis)
    return [y]


def _topk(inputs: Sequence[Array], attrs: dict[str, Any]) -> list[Array]:
    x, k = inputs[0], int(np.asarray(inputs[1]).reshape(-1)[0])
    axis = int(attrs.get("axis", -1))
    largest = int(attrs.get("largest", 1))
    # Ties in index order, as ONNX Runtime and torch.topk give them: a stable sort, for the largest one of the
    # reversed axis reversed back (negating would wrap unsigned integers).
    if largest:
        n = x.shape[axis]
        order = n - 1 - np.flip(np.argsort(np.flip(x, axis), axis=axis, kind="stable"), axis)
    else:
        order = np.argsort(x, axis=axis, kind="stable")
    idx = np.take(order, np.arange(k), axis=axis)
    return [np.take_along_axis(x, idx, axis=axis), idx.astype(np.int64)]


def _onehot(inputs: Sequence[Array], attrs: dict[str, Any]) -> list[Array]:
    idx, depth, values = inputs
    depth = int(np.asarray(depth).reshape(-1)[0])
    idx = np.where(idx < 0, idx + depth, idx).astype(np.int64)
    out = np.where(np.arange(depth) == idx[..., None], values[1], values[0]).astype(values.dtype)
    axis = int(attrs.get("axis", -1))
    return [np.moveaxis(out, -1, axis)]








def conv_pads(attrs: dict[str, Any], spatial: Sequence[int], kernel: Sequence[int]) -> list[int]:
    """ONNX Conv's explicit pads ``[begin..., end...]`` for input ``spatial`` dims, ``auto_pad`` resolved."""
    rank = len(kernel)
    auto = attrs.get("auto_pad", "NOTSET")
    auto = auto.decode() if isinstance(auto, bytes) else auto
    if auto in ("NOTSET", ""):
        return [int(p) for p in attrs.get("pads", [0] * 2 * rank)]
    if auto == "VALID":
        return [0] * 2 * rank
    strides = list(attrs.get("strides", [1] * rank))
    dil = list(attrs.get("dilations", [1] * rank))
    begin, end = [], []
    for size, k, s, d in zip(spatial, kernel, strides, dil):
        total = max((-(-size // s) - 1) * s + (k - 1) * d + 1 - size, 0)
        small = total // 2
        begin.append(total - small if auto == "SAME_LOWER" else small)
        end.append(small if auto == "SAME_LOWER" else total - small)
    return begin + end


def _conv(inputs: Sequence[Array], attrs: dict[str, Any]) -> list[Array]:
    """ONNX Conv (1-D, 2-D, 3-D): asymmetric pads are applied first, then torch's convolution without padding."""
    x, w = inputs[0], inputs[1]
    b = inputs[2] if len(inputs) > 2 and inputs[2] is not None else None
    import torch  # see _erf: only running a Conv needs torch

    rank = x.ndim - 2
    kernel = list(attrs.get("kernel_shape", w.shape[2:]))
    pads = conv_pads(attrs, x.shape[2:], kernel)
    if any(pads):
        x = np.pad(x, [(0, 0), (0, 0)] + [(pads[i], pads[i + rank]) for i in range(rank)])
    fn = {1: torch.nn.functional.conv1d, 2: torch.nn.functional.conv2d, 3: torch.nn.functional.conv3d}.get(rank)
    if fn is None:
        raise ValueError(f"Conv: {rank}-D convolution is not supported")
    out = fn(
        torch.from_numpy(np.ascontiguousarray(x)), torch.from_numpy(np.ascontiguousarray(w)),
        None if b is None else torch.from_numpy(np.ascontiguousarray(b)),
        stride=tuple(attrs.get("strides", [1] * rank)), dilation=tuple(attrs.get("dilations", [1] * rank)),
        groups=int(attrs.get("group", 1)),
    )
    return [out.numpy()]


def _pad(inputs: Sequence[Array | None], attrs: dict[str, Any]) -> list[Array]:
    """ONNX Pad (opset 11+: pads, constant_value, axes as inputs; opset 2: attributes); negative pads crop."""
    x = inputs[0]
    assert x is not None
    raw = inputs[1] if len(inputs) > 1 and inputs[1] is not None else attrs.get("pads", [])
    pads = [int(p) for p in np.asarray(raw).reshape(-1)]
    value = inputs[2] if len(inputs) > 2 and inputs[2] is not None else attrs.get("value", 0.0)
    value = np.asarray(value).reshape(-1)[0] if np.size(value) else 0
    axes = _axes({}, inputs, 3) or list(range(x.ndim))
    if len(pads) != 2 * len(axes):
        raise ValueError(f"Pad: {len(pads)} pads for {len(axes)} axes (expected {2 * len(axes)})")
    width = [(0, 0)] * x.ndim
    for i, axis in enumerate(axes):
        width[axis % x.ndim] = (pads[i], pads[i + len(axes)])
    check_tensor("Pad", [d + max(lo, 0) + max(hi, 0) for d, (lo, hi) in zip(x.shape, width)], x.dtype)
    crop = tuple(slice(max(-lo, 0), d - max(-hi, 0)) for d, (lo, hi) in zip(x.shape, width))
    x = x[crop]
    grow = [(max(lo, 0), max(hi, 0)) for lo, hi in width]
    mode = attrs.get("mode", "constant")
    mode = mode.decode() if isinstance(mode, bytes) else mode
    if mode == "constant":
        return [np.pad(x, grow, mode="constant", constant_values=np.asarray(value, dtype=x.dtype))]
    if mode in ("reflect", "edge", "wrap"):
        return [np.pad(x, grow, mode=mode)]
    raise ValueError(f"Pad: unknown mode '{mode}'")


def _unary(fn: Callable[[Array], Array]) -> Callable[[Sequence[Array], dict[str, Any]], list[Array]]:
    return lambda inputs, attrs: [np.asarray(fn(inputs[0])).astype(inputs[0].dtype, copy=False)]


def _binary(fn: Callable[[Array, Array], Array], keep_dtype: bool = True):
    def run(inputs: Sequence[Array], attrs: dict[str, Any]) -> list[Array]:
        out = np.asarray(fn(inputs[0], inputs[1]))
        return [out.astype(inputs[0].dtype, copy=False) if keep_dtype else out]

    return run


def _div(a: Array, b: Array) -> Array:
    if np.issubdtype(a.dtype, np.integer):
        return np.trunc(a / b).astype(a.dtype)
    return a / b


def _clip(inputs: Sequence[Array], attrs: dict[str, Any]) -> list[Array]:
    x = inputs[0]
    lo = inputs[1] if len(inputs) > 1 and inputs[1] is not None else attrs.get("min")
    hi = inputs[2] if len(inputs) > 2 and inputs[2] is not None else attrs.get("max")
    return [np.clip(x, lo, hi).astype(x.dtype)]


def _expand(inputs: Sequence[Array], attrs: dict[str, Any]) -> list[Array]:
    x, shape = inputs[0], [int(s) for s in np.asarray(inputs[1]).reshape(-1)]
    rank = max(x.ndim, len(shape))
    dims = [1] * (rank - len(shape)) + shape
    have = [1] * (rank - x.ndim) + list(x.shape)
    check_tensor("Expand", [max(d, h) if d >= 0 else d for d, h in zip(dims, have)], x.dtype)
    return [np.array(np.broadcast_to(x, np.broadcast_shapes(x.shape, tuple(shape))))]  # one copy, no ones()


def _tile(inputs: Sequence[Array], attrs: dict[str, Any]) -> list[Array]:
    x, reps = inputs[0], [int(r) for r in np.asarray(inputs[1]).reshape(-1)]
    check_tensor("Tile", [d * r for d, r in zip(x.shape, reps)], x.dtype)
    return [np.tile(x, reps)]


def _range(inputs: Sequence[Array], attrs: dict[str, Any]) -> list[Array]:
    start, limit, delta = (np.asarray(v).reshape(()) for v in inputs)
    if delta == 0:
        raise ValueError("Range: delta is 0")
    count = max(int(np.ceil((float(limit) - float(start)) / float(delta))), 0)
    check_tensor("Range", [count], start.dtype)
    # 0-d arrays are valid bounds (NumPy reads them as scalars); its stub names only scalars.
    return [np.arange(start, limit, delta, dtype=np.asarray(start).dtype)]  # pyright: ignore[reportCallIssue, reportArgumentType]


def _squeeze(inputs: Sequence[Array], attrs: dict[str, Any]) -> list[Array]:
    axes = _axes(attrs, inputs)
    x = inputs[0]
    return [np.squeeze(x, axis=None if axes is None else tuple(a % x.ndim for a in axes))]


def _unsqueeze(inputs: Sequence[Array], attrs: dict[str, Any]) -> list[Array]:
    x, axes = inputs[0], _axes(attrs, inputs) or []
    rank = x.ndim + len(axes)
    for a in sorted(a % rank for a in axes):
        x = np.expand_dims(x, a)
    return [x]


def _flatten(inputs: Sequence[Array], attrs: dict[str, Any]) -> list[Array]:
    x = inputs[0]
    axis = int(attrs.get("axis", 1))
    axis = axis + x.ndim if axis < 0 else axis  # ONNX allows axis == rank: everything goes to the outer dim
    return [x.reshape(int(np.prod(x.shape[:axis])), int(np.prod(x.shape[axis:])))]


def _cast(inputs: Sequence[Array], attrs: dict[str, Any]) -> list[Array]:
    to = onnx_dtype(int(attrs["to"]))
    if narrow(to) or narrow(inputs[0].dtype):  # saturation and rounding of float8 / int4 as ONNX defines them
        return run_reference("Cast", inputs[:1], attrs)
    return [inputs[0].astype(to)]


def _cast_like(inputs: Sequence[Array], attrs: dict[str, Any]) -> list[Array]:
    return _cast(inputs[:1], {**attrs, "to": onnx.helper.np_dtype_to_tensor_dtype(inputs[1].dtype)})


def _constant(inputs: Sequence[Array], attrs: dict[str, Any]) -> list[Array]:
    if "value" in attrs:
        return [attrs["value"]]
    for key in ("value_float", "value_int"):
        if key in attrs:
            return [np.array(attrs[key])]
    for key in ("value_floats", "value_ints"):
        if key in attrs:
            return [np.array(attrs[key])]
    raise UnsupportedOp("Constant without a value attribute")


def _constant_of_shape(inputs: Sequence[Array], attrs: dict[str, Any]) -> list[Array]:
    value = attrs.get("value", np.zeros(1, dtype=np.float32))
    shape = [int(s) for s in np.asarray(inputs[0]).reshape(-1)]
    check_tensor("ConstantOfShape", shape, value.dtype)
    return [np.full(shape, value.reshape(-1)[0], dtype=value.dtype)]


def _per_axis(p: Array, x: Array, attrs: dict[str, Any]) -> Array:
    """A per-axis QuantizeLinear/DequantizeLinear parameter shaped to broadcast along ``axis`` of ``x``; with a
    ``block_size`` (opset 21's blocked quantization: ``p`` of ``x``'s rank, ceil(n / block_size) along ``axis``),
    each value repeated over its block."""
    p = np.asarray(p)
    if p.ndim == 0 or p.size == 1:
        return p.reshape(())
    block = int(attrs.get("block_size", 0))
    if block > 0:
        axis = int(attrs.get("axis", 1)) % x.ndim
        if p.ndim != x.ndim or p.shape[axis] != -(-x.shape[axis] // block):
            raise ValueError(f"a blocked parameter of shape {list(p.shape)} does not fit {list(x.shape)} in blocks "
                             f"of {block} along axis {axis}")
        return np.take(np.repeat(p, block, axis=axis), np.arange(x.shape[axis]), axis=axis)
    shape = [1] * x.ndim
    shape[int(attrs.get("axis", 1)) % x.ndim] = p.size
    return p.reshape(shape)


def _dequantize_linear(inputs: Sequence[Array], attrs: dict[str, Any]) -> list[Array]:
    x, scale = inputs[0], np.asarray(inputs[1])
    if narrow(x.dtype):  # float8 / float4 / int4 codes
        return run_reference("DequantizeLinear", inputs, attrs)
    zp = inputs[2] if len(inputs) > 2 and inputs[2] is not None else np.zeros((), x.dtype)
    y = (x.astype(np.int64) - _per_axis(zp, x, attrs).astype(np.int64)) * _per_axis(scale, x, attrs)
    return [y.astype(scale.dtype)]


def _quantize_linear(inputs: Sequence[Array], attrs: dict[str, Any]) -> list[Array]:
    x, scale = inputs[0], np.asarray(inputs[1])
    out = onnx_dtype(int(attrs["output_dtype"])) if attrs.get("output_dtype") else np.dtype(np.uint8)
    zp = np.asarray(inputs[2]) if len(inputs) > 2 and inputs[2] is not None else np.zeros((), out)
    if narrow(zp.dtype):  # float8 / float4 / int4 codes: ONNX's saturation and rounding
        return run_reference("QuantizeLinear", inputs, attrs)
    info = np.iinfo(zp.dtype)
    q = np.round(x / _per_axis(scale, x, attrs)) + _per_axis(zp, x, attrs).astype(np.int64)
    return [np.clip(q, info.min, info.max).astype(zp.dtype)]


def _hard_sigmoid(x: Array, attrs: dict[str, Any]) -> Array:
    """ONNX HardSigmoid max(0, min(1, alpha * x + beta)) in x's dtype (HardSwish is x times it, alpha 1/6)."""
    alpha, beta = float(attrs.get("alpha", 0.2)), float(attrs.get("beta", 0.5))
    return np.clip(x * x.dtype.type(alpha) + x.dtype.type(beta), 0, 1).astype(x.dtype)


def _eye_like(inputs: Sequence[Array], attrs: dict[str, Any]) -> list[Array]:
    """ONNX EyeLike: ones on diagonal ``k`` of a 2-D tensor shaped like the input, in ``dtype`` or the input's."""
    x = inputs[0]
    dtype = onnx_dtype(int(attrs["dtype"])) if "dtype" in attrs else x.dtype
    return [np.eye(x.shape[0], x.shape[1], k=int(attrs.get("k", 0)), dtype=dtype)]


def _einsum(inputs: Sequence[Array], attrs: dict[str, Any]) -> list[Array]:
    equation = attrs["equation"]
    equation = equation.decode() if isinstance(equation, bytes) else equation
    if any(x.dtype.type.__module__.startswith("ml_dtypes") for x in inputs):  # bfloat16: NumPy cannot einsum it
        return [np.einsum(equation, *(x.astype(np.float32) for x in inputs)).astype(inputs[0].dtype)]
    return [np.einsum(equation, *inputs)]


def _dropout(inputs: Sequence[Array | None], attrs: dict[str, Any]) -> list[Array]:
    """Inference Dropout: the identity, its optional mask all true. In training mode (a true ``training_mode``
    input) it draws random elements, which no simulation can reproduce: refused."""
    if len(inputs) > 2 and inputs[2] is not None and bool(np.asarray(inputs[2]).reshape(-1)[0]) \
            and not (inputs[1] is not None and float(np.asarray(inputs[1]).reshape(-1)[0]) == 0.0):
        raise UnsupportedOp("Dropout in training mode (random; export the model in eval mode)")
    x = inputs[0]
    assert x is not None
    return [x, np.ones(x.shape, dtype=bool)]


def _isinf(inputs: Sequence[Array], attrs: dict[str, Any]) -> list[Array]:
    """ONNX IsInf: +inf where ``detect_positive``, -inf where ``detect_negative`` (both by default)."""
    x = inputs[0]
    pos, neg = int(attrs.get("detect_positive", 1)), int(attrs.get("detect_negative", 1))
    return [(np.isposinf(x) & bool(pos)) | (np.isneginf(x) & bool(neg))]


def _arg(fn: Callable[..., Array]) -> Callable[[Sequence[Array], dict[str, Any]], list[Array]]:
    """ONNX ArgMax / ArgMin: the first index of the extreme along ``axis``, the last with ``select_last_index``."""
    def run(inputs: Sequence[Array], attrs: dict[str, Any]) -> list[Array]:
        x, axis = inputs[0], int(attrs.get("axis", 0)) % max(inputs[0].ndim, 1)
        if attrs.get("select_last_index", 0):
            idx = x.shape[axis] - 1 - fn(np.flip(x, axis), axis=axis)
        else:
            idx = fn(x, axis=axis)
        idx = np.asarray(idx, dtype=np.int64)
        return [np.expand_dims(idx, axis) if attrs.get("keepdims", 1) else idx]

    return run


ONNX_OPS: dict[str, Callable[..., list[Array]]] = {
    "Add": _binary(np.add), "Sub": _binary(np.subtract), "Mul": _binary(np.multiply), "Div": _binary(_div),
    "Pow": _binary(np.power),
    "Mod": lambda i, a: _binary(np.fmod if a.get("fmod", 0) else np.mod)(i, a),
    "Equal": _binary(np.equal, False), "Less": _binary(np.less, False), "Greater": _binary(np.greater, False),
    "LessOrEqual": _binary(np.less_equal, False), "GreaterOrEqual": _binary(np.greater_equal, False),
    "And": _binary(np.logical_and, False), "Or": _binary(np.logical_or, False),
    "Not": lambda i, a: [np.logical_not(i[0])],
    "Sqrt": _unary(np.sqrt), "Reciprocal": _unary(lambda x: 1 / x), "Neg": _unary(np.negative),
    "Abs": _unary(np.abs), "Exp": _unary(np.exp), "Log": _unary(np.log), "Erf": _unary(_erf),
    "Cos": _unary(np.cos), "Sin": _unary(np.sin), "Ceil": _unary(np.ceil), "Floor": _unary(np.floor),
    "Round": _unary(np.rint), "Sign": _unary(np.sign), "Xor": _binary(np.logical_xor, False),
    "Tanh": _unary(np.tanh), "Sigmoid": _unary(lambda x: 1 / (1 + np.exp(-x))),
    "Relu": _unary(lambda x: np.maximum(x, 0)),
    "HardSigmoid": lambda i, a: [_hard_sigmoid(i[0], a)],
    "HardSwish": lambda i, a: [i[0] * _hard_sigmoid(i[0], {"alpha": 1 / 6, "beta": 0.5})],
    "Softplus": _unary(lambda x: np.log1p(np.exp(x))), "Identity": lambda i, a: [i[0]],
    "Dropout": _dropout, "IsNaN": lambda i, a: [np.isnan(i[0])], "IsInf": _isinf,
    "Where": lambda i, a: [np.where(i[0], i[1], i[2]).astype(np.result_type(i[1], i[2]))],
    "Cast": _cast, "CastLike": _cast_like, "Clip": _clip,
    "MatMul": lambda i, a: [np.matmul(i[0], i[1])], "Gemm": _gemm, "Einsum": _einsum, "Conv": _conv, "Pad": _pad,
    "Softmax": _softmax, "LayerNormalization": _layernorm, "Gelu": _gelu,
    "Reshape": _reshape, "Transpose": lambda i, a: [np.transpose(i[0], a.get("perm"))],
    "Slice": _slice, "Concat": lambda i, a: [np.concatenate(i, axis=int(a["axis"]))],
    "Expand": _expand, "Squeeze": _squeeze, "Unsqueeze": _unsqueeze, "Flatten": _flatten,
    "Tile": _tile, "Trilu": _trilu, "Range": _range,
    "Shape": lambda i, a: [np.array(i[0].shape[a.get("start", 0):a.get("end", None)], dtype=np.int64)],
    "Size": lambda i, a: [np.array(i[0].size, dtype=np.int64)],
    "ConstantOfShape": _constant_of_shape, "Constant": _constant, "CumSum": _cumsum,
    "ReduceMean": _reduce(np.mean), "ReduceSum": _reduce(np.sum), "ReduceMax": _reduce(np.max, _lowest),
    "ReduceMin": _reduce(np.min, _highest), "ReduceProd": _reduce(np.prod),
    # folded here when constant (a weight-normed Conv's ||v||: wav2vec2's positional conv); on data they are lowered
    # to the reductions above (compiler/frontend/reductions.py, compound_ops.py)
    "ReduceL2": _reduce(lambda x, axis, keepdims: np.sqrt(np.sum(x * x, axis=axis, keepdims=keepdims))),
    "ReduceL1": _reduce(lambda x, axis, keepdims: np.sum(np.abs(x), axis=axis, keepdims=keepdims)),
    "ReduceSumSquare": _reduce(lambda x, axis, keepdims: np.sum(x * x, axis=axis, keepdims=keepdims)),
    "ReduceLogSum": _reduce(lambda x, axis, keepdims: np.log(np.sum(x, axis=axis, keepdims=keepdims))),
    "ReduceLogSumExp": _reduce(_log_sum_exp, _lowest),
    "ArgMax": _arg(np.argmax), "ArgMin": _arg(np.argmin),
    "TopK": _topk, "OneHot": _onehot, "NonZero": lambda i, a: [np.array(np.nonzero(i[0]), dtype=np.int64)],
    "Resize": resize, "QuantizeLinear": _quantize_linear, "DequantizeLinear": _dequantize_linear,
    "EyeLike": _eye_like,
    **INDEX_OPS,  # Gather, GatherElements, GatherND, ScatterElements, ScatterND (onnx_index_ops.py)
    **ACTIVATION_OPS,  # Elu, LeakyRelu, PRelu, ..., the inverse trigonometric ops; Sum / Mean / Max / Min variadic
}


def run_node(op_type: str, inputs: Sequence[Array | None], attrs: dict[str, Any], n_out: int = 1) -> list[Array]:
    """Evaluate one ONNX node on NumPy inputs (``None`` for an omitted optional input)."""
    if op_type == "Split":
        return _split(inputs, attrs, n_out)  # type: ignore[arg-type]
    fn = ONNX_OPS.get(op_type)
    if fn is None:
        raise UnsupportedOp(op_type)
    return fn(inputs, attrs)[:max(n_out, 1)]  # optional outputs the node does not name (Dropout's mask) dropped
