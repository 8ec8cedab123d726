"""Numerics choices (``--quant``, ``--softmax``, ``--gelu``, ``--layernorm``) and the passes they select.

Each choice is one pass, so ``--print-ir-after`` shows its effect: ``set-softmax``, ``set-gelu``, ``set-layernorm``
set the approximation attributes (the simulator's kernel and the vector unit's cost both follow them), then
``quantize`` rewrites the module to integers (compiler/passes/quantize.py). A choice left at its default adds no
pass, so the model's own spelling (e.g. a tanh GELU) is kept.
"""

from __future__ import annotations

from collections.abc import Mapping

from xdsl.passes import ModulePass

from compiler.dialect.dataflow import LAYERNORM_APPROX, SOFTMAX_APPROX
from hw.errors import InputError

__all__ = ["CHOICES", "passes_for", "refuse_unread_choices"]

_GELU = ("exact", "shiftgelu", "shiftgelu-row", "ibert", "lut")

#: choice -> (valid values, default)
CHOICES: dict[str, tuple[tuple[str, ...], str]] = {
    "quant": (("none", "int8", "w4a8", "auto"), "none"),
    "softmax": (tuple(SOFTMAX_APPROX), "exact"),
    "gelu": (_GELU, "exact"),
    "layernorm": (tuple(LAYERNORM_APPROX), "exact"),
    # How --quant takes its activation ranges and weights (compiler/passes/quantize.py, compiler/quant_recipes.py);
    # no effect without --quant. None changes the hardware: the per-channel steps ride the per-channel requant
    # every GEMM output already has, and GPTQ only picks other integer codes.
    "observer": (("minmax", "percentile", "mse", "entropy"), "minmax"),
    "balance": (("none", "repq", "smoothquant"), "repq"),
    "weight-rounding": (("nearest", "gptq"), "nearest"),
    # per-token: a row max and a per-row requant on the vector unit around every static GEMM (costed there).
    "act-granularity": (("per-tensor", "per-token"), "per-tensor"),
    # Per-group weight steps (compiler/quant_groups.py): this one changes the hardware, costed on the requant path
    # (a multiply-add per group and output) and as weight bytes (the group multipliers).
    "weight-group": (("none", "32", "64", "128"), "none"),
    # --quant auto: the mean per-token output cosine on the calibration data each GEMM's recipe must keep.
    "accuracy-target": (("0.9", "0.95", "0.98", "0.99", "0.995", "0.999"), "0.99"),
}


#: Choices that only ``--quant`` reads, and the ``--quant`` values that read them.
_QUANT_ONLY = {"observer": ("int8", "w4a8", "auto"), "balance": ("int8", "w4a8", "auto"),
               "weight-rounding": ("int8", "w4a8", "auto"), "act-granularity": ("int8", "w4a8", "auto"),
               "weight-group": ("int8", "w4a8", "auto"), "accuracy-target": ("auto",)}


def refuse_unread_choices(chosen: Mapping[str, str]) -> None:
    """One ``InputError`` line when a choice the user gave (not at its default) has no effect under their
    ``--quant``. A compile that silently drops ``--weight-group 32`` because ``--quant`` defaults to ``none`` answers
    another question than the one asked; a sweep, whose space crosses choices on purpose, does not call this."""
    quant = chosen.get("quant", CHOICES["quant"][1])
    for key, readers in _QUANT_ONLY.items():
        value = chosen.get(key)
        if value is not None and value != CHOICES[key][1] and quant not in readers:
            needs = " or ".join(f"--quant {q}" for q in readers)
            raise InputError(f"--{key} {value} has no effect with --quant {quant}: it needs {needs}")


def passes_for(chosen: dict[str, str]) -> list[ModulePass]:
    """The numerics passes for the user's choices, in order: set-softmax, set-gelu, set-layernorm, quantize."""
    from compiler.passes.set_gelu import SetGelu
    from compiler.passes.set_layernorm import SetLayernorm
    from compiler.passes.set_softmax import SetSoftmax

    passes: list[ModulePass] = []
    if chosen.get("softmax", "exact") != "exact":
        passes.append(SetSoftmax(approx=chosen["softmax"]))
    if chosen.get("gelu", "exact") != "exact":
        passes.append(SetGelu(approx=chosen["gelu"]))
    if chosen.get("layernorm", "exact") != "exact":
        passes.append(SetLayernorm(approx=chosen["layernorm"]))
    if chosen.get("quant", "none") != "none":
        # only here: quantizing calibrates by simulation, which loads the simulator and torch
        from compiler.passes.quantize import Quantize

        passes.append(Quantize(mode=chosen["quant"], observer=chosen.get("observer", "minmax"),
                               balance=chosen.get("balance", "repq"),
                               rounding=chosen.get("weight-rounding", "nearest"),
                               granularity=chosen.get("act-granularity", "per-tensor"),
                               group=0 if chosen.get("weight-group", "none") == "none" else int(chosen["weight-group"]),
                               accuracy_target=float(chosen.get("accuracy-target", "0.99"))))
    return passes
