"""The constants a compiled design's units take at run time: what each unit's configuration inputs are.

Some kernel inputs depend on the compiled design, not on the kernel's parameters: ShiftGELU's and Shiftmax's
``x0`` (from the input's scale), the right shift the compiler applies to scores before Shiftmax, the online
softmax's ``(m_c, e_c)``, the requant unit's dyadic ``(m, e)`` per channel, I-LayerNorm's per-channel integer
bias, and a GEMM's constant operand. ``codesign rtl`` (codesign/rtl_cli.py, through codesign/rtl_config.py) puts
them on every invocation of its manifest; hw/rtl/manifest.py writes scalars inline and arrays into ``config.npz``.
docs/RTL.md lists the keys. The system backend (compiler/backend/model.py) writes the same numbers into ``CONFIG``
instructions and constant tables, so it and the per-kernel RTL share one source.

Scales are not all in the IR: they flow through the functional simulator with the data
(compiler/simulate/engine.py). An integer design's scales do not depend on the data, so :func:`learn_scales`
runs the simulator once on the compile's synthetic calibration inputs and keeps every value's scale. Float inputs
to an approximation are quantized per call (compiler/simulate/approx.py): those units' scale-dependent inputs are
``None`` (known only per call).

Every number comes from the code the simulator runs (``shiftmax_grid``, ``layernorm_int`` on a zero row, the
weight store's entries) or from the kernel's own helper (``x0_for_scale``), so RTL driven with this configuration
is bit-exact with the simulator (tests/test_rtl_design_config.py drives the emitted units to show it).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np
from xdsl.ir import Operation, SSAValue

from compiler.calibrate import synthetic_inputs
from compiler.dialect import dataflow as df
from compiler.dialect.op_base import shape_of
from compiler.numerics import dyadic
from compiler.numerics.ilayernorm import eps_units
from compiler.simulate import Simulator
from compiler.simulate.approx import layernorm_int, layernorm_shifts, shiftmax_grid
from hw.errors import InputError
from hw.rtl.online_softmax import check_multiplier
from hw.rtl.shiftgelu import x0_for_scale as shiftgelu_x0
from hw.rtl.shiftmax import x0_for_scale as shiftmax_x0

__all__ = ["DesignScales", "learn_scales", "shiftmax_config", "shiftgelu_config", "online_softmax_config",
           "ilayernorm_config", "bias_bits", "per_tensor", "requant_config", "gemm_config", "attention_scores_scale"]


@dataclass(frozen=True)
class DesignScales:
    """Every value's scale in one simulator run of a compiled module (None for floats and plain integers), and
    the module's constants (weight store entries as the simulator holds them)."""

    scales: Mapping[SSAValue, Any]
    consts: Mapping[SSAValue, Any]
    weights: Mapping[str, np.ndarray]

    def scale(self, value: SSAValue) -> Any:
        """The scale of ``value`` (a float, a per-channel array, or None)."""
        return self.scales.get(value)

    def const(self, value: SSAValue) -> Any:
        """The simulator's Tensor of a constant operand, or None for a computed value."""
        return self.consts.get(value)


def learn_scales(result: Any) -> DesignScales:
    """Run ``result`` (a ``CompileResult``) once in the functional simulator on one deterministic synthetic sample
    (compiler.calibrate.synthetic_inputs) and keep the scale of every value."""

    imported = result.imported
    sim = Simulator(result.module, result.env.weights, imported.input_names, imported.output_names)
    feeds = {name: batch[0] for name, batch in synthetic_inputs(result.module, sim.input_names, 1).items()}
    scales: dict[SSAValue, Any] = {v: t.scale for v, t in sim.consts.items()}

    def observe(op: Operation, outs: list[Any]) -> None:
        for value, tensor in zip(op.results, outs):
            scales[value] = tensor.scale

    sim.run(feeds, observe)
    return DesignScales(scales, sim.consts, result.env.weights)


def per_tensor(scale: Any) -> float | None:
    """A per-tensor scale as a float; None for float data. Per-channel scales are not an approximation's input."""
    if scale is None:
        return None
    if np.ndim(scale) != 0:
        raise InputError(f"expected a per-tensor input scale, got one of shape {np.shape(scale)}")
    return float(scale)


