"""Which nonlinearity implementations the compiler offers, by the names the CLI takes.

``--softmax``, ``--gelu`` and ``--layernorm`` look their value up in :data:`SOFTMAX_APPROX`,
:data:`GELU_APPROX` and :data:`LAYERNORM_APPROX` (read-only mappings name -> :class:`Approx`; an
``Approx`` is called like the kernel it wraps). :func:`get_approx` turns an unknown name into an
``InputError`` that lists the valid ones.

Call conventions, by ``encoding``:

* ``"linear"``: softmax/GELU ``fn(x_int, scale, out_bits=8) -> (y_int, out_scale)`` (GELU ``lut`` and
  ``ibert`` take no ``out_bits``); LayerNorm ``fn(x_int, scale, weight, bias) -> (y_int, out_scale)``.
  The real result is y_int * out_scale.
* ``"log2"``: ``fn(x_int, scale, out_bits=4) -> (codes, delta)``; decode with ``log2q_dequantize``.
* ``"attention"``: replaces the whole attention, ``fn(q, v, num_landmarks=...) -> out`` (float64).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from functools import partial
from types import MappingProxyType
from typing import Any

from compiler.numerics.base2 import base2_softmax
from compiler.numerics.exact import gelu_exact, layernorm_exact, softmax_exact
from compiler.numerics.ibert import ibert_gelu, ibert_softmax
from compiler.numerics.ilayernorm import ilayernorm
from compiler.numerics.log2q import log2q_softmax
from compiler.numerics.lut_gelu import lut_gelu
from compiler.numerics.online_softmax import online_softmax
from compiler.numerics.shiftgelu import shiftgelu
from compiler.numerics.shiftmax import shiftmax
from compiler.numerics.softmax_free import softmax_free_attention
from hw.errors import InputError

__all__ = ["GELU_APPROX", "LAYERNORM_APPROX", "SOFTMAX_APPROX", "Approx", "get_approx"]


@dataclass(frozen=True)
class Approx:
    """One implementation of a nonlinearity: its CLI name, kernel, output encoding and source."""

    name: str
    fn: Callable[..., Any]
    encoding: str
    source: str

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        return self.fn(*args, **kwargs)


def _table(*items: Approx) -> Mapping[str, Approx]:
    return MappingProxyType({a.name: a for a in items})


SOFTMAX_APPROX: Mapping[str, Approx] = _table(
    Approx("exact", softmax_exact, "linear", "float64 softmax"),
    Approx("shiftmax", shiftmax, "linear", "I-ViT Shiftmax"),
    Approx("online", online_softmax, "linear", "Edge-MoE single-pass softmax, base-2 integer"),
    Approx("base2", base2_softmax, "linear", "Softermax-style base-2 softmax"),
    Approx("ibert", ibert_softmax, "linear", "I-BERT i-exp softmax"),
    Approx("log2q", log2q_softmax, "log2", "RepQ-ViT log-sqrt2 quantized softmax"),
    Approx("softmax-free", softmax_free_attention, "attention", "SOFT Gaussian kernel + Newton-Schulz"),
)

GELU_APPROX: Mapping[str, Approx] = _table(
    Approx("exact", gelu_exact, "linear", "float64 erf GELU"),
    Approx("shiftgelu", partial(shiftgelu, stabilizer="element"), "linear",
           "I-ViT ShiftGELU, per-element stabilizer max(x, 0)"),
    Approx("shiftgelu-row", shiftgelu, "linear", "I-ViT ShiftGELU as published (row-max stabilizer)"),
    Approx("ibert", ibert_gelu, "linear", "I-BERT i-GELU"),
    Approx("lut", lut_gelu, "linear", "Edge-MoE delta table GELU"),
)

LAYERNORM_APPROX: Mapping[str, Approx] = _table(
    Approx("exact", layernorm_exact, "linear", "float64 LayerNorm"),
    Approx("ilayernorm", ilayernorm, "linear", "I-ViT I-LayerNorm, with the model's epsilon (eps_int)"),
)

_TABLES = {"softmax": SOFTMAX_APPROX, "gelu": GELU_APPROX, "layernorm": LAYERNORM_APPROX}


def get_approx(kind: str, name: str) -> Approx:
    """The implementation ``name`` of ``kind`` ("softmax", "gelu" or "layernorm").

    Raises ``InputError("unknown --softmax 'x'; valid: exact, shiftmax, ...")`` for an unknown name.
    """
    if kind not in _TABLES:
        raise ValueError(f"kind must be one of {', '.join(_TABLES)}, got {kind!r}")
    table = _TABLES[kind]
    if name not in table:
        raise InputError(f"unknown --{kind} {name!r}; valid: {', '.join(table)}")
    return table[name]
