"""Fully masked attention tiles are not issued by ``flash`` and ``edge-moe`` (compiler/schedule/attention.py).

Real exports (tests/decoder_exports.py): a causal GPT-2 prefill and a Mistral prefill whose sliding window makes a
banded constant mask. The expected skips are counted here independently, tile by tile, from the mask's definition
(causal: key <= query; Mistral's window w: query - w < key <= query); the float simulation still equals onnxruntime.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest

import compiler.schedule.attention as attention
from codesign.api import compile
from tests.decoder_exports import HEADS, LAYERS, export_prefill

SEQ, TILE, WINDOW = 64, 16, 24
FLASH = f"canonicalize,set-attention{{algorithm=flash tile_q={TILE} tile_k={TILE}}},fuse,tile,schedule"


@pytest.fixture(scope="module")
def exports(tmp_path_factory: pytest.TempPathFactory) -> dict[str, tuple[Path, dict[str, np.ndarray]]]:
    root = tmp_path_factory.mktemp("masked")
    gpt2, mistral = root / "gpt2.onnx", root / "mistral.onnx"
    return {"gpt2": (gpt2, export_prefill("gpt2", SEQ, gpt2)),
            "mistral": (mistral, export_prefill("mistral", SEQ, mistral, window=WINDOW))}


def _allowed(window: int | None) -> np.ndarray:
    q, k = np.arange(SEQ)[:, None], np.arange(SEQ)[None, :]
    keep = k <= q
    return keep & (q - k < window) if window else keep


def _masked_tiles(allowed: np.ndarray, tile: int) -> int:
    n = math.ceil(SEQ / tile)
    return sum(not allowed[i * tile:(i + 1) * tile, j * tile:(j + 1) * tile].any() for i in range(n) for j in range(n))


def _skipped_steps(allowed: np.ndarray, lanes: int) -> int:
    """Edge-MoE steps whose every lane meets a masked key (lane o visits key (s + o) mod Sk at step s)."""
    skipped = 0
    for group in range(math.ceil(SEQ / lanes)):
        for s in range(SEQ):
            queries = [(q, q - lanes * group) for q in range(lanes * group, min(SEQ, lanes * (group + 1)))]
            skipped += not any(allowed[q, (s + o) % SEQ] for q, o in queries)
    return skipped


def _attn_details(report: dict | None) -> list[dict]:
    return [layer["detail"] for layer in report["layers"] if layer["op"] == "attention"]


@pytest.mark.slow
@pytest.mark.parametrize("family, window", [("gpt2", None), ("mistral", WINDOW)])
def test_flash_skips_exactly_the_fully_masked_tiles(exports, monkeypatch: pytest.MonkeyPatch, family: str,
                                                    window: int | None) -> None:
    path, feeds = exports[family]
    report = compile(path, passes=FLASH, inputs=feeds).report
    assert report["patterns"]["attention"] == LAYERS
    per_layer = HEADS * _masked_tiles(_allowed(window), TILE)
    assert per_layer > 0
    details = _attn_details(report)
    assert [d["masked_tiles_skipped"] for d in details] == [per_layer] * LAYERS
    assert [d["tiles_total"] for d in details] == [HEADS * (SEQ // TILE) ** 2] * LAYERS
    assert all(d["cycles_saved"] > 0 for d in details)
    assert report["attention"]["masked_tiles_skipped"] == LAYERS * per_layer
    assert min(o["cosine_min"] for o in report["accuracy"]["outputs"].values()) >= 0.9999
    # Without skipping (the mask unknown to the plan), the same compile takes longer and moves more.
    monkeypatch.setattr(attention, "allowed_keys", lambda *_args, **_kw: None)
    full = compile(path, passes=FLASH).report
    assert full is not None and "attention" not in full
    assert full["latency_cycles"] > report["latency_cycles"]
    assert full["bytes_offchip"] > report["bytes_offchip"]
    saved = sum(d["cycles_saved"] for d in details)  # compute cycles, the arrays' readout included
    busy = [sum(layer["compute_cycles"] + layer["drain_cycles"] for layer in r["layers"] if layer["op"] == "attention")
            for r in (full, report)]
    assert busy[0] - busy[1] == saved


@pytest.mark.slow
def test_edge_moe_skips_steps_whose_lanes_all_meet_masked_keys(exports) -> None:
    path, _ = exports["gpt2"]
    report = compile(path, attention="edge-moe").report
    details = _attn_details(report)
    lanes = details[0]["lanes"]
    assert [d["masked_tiles_skipped"] for d in details] == [HEADS * _skipped_steps(_allowed(None), lanes)] * LAYERS
    assert all(d["cycles_saved"] > 0 for d in details)


@pytest.mark.slow
def test_standard_order_skips_nothing(exports) -> None:
    report = compile(exports["gpt2"][0]).report
    assert report is not None and "attention" not in report
    assert not any("masked_tiles_skipped" in d for d in _attn_details(report))


def test_block_diagonal_windows_any_size() -> None:
    """Windows of 8 (block-diagonal, Swin-like) in 32 tokens: 8x8 tiles keep the 4 diagonal ones; 16x16 tiles keep
    the 2 diagonal ones; 12x12 tiles (not aligned to the windows) keep the tiles a window touches."""
    blocks = np.kron(np.eye(4, dtype=bool), np.ones((8, 8), dtype=bool))
    assert attention.flash_active_tiles(blocks, 8, 8) == (4, 4 * 64)
    assert attention.flash_active_tiles(blocks, 16, 16) == (2, 2 * 256)
    touched = sum(blocks[i:i + 12, j:j + 12].any() for i in range(0, 32, 12) for j in range(0, 32, 12))
    assert attention.flash_active_tiles(blocks, 12, 12)[0] == touched < 9
    # Edge-MoE: one lane per group visits keys in order, so a step is issued exactly where the row keeps its key.
    assert attention.edge_moe_active_steps(blocks, 1) == (int(blocks.sum()), int(blocks.sum()))
