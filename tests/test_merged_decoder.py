"""Hugging Face Optimum's merged decoder (compiler/frontend/merged_decoder.py): an ``If`` on the bool input
``use_cache_branch`` picks the first step or the cache step, as Optimum's runtime sets it from the caches' length.

The file is built the way ``optimum.onnx.merge_decoders`` writes one (an ``If`` whose branches read the outer graph's
inputs and initializers, both producing the logits and the grown caches): a first step that computes the cache from
the new rows only, and a cache step that appends them to the past."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper, numpy_helper

from codesign.cli import main

D = 8


def _branch(name: str, with_past: bool, fused: bool) -> onnx.GraphProto:
    """present = [past ++] rows @ wk (one head, [batch, 1, positions, D]); logits = softmax(rows present^T) present."""
    nodes = [helper.make_node("MatMul", ["rows", "wk"], [f"{name}/k"])]
    if with_past:
        nodes.append(helper.make_node("Concat", ["past_key_values.0.key", f"{name}/k"], [f"{name}/present"], axis=2))
    else:
        nodes.append(helper.make_node("Identity", [f"{name}/k"], [f"{name}/present"]))
    nodes += [helper.make_node("Transpose", [f"{name}/present"], [f"{name}/kt"], perm=[0, 1, 3, 2]),
              helper.make_node("MatMul", ["rows", f"{name}/kt"], [f"{name}/s"]),
              helper.make_node("Softmax", [f"{name}/s"], [f"{name}/p"], axis=-1),
              helper.make_node("MatMul", [f"{name}/p", f"{name}/present"], [f"{name}/attended"])]
    # an --optimize'd file's fused onnxruntime op inside the branch (expanded once the branch is inlined)
    nodes.append(helper.make_node("FastGelu", [f"{name}/attended"], [f"{name}/logits"], domain="com.microsoft")
                 if fused else helper.make_node("Identity", [f"{name}/attended"], [f"{name}/logits"]))
    # the cross-attention cache slot: computed on the first step, an empty placeholder on the cache step (as Optimum
    # pads the branch that does not produce it)
    cross = np.zeros((1, 1, 0, D), np.float32) if with_past else None
    if cross is None:
        nodes.append(helper.make_node("Relu", [f"{name}/k"], [f"{name}/cross"]))
    else:
        nodes.append(helper.make_node("Constant", [], [f"{name}/cross"], value=numpy_helper.from_array(cross)))
    outputs = [helper.make_tensor_value_info(f"{name}/{o}", TensorProto.FLOAT, None)
               for o in ("logits", "present", "cross")]
    return helper.make_graph(nodes, name, [], outputs)


def _merged(path: Path, fused: bool = False) -> None:
    wk = numpy_helper.from_array(np.random.default_rng(0).standard_normal((D, D)).astype(np.float32), "wk")
    node = helper.make_node("If", ["use_cache_branch"], ["logits", "present.0.key", "present.0.encoder.key"],
                            name="optimum::if",
                            then_branch=_branch("with_past", True, fused),
                            else_branch=_branch("no_past", False, fused))
    inputs = [helper.make_tensor_value_info("rows", TensorProto.FLOAT, ["batch_size", 1, "sequence_length", D]),
              helper.make_tensor_value_info("past_key_values.0.key", TensorProto.FLOAT,
                                            ["batch_size", 1, "past_sequence_length", D]),
              helper.make_tensor_value_info("use_cache_branch", TensorProto.BOOL, [1])]
    outputs = [helper.make_tensor_value_info(o, TensorProto.FLOAT, None)
               for o in ("logits", "present.0.key", "present.0.encoder.key")]
    graph = helper.make_graph([node], "merged", inputs, outputs, [wk])
    opsets = [helper.make_opsetid("", 17), helper.make_opsetid("com.microsoft", 1)]
    onnx.save(helper.make_model(graph, opset_imports=opsets, ir_version=8), str(path))


def _samples(past: int, switch: bool) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(past)
    return {"rows": rng.standard_normal((1, 1, 1, 3, D)).astype(np.float32),
            "past_key_values.0.key": rng.standard_normal((1, 1, 1, past, D)).astype(np.float32),
            "use_cache_branch": np.full((1, 1), switch)}


@pytest.mark.parametrize("fused", [False, True])
@pytest.mark.parametrize("past", [0, 4])
def test_the_caches_length_picks_the_branch(past: int, fused: bool, tmp_path: Path) -> None:
    """An empty cache compiles the first step (3 x 3 scores), a filled one the cache step (3 x 7), each equal to
    onnxruntime running the merged file with the switch Optimum's runtime would set; a fused onnxruntime op inside
    the branches (Optimum's --optimize) expands like one outside."""
    path = tmp_path / "decoder_model_merged.onnx"
    _merged(path, fused)
    samples = _samples(past, past > 0)
    npz, out, report = tmp_path / "in.npz", tmp_path / "out.npz", tmp_path / "r.json"
    np.savez(str(npz), **samples)  # pyright: ignore[reportArgumentType]  (numpy's stub types **kwds as allow_pickle)
    assert main(["compile", str(path), "-q", "--shape", "batch_size=1", "--shape", "sequence_length=3",
                 "--shape", f"past_sequence_length={past}", "--inputs", str(npz), "--outputs", str(out),
                 "--json", str(report)]) == 0
    keys = 3 + past
    result = json.loads(report.read_text())
    assert result["macs"] == 3 * D * D + 2 * 3 * keys * D
    # the cache step's empty placeholder output has nothing to compare; the first step's is compared
    assert (result["accuracy"]["outputs"]["present.0.encoder.key"] == {"elements": 0}) == (past > 0)
    want = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"]).run(
        None, {k: v[0] for k, v in samples.items()})
    got = np.load(out)
    np.testing.assert_allclose(got["logits"][0], np.asarray(want[0]), rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(got["present.0.key"][0], np.asarray(want[1]), rtol=1e-5, atol=1e-5)


def test_a_switch_against_its_caches_is_one_line(tmp_path: Path, capsys) -> None:
    path = tmp_path / "decoder_model_merged.onnx"
    _merged(path)
    npz = tmp_path / "in.npz"
    np.savez(str(npz), **_samples(4, False))  # pyright: ignore[reportArgumentType]  (numpy's stub types **kwds as allow_pickle)
    assert main(["compile", str(path), "-q", "--shape", "batch_size=1", "--shape", "sequence_length=3",
                 "--shape", "past_sequence_length=4", "--inputs", str(npz)]) == 2
    err = capsys.readouterr().err.strip()
    assert err == (f"codesign: error: --inputs {npz}: 'use_cache_branch' is False in a sample whose past_key_values "
                   "inputs are filled; Optimum's runtime sets it to True there (the compiled branch), so onnxruntime "
                   "would run the other one"), err


def test_caches_of_different_states_are_one_line(tmp_path: Path) -> None:
    """Self-attention caches empty and filled at once fit neither branch; an encoder-decoder's cross-attention caches
    (``.encoder.``, sized by the encoder on both steps) do not count."""
    from compiler.frontend.merged_decoder import cache_switch
    from hw.errors import InputError

    path = tmp_path / "m.onnx"
    _merged(path)
    model = onnx.load(str(path))
    shapes = {"use_cache_branch": (1,), "past_key_values.0.decoder.key": (1, 2, 0, 4),
              "past_key_values.0.encoder.key": (1, 2, 5, 4)}
    switch = cache_switch(model, shapes, "m.onnx")
    assert switch is not None and switch.tolist() == [False]
    shapes["past_key_values.1.decoder.key"] = (1, 2, 3, 4)
    with pytest.raises(InputError, match="^m.onnx: 'use_cache_branch' runs the first step when every past_key_values "
                                         "input is empty and the cache step when every one holds positions, but "
                                         "'past_key_values.0.decoder.key' is empty and 'past_key_values.1.decoder.key' "
                                         "is not; give every cache the same length$"):
        cache_switch(model, shapes, "m.onnx")
