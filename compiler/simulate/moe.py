"""Simulator kernel of ``dataflow.moe``: route -> dispatch -> experts -> combine, as the hardware orders it.

Float operands: the block runs :func:`compiler.numerics.router.moe_reference` (float64, the routing semantics of the
op's ``mode``; gated experts with their up projection w3) on the real values of its operands and returns float32.

Integer operands (after ``quantize``; the formats are written by compiler/passes/quantize.py): exact int64
arithmetic with :mod:`compiler.simulate.intkernels` (bit-exact to :mod:`compiler.numerics`):

* router: int32 logits ``x_i8 @ gate`` (the gate is one per-tensor integer of ``gate_bits`` <= 16, so ranking the
  accumulators ranks the real logits); the routing of :func:`compiler.numerics.router.route` on the real logits
  (acc * scale, float64: the router unit's higher precision, as Edge-MoE's ap_fixed<32,10> gate); the combine
  weights leave it as unsigned Q1.15, ``w_q = round_half_even(w * 2^15)``;
* expert e, on its queue's int8 rows: ``acc1 = x @ w1[e] + b1[e]`` (int32) -> ``requantize`` per hidden channel to
  the activation unit's input (``hidden_bits``: 16 for GELU / SiLU, 8 for ReLU / identity) at scale
  ``act.scale[e]`` -> activation (:func:`activation_int`) -> ``requantize`` to int8 (``act`` multipliers; none for
  ReLU / identity, whose int8 input grid is already their output grid) -> ``acc2 = a @ w2[e] + b2[e]`` (int32) ->
  ``requantize`` per output channel to int16 on the block's output scale;
* gated expert e (an up projection w3, SwiGLU / GeGLU): the activation's int8 ``a`` as above (its grid sized on the
  activation's own range), ``acc3 = x @ w3[e]`` (int32) -> ``requantize`` per hidden channel to int8 ``u`` (``up``
  multipliers), the product ``a * u`` (int16, exact) -> ``requantize`` per expert to int8 (``gated``
  multipliers), which w2 reads;
* combine: ``y = clamp16(round_half_even(sum_k w_q * o_k / 2^15))`` on the same int16 grid (the op's ``scale``).

WeightStore entries under the op's ``requant`` attribute P: ``P.fc1`` int64 [2, E, H] (m, e), ``P.act.scale``
float64 [E], ``P.act`` int64 [2, E] (GELU / SiLU only), ``P.fc2`` int64 [2, E, D]; gated: ``P.up`` int64 [2, E, H],
``P.gated`` int64 [2, E]. ``balanced``: the input's
per-channel scales were folded into the gate and w1 (as for a balanced ``dataflow.gemm``).

The routing of the last sample is kept in the op's memo (``ctx.memo(op)["routing"]``, a
:class:`compiler.numerics.router.Routing`) and appended to ``["routings"]``, so an observer
(``Simulator.run(feeds, observer=...)``) can collect real routing traces: the ``route-moe`` pass does. A float run
with ``ctx.memo(op)["stats"]`` set to a :class:`MoeRanges` records the ranges quantization needs
(:func:`moe_ranges`). Importing this module registers the kernel.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from xdsl.dialects.builtin import FloatAttr, IntegerAttr, ModuleOp, StringAttr
from xdsl.ir import Operation

from compiler.dialect import dataflow as df
from compiler.numerics.router import ACTIVATIONS, Routing, moe_reference, route
from compiler.simulate import approx as A
from compiler.simulate import intkernels as K
from compiler.simulate.engine import Simulator
from compiler.simulate.kernels import int_matmul
from compiler.simulate.registry import SimContext, Tensor, register_kernel

__all__ = ["moe_kernel", "routing_of", "activation_int", "hidden_bits", "MoeRanges", "moe_ranges",
           "COMBINE_FRAC_BITS", "OUT_BITS", "REQUANT_ATTR", "HIDDEN_BITS_ATTR"]

COMBINE_FRAC_BITS = 15
"""Fraction bits of the router's combine weights (unsigned Q1.15)."""
OUT_BITS = 16
"""Width of an expert's output and of the block's result (I-ViT's 16-bit residual stream)."""
REQUANT_ATTR = "requant"
"""Discardable attribute of an integer ``dataflow.moe``: the WeightStore prefix of its multipliers."""
HIDDEN_BITS_ATTR = "hidden_bits"
"""Discardable attribute: width of the activation unit's input."""


