"""codesign: a hardware co-design compiler and simulator for transformer accelerators.

``codesign.compile(model, target="fpga-u280")`` compiles an ONNX model (path or proto) or a ``torch.nn.Module`` onto a
target and returns a ``CompileResult`` whose ``report`` holds cycles, latency, energy, resources and per-layer
numbers. The same is ``codesign compile`` on the command line.

The names below are resolved on first use (PEP 562): importing any ``codesign.*`` module (the CLI, ``--help``) must not
load the whole compiler, ONNX and xDSL first.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from codesign.api import compile
    from compiler.pipeline import CompileOptions, CompileResult
    from hw.errors import InputError

__all__ = ["compile", "CompileOptions", "CompileResult", "InputError"]

_HOMES = {"compile": "codesign.api", "CompileOptions": "compiler.pipeline", "CompileResult": "compiler.pipeline",
          "InputError": "hw.errors"}


def __getattr__(name: str) -> Any:
    home = _HOMES.get(name)
    if home is None:
        raise AttributeError(f"module 'codesign' has no attribute {name!r}")
    value = getattr(importlib.import_module(home), name)
    globals()[name] = value  # later look-ups skip this function
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))
