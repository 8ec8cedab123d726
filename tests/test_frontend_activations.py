"""ONNX's activation, trigonometric, variadic and compound ops (compiler/frontend/onnx_activations.py,
compound_ops.py): each compiles between two projections and simulates as onnxruntime computes it, float and int8.

The graphs are the ones exporters write: ``nn.ELU`` / ``nn.LeakyReLU`` / ``nn.PReLU`` / ``nn.SELU`` / ``nn.CELU`` /
``torch.atan`` / ``nn.LogSoftmax`` / ``F.pixel_shuffle`` / ``adaptive_avg_pool2d(x, 1)`` become one node each
(checked on a real torch export at the end).
"""

from __future__ import annotations

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from compiler.frontend.onnx_loader import load_graph
from examples._common import Exporter

D = 8


def _model(nodes, inits, out_shape=None) -> onnx.ModelProto:
    """x [1, 4, D] -> MatMul(w1) -> ``nodes`` (reading ``h``, writing ``a``) -> MatMul(w2) -> y."""
    rng = np.random.default_rng(3)
    inits = [("w1", rng.normal(0, 1, (D, 16)).astype(np.float32)),
             ("w2", rng.normal(0, 0.3, (16, D)).astype(np.float32)), *inits]
    nodes = [helper.make_node("MatMul", ["x", "w1"], ["h"], name="fc1"), *nodes,
             helper.make_node("MatMul", ["a", "w2"], ["y"], name="fc2")]
    graph = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 4, D])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, out_shape)],
                              initializer=[numpy_helper.from_array(v, k) for k, v in inits])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)])
    model.ir_version = 8  # what the installed onnxruntime reads
    return model


def _unary(op: str, **attrs):
    return [helper.make_node(op, ["h"], ["a"], name=f"act/{op}", **attrs)], []


def _bounded(op: str):
    """Inverse trigonometry on [-0.8, 0.8] (Acosh on [1.2, 2.8]): a Tanh and a scale keep the operand inside its
    domain and away from the ends, where the slope would magnify onnxruntime's own Tanh approximation."""
    nodes = [helper.make_node("Tanh", ["h"], ["t0"]), helper.make_node("Mul", ["t0", "shrink"], ["t"])]
    inits = [("shrink", np.array(0.8, np.float32))]
    if op == "Acosh":
        nodes += [helper.make_node("Add", ["t", "two"], ["u"]), helper.make_node(op, ["u"], ["a"], name=f"act/{op}")]
        return nodes, [*inits, ("two", np.array(2, np.float32))]
    return nodes + [helper.make_node(op, ["t"], ["a"], name=f"act/{op}")], inits


def _view(shape, name="hv"):
    return [helper.make_node("Reshape", ["h", f"{name}_shape"], [name])], [(f"{name}_shape", np.array(shape, np.int64))]


def _back(src: str, extra_inits=()):
    return [helper.make_node("Reshape", [src, "back_shape"], ["a"])], [("back_shape", np.array([1, 4, 16], np.int64)),
                                                                       *extra_inits]