def attention_scores_scale(op: Operation, values: DesignScales) -> float | None:
    """Scale of an integer attention's scores ``Q K^T`` (q scale x k scale x the op's ``scale``), as
    compiler.simulate.kernels.standard_attention forms it; None for float attention."""

    q, k = per_tensor(values.scale(op.q)), per_tensor(values.scale(op.k))  # type: ignore[attr-defined]
    if q is None or k is None:
        return None
    assert isinstance(op, df.AttentionOp)
    return q * k * op.scale_value()


def shiftmax_config(scale: float | None, n: int, params: Mapping[str, int]) -> dict[str, Any]:
    """``shiftmax`` of integer scores at ``scale`` in rows of ``n``: the compiler's pre-shift ``k``
    (compiler.simulate.approx.shiftmax_grid) and ``x0 = floor(-1 / (scale * 2^k))``; the unit takes ``x >> k``."""

    out_scale = 2.0 ** -(params["out_bits"] - 1)
    if scale is None:
        return {"x0": None, "input_shift": None, "input_scale": None, "output_scale": out_scale}
    _, grid = shiftmax_grid(np.zeros((1, n), dtype=np.int64), scale)
    shift = round(math.log2(grid / scale))  # grid = scale * 2^k exactly
    return {"x0": shiftmax_x0(grid, params["x0_bits"]), "input_shift": shift, "input_scale": scale,
            "output_scale": out_scale}


def shiftgelu_config(scale: float | None, params: Mapping[str, int]) -> dict[str, Any]:
    """``shiftgelu`` of integers at ``scale``: ``x0 = floor(-1 / (1.702 scale))``; output ``x * sig`` at
    ``scale * 2^-(out_bits-1)``."""
    if scale is None:
        return {"x0": None, "input_scale": None, "output_scale": None}
    return {"x0": shiftgelu_x0(scale, params["x0_bits"]), "input_scale": scale,
            "output_scale": scale * 2.0 ** -(params["out_bits"] - 1)}


def online_softmax_config(scale: float | None, params: Mapping[str, int]) -> dict[str, Any]:
    """``online_softmax`` of integer scores at ``scale``: ``(m_c, e_c) = dyadic(scale * log2(e) * 2^8)``."""

    out_scale = 2.0 ** -(params["out_bits"] - 1)
    if scale is None:
        return {"m_c": None, "e_c": None, "input_scale": None, "output_scale": out_scale}
    m_c, e_c = dyadic(scale * math.log2(math.e) * (1 << 8))
    check_multiplier(m_c, e_c)
    return {"m_c": int(m_c), "e_c": int(e_c), "input_scale": scale, "output_scale": out_scale}


def ilayernorm_config(op: Operation, values: DesignScales) -> dict[str, Any]:
    """``ilayernorm``: the per-channel integer ``bias`` loaded through the bias port, the per-channel output
    scale (both from compiler.simulate.approx.layernorm_int on a zero row: its output there is the bias), and
    ``eps``, the model's epsilon in the unit's variance units (``compiler.numerics.ilayernorm.eps_units`` of the
    input scale and width, as the simulator computes it)."""

    assert isinstance(op, df.LayerNormOp)
    has_beta = len(op.operands) > 2
    gamma = values.const(op.operands[1])
    beta = values.const(op.operands[2]) if has_beta else None
    scale = per_tensor(values.scale(op.operands[0]))
    width = shape_of(op.operands[0])[-1]
    eps = None if scale is None else eps_units(width, op.epsilon_value(), scale, df.int_bits(op.operands[0]) or 16)
    config: dict[str, Any] = {"input_scale": scale, "eps": eps}  # eps: None for a float input (scale per call)
    if gamma is None or (has_beta and beta is None):  # computed, not constant: no bias to precompute
        return {**config, "bias": None, "output_scale": None}
    c = gamma.data.shape[-1]
    g = gamma.real().astype(np.float64)
    if (g == 0).any():  # the simulator gives such a channel its bias alone; the VEC unit adds its normalized term
        raise InputError(f"system backend: dataflow.layernorm '{op.layer_name()}': its weight is 0 in channel "
                         f"{int(np.argmax(g == 0))}, which the ilayernorm unit has no way to give its bias alone")
    if (g < 0).any():  # the simulator negates such a channel's normalized term; the VEC unit adds it as it is
        raise InputError(f"system backend: dataflow.layernorm '{op.layer_name()}': its weight is negative in channel "
                         f"{int(np.argmax(g < 0))}, and the ilayernorm unit has no per-channel sign")
    b = None if beta is None else beta.real().astype(np.float64)
    if (shift := layernorm_shifts(g, b)).any():  # the simulator shifts such a channel's codes; the VEC unit does not
        raise InputError(f"system backend: dataflow.layernorm '{op.layer_name()}': channel {int(np.argmax(shift))}'s "
                         "bias is too large for its weight: its codes need more than the ilayernorm unit's 31 bits")
    bias, out_scale = layernorm_int("ilayernorm", np.zeros((1, c), dtype=np.int64), 1.0, g, b, op.epsilon_value(),
                                    in_bits=16)
    return {**config, "bias": np.asarray(bias, dtype=np.int64).reshape(c),
            "output_scale": np.broadcast_to(np.asarray(out_scale, dtype=np.float64), (c,)).copy()}


