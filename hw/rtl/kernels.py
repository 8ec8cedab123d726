"""The one registry of RTL kernels: name -> kernel class, and the views other parts read from the classes.

Each class describes itself (``hw.rtl.kernel``: parameters, work keys, exact cycles and their formula, the vector
roles it plays, the dataflow of an array). The manifest (``hw.rtl.manifest``) writes those timings, the FPGA model
(``hw.models.fpga``) prices work with them and sizes lanes by the roles' fits, and ``codesign rtl`` picks kernels by
role; none of them keeps its own table. The built-in kernels are imported here explicitly (no registration by
import side effect); :func:`register_kernel` adds another class.
"""

from __future__ import annotations

from collections.abc import Mapping
from types import MappingProxyType

from hw.errors import InputError
from hw.rtl.ilayernorm import ILayerNorm
from hw.rtl.kernel import KernelMixin, VectorRole
from hw.rtl.online_softmax import OnlineSoftmax
from hw.rtl.requant import Requant
from hw.rtl.shiftgelu import ShiftGelu
from hw.rtl.shiftmax import Shiftmax
from hw.rtl.systolic import SystolicGemm
from hw.rtl.systolic_stream import SystolicGemmStream
from hw.rtl.systolic_ws import SystolicGemmWs
from hw.rtl.topk_router import TopkRouter

__all__ = [
    "KERNELS",
    "register_kernel",
    "kernel_names",
    "kernel_class",
    "invocation_cycles",
    "cycles_formula",
    "example_work",
    "vector_roles",
    "array_kernels",
]

_REGISTRY: dict[str, type[KernelMixin]] = {
    cls.KERNEL: cls
    for cls in (SystolicGemm, SystolicGemmWs, SystolicGemmStream, Requant, Shiftmax, ShiftGelu, ILayerNorm,
                OnlineSoftmax, TopkRouter)
}
KERNELS: Mapping[str, type[KernelMixin]] = MappingProxyType(_REGISTRY)
"""Kernel name -> its class (a live read-only view: :func:`register_kernel` adds to it)."""


def register_kernel(cls: type[KernelMixin]) -> None:
    """Register a kernel class under its ``KERNEL`` name (it must describe itself as ``hw.rtl.kernel`` says)."""
    if not (isinstance(cls, type) and issubclass(cls, KernelMixin) and cls.KERNEL):
        raise InputError(f"register_kernel: {cls!r} is not a kernel class with a KERNEL name")
    _REGISTRY[cls.KERNEL] = cls


def kernel_names() -> list[str]:
    """Names of all registered kernels, sorted."""
    return sorted(_REGISTRY)


def kernel_class(name: str) -> type[KernelMixin]:
    """The class registered as ``name``; ``InputError`` for an unknown name."""
    try:
        return _REGISTRY[name]
    except KeyError:
        raise InputError(f"unknown RTL kernel {name!r} (known: {', '.join(kernel_names())})") from None


def invocation_cycles(kernel: str, params: Mapping[str, int], work: Mapping[str, int]) -> int:
    """Exact cycles of one invocation of ``kernel`` with ``params`` on ``work`` (the kernel's ``WORK`` keys).

    ``params`` may leave out parameters whose default applies (shiftgelu's ``per_element``, 0).
    """
    cls = kernel_class(kernel)
    missing = [key for key in cls.WORK if key not in work]
    if missing:
        raise InputError(f"{kernel}: invocation needs {', '.join(cls.WORK)} (missing {', '.join(missing)})")
    return cls.invocation_cycles(cls.full_params(params), work)


def cycles_formula(kernel: str, params: Mapping[str, int]) -> str:
    """``kernel``'s cycles as text for ``params`` (defaults for those left out)."""
    cls = kernel_class(kernel)
    return cls.cycles_formula(cls.full_params(params))


def example_work(kernel: str, params: Mapping[str, int]) -> dict[str, int]:
    """A one-unit invocation of ``kernel`` (one fold, beat, row or token)."""
    cls = kernel_class(kernel)
    return cls.example_work(cls.full_params(params))


def vector_roles() -> dict[tuple[str, str], tuple[str, VectorRole]]:
    """(vector kind, approximation) -> (kernel name, its role) for every registered kernel's ``ROLES``."""
    out: dict[tuple[str, str], tuple[str, VectorRole]] = {}
    for name, cls in sorted(_REGISTRY.items()):
        for role in cls.ROLES:
            out[(role.kind, role.approx)] = (name, role)
    return out


def array_kernels() -> dict[str, str]:
    """GEMM dataflow -> the registered array kernel implementing it (``os``, ``ws``; none for ``is`` yet)."""
    return {cls.DATAFLOW: name for name, cls in sorted(_REGISTRY.items()) if cls.DATAFLOW}
