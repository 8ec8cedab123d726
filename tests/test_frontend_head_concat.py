"""Keys assembled from parts (multi-head latent attention): ScatterND box writes lowered to Concat
(compiler/frontend/scatter_box.py), head parts from two projections concatenated before the head split
(compiler/frontend/head_concat.py), a rotation that de-interleaves the pairs it rotates (compiler/frontend/rope.py).
Each rewrite must compute what the graph computed; the attention over such a key is recognised and simulates like
torch."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import pytest
import torch
from onnx import TensorProto, helper, numpy_helper

from compiler.frontend.graph import Graph
from compiler.frontend.head_concat import hoist_head_concats
from compiler.frontend.onnx_loader import load_graph
from compiler.frontend.onnx_ops import run_node
from compiler.frontend.rope import fit_rope
from compiler.frontend.scatter_box import lower_box_scatters

B, H, S, DN, DR = 1, 2, 5, 3, 4  # batch, heads, tokens, per-head dims, shared rotary dims


def _run(graph: Graph, feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    values: dict[str, np.ndarray] = {**feeds, **graph.constants}
    for node in graph.nodes:
        args = [values[i] if i else None for i in node.inputs]
        values.update(zip(node.outputs, run_node(node.op_type, args, node.attrs, len(node.outputs))))
    return values


def _box_indices(shape: tuple[int, ...], lo: int, hi: int) -> np.ndarray:
    """ScatterND indices of ``t[..., lo:hi]`` for a ``shape`` tensor, as torch's legacy export writes them."""
    grids = np.meshgrid(*[np.arange(n) for n in shape[:-1]], np.arange(lo, hi), indexing="ij")
    return np.stack(grids, -1).astype(np.int64)


def _two_writes(indices_b: np.ndarray | None = None) -> onnx.ModelProto:
    """key = empty; key[..., :DN] = a; key[..., DN:] = b (two ScatterNDs), then key * 2."""
    full = (B, H, S, DN + DR)
    ins = [helper.make_tensor_value_info("a", TensorProto.FLOAT, [B, H, S, DN]),
           helper.make_tensor_value_info("b", TensorProto.FLOAT, [B, H, S, DR])]
    inits = {"empty": np.zeros(full, np.float32), "ia": _box_indices(full, 0, DN),
             "ib": _box_indices(full, DN, DN + DR) if indices_b is None else indices_b,
             "two": np.array(2.0, np.float32)}
    nodes = [helper.make_node("ScatterND", ["empty", "ia", "a"], ["k1"]),
             helper.make_node("ScatterND", ["k1", "ib", "b"], ["k2"]),
             helper.make_node("Mul", ["k2", "two"], ["y"])]
    graph = helper.make_graph(nodes, "g", ins, [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)],
                              initializer=[numpy_helper.from_array(v, k) for k, v in inits.items()])
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])


def _feeds() -> dict[str, np.ndarray]:
    rng = np.random.default_rng(0)
    return {"a": rng.normal(size=(B, H, S, DN)).astype(np.float32),
            "b": rng.normal(size=(B, H, S, DR)).astype(np.float32)}


def test_box_scatters_become_one_concat_of_the_parts(tmp_path: Path) -> None:
    """Both slice writes lower; the second one's read-back of the first is the first part itself, so the key is
    Concat(a, b) and the zero-filled intermediate is gone."""
    onnx.save(_two_writes(), tmp_path / "m.onnx")
    graph = load_graph(tmp_path / "m.onnx")
    before = _run(graph, _feeds())["y"]
    assert lower_box_scatters(graph) == 2
    assert not any(n.op_type in ("ScatterND", "Slice") for n in graph.nodes)
    (concat,) = [n for n in graph.nodes if n.op_type == "Concat"]
    assert concat.inputs == ["a", "b"]
    np.testing.assert_array_equal(_run(graph, _feeds())["y"], before)


def test_scatter_whose_indices_are_not_a_box_stays(tmp_path: Path) -> None:
    """Indices in another order than the box's row-major one are a permutation, not a slice write."""
    full = (B, H, S, DN + DR)
    shuffled = _box_indices(full, DN, DN + DR)[..., ::-1, :].copy()
    onnx.save(_two_writes(shuffled), tmp_path / "m.onnx")
    graph = load_graph(tmp_path / "m.onnx")
    before = _run(graph, _feeds())["y"]
    assert lower_box_scatters(graph) == 1
    assert [n.op_type for n in graph.nodes].count("ScatterND") == 1
    np.testing.assert_array_equal(_run(graph, _feeds())["y"], before)