def bias_bits(config: Mapping[str, Any], default: int) -> int:
    """The ``bias_bits`` an ilayernorm needs for ``config['bias']``: ``default`` unless a bias is wider."""
    bias = config.get("bias")
    if bias is None or not np.size(bias):
        return default
    lo, hi = int(np.min(bias)), int(np.max(bias))
    return max(default, 1 + max(hi.bit_length() if hi > 0 else 0, (~lo).bit_length() if lo < 0 else 0))


def requant_config(op: Operation, values: DesignScales, m_bits: int, e_bits: int) -> dict[str, Any]:
    """``requant``: the dyadic ``(m, e)`` of the weight store entry under the op's layer: one pair (scalars) or
    one per channel (arrays, channel ``c`` on lane ``c % lanes`` of a row's beat ``c // lanes``); and the scales."""

    layer = df.layer_of(op)
    me = np.asarray(values.weights[layer], dtype=np.int64)
    m, e = me[0], me[1]
    if m.size and (int(m.min()) < 0 or int(m.max()) >= 1 << m_bits):
        raise InputError(f"requant: multiplier m in [{int(m.min())}, {int(m.max())}] does not fit the unsigned "
                         f"{m_bits}-bit m field")
    if e.size and (int(e.min()) < -(1 << (e_bits - 1)) or int(e.max()) >= 1 << (e_bits - 1)):
        raise InputError(f"requant: shift e in [{int(e.min())}, {int(e.max())}] does not fit the signed "
                         f"{e_bits}-bit e field")
    per_channel = values.weights.get(layer + ".scale")
    out_scale = per_channel if per_channel is not None else float(op.attributes["scale"].value.data)  # type: ignore
    in_scale = values.scale(op.operands[0])
    if m.size == 1:
        return {"m": int(m[0]), "e": int(e[0]), "input_scale": _as_config(in_scale), "output_scale": out_scale}
    return {"m": m.copy(), "e": e.copy(), "input_scale": _as_config(in_scale), "output_scale": _as_config(out_scale)}


def gemm_config(op: Operation, values: DesignScales) -> dict[str, Any]:
    """A systolic GEMM: its constant operand (``weights``, K x N, the array's ``b`` lanes) and ``bias`` (int32 per
    output column, added by the host to the array's result), and the scales; ``{}`` for a product of two
    activations (QK^T-style)."""
    weights = values.const(op.rhs)  # type: ignore[attr-defined]
    if weights is None or weights.data.ndim != 2:
        return {}
    w = np.asarray(weights.data)
    small = np.int8 if w.size and -128 <= int(w.min()) and int(w.max()) <= 127 else np.int64
    config: dict[str, Any] = {"weights": w.astype(small)}
    bias = values.const(op.bias) if op.bias is not None else None  # type: ignore[attr-defined]
    if bias is not None:
        config["bias"] = np.asarray(bias.data, dtype=np.int64)
    config["input_scale"] = _as_config(values.scale(op.lhs))  # type: ignore[attr-defined]
    config["weight_scale"] = _as_config(weights.scale)
    config["output_scale"] = _as_config(values.scale(op.result))  # type: ignore[attr-defined]
    return config


def _as_config(scale: Any) -> Any:
    """A scale as a config value: float, a 1-D float64 array, or None."""
    if scale is None:
        return None
    if np.ndim(scale) == 0:
        return float(scale)
    return np.asarray(scale, dtype=np.float64).reshape(-1)