def _case(name: str):
    if name in ("Elu", "Selu", "Celu", "Mish", "Softsign", "Tan", "Sinh", "Cosh", "Asinh"):
        return _unary(name, **({"alpha": 0.7} if name == "Celu" else {}))
    if name == "LeakyRelu":
        return _unary(name, alpha=0.1)
    if name == "ThresholdedRelu":
        return _unary(name, alpha=0.5)
    if name == "Shrink":
        return _unary(name, bias=0.2, lambd=0.6)
    if name in ("Asin", "Acos", "Atan", "Atanh", "Acosh"):
        return _bounded(name)
    if name == "PRelu":  # one slope per channel of the last axis
        return ([helper.make_node("PRelu", ["h", "slope"], ["a"], name="act/PRelu")],
                [("slope", np.linspace(-0.5, 0.5, 16).astype(np.float32))])
    if name in ("Sum", "Mean", "Max", "Min"):  # three operands, one broadcast, and the one-input form
        nodes = [helper.make_node("Exp", ["h"], ["e"]),
                 helper.make_node(name, ["h", "e", "row"], ["s3"], name=f"act/{name}3"),
                 helper.make_node(name, ["s3"], ["a"], name=f"act/{name}1")]
        return nodes, [("row", np.linspace(-1, 1, 16).astype(np.float32))]
    if name == "LogSoftmax":
        return _unary(name, axis=-1)
    if name in ("ReduceLogSumExp", "ReduceLogSum"):  # keepdims 0 then broadcast back; ReduceLogSum on positives
        src = "h"
        nodes = []
        if name == "ReduceLogSum":
            nodes.append(helper.make_node("Exp", ["h"], ["pos"]))
            src = "pos"
        nodes += [helper.make_node(name, [src, "axes"], ["r"], name=f"act/{name}", keepdims=0),
                  helper.make_node("Unsqueeze", ["r", "axes"], ["ru"]), helper.make_node("Sub", ["h", "ru"], ["a"])]
        return nodes, [("axes", np.array([-1], np.int64))]
    if name in ("GlobalAveragePool", "GlobalMaxPool"):
        nodes, inits = _view([1, 4, 4, 4])
        nodes += [helper.make_node(name, ["hv"], ["p"], name=f"act/{name}"),
                  helper.make_node("Add", ["hv", "p"], ["q"])]
        more, inits2 = _back("q")
        return nodes + more, inits + inits2
    if name.startswith(("DepthToSpace", "SpaceToDepth")):
        op, _, mode = name.partition(":")
        nodes, inits = _view([1, 16, 2, 2] if op == "DepthToSpace" else [1, 4, 4, 4])
        nodes.append(helper.make_node(op, ["hv"], ["p"], name=f"act/{op}", blocksize=2,
                                      **({"mode": mode} if mode else {})))
        more, inits2 = _back("p")
        return nodes + more, inits + inits2
    raise AssertionError(name)


CASES = ["Elu", "Selu", "Celu", "LeakyRelu", "PRelu", "ThresholdedRelu", "Shrink", "Mish", "Softsign", "Tan",
         "Asin", "Acos", "Atan", "Sinh", "Cosh", "Asinh", "Acosh", "Atanh", "Sum", "Mean", "Max", "Min",
         "LogSoftmax", "ReduceLogSumExp", "ReduceLogSum", "GlobalAveragePool", "GlobalMaxPool",
         "DepthToSpace", "DepthToSpace:CRD", "SpaceToDepth"]


@pytest.mark.parametrize("name", CASES)
def test_op_compiles_and_simulates_as_onnxruntime(name: str, tmp_path) -> None:
    import onnxruntime as ort

    from codesign.api import compile

    nodes, inits = _case(name)
    path = tmp_path / "m.onnx"
    onnx.save(_model(nodes, inits), str(path))
    sample = np.random.default_rng(0).normal(0, 1, (1, 4, D)).astype(np.float32)
    want = np.asarray(ort.InferenceSession(str(path), providers=["CPUExecutionProvider"]).run(None, {"x": sample})[0])
    got = compile(path, inputs={"x": sample[None]}).env.artifacts["outputs"]["y"][0]
    np.testing.assert_allclose(got, want, rtol=2e-5, atol=2e-5)
    quant = compile(path, inputs={"x": sample[None]}, quant="int8").env.artifacts["outputs"]["y"][0]
    cos = float((quant * want).sum() / np.linalg.norm(quant) / np.linalg.norm(want))
    assert cos > 0.98, cos


def test_lowered_ops_leave_no_trace_of_themselves() -> None:
    """What compound_ops.py lowers reaches the dialect as the basic ops (no op kind of its own)."""
    from compiler.frontend.normalize import normalize_for_recognition

    for name in ("Sum", "LogSoftmax", "ReduceLogSumExp", "GlobalAveragePool", "DepthToSpace", "SpaceToDepth"):
        graph = load_graph(_model(*_case(name)))
        normalize_for_recognition(graph)
        kinds = {n.op_type for n in graph.nodes}
        assert name not in kinds and not kinds & {"Sum", "Mean", "LogSoftmax", "GlobalAveragePool"}, (name, kinds)


def test_eye_like_is_folded_from_the_shape_alone() -> None:
    """EyeLike reads only its input's shape (XLNet): folded even where the input is an activation."""
    nodes = [helper.make_node("Reshape", ["h", "sq"], ["hs"]), helper.make_node("EyeLike", ["hs"], ["eye"], k=1),
             helper.make_node("Add", ["hs", "eye"], ["q"]), helper.make_node("Reshape", ["q", "back"], ["a"])]
    graph = load_graph(_model(nodes, [("sq", np.array([8, 8], np.int64)), ("back", np.array([1, 4, 16], np.int64))]))
    assert "EyeLike" not in {n.op_type for n in graph.nodes}
    eye = [v for v in graph.constants.values() if v.shape == (8, 8)]
    assert eye and np.array_equal(eye[0], np.eye(8, k=1, dtype=np.float32))


