"""The ``dataflow.moe`` simulator kernel (compiler/simulate/moe.py): the integer block equals the compiler.numerics
oracle recomputed from its inputs, calibration records per-expert ranges, and the activation kernels' grids."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

import compiler.numerics as N
from codesign.api import compile
from compiler.dialect import dataflow as df
from compiler.numerics.router import route
from compiler.simulate import Simulator, Tensor
from compiler.simulate.moe import COMBINE_FRAC_BITS, REQUANT_ATTR, activation_int, moe_ranges
from tests.conftest import DATA, model_path


def _oracle(op: df.MoeOp, ins: list[Tensor], weights: dict) -> np.ndarray:
    """The integer block in torch with compiler.numerics, from the formats the quantize pass wrote."""
    t = lambda a: torch.from_numpy(np.asarray(a, dtype=np.int64))  # noqa: E731
    x, gate, w1, w2 = ins[:4]
    biases = {name: ins[4 + i] for i, name in enumerate(n for n, v in (("b1", op.b1), ("b2", op.b2)) if v is not None)}
    w3 = ins[-1] if op.gated() else None
    prefix = op.attributes[REQUANT_ATTR].data  # type: ignore[attr-defined]
    fc1, fc2, act_me = weights[prefix + ".fc1"], weights[prefix + ".fc2"], weights.get(prefix + ".act")
    act_scale = weights[prefix + ".act.scale"]
    hidden = op.attributes["hidden_bits"].value.data  # type: ignore[attr-defined]
    act = df.str_attr(op, "activation")
    flat = t(x.data.reshape(-1, x.data.shape[-1]))
    logit_scale = float(gate.step()) * (1.0 if "balanced" in op.attributes else float(x.step()))
    logits = (flat @ t(gate.data)).numpy()
    r = route(logits * logit_scale, df.int_attr(op, "top_k"), df.str_attr(op, "mode"),
              capacity_factor=df.float_attr(op, "capacity_factor"), renormalize=op.renormalize_value())
    w_q = torch.from_numpy(np.round(r.weights * 2.0**COMBINE_FRAC_BITS).astype(np.int64))
    acc = torch.zeros(flat.shape, dtype=torch.int64)
    for e, q in enumerate(r.queues()):
        if not len(q):
            continue
        a1 = flat[q] @ t(w1.data[e]) + (t(biases["b1"].data[e]) if "b1" in biases else 0)
        h = N.requantize_per_channel(a1, t(fc1[0, e]), t(fc1[1, e]), hidden)
        if act == "gelu":
            a, s = N.gelu_exact(h, float(act_scale[e]), 8)
            a = N.requantize(a, int(act_me[0, e]), int(act_me[1, e]), 8)
        elif act == "silu":  # float64 on the input grid, rounded onto scale * 2^-7 (no I-ViT kernel for SiLU)
            s = float(act_scale[e])
            a = torch.round(h.double() * s * torch.sigmoid(h.double() * s) / (s * 2.0**-7)).to(torch.int64)
            a = N.requantize(a, int(act_me[0, e]), int(act_me[1, e]), 8)
        else:
            assert act == "relu" and act_me is None
            a = torch.clamp(h, min=0)
        if w3 is not None:  # gated: int8 up projection, int16 product requantized to int8
            up, gated = weights[prefix + ".up"], weights[prefix + ".gated"]
            u = N.requantize_per_channel(flat[q] @ t(w3.data[e]), t(up[0, e]), t(up[1, e]), 8)
            a = N.requantize(a * u, int(gated[0, e]), int(gated[1, e]), 8)
        a2 = a @ t(w2.data[e]) + (t(biases["b2"].data[e]) if "b2" in biases else 0)
        o = N.requantize_per_channel(a2, t(fc2[0, e]), t(fc2[1, e]), 16)
        hit = torch.from_numpy((r.experts[q] == e) & r.kept[q])
        acc[q] += torch.where(hit, w_q[q], 0).sum(dim=1, keepdim=True) * o
    # round_half_even(acc / 2^15) is a dyadic requant with m = 2^30, e = 45.
    return N.requantize(acc, 1 << 30, 45, 16).numpy()


def _gated_path(folder: Path) -> Path:
    from tests.test_moe_gated import _export  # the Mixtral-style block those tests export

    return _export(folder, "silu", False, wrap=True)[0]


@pytest.mark.parametrize("name, feeds", [
    ("gated", lambda: {"x": np.random.default_rng(3).standard_normal((1, 6, 16)).astype(np.float32)}),
    ("m3vit_tiny.onnx", lambda: {"pixel_values": np.random.default_rng(0).standard_normal((1, 3, 32, 64))
                                 .astype(np.float32)}),
    ("switch_tiny.onnx", lambda: {k: v[0] for k, v in np.load(DATA / "switch_tiny_inputs.npz").items()}),
])
def test_integer_moe_equals_the_oracle(name: str, feeds, tmp_path: Path) -> None:  # noqa: ANN001
    if name == "gated":  # SwiGLU experts with an up projection w3, calibrated on a few samples
        samples = {"x": np.random.default_rng(0).standard_normal((4, 1, 6, 16)).astype(np.float32)}
        result = compile(_gated_path(tmp_path), inputs=samples, quant="int8")
    else:
        result = compile(model_path(name), quant="int8")
    sim = Simulator(result.module, result.env.weights, result.imported.input_names, result.imported.output_names)
    values: dict[Any, Tensor] = dict(sim.consts)
    checked = []
    sample = feeds()
    values.update({a: Tensor(sample[n]) for a, n in zip(sim.args, sim.input_names)})

    def observe(op, outs):  # noqa: ANN001
        for r, v in zip(op.results, outs):
            values[r] = v
        if isinstance(op, df.MoeOp):
            ins = [values[v] for v in op.operands]
            assert ins[0].quantized and ins[0].data.dtype.kind == "i"
            want = _oracle(op, ins, result.env.weights)
            np.testing.assert_array_equal(outs[0].data.reshape(want.shape), want)
            assert outs[0].scale == op.attributes["scale"].value.data  # type: ignore[attr-defined]
            checked.append(op)

    sim.run(sample, observe)
    assert len(checked) == (2 if name.startswith("switch") else 1)
    assert checked[0].gated() == (name == "gated")


def test_calibration_records_routed_and_dense_ranges() -> None:
    result = compile(model_path("m3vit_tiny.onnx"), stop_after="canonicalize")
    data = {"pixel_values": np.random.default_rng(1).standard_normal((2, 1, 3, 32, 64)).astype(np.float32)}
    (ranges,) = moe_ranges(result.module, result.env.weights, result.imported.input_names, data).values()
    assert int(ranges.tokens.sum()) == 2 * 9 * 2  # samples x tokens x top_k
    for key in ("hidden", "act", "out"):
        assert (getattr(ranges, key + "_all") >= getattr(ranges, key)).all()
        assert (ranges.pick(key) > 0).all()


def test_activation_grids() -> None:
    h = np.array([[-3, 0, 5]], dtype=np.int64)
    assert activation_int("relu", h, 0.5)[0].tolist() == [[0, 0, 5]] and activation_int("relu", h, 0.5)[1] == 0.5
    assert activation_int("identity", h, 0.5)[0] is h
    y, s = activation_int("silu", h, 0.5)
    assert s == 0.5 / 128 and y[0, 1] == 0 and y[0, 2] == round(2.5 / (1 + np.exp(-2.5)) / s)
    with pytest.raises(ValueError, match="no integer expert activation 'swish'"):
        activation_int("swish", h, 0.5)
