"""The model zoo: tiny transformers configs of many architectures, built the same way and checked the same way.

Each architecture is a config (2 layers, hidden 64, 4 heads, vocab 128, 16 tokens or a 32x32 image with 8x8
patches; the table of them is examples/zoo_archs.py) with seeded random weights (`reinit_`), wrapped so that one
tensor comes out (`last_hidden_state`):

* text encoders take ``input_ids`` and ``attention_mask`` as graph inputs, the last quarter padded, so the export
  keeps the padding-mask path (variant ``:mask``), and ``input_ids`` alone (``:nomask``);
* decoders take ``input_ids`` only, the all-ones mask made inside the wrapper, so the exporter builds the causal
  mask from shapes (``:nomask``), and ``input_ids`` with a padded ``attention_mask`` input (``:mask``);
* vision models take ``pixel_values`` [1, 3, 32, 32] (video models [1, 4, 3, 32, 32]: 4 frames);
* encoder-decoders take ``input_ids``, ``attention_mask`` and ``decoder_input_ids``;
* speech encoders take a raw waveform ``input_values`` [1, 400] (a conv feature extractor makes the frames);
* speech encoder-decoders (Whisper) take log-mel ``input_features`` [1, 16, 32] and ``decoder_input_ids``.

`torch_counts` says what the PyTorch module runs, counted with forward hooks (norm and GELU modules called, and
``torch.nn.functional.gelu`` calls outside them, MACs
from `torch.utils.flop_counter.FlopCounterMode` with SDPA on the math backend), which the compiler's recognised
patterns and MAC total are checked against (tests/test_zoo_encoders.py, benchmarks/zoo_table.py).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import torch

from examples._common import Exporter, export_onnx, reinit_, seed_all
from examples.zoo_archs import ARCHS, FAILING, FRAMES, MELS, PATCH, SEQ, VOCAB, WAVE, Arch

__all__ = ["ARCHS", "FAILING", "INT8", "PASSING", "Arch", "build", "compile_shapes", "expected", "export", "feeds",
           "cases", "torch_counts", "variants"]


class _Wrap(torch.nn.Module):
    """Call the HF model by keyword with the zoo's inputs; hand back last_hidden_state only."""

    def __init__(self, model: torch.nn.Module, kind: str, names: tuple[str, ...], cache: bool) -> None:
        super().__init__()
        self.model, self.kind, self.names, self.cache = model, kind, names, cache

    def forward(self, *tensors: torch.Tensor) -> torch.Tensor:
        kw = dict(zip(self.names, tensors, strict=True))
        if self.kind == "decoder" and "attention_mask" not in kw:
            kw["attention_mask"] = torch.ones_like(kw["input_ids"])
        if self.kind == "speech-encdec":  # without one, transformers looks for packed sequences (aten::diff)
            kw["decoder_attention_mask"] = torch.ones_like(kw["decoder_input_ids"])
        if self.kind in ("decoder", "encdec", "speech-encdec") and self.cache:
            kw["use_cache"] = False  # no KV cache object in the trace
        return self.model(**kw).last_hidden_state


def variants(name: str) -> list[str]:
    """``exporter:mask`` / ``exporter:nomask`` for text models (every exporter with and without an
    attention_mask graph input, the kind's usual form first), the exporter alone for vision."""
    arch = ARCHS[name]
    if arch.kind not in ("encoder", "decoder", "encdec"):  # no attention_mask input to take or leave
        return list(arch.exporters)
    usual = ("nomask", "mask") if arch.kind == "decoder" else ("mask", "nomask")
    return [f"{e}:{m}" for m in usual for e in arch.exporters]


def _split(variant: str, name: str) -> tuple[str, bool]:
    """(exporter, attention_mask is a graph input) of a variant; a bare exporter is the kind's usual form."""
    exporter, _, mask = variant.partition(":")
    return exporter, (mask == "mask") if mask else ARCHS[name].kind in ("encoder", "encdec")


def input_names(name: str, variant: str = "legacy") -> tuple[str, ...]:
    names = {"encoder": ("input_ids", "attention_mask"), "decoder": ("input_ids", "attention_mask"),
             "vision": ("pixel_values",), "encdec": ("input_ids", "attention_mask", "decoder_input_ids"),
             "speech": ("input_values",), "speech-encdec": ("input_features", "decoder_input_ids")}
    masked = _split(variant, name)[1]
    noise = ("noise",) if ARCHS[name].noise else ()
    return tuple(n for n in names[ARCHS[name].kind] if masked or n != "attention_mask") + noise


