"""The functional simulator: float runs match ONNX Runtime, quantized runs match the integer oracle op by op."""

from __future__ import annotations

from typing import Any, cast

import numpy as np
import onnxruntime as ort
import pytest
import torch

import compiler.numerics as N
from codesign.api import compile
from compiler.dialect import dataflow as df
from compiler.simulate import KERNELS, Simulator, Tensor, register_kernel
from compiler.simulate.approx import shiftmax_min_step
from compiler.simulate.kernels import op_attrs
from hw.errors import InputError
from tests.conftest import model_path


def _feeds(name: str, n: int = 2) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(0)
    sess = ort.InferenceSession(str(model_path(name)), providers=["CPUExecutionProvider"])
    out = {}
    for i in sess.get_inputs():
        shape = [n] + list(i.shape)
        if i.type == "tensor(float)":
            out[i.name] = rng.standard_normal(shape).astype(np.float32)
        elif i.name == "input_ids":
            out[i.name] = rng.integers(1, 100, shape)
        else:
            out[i.name] = np.zeros(shape, np.int64) if "type" in i.name else np.ones(shape, np.int64)
    return out


@pytest.mark.parametrize("name", ["vit_tiny.onnx", "bert_tiny.onnx", "gpt2_tiny.onnx"])
def test_float_simulation_matches_onnxruntime(name: str) -> None:
    feeds = _feeds(name)
    result = compile(model_path(name), stop_after="canonicalize")
    sim = Simulator(result.module, result.env.weights, result.imported.input_names, result.imported.output_names)
    got = sim.run_samples(feeds)
    sess = ort.InferenceSession(str(model_path(name)), providers=["CPUExecutionProvider"])
    for i in range(2):
        want = sess.run(None, {k: v[i] for k, v in feeds.items()})
        np.testing.assert_allclose(got[result.imported.output_names[0]][i], cast(np.ndarray, want[0]), atol=2e-4, rtol=1e-4)


@pytest.mark.parametrize("gelu, stabilizer", [("shiftgelu", "element"), ("shiftgelu-row", "row")])
def test_quantized_ops_equal_the_oracle_op_by_op(gelu: str, stabilizer: str) -> None:
    """Every integer op of a quantized BERT, recomputed by compiler.numerics from the inputs the simulator saw."""
    result = compile(model_path("bert_tiny.onnx"), quant="int8", softmax="shiftmax", gelu=gelu,
                     layernorm="ilayernorm")
    sim = Simulator(result.module, result.env.weights, result.imported.input_names, result.imported.output_names)
    weights = result.env.weights
    seen: dict[str, int] = {}
    values: dict[Any, Tensor] = {}

    def observe(op, outs):  # noqa: ANN001
        for r, t in zip(op.results, outs):
            values[r] = t
        ins = [values.get(v) for v in op.operands]
        if isinstance(op, df.RequantOp):
            me = weights[df.str_attr(op, "layer")]
            m, e = (int(me[0, 0]), int(me[1, 0])) if me.shape[1] == 1 else (torch.from_numpy(me[0]), torch.from_numpy(me[1]))
            want = N.requantize(torch.from_numpy(ins[0].data), m, e, df.int_attr(op, "out_bits"))
            np.testing.assert_array_equal(outs[0].data, want.numpy())
        elif isinstance(op, df.GeluOp):
            want, scale = N.shiftgelu(torch.from_numpy(ins[0].data), float(ins[0].step()), 8, stabilizer=stabilizer)
            np.testing.assert_array_equal(outs[0].data, want.numpy())
            assert outs[0].scale == scale
        elif isinstance(op, df.LayerNormOp):
            want, _ = N.ilayernorm(torch.from_numpy(ins[0].data), float(ins[0].step()),
                                   torch.from_numpy(ins[1].data.astype(np.float64)),
                                   torch.from_numpy(ins[2].data.astype(np.float64)))
            np.testing.assert_array_equal(outs[0].data, want.numpy())
        elif isinstance(op, df.ElementwiseOp) and op_attrs(op, sim.ctx).get("quant") == "add":
            m0, e0, m1, e1 = (int(r[0]) if weights[df.str_attr(op, "layer")].shape[1] == 1 else torch.from_numpy(r)
                              for r in weights[df.str_attr(op, "layer")])
            want = N.requantize_add(torch.from_numpy(ins[0].data), m0, e0, torch.from_numpy(ins[1].data), m1, e1, 16)
            np.testing.assert_array_equal(outs[0].data, want.numpy())
        else:
            return
        seen[op.name] = seen.get(op.name, 0) + 1

    feeds = {k: v[0] for k, v in _feeds("bert_tiny.onnx", 1).items()}
    values.update(sim.consts)
    values.update({a: Tensor(feeds[n]) for a, n in zip(sim.args, sim.input_names)})
    sim.run(feeds, observe)
    assert seen["dataflow.requant"] >= 8 and seen["dataflow.gelu"] == 2 and seen["dataflow.layernorm"] == 5
    assert seen["dataflow.elementwise"] == 4