def _parts_then_scores(heads_first: bool) -> onnx.ModelProto:
    """Query heads concatenated from two projections of x (after the head transpose when ``heads_first``, before
    it otherwise), multiplied with the key heads of a third: the scores of an attention."""
    d = H * (DN + DR)
    rng = np.random.default_rng(1)
    inits = {"wa": rng.normal(size=(8, H * DN)).astype(np.float32), "wb": rng.normal(size=(8, H * DR)),
             "wk": rng.normal(size=(8, d)).astype(np.float32), "sa": np.array([B, S, H, DN]),
             "sb": np.array([B, S, H, DR]), "sk": np.array([B, S, H, DN + DR])}
    inits["wb"] = inits["wb"].astype(np.float32)
    perm = [0, 2, 1, 3]
    nodes = [helper.make_node("MatMul", ["x", "wa"], ["pa"]), helper.make_node("MatMul", ["x", "wb"], ["pb"]),
             helper.make_node("MatMul", ["x", "wk"], ["pk"]), helper.make_node("Reshape", ["pa", "sa"], ["ha"]),
             helper.make_node("Reshape", ["pb", "sb"], ["hb"]), helper.make_node("Reshape", ["pk", "sk"], ["hk"]),
             helper.make_node("Transpose", ["hk"], ["kt"], perm=[0, 2, 3, 1])]
    if heads_first:
        nodes += [helper.make_node("Transpose", ["ha"], ["ta"], perm=perm),
                  helper.make_node("Transpose", ["hb"], ["tb"], perm=perm),
                  helper.make_node("Concat", ["ta", "tb"], ["q"], axis=-1)]
    else:
        nodes += [helper.make_node("Concat", ["ha", "hb"], ["qs"], axis=-1),
                  helper.make_node("Transpose", ["qs"], ["q"], perm=perm)]
    nodes.append(helper.make_node("MatMul", ["q", "kt"], ["scores"]))
    graph = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [B, S, 8])],
                              [helper.make_tensor_value_info("scores", TensorProto.FLOAT, None)],
                              initializer=[numpy_helper.from_array(v, k) for k, v in inits.items()])
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])


@pytest.mark.parametrize("heads_first", [True, False])
def test_head_parts_of_two_projections_get_one_source(tmp_path: Path, heads_first: bool) -> None:
    """The Concat of head parts from two projections becomes a [B, S, H*Dh] tensor viewed back into its layout;
    the scores are unchanged."""
    onnx.save(_parts_then_scores(heads_first), tmp_path / "m.onnx")
    graph = load_graph(tmp_path / "m.onnx")
    x = {"x": np.random.default_rng(2).normal(size=(B, S, 8)).astype(np.float32)}
    before = _run(graph, x)["scores"]
    assert hoist_head_concats(graph) == 1
    producers = graph.producers()
    name = "q" if heads_first else "qs"
    while len(graph.shapes[name]) != 3:  # back through the view to the one [B, S, H*Dh] source
        assert producers[name].op_type in ("Transpose", "Reshape")
        name = producers[name].inputs[0]
    assert graph.shapes[name] == (B, S, H * (DN + DR)) and producers[name].op_type == "Reshape"
    np.testing.assert_allclose(_run(graph, x)["scores"], before, rtol=1e-6, atol=1e-6)


def test_head_parts_of_one_projection_are_left_to_the_rotary_fit(tmp_path: Path) -> None:
    """Parts sliced from one projection and concatenated back (partial rotary: one part scaled) are not moved."""
    d = H * (DN + DR)
    rng = np.random.default_rng(1)
    inits = {"w": rng.normal(size=(8, d)).astype(np.float32), "s": np.array([B, S, H, DN + DR]),
             "lo": np.array([0]), "mid": np.array([DN]), "hi": np.array([DN + DR]), "ax": np.array([3]),
             "c": np.array(0.5, np.float32)}
    nodes = [helper.make_node("MatMul", ["x", "w"], ["p"]), helper.make_node("Reshape", ["p", "s"], ["h"]),
             helper.make_node("Transpose", ["h"], ["t"], perm=[0, 2, 1, 3]),
             helper.make_node("Slice", ["t", "lo", "mid", "ax"], ["a"]),
             helper.make_node("Slice", ["t", "mid", "hi", "ax"], ["b"]), helper.make_node("Mul", ["b", "c"], ["bc"]),
             helper.make_node("Concat", ["a", "bc"], ["q"], axis=-1),
             helper.make_node("Transpose", ["t"], ["kt"], perm=[0, 1, 3, 2]),
             helper.make_node("MatMul", ["q", "kt"], ["scores"])]
    graph = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [B, S, 8])],
                              [helper.make_tensor_value_info("scores", TensorProto.FLOAT, None)],
                              initializer=[numpy_helper.from_array(v, k) for k, v in inits.items()])
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), tmp_path / "m.onnx")
    assert hoist_head_concats(load_graph(tmp_path / "m.onnx")) == 0


