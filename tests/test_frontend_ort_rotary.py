"""onnxruntime's RotaryEmbedding (compiler/frontend/ort_rotary.py): the rotation onnxruntime's LLaMA scripts and the
onnxruntime-genai builder's MultiHeadAttention decoders write before attention expands into standard ops equal to
onnxruntime's kernel: [B, S, hidden] or [B, N, S, H] inputs, [B, S] position ids or one start offset, rotate-half or
interleaved pairs, full or partial rotary; what the expansion does not implement is refused in one line naming the
node. A builder's MultiHeadAttention decoder with it compiles with its attentions found (tests/
test_frontend_ort_gqa.py)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper, numpy_helper

from codesign.api import compile
from codesign.cli import main

B, S, N, H = 2, 5, 4, 32


def _model(rank: int, positions: str, half: int, **attrs: Any) -> onnx.ModelProto:
    """One RotaryEmbedding on x ([B, S, N*H] or [B, N, S, H]); ``positions`` "ids" (a [B, S] input) or "offset"
    (a constant start of 3); cos / sin tables of 64 positions and width ``half``."""
    rng = np.random.default_rng(0)
    angles = np.arange(64)[:, None] * rng.uniform(0.01, 1.0, half)[None]
    inits = [numpy_helper.from_array(np.cos(angles).astype(np.float32), "cos"),
             numpy_helper.from_array(np.sin(angles).astype(np.float32), "sin")]
    shape = [B, S, N * H] if rank == 3 else [B, N, S, H]
    inputs = [helper.make_tensor_value_info("x", TensorProto.FLOAT, shape)]
    if positions == "ids":
        inputs.append(helper.make_tensor_value_info("pos", TensorProto.INT64, [B, S]))
    else:
        inits.append(numpy_helper.from_array(np.array([3], np.int64), "pos"))
    node = helper.make_node("RotaryEmbedding", ["x", "pos", "cos", "sin"], ["y"], name="rope",
                            domain="com.microsoft", **attrs)
    graph = helper.make_graph([node], "g", inputs, [helper.make_tensor_value_info("y", TensorProto.FLOAT, shape)],
                              inits)
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17),
                                                   helper.make_opsetid("com.microsoft", 1)], ir_version=8)


#: name -> (input rank, positions, table width, attributes).
CASES: dict[str, tuple[int, str, int, dict[str, Any]]] = {
    "3d-ids-rotate-half": (3, "ids", H // 2, {"num_heads": N}),
    "3d-offset-interleaved": (3, "offset", H // 2, {"num_heads": N, "interleaved": 1}),
    "3d-ids-partial": (3, "ids", 8, {"num_heads": N, "rotary_embedding_dim": 16}),
    "4d-offset": (4, "offset", H // 2, {}),
}


@pytest.mark.parametrize("case", list(CASES))
def test_rotary_embedding_matches_onnxruntime(case: str, tmp_path: Path) -> None:
    rank, positions, half, attrs = CASES[case]
    path = tmp_path / "rope.onnx"
    onnx.save(_model(rank, positions, half, **attrs), str(path))
    rng = np.random.default_rng(1)
    feeds: dict[str, np.ndarray] = {"x": rng.standard_normal([B, S, N * H] if rank == 3 else [B, N, S, H]).astype(
        np.float32)}
    if positions == "ids":
        feeds["pos"] = rng.integers(0, 64, (B, S))
    want = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"]).run(None, feeds)[0]
    out = tmp_path / "out.npz"
    compile(str(path), inputs={k: v[None] for k, v in feeds.items()}, outputs=str(out))
    np.testing.assert_allclose(np.load(out)["y"][0], np.asarray(want), rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize(("attrs", "message"), [
    ({"num_heads": N, "scale": 0.5}, "scale=0.5 is not supported"),
    ({"num_heads": N, "is_packed_batching": 1}, "is_packed_batching=1 is not supported"),
    ({"num_heads": N, "rotary_embedding_dim": 8}, "rotary_embedding_dim=8 with a cos_cache of width 16"),
])
def test_what_the_expansion_does_not_implement_is_refused_in_one_line(attrs: dict[str, Any], message: str,
                                                                     tmp_path: Path, capsys) -> None:
    path = tmp_path / "rope.onnx"
    onnx.save(_model(3, "offset", H // 2, **attrs), str(path))
    assert main(["compile", str(path), "-q"]) == 2
    err = capsys.readouterr().err.strip()
    assert "\n" not in err and "com.microsoft.RotaryEmbedding (node 'rope')" in err and message in err, err