def feeds(name: str, variant: str = "legacy") -> dict[str, np.ndarray]:
    """The sample the zoo traces with and checks on: fixed ids, the mask's last quarter padded, or an image."""
    gen = torch.Generator().manual_seed(1)
    ids = torch.randint(2, VOCAB, (1, SEQ), generator=gen)
    mask = torch.ones(1, SEQ, dtype=torch.int64)
    mask[:, SEQ - SEQ // 4:] = 0
    side = ARCHS[name].image
    out = {"input_ids": ids, "attention_mask": mask, "decoder_input_ids": ids.flip(-1),
           "pixel_values": torch.randn(1, *((ARCHS[name].frames,) if ARCHS[name].frames else ()), 3, side, side,
                                       generator=gen),
           "input_values": torch.randn(1, WAVE, generator=gen), "input_features": torch.randn(1, MELS, FRAMES,
                                                                                             generator=gen),
           "noise": torch.rand(1, (side // PATCH) ** 2, generator=gen)}
    return {n: out[n].numpy() for n in input_names(name, variant)}


def build(name: str, variant: str = "legacy") -> torch.nn.Module:
    """The wrapped, seeded, re-initialised model in eval mode."""
    arch = ARCHS[name]
    seed_all(0)
    model = arch.make().eval()
    reinit_(model, 0)
    gen = torch.Generator().manual_seed(2)
    with torch.no_grad():  # HF starts relative-position tables at zero: a dropped bias would go unnoticed
        for pname, param in model.named_parameters():
            if "relative_position_bias_table" in pname:
                param.copy_(torch.randn(param.shape, generator=gen))
    return _Wrap(model, arch.kind, input_names(name, variant), arch.cache).eval()


def export(name: str, variant: str, path: Path, opset: int | None = None) -> torch.nn.Module:
    """Export the model to ``path`` and return it. ``variant``: "legacy", "dynamo", or "symbolic" (legacy with
    batch and sequence / image size as symbolic dims; `compile_shapes` gives the concrete shapes back), with
    ":mask" or ":nomask" for text models (see `variants`). ``opset``: the dynamo exporter's opset (23: SDPA as the
    ONNX ``Attention`` op); None for the exporter's usual one."""
    exporter = _split(variant, name)[0]
    module = build(name, variant)
    f = feeds(name, variant)
    dynamic = None
    if exporter == "symbolic":
        dynamic = {n: {0: "batch", **({2: "height", 3: "width"} if v.ndim == 4 else {1: "sequence"})}
                   for n, v in f.items()}
    real: Exporter = "dynamo" if exporter == "dynamo" else "legacy"
    export_onnx(module, [torch.from_numpy(v) for v in f.values()], path, input_names=list(f),
                output_names=["last_hidden_state"], exporter=real, dynamic_axes=dynamic, opset=opset)
    return module


def compile_shapes(name: str, variant: str) -> dict[str, tuple[int, ...]] | None:
    """The concrete input shapes a symbolic export compiles at (the zoo's sample shapes); None otherwise."""
    if _split(variant, name)[0] != "symbolic":
        return None
    return {n: tuple(v.shape) for n, v in feeds(name, variant).items()}


def _is_norm(m: torch.nn.Module) -> bool:
    n = type(m).__name__
    return isinstance(m, torch.nn.LayerNorm | torch.nn.GroupNorm) or n.endswith(("RMSNorm", "LayerNorm"))


def _is_gelu(m: torch.nn.Module) -> bool:
    return "GELU" in type(m).__name__.upper()


def _is_attention(m: torch.nn.Module) -> bool:
    """An attention module (BertSelfAttention, LlamaAttention, SwinSelfAttention, T5Attention, ...); the innermost
    one is counted, so a wrapper (BertAttention around BertSelfAttention) is not counted twice. Modules named for
    a projection inside one (CvT's CvtSelfAttentionConvProjection, its convolutional Q/K/V) are not attentions."""
    n = type(m).__name__
    return "Attention" in n and "Projection" not in n


class _FunctionalGelus:
    """A function mode counting ``torch.nn.functional.gelu`` calls made outside every GELU module (Whisper's conv
    stem calls it on the conv outputs directly): GELUs torch runs that no forward hook sees. ``inside`` is how
    many hooked GELU modules are running (their pre- and post-hooks move it)."""

    def __new__(cls) -> Any:
        from torch.overrides import TorchFunctionMode

        class Mode(TorchFunctionMode):
            def __init__(self) -> None:
                super().__init__()
                self.inside = 0
                self.calls = 0

            def __torch_function__(self, func, types, args=(), kwargs=None):  # noqa: ANN001, ANN204
                if func is torch.nn.functional.gelu and not self.inside:
                    self.calls += 1
                return func(*args, **(kwargs or {}))

        return Mode()


class _ConstantFlops:
    """A dispatch mode summing the FLOPs (torch's flop_registry formulas) of ops none of whose tensor arguments
    derive from the model's inputs: products of weights and constants only, which the compile folds before it
    counts MACs. A tensor derives from the inputs when an op that read one produced it (views and in-place results
    included)."""

    def __new__(cls, inputs: list[torch.Tensor]) -> Any:
        from torch.utils._python_dispatch import TorchDispatchMode
        from torch.utils._pytree import tree_flatten
        from torch.utils.flop_counter import flop_registry

        class Mode(TorchDispatchMode):
            def __init__(self) -> None:
                super().__init__()
                # by id, the tensors held so that no id is reused during the forward (the zoo's models are tiny)
                self.held: list[torch.Tensor] = list(inputs)
                self.derived = {id(t) for t in inputs}
                self.flops = 0

            def __torch_dispatch__(self, func, types, args=(), kwargs=None):  # noqa: ANN001, ANN204
                kwargs = kwargs or {}
                out = func(*args, **kwargs)
                tensors = [t for t in tree_flatten((args, kwargs))[0] if isinstance(t, torch.Tensor)]
                if any(id(t) in self.derived for t in tensors):
                    outs = [t for t in tree_flatten(out)[0] if isinstance(t, torch.Tensor)]
                    self.held += outs
                    self.derived.update(id(t) for t in outs)
                elif func.overloadpacket in flop_registry:
                    self.flops += flop_registry[func.overloadpacket](*args, **kwargs, out_val=out)
                return out

        return Mode()


def torch_counts(module: torch.nn.Module, name: str, variant: str = "legacy") -> dict[str, int]:
    """Norm and GELU module calls (forward hooks) and MACs (FlopCounterMode counts 2 per MAC, SDPA on math)."""
    from torch.nn.attention import SDPBackend, sdpa_kernel
    from torch.utils.flop_counter import FlopCounterMode

    calls = {"attention": 0, "layernorm": 0, "gelu": 0}
    hooks = []
    functional = _FunctionalGelus()
    for m in module.modules():
        for key, test in (("attention", _is_attention), ("layernorm", _is_norm), ("gelu", _is_gelu)):
            if key == "attention" and any(test(c) for c in m.modules() if c is not m):
                continue
            if test(m) and not any(test(c) for c in m.children()):
                def hook(*_: Any, key: str = key) -> None:
                    calls[key] += 1
                hooks.append(m.register_forward_hook(hook))
                if key == "gelu":
                    def enter(*_: Any) -> None:
                        functional.inside += 1

                    def leave(*_: Any) -> None:
                        functional.inside -= 1
                    hooks += [m.register_forward_pre_hook(enter), m.register_forward_hook(leave)]
    args = [torch.from_numpy(v) for v in feeds(name, variant).values()]
    # FlopCounterMode's module tracker hooks the autograd graph of inputs that require grad; a weight passed as a
    # module input (DeBERTa's relative embeddings) has none under no_grad and would stop it.
    module.requires_grad_(False)
    constant = _ConstantFlops(args) if ARCHS[name].constant_products else None
    try:
        with torch.no_grad(), sdpa_kernel(SDPBackend.MATH), FlopCounterMode(display=False) as counter, functional:
            if constant is None:
                module(*args)
            else:
                with constant:
                    module(*args)
    finally:
        for h in hooks:
            h.remove()
    folded = sum(sum(ops.values()) for mod, ops in counter.get_flop_counts().items()
                 if mod.rsplit(".", 1)[-1] in ARCHS[name].folded + ARCHS[name].unused)
    folded += constant.flops if constant is not None else 0
    calls["gelu"] += functional.calls
    return {**calls, "macs": (counter.get_total_flops() - folded) // 2}


def expected(module: torch.nn.Module, name: str, variant: str = "legacy") -> dict[str, int]:
    """What the compile must recognise: attention, norm and GELU module calls (less the dead ones), MACs."""
    counts = torch_counts(module, name, variant)
    for key, n in ARCHS[name].dead.items():
        counts[key] -= n
    for key, n in ARCHS[name].calls.items():
        counts[key] += n
    return counts


#: The integer I-ViT numerics (quantized GEMMs, Shiftmax, ShiftGELU, I-LayerNorm).
INT8 = {"quant": "int8", "softmax": "shiftmax", "gelu": "shiftgelu", "layernorm": "ilayernorm"}

def cases() -> list[tuple[str, str]]:
    """Every (architecture, variant) the zoo suite checks (tests/test_zoo_archs.py)."""
    return [(n, v) for n in ARCHS for v in variants(n) if n not in FAILING and f"{n} {v}" not in FAILING]


#: Architectures with at least one variant the zoo suite checks.
PASSING = sorted({n for n, _ in cases()}, key=list(ARCHS).index)