def test_fit_rope_recovers_a_rotation_that_deinterleaves_its_pairs() -> None:
    """DeepSeek's rope_interleave: output dim i < R/2 is x[2i] cos - x[2i+1] sin, dim R/2 + i is x[2i+1] cos +
    x[2i] sin; no output dim reads its own input dim, and the fit still reproduces the chain exactly."""
    b, s, h, dh = 1, 6, 2, 8
    inv = 1.0 / (10000 ** (np.arange(0, dh, 2) / dh))
    ang = np.arange(s)[:, None] * inv[None, :]
    cos, sin = np.concatenate([np.cos(ang)] * 2, -1), np.concatenate([np.sin(ang)] * 2, -1)

    def chain(x: np.ndarray) -> np.ndarray:
        x4 = x.reshape(b, s, h, dh)
        de = np.concatenate([x4[..., ::2], x4[..., 1::2]], -1)  # the de-interleave
        turned = np.concatenate([-de[..., dh // 2:], de[..., : dh // 2]], -1)
        return (de * cos[None, :, None] + turned * sin[None, :, None]).transpose(0, 2, 1, 3)

    fit = fit_rope(chain, (b, s, h * dh), dh, lambda x: x.reshape(b, s, h, dh).transpose(0, 2, 1, 3))
    assert fit is not None
    factor, rope = fit
    assert factor == pytest.approx(1.0)
    assert rope is not None and rope.source is not None and rope.style == "other"
    x = np.random.default_rng(3).normal(size=(b, s, h * dh))
    np.testing.assert_allclose(rope.apply(x, dh).reshape(b, s, h, dh).transpose(0, 2, 1, 3), chain(x),
                               rtol=1e-12, atol=1e-12)


class _LatentAttention(torch.nn.Module):
    """A key of a per-head part and one rotated part shared by every head, written into an empty tensor as
    DeepSeek-V3 writes it; the query's rotated dims last."""

    def __init__(self, d: int = 32, heads: int = 4, nope: int = 8, rope: int = 8, seq: int = 6) -> None:
        super().__init__()
        self.h, self.nope, self.rope = heads, nope, rope
        self.q = torch.nn.Linear(d, heads * (nope + rope), bias=False)
        self.kv_a = torch.nn.Linear(d, 16 + rope, bias=False)
        self.kv_b = torch.nn.Linear(16, heads * (nope + nope), bias=False)
        self.o = torch.nn.Linear(heads * nope, d, bias=False)
        ang = torch.arange(seq)[:, None] / (100 ** (torch.arange(0, rope, 2) / rope))[None, :]
        self.cos: torch.Tensor
        self.sin: torch.Tensor
        self.register_buffer("cos", torch.cat([ang.cos()] * 2, -1))
        self.register_buffer("sin", torch.cat([ang.sin()] * 2, -1))

    def _rotate(self, x: torch.Tensor) -> torch.Tensor:
        half = x.shape[-1] // 2
        return x * self.cos + torch.cat([-x[..., half:], x[..., :half]], -1) * self.sin

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, s, _ = x.shape
        q = self.q(x).view(b, s, self.h, -1).transpose(1, 2)
        q_pass, q_rot = q.split([self.nope, self.rope], -1)
        latent, k_rot = self.kv_a(x).split([16, self.rope], -1)
        kv = self.kv_b(latent).view(b, s, self.h, -1).transpose(1, 2)
        k_nope, v = kv.split([self.nope, self.nope], -1)
        k_rot = self._rotate(k_rot.view(b, 1, s, self.rope)).expand(-1, self.h, -1, -1)
        key = k_nope.new_empty(b, self.h, s, self.nope + self.rope)
        key[..., : self.nope].copy_(k_nope)
        key[..., self.nope:].copy_(k_rot)
        query = torch.cat([q_pass, self._rotate(q_rot)], -1)
        out = torch.nn.functional.scaled_dot_product_attention(query, key, v)
        return self.o(out.transpose(1, 2).reshape(b, s, -1))


@pytest.mark.parametrize("exporter", ["legacy", "dynamo"])
def test_latent_attention_key_built_by_slice_writes_is_recognised(tmp_path: Path, exporter: str) -> None:
    from torch.nn.attention import SDPBackend, sdpa_kernel
    from torch.utils.flop_counter import FlopCounterMode

    from codesign.api import compile
    from examples._common import export_onnx, reinit_, seed_all

    seed_all(0)
    module = _LatentAttention().eval()
    reinit_(module, 0)
    x = torch.randn(1, 6, 32, generator=torch.Generator().manual_seed(1))
    path = tmp_path / "mla.onnx"
    export_onnx(module, [x], path, input_names=["x"], output_names=["y"], exporter=exporter)  # type: ignore[arg-type]
    with torch.no_grad(), sdpa_kernel(SDPBackend.MATH), FlopCounterMode(display=False) as counter:
        module(x)
    result = compile(path, inputs={"x": x.numpy()[None]})
    assert result.imported.patterns["attention"] == 1
    assert abs(result.report["macs"] - counter.get_total_flops() // 2) <= 0.005 * result.report["macs"]
    assert result.report["accuracy"]["outputs"]["y"]["cosine_min"] >= 0.9999
