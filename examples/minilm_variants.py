"""The pretrained MiniLM as a new user often exports it: ``input_ids`` only, fixed length, padding attended.

The quantization issue's setting: all-MiniLM-L6-v2 exported with one input (``input_ids`` [1, seq_len]; the model
then attends to every position, padding included, with token types all 0), and calibrated on a handful of
sentences written unlike the evaluated ones (examples/data/minilm_sentences.npz): questions, instructions, numbers,
error messages, chat. Tests and benchmarks/accuracy_table.py measure quantization recipes on it.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from _common import export_onnx
from export_minilm import OUTPUT, SENTENCES, load_minilm, tokenize

__all__ = ["UNLIKE_SENTENCES", "export_ids_only", "unlike_calibration"]

#: 20 calibration sentences, disjoint from and unlike SENTENCES and CALIBRATION_SENTENCES (short descriptive ones).
UNLIKE_SENTENCES: tuple[str, ...] = (
    "How do I reset my password if I no longer have access to the recovery email?",
    "Error 404: the requested page could not be found on this server.",
    "Preheat the oven to 220 degrees, then bake for 35 minutes.",
    "Why does the moon look larger near the horizon?",
    "Q3 revenue grew 12% year over year, driven by cloud services.",
    "Click 'Save' and restart the application to apply your changes.",
    "According to the 1998 census, the town had 4,312 inhabitants.",
    "lol that was the funniest thing i've seen all week",
    "Is it safe to mix bleach and vinegar when cleaning?",
    "The defendant pleaded not guilty to all three charges on Tuesday.",
    "Install the package with pip, then import it in your script.",
    "What time does the pharmacy on Main Street close on Sundays?",
    "Photosynthesis converts light energy into chemical energy stored in glucose.",
    "Dear Sir or Madam, I am writing to complain about my recent order.",
    "Tickets: $25 for adults, $10 for children under twelve.",
    "Can you recommend a good book about the history of mathematics?",
    "WARNING: do not operate heavy machinery after taking this medication.",
    "The treaty was signed in Vienna in 1815 after months of negotiation.",
    "Turn left at the second roundabout and follow the signs to the airport.",
    "My flight got delayed again, so I'll miss the connection in Frankfurt :(",
)


class _IdsOnly(torch.nn.Module):
    """BertModel called with input_ids alone: no attention mask (padding attended), token types 0."""

    def __init__(self, model: torch.nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, input_ids: torch.Tensor) -> torch.Tensor:
        return self.model.model(input_ids=input_ids).last_hidden_state


def export_ids_only(out_path: Path, seq_len: int = 32) -> Path:
    """Export the pretrained MiniLM with the single input ``input_ids`` [1, seq_len] (legacy exporter)."""
    model, tokenizer = load_minilm()
    ids = tokenize(tokenizer, SENTENCES[:1], seq_len)["input_ids"][0]
    export_onnx(_IdsOnly(model), [torch.from_numpy(ids)], out_path, input_names=["input_ids"],
                output_names=[OUTPUT], exporter="legacy")
    return out_path


def unlike_calibration(seq_len: int = 32) -> dict[str, np.ndarray]:
    """UNLIKE_SENTENCES tokenised like minilm_sentences.npz: input_ids, attention_mask, token_type_ids [N, 1, L]."""
    _, tokenizer = load_minilm()
    return tokenize(tokenizer, UNLIKE_SENTENCES, seq_len)