def hidden_bits(activation: str) -> int:
    """Width of the expert activation's integer input: 8 where the activation is exact on any grid (ReLU, identity),
    16 for the smooth ones (the fine grid their float64-on-grid evaluation needs, as ``approx.gelu_input_format``)."""
    return 8 if activation in ("relu", "identity") else 16


def activation_int(name: str, h: np.ndarray, scale: float) -> tuple[np.ndarray, float]:
    """An expert's activation ``name`` on integers ``h`` (real h * scale): (y_int, y_scale).

    ReLU and identity keep the grid; GELU (erf) and the tanh GELU are the simulator's integer GELU kernels on
    ShiftGELU's output grid scale * 2^-7; SiLU is computed the same way (float64 on the grid, rounded).
    """
    if name == "relu":
        return np.maximum(h, 0), scale
    if name == "identity":
        return h, scale
    if name in ("gelu", "gelu_tanh"):
        return A.gelu_int("exact" if name == "gelu" else "tanh", h, scale)
    if name == "silu":
        out = scale * 2.0**-7
        return np.round(ACTIVATIONS["silu"](h.astype(np.float64) * scale) / out).astype(np.int64), out
    raise ValueError(f"no integer expert activation '{name}'")


@dataclass
class MoeRanges:
    """max|.| seen by one MoE block on calibration data, per expert (index e).

    ``hidden``: fc1 output (before the activation); ``act``: what w2 reads (the activation output; gated: the
    product); ``gact`` and ``up``: gated experts' activation output and up projection (zero otherwise); ``out``:
    expert output (before the combine weights); ``tokens``: rows routed. ``*_all`` are the same over *every*
    token (each expert run densely), for the experts calibration never routed anything to.
    """

    experts: int
    hidden: np.ndarray = field(init=False)
    act: np.ndarray = field(init=False)
    gact: np.ndarray = field(init=False)
    up: np.ndarray = field(init=False)
    out: np.ndarray = field(init=False)
    tokens: np.ndarray = field(init=False)
    hidden_all: np.ndarray = field(init=False)
    act_all: np.ndarray = field(init=False)
    gact_all: np.ndarray = field(init=False)
    up_all: np.ndarray = field(init=False)
    out_all: np.ndarray = field(init=False)

    def __post_init__(self) -> None:
        for name in ("hidden", "act", "gact", "up", "out", "hidden_all", "act_all", "gact_all", "up_all", "out_all"):
            setattr(self, name, np.zeros(self.experts))
        self.tokens = np.zeros(self.experts, dtype=np.int64)

    def pick(self, name: str) -> np.ndarray:
        """Per expert, the routed range of ``name`` where the expert saw tokens, else the dense one."""
        return np.where(self.tokens > 0, getattr(self, name), getattr(self, name + "_all"))

    def record(self, flat: np.ndarray, routing: Routing, w1: np.ndarray, w2: np.ndarray, b1: np.ndarray | None,
               b2: np.ndarray | None, activation: str, w3: np.ndarray | None = None) -> None:
        """Run every expert on all of ``flat`` [T, D] (float64) and take both the routed and the dense maxima
        (``act``: the gated product for gated experts)."""
        fn = ACTIVATIONS[activation]
        for e, q in enumerate(routing.queues()):
            h = flat @ np.asarray(w1[e], np.float64) + (0.0 if b1 is None else b1[e])
            g = fn(h)
            u = np.zeros(0) if w3 is None else flat @ np.asarray(w3[e], np.float64)
            a = g if w3 is None else g * u
            o = a @ np.asarray(w2[e], np.float64) + (0.0 if b2 is None else b2[e])
            gated = (("gact", g), ("up", u)) if w3 is not None else ()
            for name, v in (("hidden", h), ("act", a), *gated, ("out", o)):
                dense = getattr(self, name + "_all")
                dense[e] = max(dense[e], float(np.abs(v).max(initial=0.0)))
                if len(q):
                    routed = getattr(self, name)
                    routed[e] = max(routed[e], float(np.abs(v[q]).max(initial=0.0)))
            self.tokens[e] += len(q)


