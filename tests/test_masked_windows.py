"""Swin's shifted windows skip their masked tiles window by window (compiler/schedule/attention.py).

The union over windows keeps every pair (the windows inside the image are not cut by the shift), so a plan that
reads one [Sq, Sk] pattern for the whole batch skips nothing; per window, the tiles whose every pair crosses a
region of the cyclic shift are not issued. The expected skips are counted here from transformers' own shift mask
(SwinLayer.get_attn_mask: 0 within a region, -100 across), tile by tile and window by window.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from codesign.api import compile

pytestmark = pytest.mark.slow

TILE = 4
FLASH = f"canonicalize,set-attention{{algorithm=flash tile_q={TILE} tile_k={TILE}}},fuse,tile,schedule"


def _masked_tiles(mask: np.ndarray) -> int:
    """Fully masked TILE x TILE tiles summed over the windows of a [W, S, S] shift mask."""
    w, s, _ = mask.shape
    blocks = (mask == 0).reshape(w, s // TILE, TILE, s // TILE, TILE).any(axis=(2, 4))
    return int((~blocks).sum())


def test_shifted_windows_skip_their_own_masked_tiles(tmp_path: Path) -> None:
    from examples import zoo

    path = tmp_path / "swin.onnx"
    module = zoo.export("swin", "legacy", path)
    feeds = {k: v[None] for k, v in zoo.feeds("swin").items()}
    report = compile(path, passes=FLASH, inputs=feeds).report
    assert report is not None
    want = []
    side = zoo.ARCHS["swin"].image // 2  # patch size 2
    for stage, layer in enumerate(module.model.encoder.layers):  # type: ignore[union-attr]
        res = side >> stage
        for block in layer.blocks:
            block.set_shift_and_window_size((res, res))
            mask = block.get_attn_mask(res, res, torch.float32, torch.device("cpu"))
            heads = block.attention.num_attention_heads
            want.append(None if mask is None else heads * _masked_tiles(mask.numpy()))
    details = [layer["detail"] for layer in report["layers"] if layer["op"] == "attention"]
    assert [d.get("masked_tiles_skipped") for d in details] == want
    assert sum(w for w in want if w) > 0
    assert all(d["cycles_saved"] > 0 for d, w in zip(details, want) if w)
    assert report["attention"]["masked_tiles_skipped"] == sum(w for w in want if w)
    assert report["accuracy"]["outputs"]["last_hidden_state"]["cosine_min"] >= 0.9999
    edge = compile(path, attention="edge-moe").report
    assert edge is not None and edge["attention"]["masked_tiles_skipped"] > 0
