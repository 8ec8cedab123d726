"""Compiler choices users make (``--quant``, ``--softmax`` ...) and the pass pipeline they select.

One table, so the CLI, the Python API and sweeps accept exactly the same names, and an unknown one is rejected with
the list of valid ones.
"""

from __future__ import annotations

from xdsl.passes import ModulePass

from compiler.passes import PASSES
from compiler.pipeline import DEFAULT_PASSES, CompileOptions, parse_passes
from hw.errors import InputError

__all__ = ["CHOICES", "validate_choice", "middle_passes"]

#: choice -> (valid values, default). Extended as passes for each choice land.
CHOICES: dict[str, tuple[tuple[str, ...], str]] = {}


def validate_choice(key: str, value: str) -> str:
    """``value`` if it is valid for ``key``; else InputError listing the valid ones."""
    if key not in CHOICES:
        raise InputError(f"unknown compile option '{key}' (known: {', '.join(sorted(CHOICES)) or 'none'})")
    valid, _ = CHOICES[key]
    if value not in valid:
        raise InputError(f"--{key} {value}: unknown choice (valid: {', '.join(valid)})")
    return value


def middle_passes(options: CompileOptions) -> list[ModulePass]:
    """The passes between import and report for these options (``--passes`` replaces them wholesale)."""
    if options.passes:
        return parse_passes(options.passes)
    for key, value in options.choices:
        validate_choice(key, value)
    return [PASSES[name]()() for name in DEFAULT_PASSES]