def _params(op: df.MoeOp, memo: dict[str, Any]) -> None:
    memo.update(top_k=op.top_k_value(), mode=op.mode_choice(), cf=op.capacity_factor_value(),
                renorm=op.renormalize_value(), act=op.activation_value(), routings=[], scoring=op.scoring())
    names = ["input", "gate", "w1", "w2"] + [n for n, v in (("b1", op.b1), ("b2", op.b2), ("w3", op.w3))
                                             if v is not None]
    memo["slots"] = {n: i for i, n in enumerate(names)}


def _images(mode: str, shape: tuple[int, ...]) -> int:
    return int(np.prod(shape[:-2])) if mode == df.MoeMode.IMAGE and len(shape) >= 3 else 1


def _route(memo: dict[str, Any], logits: np.ndarray, images: int) -> Routing:
    return route(logits, memo["top_k"], memo["mode"], capacity_factor=memo["cf"], renormalize=memo["renorm"],
                 images=images, scoring=memo["scoring"])


def moe_kernel(op: Operation, ins: list[Tensor], ctx: SimContext) -> list[Tensor]:
    """One ``dataflow.moe`` on one sample (module docstring)."""
    assert isinstance(op, df.MoeOp)
    memo = ctx.memo(op)
    if "top_k" not in memo:
        _params(op, memo)
    shape = tuple(op.result.type.get_shape())  # type: ignore[attr-defined]
    if ins[0].quantized:
        y, scale, routing = _integer(op, ins, ctx, memo)
        out = Tensor(y.reshape(shape), scale)
    else:
        slots = memo["slots"]
        real = [t.real() for t in ins]
        b1 = real[slots["b1"]] if "b1" in slots else None
        b2 = real[slots["b2"]] if "b2" in slots else None
        w3 = real[slots["w3"]] if "w3" in slots else None
        y, routing = moe_reference(real[0], real[1], real[2], real[3], top_k=memo["top_k"], mode=memo["mode"],
                                   b1=b1, b2=b2, activation=memo["act"], capacity_factor=memo["cf"],
                                   renormalize=memo["renorm"], w3=w3, scoring=memo["scoring"])
        stats = memo.get("stats")
        if isinstance(stats, MoeRanges):
            flat = np.asarray(real[0], np.float64).reshape(-1, real[0].shape[-1])
            stats.record(flat, routing, real[2], real[3], b1, b2, memo["act"], w3)
        out = Tensor(y.reshape(shape).astype(np.float32))
    memo["routing"] = routing
    memo["routings"].append(routing)
    return [out]


def _int_params(op: df.MoeOp, ctx: SimContext, memo: dict[str, Any]) -> dict[str, Any]:
    if "fc1" not in memo:
        prefix = op.attributes.get(REQUANT_ATTR)
        scale = op.attributes.get("scale")
        bits = op.attributes.get(HIDDEN_BITS_ATTR)
        if not (isinstance(prefix, StringAttr) and isinstance(scale, FloatAttr) and isinstance(bits, IntegerAttr)):
            raise ValueError(f"an integer MoE needs the '{REQUANT_ATTR}', 'scale' and '{HIDDEN_BITS_ATTR}' "
                             "attributes the quantize pass writes")
        p = prefix.data
        memo["fc1"] = np.asarray(ctx.weights[p + ".fc1"], np.int64)
        memo["fc2"] = np.asarray(ctx.weights[p + ".fc2"], np.int64)
        memo["act_scale"] = np.asarray(ctx.weights[p + ".act.scale"], np.float64)
        act = ctx.weights.get(p + ".act")
        memo["act_me"] = None if act is None else np.asarray(act, np.int64)
        up, gated = ctx.weights.get(p + ".up"), ctx.weights.get(p + ".gated")
        memo["up"] = None if up is None else np.asarray(up, np.int64)
        memo["gated"] = None if gated is None else np.asarray(gated, np.int64)
        memo["out_scale"] = float(scale.value.data)
        memo["hidden_bits"] = int(bits.value.data)
        memo["balanced"] = "balanced" in op.attributes
    return memo


