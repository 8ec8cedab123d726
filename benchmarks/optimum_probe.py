"""Hugging Face Optimum's ONNX exports (``optimum-cli export onnx``), the way most users bring a Hub model to ONNX,
compiled from the CLI and checked against onnxruntime.

Each entry is a tiny transformers config (seeded random weights, saved with ``save_pretrained``, no downloads),
exported by Optimum for its task (decoders ``text-generation-with-past``: one ``model.onnx`` for every step;
encoder-decoders ``text2text-generation-with-past``: encoder, decoder, decoder with past and the merged decoder),
optionally through onnxruntime's optimizer (``--optimize O2``). Every exported file is compiled twice, float and
``--quant int8``, with ``--inputs`` of two samples sized by the file's own dim names (a decode step against a cache
of ``--past`` positions, or the prompt step with ``--past 0``), and printed as one line: ``ok`` with the attention
count and each output's smallest cosine against onnxruntime, or the compile's own error line.

Optimum pins transformers < 4.58, so its packages live in their own folder read ahead of the main venv
(``make .optimum-pkgs/.installed``; torch, onnx and onnxruntime are the venv's):

    python benchmarks/optimum_probe.py                       # every entry (about an hour on 2 idle cores)
    python benchmarks/optimum_probe.py llama t5 --past 0     # the prompt step
    python benchmarks/optimum_probe.py bert gpt2 --optimize O2
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

import numpy as np
import onnx

ROOT = Path(__file__).resolve().parent.parent
PKGS = ROOT / ".optimum-pkgs"

__all__ = ["ENTRIES", "main"]

_SIZES = {"hidden_size": 64, "num_hidden_layers": 2, "num_attention_heads": 4, "intermediate_size": 128,
          "vocab_size": 320}
_KV = {"num_key_value_heads": 2}
_S2S = {"d_model": 64, "encoder_layers": 2, "decoder_layers": 2, "encoder_attention_heads": 4,
        "decoder_attention_heads": 4, "encoder_ffn_dim": 128, "decoder_ffn_dim": 128, "vocab_size": 320}
_VIS = {"hidden_size": 64, "num_hidden_layers": 2, "num_attention_heads": 4, "intermediate_size": 128,
        "image_size": 32, "patch_size": 8}

#: name -> (model_type, Optimum task, config keys).
ENTRIES: dict[str, tuple[str, str, dict[str, Any]]] = {
    "bert": ("bert", "feature-extraction", _SIZES),
    "roberta": ("roberta", "feature-extraction", _SIZES),
    "distilbert": ("distilbert", "feature-extraction", {"dim": 64, "n_layers": 2, "n_heads": 4, "hidden_dim": 128}),
    "deberta-v2": ("deberta-v2", "feature-extraction", _SIZES),
    "gpt2": ("gpt2", "text-generation-with-past", _SIZES),
    "llama": ("llama", "text-generation-with-past", {**_SIZES, **_KV}),
    "qwen2": ("qwen2", "text-generation-with-past", {**_SIZES, **_KV}),
    "mistral": ("mistral", "text-generation-with-past", {**_SIZES, **_KV}),
    "phi3": ("phi3", "text-generation-with-past", {**_SIZES, **_KV, "pad_token_id": 0}),
    "gemma2": ("gemma2", "text-generation-with-past", {**_SIZES, **_KV, "head_dim": 16}),
    "falcon": ("falcon", "text-generation-with-past", _SIZES),
    "opt": ("opt", "text-generation-with-past", {**_SIZES, "ffn_dim": 128, "word_embed_proj_dim": 64}),
    "t5": ("t5", "text2text-generation-with-past", {"d_model": 64, "d_ff": 128, "num_layers": 2, "num_heads": 4,
                                                     "d_kv": 16, "vocab_size": 320}),
    "bart": ("bart", "text2text-generation-with-past", _S2S),
    "whisper": ("whisper", "automatic-speech-recognition-with-past", {**_S2S, "num_mel_bins": 16}),
    "albert": ("albert", "feature-extraction", {**_SIZES, "embedding_size": 32}),
    "electra": ("electra", "feature-extraction", {**_SIZES, "embedding_size": 32}),
    "mpnet": ("mpnet", "feature-extraction", _SIZES),
    "xlm-roberta": ("xlm-roberta", "feature-extraction", _SIZES),
    "mobilebert": ("mobilebert", "feature-extraction", {**_SIZES, "embedding_size": 32, "intra_bottleneck_size": 32,
                                                         "true_hidden_size": 32, "num_feedforward_networks": 2}),
    "qwen3": ("qwen3", "text-generation-with-past", {**_SIZES, **_KV, "head_dim": 16}),
    "gemma": ("gemma", "text-generation-with-past", {**_SIZES, **_KV, "head_dim": 16}),
    "phi": ("phi", "text-generation-with-past", _SIZES),
    "gpt_neox": ("gpt_neox", "text-generation-with-past", _SIZES),
    "bloom": ("bloom", "text-generation-with-past", _SIZES),
    "granite": ("granite", "text-generation-with-past", {**_SIZES, **_KV}),
    "olmo": ("olmo", "text-generation-with-past", {**_SIZES, **_KV}),
    "stablelm": ("stablelm", "text-generation-with-past", {**_SIZES, **_KV}),
    "gptj": ("gptj", "text-generation-with-past", {**_SIZES, "rotary_dim": 8}),
    "codegen": ("codegen", "text-generation-with-past", {**_SIZES, "rotary_dim": 8, "n_ctx": 64,
                                                         "n_positions": 64}),
    "marian": ("marian", "text2text-generation-with-past", {**_S2S, "decoder_start_token_id": 0,
                                                             "pad_token_id": 0}),
    "beit": ("beit", "image-classification", _VIS),
    "swin": ("swin", "image-classification", {"image_size": 32, "patch_size": 4, "embed_dim": 16,
                                              "depths": [1, 1], "num_heads": [2, 2], "window_size": 4}),
    "convnext": ("convnext", "image-classification", {"image_size": 32, "hidden_sizes": [16, 32], "depths": [1, 1],
                                                      "num_stages": 2}),
    "mobilevit": ("mobilevit", "image-classification", {"image_size": 64, "patch_size": 2,
                                                        "hidden_sizes": [16, 24, 32],
                                                        "neck_hidden_sizes": [8, 8, 16, 16, 24, 32, 64]}),
    "segformer": ("segformer", "semantic-segmentation", {"image_size": 64, "hidden_sizes": [16, 32, 48, 64],
                                                         "num_attention_heads": [1, 1, 2, 2], "depths": [1, 1, 1, 1],
                                                         "decoder_hidden_size": 32}),
    "yolos": ("yolos", "object-detection", {**_VIS, "image_size": [32, 32], "num_detection_tokens": 4}),
    "clip": ("clip", "feature-extraction", {"text_config": _SIZES, "projection_dim": 32,
                                            "vision_config": {k: v for k, v in _VIS.items()}}),
}


def _run(cmd: list[str], env: dict[str, str] | None = None) -> tuple[int, str]:
    done = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=1800)
    return done.returncode, done.stdout + done.stderr


def export(name: str, out: Path, optimize: str | None) -> Path:
    """Save the entry's seeded model and export it with optimum-cli into ``out`` (kept when already there)."""
    model_type, task, keys = ENTRIES[name]
    src, dst = out / name / "hf", out / name / ("onnx" + (f"-{optimize}" if optimize else ""))
    env = {**os.environ, "PYTHONPATH": str(PKGS)}
    if not (src / "config.json").exists():
        code = ("import torch; from transformers import AutoConfig; from optimum.exporters.tasks import TasksManager; "
                f"torch.manual_seed(0); cfg = AutoConfig.for_model({model_type!r}, **{keys!r}); "
                f"cls = TasksManager.get_model_class_for_task({task.replace('-with-past', '')!r}, "
                f"model_type={model_type!r}); cls.from_config(cfg).save_pretrained({str(src)!r})")
        code_rc, text = _run([sys.executable, "-c", code], env)
        if code_rc:
            raise RuntimeError("building the model: " + text.strip().splitlines()[-1])
    if not any(dst.glob("*.onnx")):
        cmd = [sys.executable, "-m", "optimum.commands.optimum_cli", "export", "onnx", "-m", str(src), "--task", task,
               str(dst)] + (["--optimize", optimize] if optimize else [])
        code_rc, text = _run(cmd, env)
        if code_rc or not any(dst.glob("*.onnx")):
            raise RuntimeError("optimum-cli: " + next((line for line in reversed(text.splitlines())
                                                       if "Error" in line), text.strip()[-200:]))
    return dst