def test_attention_softmax_equals_the_oracle_on_its_scores() -> None:
    """The integer attention runs shiftmax (16-bit output) on q8 k8^T plus the mask (coarsened by the shift that
    keeps Shiftmax's row sum from saturating and its normalising quotient at 8 bits), then A.V in integers."""
    result = compile(model_path("vit_tiny.onnx"), quant="int8", softmax="shiftmax")
    sim = Simulator(result.module, result.env.weights, result.imported.input_names, result.imported.output_names)
    values: dict[Any, Tensor] = {}
    checked = []

    def observe(op, outs):  # noqa: ANN001
        for r, t in zip(op.results, outs):
            values[r] = t
        if isinstance(op, df.AttentionOp):
            q, k, v = (values[x] for x in (op.q, op.k, op.v))
            h = df.int_attr(op, "num_heads")
            split = lambda t: t.data.reshape(*t.data.shape[:2], h, -1).transpose(0, 2, 1, 3)  # noqa: E731
            scores = split(q) @ split(k).swapaxes(-1, -2)
            s = float(q.step()) * float(k.step()) * df.float_attr(op, "scale")
            need = shiftmax_min_step(scores.shape[-1])  # the grid's floor for the row length
            k_shift = max(0, int(np.ceil(np.log2(need / s))))
            p, ps = N.shiftmax(torch.from_numpy(np.right_shift(scores, k_shift)), s * 2.0**k_shift, 16)
            acc = (p.numpy() @ split(v)).transpose(0, 2, 1, 3).reshape(outs[0].data.shape)
            np.testing.assert_array_equal(outs[0].data, acc)
            assert outs[0].scale == ps * float(v.step())
            checked.append(op)

    feeds = {k: v[0] for k, v in _feeds("vit_tiny.onnx", 1).items()}
    values.update(sim.consts)
    values.update({a: Tensor(feeds[n]) for a, n in zip(sim.args, sim.input_names)})
    sim.run(feeds, observe)
    assert len(checked) == 2


def test_register_kernel_refuses_a_second_owner() -> None:
    with pytest.raises(ValueError, match="already registered"):
        register_kernel("dataflow.gemm", lambda op, ins, ctx: ins)
    assert KERNELS["dataflow.gemm"].__name__ == "_gemm"


def test_missing_input_is_named() -> None:
    result = compile(model_path("vit_tiny.onnx"), stop_after="canonicalize")
    sim = Simulator(result.module, result.env.weights, result.imported.input_names, result.imported.output_names)
    with pytest.raises(InputError, match="no input 'pixel_values' given to the simulator"):
        sim.run({})


def test_integer_online_softmax_visits_keys_in_edge_moe_lane_order():
    """Quantized Edge-MoE attention feeds each query row's scores to the online softmax in its lane's rotated key
    order (the running sum's floors make the order matter); flash and the standard order use index order."""
    from compiler.simulate import approx
    from compiler.simulate.attention import edge_moe_visit_order

    seen: dict[str, list[tuple[np.ndarray, np.ndarray]]] = {}

    def run(attention: str) -> None:
        calls: list[tuple[np.ndarray, np.ndarray]] = []
        real = approx.softmax_int

        def spy(name, x, scale, bits, *rest):  # noqa: ANN001  (rest: the attention's sinks, None here)
            y, y_scale = real(name, x, scale, bits, *rest)
            calls.append((np.array(x), np.array(y)))
            return y, y_scale

        result = compile(model_path("vit_tiny.onnx"), quant="int8", softmax="online", attention=attention)
        sim = Simulator(result.module, result.env.weights, result.imported.input_names,
                        result.imported.output_names)
        with pytest.MonkeyPatch.context() as patch:
            patch.setattr(approx, "softmax_int", spy)
            sim.run({k: v[0] for k, v in _feeds("vit_tiny.onnx", 1).items()})
        seen[attention] = calls

    run("flash")
    run("edge-moe")
    assert len(seen["flash"]) == len(seen["edge-moe"]) > 0
    for (by_index, _), (visited, _) in zip(seen["flash"], seen["edge-moe"]):
        order = np.broadcast_to(edge_moe_visit_order(by_index.shape[-2], by_index.shape[-1], 4), by_index.shape)
        np.testing.assert_array_equal(visited, np.take_along_axis(by_index, order, -1))
    # Same scores in layer 0 (nothing upstream differs): the order alone moves some probabilities by a few LSBs.
    (x, y_flash), (_, y_visited) = seen["flash"][0], seen["edge-moe"][0]
    order = np.broadcast_to(edge_moe_visit_order(x.shape[-2], x.shape[-1], 4), x.shape)
    y_edge = np.empty_like(y_visited)
    np.put_along_axis(y_edge, order, y_visited, -1)
    diff = np.abs(y_edge.astype(np.int64) - y_flash)
    assert 0 < diff.max() <= 8
