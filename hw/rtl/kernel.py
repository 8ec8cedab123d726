"""What every RTL kernel class declares about itself: parameters, timing, the work it is invoked on, the roles it plays.

A *kernel* is an Amaranth ``lib.wiring.Component`` class built from a flat dict of integer parameters. Besides its
hardware it carries, as class attributes and class methods, everything the rest of codesign needs to know about it,
so that knowledge lives in one place (next to the RTL it describes):

* ``KERNEL``: its registry name (``"systolic_gemm"``); ``PARAMS``: ``{name: ParamSpec}`` with defaults and ranges;
* ``WORK``: the keys of one invocation's work (``("m", "n", "k")``, ``("rows",)`` ...);
* ``invocation_cycles(params, work)``: the exact cycles of one invocation (its module's ``predicted_cycles``, which
  the cocotb tests pin); ``cycles_formula(params)``: the same as text for the manifest;
* ``example_work(params)``: a one-unit invocation (one fold, beat, row or token) for a kernel emitted alone;
* ``ROLES``: the (vector kind, approximation) pairs the FPGA model runs on this unit, each with the parameters the
  pair fixes and the unit's name among the resource calibration's fits (:class:`VectorRole`);
* ``DATAFLOW`` (arrays only): the GEMM dataflow it implements, and ``readout_cycles(params)``, the cycles its count
  adds to SCALE-Sim's for the same product.

``hw.rtl.kernels`` collects the classes into the registry that the manifest, the FPGA model and ``codesign rtl``
read.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from numbers import Integral
from types import MappingProxyType

from hw.errors import InputError

__all__ = ["ParamSpec", "KernelMixin", "VectorRole"]


@dataclass(frozen=True)
class VectorRole:
    """A (vector work ``kind``, ``approx``) pair a kernel runs on the FPGA's vector lanes.

    ``fixed``: the kernel parameters the pair sets (``per_element=1`` for ``--gelu shiftgelu``), as ``codesign rtl``
    emits them; ``fit``: the unit's name among ``hw/models/calibration.json``'s per-unit fits (what one lane's copy
    costs in LUT / FF / DSP).
    """

    kind: str
    approx: str
    fit: str
    fixed: Mapping[str, int] = field(default_factory=lambda: MappingProxyType({}))


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
    """Parameter handling and the self-description shared by every registered kernel class (module docstring)."""

    KERNEL: str = ""
    PARAMS: Mapping[str, ParamSpec] = {}
    WORK: tuple[str, ...] = ()
    ROLES: tuple[VectorRole, ...] = ()
    DATAFLOW: str | None = None

    @classmethod
    def invocation_cycles(cls, params: Mapping[str, int], work: Mapping[str, int]) -> int:
        """Exact cycles of one invocation on ``work`` (keys ``WORK``) with ``params`` (defaults filled in)."""
        raise NotImplementedError(f"{cls.KERNEL}: no timing model")

    @classmethod
    def cycles_formula(cls, params: Mapping[str, int]) -> str:
        """``invocation_cycles`` as text, in the names of ``WORK`` and ``PARAMS``."""
        raise NotImplementedError(f"{cls.KERNEL}: no timing formula")

    @classmethod
    def example_work(cls, params: Mapping[str, int]) -> dict[str, int]:
        """A one-unit invocation (one row, beat or token) for a kernel emitted on its own."""
        return {key: 1 for key in cls.WORK}

    @classmethod
    def readout_cycles(cls, params: Mapping[str, int]) -> int:
        """Arrays: the cycles ``invocation_cycles`` adds to SCALE-Sim's count of the same product (0 elsewhere)."""
        return 0

    @classmethod
    def full_params(cls, params: Mapping[str, object]) -> dict[str, int]:
        """``params`` with the defaults of the ones left out (unchecked: timing needs only the values)."""
        return {name: int(params.get(name, spec.default)) for name, spec in cls.PARAMS.items()}  # type: ignore[arg-type]

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


