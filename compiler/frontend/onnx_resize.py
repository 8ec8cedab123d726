"""ONNX Resize: the identity to the input's own size, torch's interpolate where it computes exactly what the
specification says, ONNX's reference implementation everywhere else (compiler/frontend/onnx_reference.py).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from compiler.frontend.onnx_reference import UnsupportedOp, run_reference

__all__ = ["resize", "resize_refusal"]

Array = np.ndarray


def _text(attrs: dict[str, Any], key: str, default: str) -> str:
    value = attrs.get(key, default)
    return value.decode() if isinstance(value, bytes) else str(value)


def resize_refusal(attrs: dict[str, Any], shape: Sequence[int], out: Sequence[int]) -> str:
    """Why a Resize of ``shape`` to ``out`` is not evaluated ("" when it is). Every mode, coordinate transform and
    rounding of the ONNX specification is (`resize`), except antialiasing in nearest mode, which the specification
    leaves undefined."""
    return "" if list(shape) == list(out) else _undefined_resize(attrs)


def _undefined_resize(attrs: dict[str, Any]) -> str:
    """Why ONNX defines no result for a Resize with ``attrs`` to another size ("" when it does)."""
    if _text(attrs, "mode", "nearest") == "nearest" and int(attrs.get("antialias", 0)):
        return "Resize with mode nearest and antialias is not defined by ONNX"
    return ""


#: ONNX Resize (mode, coordinate transform, nearest rounding) -> torch.nn.functional.interpolate's mode and
#: align_corners, where the two compute the same thing given the output size (`_interpolate`'s conditions).
_INTERPOLATE = {("nearest", "asymmetric", "floor"): ("nearest", None),
                ("linear", "half_pixel", ""): ("linear", False),
                ("linear", "pytorch_half_pixel", ""): ("linear", False),
                ("linear", "align_corners", ""): ("linear", True),
                ("cubic", "half_pixel", ""): ("cubic", False), ("cubic", "pytorch_half_pixel", ""): ("cubic", False),
                ("cubic", "align_corners", ""): ("cubic", True)}


def _interpolate(x: Array, axes: list[int], scales: Array | None, sizes: Array | None,
                 attrs: dict[str, Any]) -> Array | None:
    """The resize by torch's interpolate where it computes exactly what ONNX specifies (about 10x faster than the
    reference on a 128x128 map), else None: the spatial axes of [N, C, *spatial] only, a mode and transform of
    `_INTERPOLATE`, every output length above 1 and equal to input x scale (torch then maps coordinates by
    in / out, ONNX by 1 / scale: the same), no antialias, ONNX's default cubic (-0.75, border pixels repeated)."""
    mode, transform = _text(attrs, "mode", "nearest"), _text(attrs, "coordinate_transformation_mode", "half_pixel")
    key = (mode, transform, _text(attrs, "nearest_mode", "round_prefer_floor") if mode == "nearest" else "")
    spatial = x.ndim - 2
    if key not in _INTERPOLATE or spatial not in (1, 2, 3) or sorted(axes) not in (list(range(x.ndim)),
                                                                                   list(range(2, x.ndim))) \
            or int(attrs.get("antialias", 0)) or _text(attrs, "keep_aspect_ratio_policy", "stretch") != "stretch" \
            or (mode == "cubic" and (spatial != 2 or float(attrs.get("cubic_coeff_a", -0.75)) != -0.75
                                     or int(attrs.get("exclude_outside", 0)))):
        return None
    full = list(x.shape)
    if sizes is not None:
        for a, n in zip(axes, np.asarray(sizes).reshape(-1)):
            full[a] = int(n)
    else:
        assert scales is not None
        for a, f in zip(axes, np.asarray(scales, np.float64).reshape(-1)):
            if x.shape[a] * float(f) != int(x.shape[a] * float(f)):
                return None
            full[a] = int(x.shape[a] * float(f))
    if full[:2] != list(x.shape[:2]) or min(full[2:]) <= 1:
        return None
    import torch

    how, corners = _INTERPOLATE[key]
    if how != "nearest":
        how = {"linear": ["linear", "bilinear", "trilinear"], "cubic": ["", "bicubic", ""]}[how][spatial - 1]
    data = torch.from_numpy(np.ascontiguousarray(x, dtype=np.float64))
    return torch.nn.functional.interpolate(data, size=full[2:], mode=how, align_corners=corners).numpy().astype(
        x.dtype)


def resize(inputs: Sequence[Array | None], attrs: dict[str, Any]) -> list[Array]:
    """ONNX Resize. To the input's own size it is the identity under every mode and coordinate transform (each output
    pixel maps onto its own input pixel at scale 1): exporters interpolate position tables unconditionally while
    tracing (BEiT, DINOv2). To another size (MobileViT resizes its feature maps to whole patches and back, SegFormer
    and DPT upsample theirs) it runs ONNX's own reference implementation (``onnx.reference``, separable per axis):
    the specification's coordinate transforms differ from torch's interpolate in details that matter (a scale
    factor, not the ratio of the rounded sizes, when ``scales`` is given; ``pytorch_half_pixel`` on a length-1
    axis), so no other library computes every case; torch's interpolate runs where the two agree exactly
    (`_interpolate`). One exception follows torch and onnxruntime, not the reference: ``align_corners`` with
    ``scales`` maps over the rounded output length."""
    x = np.asarray(inputs[0])
    axes = [int(a) % x.ndim for a in attrs.get("axes", range(x.ndim))]
    scales = inputs[2] if len(inputs) > 2 and inputs[2] is not None and np.size(inputs[2]) else None
    sizes = inputs[3] if len(inputs) > 3 and inputs[3] is not None and np.size(inputs[3]) else None
    if sizes is not None:
        out = [int(v) for v in np.asarray(sizes).reshape(-1)]
        if len(out) != len(axes):
            raise UnsupportedOp(f"Resize with {len(out)} sizes for {len(axes)} axes")
        if _text(attrs, "keep_aspect_ratio_policy", "stretch") == "stretch" \
                and all(x.shape[a] == n for a, n in zip(axes, out)):
            return [x]
    elif scales is not None:
        factors = [float(f) for f in np.asarray(scales).reshape(-1)]
        if len(factors) != len(axes):
            raise UnsupportedOp(f"Resize with {len(factors)} scales for {len(axes)} axes")
        if all(f == 1.0 for f in factors):
            return [x]
    else:
        raise UnsupportedOp("Resize without scales or sizes")
    if (why := _undefined_resize(attrs)):
        raise UnsupportedOp(why)
    if sizes is None and _text(attrs, "coordinate_transformation_mode", "half_pixel") == "align_corners":
        # align_corners maps x_resized * (in - 1) / (out - 1) with the output's whole length, as torch (which
        # exports it) and onnxruntime compute; ONNX's reference takes the unrounded in x scale instead.
        full = list(x.shape)
        for a, f in zip(axes, factors):
            full[a] = int(np.floor(x.shape[a] * f))
        sizes = np.array([full[a] for a in axes], np.int64)
        inputs = [inputs[0], inputs[1] if len(inputs) > 1 else None, None, sizes]
        scales = None
    if (fast := _interpolate(x, axes, scales, sizes, attrs)) is not None:
        return [fast]
    (y,) = run_reference("Resize", inputs, attrs)
    return [np.asarray(y).astype(x.dtype, copy=False)]
