"""Query rows whose every visible key is padding (a left-padded batch, an all-zero attention mask): the model's
own float result there depends on where its causal fill sits among the mask terms, and the float compile must give
it as onnxruntime does; int8 calibration on such data still has a range for every value.

GPT-Neo (transformers, built from a config) writes ``Where(causal, s, min) + padding``: a padded future key is
``min + min = -inf``, so a fully padded row spreads over the keys it may see (the op's ``causal_first``). A model
that fills last, ``Where(causal, s + padding, min)``, spreads such a row over every key. Both against onnxruntime,
row by row, with the standard and the flash kernel."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnxruntime as ort
import pytest
import torch

from codesign.api import compile
from codesign.cli import main as codesign_main
from compiler.dialect import dataflow as df
from examples import zoo
from examples._common import export_onnx

D, H, S = 32, 4, 8
PAD = 3  # left padding: query rows 0..2 see only padded keys


@pytest.fixture(scope="module")
def gpt_neo(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, np.ndarray]]:
    path = tmp_path_factory.mktemp("neo") / "gpt_neo.onnx"
    zoo.export("gpt-neo", "legacy:mask", path)
    return path, zoo.feeds("gpt-neo", "legacy:mask")


class _FillLast(torch.nn.Module):
    """One attention whose padding mask is added first and the causal fill replaces the scores last."""

    def __init__(self) -> None:
        super().__init__()
        self.qkv = torch.nn.Linear(D, 3 * D)
        self.keep = torch.nn.Buffer(torch.tril(torch.ones(S, S, dtype=torch.bool)))

    def forward(self, x: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        b, s, _ = x.shape
        q, k, v = (t.view(b, s, H, D // H).transpose(1, 2) for t in self.qkv(x).split(D, dim=-1))
        pad = (1.0 - attention_mask[:, None, None, :].float()) * torch.finfo(torch.float32).min
        scores = q @ k.transpose(-1, -2) * (D // H) ** -0.5 + pad
        scores = torch.where(self.keep, scores, torch.finfo(torch.float32).min)
        return (torch.softmax(scores, dim=-1) @ v).transpose(1, 2).reshape(b, s, D)


def _rows_error(path: Path, feeds: dict[str, np.ndarray], attention: str) -> tuple[np.ndarray, list[df.AttentionOp]]:
    """Per output row, the largest |compiled float - onnxruntime|; the compiled attention ops."""
    result = compile(str(path), "fpga-u280", inputs={k: v[None] for k, v in feeds.items()}, attention=attention)
    got = np.asarray(next(iter(result.env.artifacts["outputs"].values())))[0]
    want = np.asarray(ort.InferenceSession(str(path)).run(None, feeds)[0])
    ops = [op for op in result.module.walk() if isinstance(op, df.AttentionOp)]
    return np.abs(got - want).reshape(-1, want.shape[-1]).max(axis=-1), ops


@pytest.mark.parametrize("attention", ["standard", "flash"])
@pytest.mark.parametrize("padding", ["left", "all"])
def test_gpt_neo_padded_rows_match_onnxruntime(gpt_neo, attention: str, padding: str) -> None:
    path, feeds = gpt_neo
    mask = feeds["attention_mask"].copy()
    mask[:, :PAD if padding == "left" else None] = 0
    err, ops = _rows_error(path, {**feeds, "attention_mask": mask}, attention=attention)
    assert err.max() < 1e-4, err  # the padded rows were up to 3.7 off when the causal fill replaced the mask
    causal = [op for op in ops if op.causal_value()]
    assert causal and all(op.causal_first_value() for op in causal)


@pytest.mark.parametrize("attention", ["standard", "flash"])
def test_fill_last_spreads_a_padded_row_over_every_key(tmp_path: Path, attention: str) -> None:
    torch.manual_seed(0)
    x = torch.randn(1, S, D)
    mask = torch.ones(1, S, dtype=torch.int64)
    mask[:, :PAD] = 0
    path = tmp_path / "fill_last.onnx"
    export_onnx(_FillLast().eval(), [x, mask], path, input_names=["x", "attention_mask"],
                output_names=["y"], exporter="legacy")
    err, ops = _rows_error(path, {"x": x.numpy(), "attention_mask": mask.numpy()}, attention=attention)
    assert err.max() < 1e-5, err
    assert len(ops) == 1 and ops[0].causal_value() and not ops[0].causal_first_value()


def test_int8_calibrates_on_masks_without_a_real_token(gpt_neo, tmp_path: Path, capsys) -> None:
    """Ranges are taken over real positions only; data with none measures every row instead of refusing."""
    path, feeds = gpt_neo
    data = tmp_path / "zero_mask.npz"
    np.savez(data, **{k: (np.zeros_like(v) if k == "attention_mask" else v)[None] for k, v in feeds.items()})
    code = codesign_main(["compile", str(path), "--quant", "int8", "--inputs", str(data), "--json",
                          str(tmp_path / "r.json"), "-q"])
    assert code == 0, capsys.readouterr().err