def _dims(names: dict[str, int], param: str) -> int:
    if param in names:
        return names[param]
    if "+" in param:  # Optimum's mask length, past_sequence_length + sequence_length
        return sum(_dims(names, p.strip()) for p in param.split("+"))
    return names.get("past" if "past" in param else "seq", 8)


def _edge(config: dict[str, Any]) -> int:
    size = config.get("image_size", config.get("vision_config", {}).get("image_size", 32))
    return int(size[0] if isinstance(size, list) else size)


def samples(path: Path, past: int, config: dict[str, Any]) -> tuple[dict[str, np.ndarray], dict[str, int]]:
    """Two samples for every input of ``path`` (leading sample axis) and the dim names that size them."""
    model = onnx.load(str(path), load_external_data=False)
    seq = 1 if past else 6
    names = {"batch_size": 1, "sequence_length": seq, "past_sequence_length": past, "decoder_sequence_length": seq,
             "past_decoder_sequence_length": past, "encoder_sequence_length": 8, "encoder_sequence_length_out": 8,
             "num_channels": 3, "height": _edge(config), "width": _edge(config),
             "feature_size": config.get("num_mel_bins", 16), "nb_max_frames": 3000, "past": past, "seq": seq}
    rng = np.random.default_rng(0)
    arrays, used = {}, {}
    for inp in model.graph.input:
        dims = []
        for d in inp.type.tensor_type.shape.dim:
            size = d.dim_value or _dims(names, d.dim_param)
            dims.append(size)
            if d.dim_param.isidentifier():
                used[d.dim_param] = size
        kind, name = inp.type.tensor_type.elem_type, inp.name
        if kind == onnx.TensorProto.BOOL:  # a merged decoder's use_cache_branch: Optimum sets it from the cache
            value = np.full(dims, past > 0)
        elif kind == onnx.TensorProto.INT64:
            value = (np.ones(dims) if "mask" in name else np.broadcast_to(np.arange(past, past + dims[-1]), dims)
                     if "position" in name else rng.integers(0, 300, dims)).astype(np.int64)
        else:
            value = rng.standard_normal(dims).astype(np.float32)
        arrays[name] = np.stack([value, value])
    return arrays, used