def test_bad_depth_to_space_is_one_line() -> None:
    from compiler.frontend.normalize import normalize_for_recognition
    from hw.errors import InputError

    nodes, inits = _view([1, 4, 4, 4])
    nodes += [helper.make_node("SpaceToDepth", ["hv"], ["p"], name="act/s2d", blocksize=3)]
    graph = helper.make_graph([helper.make_node("MatMul", ["x", "w1"], ["h"]), *nodes], "g",
                              [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 4, D])],
                              [helper.make_tensor_value_info("p", TensorProto.FLOAT, None)],
                              initializer=[numpy_helper.from_array(np.ones((D, 16), np.float32), "w1"),
                                           *(numpy_helper.from_array(v, k) for k, v in inits)])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)])
    with pytest.raises(InputError, match=r"SpaceToDepth \(node 'act/s2d'\).*blocksize 3") as err:
        normalize_for_recognition(load_graph(model, shapes=None))
    assert "\n" not in str(err.value)


@pytest.mark.parametrize("exporter", ["legacy", "dynamo"])
def test_torch_activations_export_and_compile(exporter: Exporter, tmp_path) -> None:
    """A real export: a block with ELU, LeakyReLU, SELU, CELU, atan and a LogSoftmax head, through both exporters,
    simulated as onnxruntime runs it."""
    import onnxruntime as ort
    import torch

    from codesign.api import compile
    from examples._common import export_onnx

    class Block(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.fc1, self.fc2 = torch.nn.Linear(D, 16), torch.nn.Linear(16, D)
            self.acts = torch.nn.ModuleList([torch.nn.ELU(), torch.nn.LeakyReLU(0.1), torch.nn.SELU(),
                                             torch.nn.CELU(0.7)])

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            h = self.fc1(x)
            h = sum(act(h) for act in self.acts) + torch.atan(h)
            return torch.log_softmax(self.fc2(h), dim=-1)

    torch.manual_seed(0)
    sample = np.random.default_rng(1).normal(0, 1, (1, 4, D)).astype(np.float32)
    path = tmp_path / "block.onnx"
    export_onnx(Block().eval(), [torch.from_numpy(sample)], path, input_names=["x"], output_names=["y"],
                exporter=exporter)
    want = np.asarray(ort.InferenceSession(str(path), providers=["CPUExecutionProvider"]).run(None, {"x": sample})[0])
    got = compile(path, inputs={"x": sample[None]}).env.artifacts["outputs"]["y"][0]
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)


def test_gather_nd_of_first_axis_entries_is_a_gather(tmp_path) -> None:
    """GatherND with constant indices naming entries of the first axis (dynamo's x[..., -2, :] after a moved axis:
    Falcon's fused QKV) becomes a Gather on axis 0, computing what onnxruntime computes."""
    import onnxruntime as ort

    from codesign.api import compile
    from compiler.frontend.normalize import normalize_for_recognition

    nodes = [helper.make_node("Reshape", ["h", "split"], ["hv"]),
             helper.make_node("Transpose", ["hv"], ["ht"], perm=[2, 0, 1, 3]),
             helper.make_node("GatherND", ["ht", "pick"], ["g"], name="act/GatherND"),
             helper.make_node("Reshape", ["g", "back"], ["a"])]
    inits = [("split", np.array([1, 4, 4, 4], np.int64)), ("pick", np.array([[-2], [0]], np.int64)),
             ("back", np.array([1, 4, 8], np.int64))]  # [4, 1, 4, 4] -> two entries [2, 1, 4, 4] -> [1, 4, 8]
    model = _model(nodes, inits)
    w2 = next(i for i in model.graph.initializer if i.name == "w2")
    w2.CopyFrom(numpy_helper.from_array(np.random.default_rng(5).normal(0, 0.3, (8, D)).astype(np.float32), "w2"))
    graph = load_graph(model)
    normalize_for_recognition(graph)
    assert "GatherND" not in {n.op_type for n in graph.nodes}
    path = tmp_path / "gnd.onnx"
    onnx.save(model, str(path))
    sample = np.random.default_rng(0).normal(0, 1, (1, 4, D)).astype(np.float32)
    want = np.asarray(ort.InferenceSession(str(path), providers=["CPUExecutionProvider"]).run(None, {"x": sample})[0])
    got = compile(path, inputs={"x": sample[None]}).env.artifacts["outputs"]["y"][0]
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)
