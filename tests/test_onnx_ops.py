"""ONNX op semantics on real exports: tiny RoBERTa and OPT (random weights from transformers configs) compile with
``--quant int8``, whose calibration runs the CumSum their position ids use (axis given as a one-element array)."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
import torch

from codesign.cli import main

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "examples"))
from _common import export_onnx, reinit_, seed_all  # noqa: E402

SEQ = 8


class _Hidden(torch.nn.Module):
    """The HF model called by keyword, returning last_hidden_state only."""

    def __init__(self, model: torch.nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        return self.model(input_ids=input_ids, attention_mask=attention_mask).last_hidden_state


def _model(family: str) -> torch.nn.Module:
    from transformers import OPTConfig, OPTModel, RobertaConfig, RobertaModel

    seed_all(0)
    if family == "roberta":
        model = RobertaModel(RobertaConfig(num_hidden_layers=1, hidden_size=32, num_attention_heads=2,
                                           intermediate_size=64, vocab_size=100, max_position_embeddings=32,
                                           attn_implementation="eager"), add_pooling_layer=False)  # pyright: ignore[reportCallIssue]  (a PretrainedConfig kwarg the config's typed __init__ omits)
    else:
        model = OPTModel(OPTConfig(num_hidden_layers=1, hidden_size=32, num_attention_heads=2, ffn_dim=64,
                                   vocab_size=100, max_position_embeddings=32, word_embed_proj_dim=32,
                                   attn_implementation="eager"))  # pyright: ignore[reportCallIssue]  (a PretrainedConfig kwarg the config's typed __init__ omits)
    reinit_(model, 0)
    return _Hidden(model.eval()).eval()


@pytest.mark.slow
@pytest.mark.parametrize("exporter", ["legacy", "dynamo"])
@pytest.mark.parametrize("family", ["roberta", "opt"])
def test_int8_compiles_roberta_and_opt(tmp_path, capsys, family, exporter):
    path = tmp_path / f"{family}_{exporter}.onnx"
    ids = torch.randint(3, 100, (1, SEQ), generator=torch.Generator().manual_seed(1))
    mask = torch.ones(1, SEQ, dtype=torch.int64)
    export_onnx(_model(family), [ids, mask], path, input_names=["input_ids", "attention_mask"],
                output_names=["last_hidden_state"], exporter=exporter)
    code = main(["compile", str(path), "--quant", "int8", "--json", str(tmp_path / "r.json"), "-q"])
    _, err = capsys.readouterr()
    assert code == 0, err
