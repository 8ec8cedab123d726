"""Verilog emission of registered kernels (``hw.rtl.kernels``), with their parameters checked first.

A kernel class checks its parameters (``from_params``: unknown names, non-integers, out-of-range values raise
:class:`hw.errors.InputError` naming the parameter) before any tool runs; ``params_tag`` names the files and build
directories of one parameter set.

Emitted Verilog modules are named after the kernel; their clock and (synchronous, active-high) reset ports are
Amaranth's ``clk`` and ``rst`` of the ``sync`` domain, which the cocotb testbenches drive (tests/rtl_tb/tb_common.py).
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

from hw.rtl.kernels import kernel_class

__all__ = [
    "build_kernel",
    "canonical_params",
    "params_tag",
    "verilog_text",
    "emit_kernel",
]


def canonical_params(name: str, params: Mapping[str, object] | None = None) -> dict[str, int]:
    """``params`` for kernel ``name`` checked and completed with defaults."""
    return kernel_class(name).check_params(dict(params or {}))


def build_kernel(name: str, params: Mapping[str, object] | None = None):
    """Instantiate kernel ``name`` (an Amaranth component) from ``params``."""
    return kernel_class(name).from_params(dict(params or {}))


def params_tag(params: Mapping[str, int]) -> str:
    """A file-name-safe tag for a parameter set: ``rows2_cols2_in_bits8_acc_bits32``."""
    return "_".join(f"{key}{value}" for key, value in params.items())


def verilog_text(name: str, params: Mapping[str, object] | None = None) -> str:
    """Verilog source of kernel ``name`` with ``params``; its top module is named ``name``.

    Uses Amaranth's Verilog backend, which runs the bundled WebAssembly Yosys (the first call in a
    fresh environment compiles it, about 14 s; later calls reuse the cache).
    """
    from amaranth.back import verilog

    component = build_kernel(name, params)
    return verilog.convert(component, name=name, emit_src=False)


def emit_kernel(name: str, params: Mapping[str, object] | None, out_dir: str | Path) -> Path:
    """Write ``<out_dir>/<name>_<params tag>.v`` and return its path.

    The file is only rewritten when its text changes, so simulator builds that depend on it stay
    up to date without recompiling.
    """
    full = canonical_params(name, params)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    path = out / f"{name}_{params_tag(full)}.v"
    text = verilog_text(name, full)
    if not path.exists() or path.read_text() != text:
        path.write_text(text)
    return path