def check(path: Path, past: int, config: dict[str, Any], quant: str, work: Path) -> str:
    """One compile of ``path`` from the CLI; its verdict line."""
    arrays, used = samples(path, past, config)
    npz, report = work / f"{path.stem}.npz", work / f"{path.stem}.{quant}.json"
    np.savez(str(npz), **arrays)  # pyright: ignore[reportArgumentType]  (numpy's stub types **kwds as allow_pickle)
    cmd = [sys.executable, "-m", "codesign", "compile", str(path), "-q", "--inputs", str(npz), "--json", str(report),
           "--quant", quant, *[a for n, v in used.items() for a in ("--shape", f"{n}={v}")]]
    code, text = _run(cmd, {**os.environ, "PYTHONPATH": str(ROOT)})
    if code:
        return (text.strip().splitlines() or ["?"])[-1][:240]
    result = json.loads(report.read_text())
    cosines = {k: round(v["cosine_min"], 5) for k, v in result["accuracy"]["outputs"].items() if "cosine_min" in v}
    shown = ", ".join(f"{k} {v}" for k, v in list(cosines.items())[:3])
    return f"ok: attention {result['patterns']['attention']}, min cosine {shown}"


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("names", nargs="*", help=f"entries (default: all of {', '.join(ENTRIES)})")
    parser.add_argument("--past", type=int, default=4, help="cached positions of a step (0: the prompt step)")
    parser.add_argument("--optimize", choices=("O1", "O2", "O3"), default=None)
    parser.add_argument("--out", type=Path, default=None, help="keep the exports here (default: a temporary folder)")
    args = parser.parse_args()
    if not (PKGS / "optimum").is_dir():
        sys.exit(f"{PKGS} is missing: make .optimum-pkgs/.installed")
    with tempfile.TemporaryDirectory() as tmp:
        out = args.out or Path(tmp)
        for name in args.names or ENTRIES:
            if name not in ENTRIES:
                sys.exit(f"unknown entry '{name}' (entries: {', '.join(ENTRIES)})")
            try:
                folder = export(name, out, args.optimize)
            except RuntimeError as err:
                print(f"{name}: {err}", flush=True)
                continue
            config = ENTRIES[name][2]
            for path in sorted(folder.glob("*.onnx")):
                for quant in ("none", "int8"):
                    print(f"{name} {path.name} {quant}: {check(path, args.past, config, quant, Path(tmp))}",
                          flush=True)


if __name__ == "__main__":
    main()
