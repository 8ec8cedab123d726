"""The loader keeps weights where they are: external data memory-mapped (never read into the proto and copied),
embedded data taken from the proto once; and the RoPE fit's reuse of an earlier layer's rotation is only a guess
that the random-data check must confirm."""

from __future__ import annotations

import numpy as np
import onnx
from onnx import helper, numpy_helper

from compiler.frontend.onnx_loader import load_graph
from compiler.frontend.rope import Rope, fit_rope


def _matmul_model(w: np.ndarray) -> onnx.ModelProto:
    x = helper.make_tensor_value_info("x", onnx.TensorProto.FLOAT, [2, w.shape[0]])
    y = helper.make_tensor_value_info("y", onnx.TensorProto.FLOAT, [2, w.shape[1]])
    graph = helper.make_graph([helper.make_node("MatMul", ["x", "w"], ["y"], name="mm")], "g", [x], [y],
                              initializer=[numpy_helper.from_array(w, "w")])
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])


def _mapped(a: object) -> bool:
    while isinstance(a, np.ndarray):
        if isinstance(a, np.memmap):
            return True
        a = a.base
    return False


def test_external_weights_are_memory_mapped_not_copied(tmp_path) -> None:
    w = np.random.default_rng(0).normal(size=(64, 32)).astype(np.float32)
    path = tmp_path / "m.onnx"
    onnx.save_model(_matmul_model(w), str(path), save_as_external_data=True, all_tensors_to_one_file=True,
                    location="m.data", size_threshold=0)
    graph = load_graph(path)
    got = graph.constants["w"]
    assert _mapped(got) and not got.flags.writeable
    assert np.array_equal(got, w) and got.dtype == np.float32 and got.shape == (64, 32)


def test_embedded_weights_load_as_before(tmp_path) -> None:
    w = np.arange(12, dtype=np.float32).reshape(4, 3)
    path = tmp_path / "m.onnx"
    onnx.save_model(_matmul_model(w), str(path))
    got = load_graph(path).constants["w"]
    assert not _mapped(got) and np.array_equal(got, w)


def _rope(seed: int, s: int, dh: int) -> Rope:
    angle = np.random.default_rng(seed).uniform(-3, 3, size=(s, dh // 2))
    cos = np.concatenate([np.cos(angle)] * 2, axis=1)
    sin = np.concatenate([-np.sin(angle), np.sin(angle)], axis=1)
    return Rope(cos=cos, sin=sin, partner=(np.arange(dh) + dh // 2) % dh)


def test_a_reused_rotation_must_pass_the_check() -> None:
    b, s, heads, dh = 1, 5, 2, 8

    def expect(x: np.ndarray) -> np.ndarray:
        return x.reshape(b, s, heads, dh).transpose(0, 2, 1, 3)

    first, second = _rope(1, s, dh), _rope(2, s, dh)
    got = fit_rope(lambda x: expect(first.apply(x, dh)), (b, s, heads * dh), dh, expect)
    assert got is not None and got[1] is not None and np.allclose(got[1].cos, first.cos)
    # same shape, other tables: the remembered rotation fails the check, the probes measure the new one
    got = fit_rope(lambda x: 2.0 * expect(second.apply(x, dh)), (b, s, heads * dh), dh, expect)
    assert got is not None and got[0] == 2.0 and np.allclose(got[1].sin, second.sin)  # type: ignore[union-attr]
    # and a chain without any rotation is still seen as one
    got = fit_rope(expect, (b, s, heads * dh), dh, expect)
    assert got is not None and got[1] is None