def _integer(op: df.MoeOp, ins: list[Tensor], ctx: SimContext, memo: dict[str, Any]
             ) -> tuple[np.ndarray, float, Routing]:
    p = _int_params(op, ctx, memo)
    slots = memo["slots"]
    x, gate, w1, w2 = ins[0], ins[1], ins[2], ins[3]
    w3 = ins[slots["w3"]] if "w3" in slots else None
    if w3 is not None and (not w3.quantized or p["up"] is None or p["gated"] is None):
        raise ValueError(f"dataflow.moe '{op.layer_name()}': integer gated experts need an integer w3 and the "
                         f"'up' and 'gated' multipliers the quantize pass writes")
    b1 = ins[slots["b1"]].data.astype(np.int64) if "b1" in slots else None
    b2 = ins[slots["b2"]].data.astype(np.int64) if "b2" in slots else None
    if not (gate.quantized and w1.quantized and w2.quantized):
        raise ValueError("an integer MoE needs integer gate and expert weights with scales")
    d = x.data.shape[-1]
    flat = x.data.reshape(-1, d).astype(np.int64)
    logit_scale = float(gate.step()) * (1.0 if p["balanced"] else float(x.step()))
    logits = int_matmul(flat, gate.data)
    routing = _route(memo, logits.astype(np.float64) * logit_scale, _images(memo["mode"], x.data.shape))
    w_q = np.round(routing.weights * 2.0**COMBINE_FRAC_BITS).astype(np.int64)  # 0 where dropped
    acc = np.zeros(flat.shape, dtype=np.int64)
    m1, e1 = p["fc1"][0], p["fc1"][1]
    m2, e2 = p["fc2"][0], p["fc2"][1]
    for e, q in enumerate(routing.queues()):
        if not len(q):
            continue
        a1 = int_matmul(flat[q], w1.data[e])
        h = K.requantize(a1 if b1 is None else a1 + b1[e], m1[e], e1[e], p["hidden_bits"])
        a, _ = activation_int(memo["act"], h, float(p["act_scale"][e]))
        if p["act_me"] is not None:
            a = K.requantize(a, p["act_me"][0, e], p["act_me"][1, e], 8)
        if w3 is not None:  # gated: int8 up projection, the int16 product requantized to int8
            u = K.requantize(int_matmul(flat[q], w3.data[e]), p["up"][0, e], p["up"][1, e], 8)
            a = K.requantize(a * u, p["gated"][0, e], p["gated"][1, e], 8)
        a2 = int_matmul(a, w2.data[e])
        o = K.requantize(a2 if b2 is None else a2 + b2[e], m2[e], e2[e], OUT_BITS)
        hit = (routing.experts[q] == e) & routing.kept[q]
        weight = np.where(hit, w_q[q], 0).sum(axis=1)
        acc[q] += weight[:, None] * o  # a queue holds each token once
    lim = 1 << (OUT_BITS - 1)
    return np.clip(K.round_shift(acc, COMBINE_FRAC_BITS), -lim, lim - 1), p["out_scale"], routing


def routing_of(ctx: SimContext, op: Operation) -> Routing | None:
    """The routing ``op`` computed on the last simulated sample, or None."""
    return ctx.memo(op).get("routing")


def moe_ranges(module: ModuleOp, weights: Mapping[str, np.ndarray], names: list[str],
               samples: Mapping[str, np.ndarray]) -> dict[int, MoeRanges]:
    """Per ``dataflow.moe`` (by ``id``), the ranges of its insides over ``samples`` (float run, exact
    nonlinearities, as calibration): what ``quantize`` sizes the expert formats by."""
    sim = Simulator(module, weights, names, exact=True)
    found: dict[int, MoeRanges] = {}
    for op, _ in sim.steps:
        if isinstance(op, df.MoeOp):
            found[id(op)] = sim.ctx.memo(op).setdefault("stats", MoeRanges(op.num_experts_value()))
    if found:
        for i in range(len(next(iter(samples.values())))):
            sim.run({k: v[i] for k, v in samples.items()})
    return found


register_kernel("dataflow.moe", moe_kernel)
