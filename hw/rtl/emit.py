"""The kernel registry, kernel parameter checking, and Verilog emission.

A *kernel* is an Amaranth ``lib.wiring.Component`` class that can be built from a flat dict of
integer parameters. The registry maps a kernel name to ``"module:Class"`` and imports the module
only when the kernel is asked for (the xDSL pass-registry habit), so registering costs nothing.

A kernel class provides:

* ``KERNEL``: its registry name (``"systolic_gemm"``);
* ``PARAMS``: ``{name: ParamSpec}``, the parameters it accepts with their defaults and ranges;
* ``from_params(params) -> instance`` (inherited from :class:`KernelMixin`): checks ``params``
  against ``PARAMS`` (unknown names, non-integers, out-of-range values raise
  :class:`hw.errors.InputError` naming the parameter) before any tool runs;
* ``params``: the full, canonical parameter dict of the instance (defaults filled in), used to
  name build directories.

Other kernels register the same way: give the class those attributes and call
:func:`register_kernel` (or add a line to ``_BUILTIN``).

Emitted Verilog modules are named after the kernel; their clock and (synchronous, active-high) reset ports are
Amaranth's ``clk`` and ``rst`` of the ``sync`` domain, which the cocotb testbenches drive (tests/rtl_tb/tb_common.py).
"""

from __future__ import annotations

import importlib
from collections.abc import Mapping
from dataclasses import dataclass
from numbers import Integral
from pathlib import Path

from hw.errors import InputError

__all__ = [
    "ParamSpec",
    "KernelMixin",
    "register_kernel",
    "kernel_names",
    "kernel_class",
    "build_kernel",
    "canonical_params",
    "params_tag",
    "verilog_text",
    "emit_kernel",
]


@dataclass(frozen=True)
class ParamSpec:
    """One integer kernel parameter: its default and the values it may take.

    ``choices`` (when given) lists every allowed value; otherwise the value must lie in
    ``[lo, hi]`` (``hi=None``: no upper bound). ``doc`` says what it means, with its unit.
    """

    default: int
    doc: str
    lo: int = 1
    hi: int | None = None
    choices: tuple[int, ...] | None = None

    def check(self, kernel: str, name: str, value: object) -> int:
        """Return ``value`` as an int, or raise ``InputError`` naming ``kernel`` and ``name``."""
        if isinstance(value, bool) or not isinstance(value, Integral):
            raise InputError(f"{kernel}: parameter {name} must be an integer, got {value!r}")
        value = int(value)
        if self.choices is not None:
            if value not in self.choices:
                allowed = ", ".join(str(c) for c in self.choices)
                raise InputError(f"{kernel}: parameter {name}={value} is not supported (one of {allowed})")
        elif value < self.lo or (self.hi is not None and value > self.hi):
            upper = "" if self.hi is None else f" and <= {self.hi}"
            raise InputError(f"{kernel}: parameter {name}={value} is out of range (must be >= {self.lo}{upper})")
        return value


class KernelMixin:
    """Parameter handling shared by every registered kernel class (see the module docstring)."""

    KERNEL: str = ""
    PARAMS: Mapping[str, ParamSpec] = {}

    @classmethod
    def check_params(cls, params: Mapping[str, object]) -> dict[str, int]:
        """Validate ``params`` and return them complete, defaults filled in, in ``PARAMS`` order."""
        unknown = sorted(set(params) - set(cls.PARAMS))
        if unknown:
            known = ", ".join(cls.PARAMS)
            raise InputError(f"{cls.KERNEL}: unknown parameter {unknown[0]!r} (known: {known})")
        full = {name: spec.check(cls.KERNEL, name, params.get(name, spec.default)) for name, spec in cls.PARAMS.items()}
        cls.check_combination(full)
        return full

    @classmethod
    def check_combination(cls, params: dict[str, int]) -> None:
        """Hook for rules across parameters (each already valid alone); raise ``InputError``."""

    def accept_params(self, **params: object) -> dict[str, int]:
        """``check_params`` for use in ``__init__``.

        A rejected instance is marked used, so Amaranth does not also warn that an elaboratable
        was created and never used.
        """
        try:
            return self.check_params(params)
        except InputError:
            self._MustUse__used = True
            raise

    @classmethod
    def from_params(cls, params: Mapping[str, object]):
        """Build the kernel from a flat parameter dict after checking it."""
        return cls(**cls.check_params(params))


_BUILTIN: dict[str, str] = {
    "systolic_gemm": "hw.rtl.systolic:SystolicGemm",
    "systolic_gemm_ws": "hw.rtl.systolic_ws:SystolicGemmWs",
    "requant": "hw.rtl.requant:Requant",
    "shiftmax": "hw.rtl.shiftmax:Shiftmax",
    "shiftgelu": "hw.rtl.shiftgelu:ShiftGelu",
    "ilayernorm": "hw.rtl.ilayernorm:ILayerNorm",
    "online_softmax": "hw.rtl.online_softmax:OnlineSoftmax",
    "topk_router": "hw.rtl.topk_router:TopkRouter",
}
_REGISTRY: dict[str, str] = dict(_BUILTIN)


def register_kernel(name: str, target: str) -> None:
    """Register kernel ``name`` as ``"package.module:ClassName"`` (imported on first use)."""
    if ":" not in target:
        raise InputError(f"register_kernel: target for {name!r} must look like 'package.module:Class', got {target!r}")
    _REGISTRY[name] = target


def kernel_names() -> list[str]:
    """Names of all registered kernels, sorted."""
    return sorted(_REGISTRY)


def kernel_class(name: str) -> type:
    """The component class registered as ``name``; ``InputError`` for an unknown name."""
    try:
        target = _REGISTRY[name]
    except KeyError:
        raise InputError(f"unknown RTL kernel {name!r} (known: {', '.join(kernel_names())})") from None
    module, _, attr = target.partition(":")
    return getattr(importlib.import_module(module), attr)


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
