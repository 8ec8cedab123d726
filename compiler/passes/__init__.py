"""Passes over the ``dataflow`` dialect: one file per pass, the file named like the pass.

The registry maps pass names to loaders, so importing it costs nothing until a pass is used (xDSL's convention).
``codesign opt --passes 'canonicalize,set-softmax{approx=shiftmax}'`` parses specs against it.
"""

from __future__ import annotations

from collections.abc import Callable

from xdsl.passes import ModulePass

__all__ = ["PASSES", "get_pass"]


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


PASSES: dict[str, Callable[[], type[ModulePass]]] = {
    "canonicalize": _canonicalize,
    "fuse": _fuse,
    "tile": _tile,
    "schedule": _schedule,
}


def get_pass(name: str) -> type[ModulePass]:
    """The pass class registered as ``name``; KeyError if there is none."""
    return PASSES[name]()
