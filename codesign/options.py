"""Compiler choices users make (``--quant``, ``--softmax``, ``--attention`` ...) and the passes they select.

One table, so the CLI, the Python API and sweeps accept exactly the same names, and an unknown one is rejected with
the list of valid ones. Each feature area contributes its choices and passes from its own module
(``codesign/options_numerics.py``, ``codesign/options_structure.py``) so areas do not edit each other's code.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from typing import TYPE_CHECKING

from xdsl.passes import ModulePass

from compiler.passes import PASSES
from hw.errors import InputError

if TYPE_CHECKING:
    from compiler.pipeline import CompileOptions

__all__ = ["CHOICES", "validate_choice", "middle_passes", "Choice"]

#: (valid values, default)
Choice = tuple[tuple[str, ...], str]

_AREAS = ("codesign.options_numerics", "codesign.options_structure")


def _areas() -> list:
    mods = []
    for name in _AREAS:
        try:
            mods.append(importlib.import_module(name))
        except ModuleNotFoundError as err:
            if err.name != name:
                raise
    return mods


def _choices() -> dict[str, Choice]:
    table: dict[str, Choice] = {}
    for mod in _areas():
        table.update(mod.CHOICES)
    return table


#: choice -> (valid values, default), from every feature area present.
CHOICES: dict[str, Choice] = _choices()


def validate_choice(key: str, value: str) -> str:
    """``value`` if it is valid for ``key``; else InputError listing the valid ones."""
    if key not in CHOICES:
        raise InputError(f"unknown compile option '{key}' (known: {', '.join(sorted(CHOICES)) or 'none'})")
    valid, _ = CHOICES[key]
    if value not in valid:
        raise InputError(f"--{key} {value}: unknown choice (valid: {', '.join(valid)})")
    return value


def _builtin(name: str) -> ModulePass:
    return PASSES[name]()()


def middle_passes(options: CompileOptions) -> list[ModulePass]:
    """The passes between import and report, in order (``--passes`` replaces them wholesale).

    canonicalize -> numerics area (quantize, approximations) -> structure area (attention order, MoE lowering)
    -> fuse -> tile -> schedule.
    """
    if options.passes:
        # the pipeline module loads ONNX and the frontend; the CLI reads CHOICES (for --help) without them
        from compiler.pipeline import parse_passes

        return parse_passes(options.passes)
    for key, value in options.choices:
        validate_choice(key, value)
    chosen = {key: value for key, value in options.choices}
    passes: list[ModulePass] = [_builtin("canonicalize")]
    for mod in _areas():
        build: Callable[[dict[str, str]], list[ModulePass]] = mod.passes_for
        passes += build(chosen)
    passes += [_builtin("fuse"), _builtin("tile"), _builtin("schedule")]
    return passes
