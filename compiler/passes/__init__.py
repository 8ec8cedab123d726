"""Passes over the ``dataflow`` dialect: one file per pass, the file named like the pass.

The registry maps pass names to loaders, so importing it costs nothing until a pass is used (xDSL's convention).
``codesign opt --passes 'canonicalize,set-softmax{approx=shiftmax}'`` parses specs against it.
"""

from __future__ import annotations

from collections.abc import Callable

from xdsl.passes import ModulePass

__all__ = ["PASSES"]


def _canonicalize() -> type[ModulePass]:
    from compiler.passes.canonicalize import Canonicalize

    return Canonicalize


def _fuse() -> type[ModulePass]:
    from compiler.passes.fuse import Fuse

    return Fuse


def _tile() -> type[ModulePass]:
    from compiler.passes.tile import Tile

    return Tile


def _schedule() -> type[ModulePass]:
    from compiler.passes.schedule import Schedule

    return Schedule


def _set_attention() -> type[ModulePass]:
    from compiler.passes.set_attention import SetAttention

    return SetAttention


def _route_moe() -> type[ModulePass]:
    from compiler.passes.route_moe import RouteMoe

    return RouteMoe


def _set_softmax() -> type[ModulePass]:
    from compiler.passes.set_softmax import SetSoftmax

    return SetSoftmax


def _set_gelu() -> type[ModulePass]:
    from compiler.passes.set_gelu import SetGelu

    return SetGelu


def _set_layernorm() -> type[ModulePass]:
    from compiler.passes.set_layernorm import SetLayernorm

    return SetLayernorm


def _quantize() -> type[ModulePass]:
    from compiler.passes.quantize import Quantize

    return Quantize


PASSES: dict[str, Callable[[], type[ModulePass]]] = {
    "canonicalize": _canonicalize,
    "fuse": _fuse,
    "tile": _tile,
    "schedule": _schedule,
    "set-attention": _set_attention,
    "route-moe": _route_moe,
    "set-softmax": _set_softmax,
    "set-gelu": _set_gelu,
    "set-layernorm": _set_layernorm,
    "quantize": _quantize,
}
