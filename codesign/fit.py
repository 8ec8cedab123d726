"""``codesign fit``: the largest accelerator an FPGA holds for a model, with its latency and resources.

The first question an FPGA user asks is not "how fast is this design" but "how big a design does my chip take".
``fit`` answers it by pricing candidate designs of the target's parametric accelerator (the same numbers as
``codesign compile``, through the sweep evaluator's cached prefix, so a candidate costs a re-pricing, not a
compile) and keeping those whose every resource (LUT, FF, DSP, BRAM18, URAM) is within the device:

1. **Array**: every ``gemm.rows x gemm.cols`` from ``ARRAY_SIZES`` with one vector lane per array column (the
   bundled designs' rule: an output row drains in one pass). The largest array is the one with the most MACs per
   cycle; among equals, the lower latency wins.
2. **Lanes**: on that array, ``vector.lanes`` doubles while the design still fits, up to ``MAX_LANES_PER_COL``
   lanes per column (more lanes than that only wait for the array).

The fastest fitting design seen is reported too: on a memory-bound model the largest array is not always the
fastest. Buffers, clock and the rest of the target stay as given (``--set`` changes them first).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from codesign.sweep.evaluate import PointRequest, evaluate_report
from hw.errors import InputError
from hw.targets import load_target
from hw.targets.schema import FpgaTarget

__all__ = ["ARRAY_SIZES", "MAX_LANES_PER_COL", "Design", "FitResult", "fit"]

ARRAY_SIZES = (8, 16, 24, 32, 48, 64, 96, 128, 192, 256, 384, 512)
"""Candidate ``gemm.rows`` and ``gemm.cols``: powers of two and the 1.5x steps between them (PE count)."""

MAX_LANES_PER_COL = 4
"""Lane search stops at this many vector lanes per array column."""


@dataclass(frozen=True)
class Design:
    """One priced candidate: array ``rows x cols`` (PEs), ``lanes`` vector lanes, and its compile report."""

    rows: int
    cols: int
    lanes: int
    report: dict[str, Any]

    @property
    def fits(self) -> bool:
        """Every resource within the device (fraction used <= 1)."""
        return all((entry.get("fraction") or 0.0) <= 1.0 for entry in self.report.get("resources", {}).values())

    @property
    def macs_per_cycle(self) -> int:
        """Peak MACs per cycle of the array (rows x cols)."""
        return self.rows * self.cols

    @property
    def latency_ms(self) -> float:
        """End-to-end latency of one inference (ms)."""
        return float(self.report["latency_ms"])

    def fraction(self, resource: str) -> float | None:
        """Fraction of the device's ``resource`` the design uses (None when the model gives none)."""
        entry = self.report.get("resources", {}).get(resource)
        return None if entry is None else entry.get("fraction")


@dataclass(frozen=True)
class FitResult:
    """``largest``: the biggest array that fits, with the most lanes that still fit; ``fastest``: the fitting
    design of lowest latency; ``designs``: every candidate priced, fitting or not."""

    target: str
    largest: Design
    fastest: Design
    designs: tuple[Design, ...]


def _design(request: PointRequest, rows: int, cols: int, lanes: int) -> Design:
    overrides = dict(request.overrides)
    overrides.update({"gemm.rows": str(rows), "gemm.cols": str(cols), "vector.lanes": str(lanes)})
    point = PointRequest(key=f"{rows}x{cols}/{lanes}", model=request.model, target=request.target,
                         overrides=tuple(sorted(overrides.items())), choices=request.choices, shapes=request.shapes)
    report, _, _ = evaluate_report(point)
    return Design(rows, cols, lanes, report)


def fit(model: str, target: str = "fpga-u280", overrides: Sequence[tuple[str, str]] = (),
        choices: Sequence[tuple[str, str]] = (), shapes: Sequence[tuple[str, tuple[int, ...]]] = ()) -> FitResult:
    """Price the candidate designs of ``target`` for ``model`` and return the largest and the fastest that fit.

    ``overrides`` are ``--set`` pairs applied before the search (the searched keys win), ``choices`` compile
    options (``("quant", "int8")`` ...), ``shapes`` concrete input shapes. Raises ``InputError`` for a target that
    is not an FPGA or a device that holds none of the candidates.
    """
    base = load_target(target, dict(overrides))
    if not isinstance(base, FpgaTarget):
        raise InputError(f"codesign fit: target '{base.name}' is of kind '{base.kind}'; fit sizes a design for an FPGA "
                         "device (its resources bound the design)")
    request = PointRequest(key="fit", model=str(model), target=target, overrides=tuple(overrides),
                           choices=tuple(sorted(choices)), shapes=tuple(shapes))
    designs = [_design(request, r, c, c) for r in ARRAY_SIZES for c in ARRAY_SIZES]
    fitting = [d for d in designs if d.fits]
    if not fitting:
        smallest = min(designs, key=lambda d: d.macs_per_cycle)
        worst = max(smallest.report.get("resources", {}).items(), key=lambda kv: kv[1].get("fraction") or 0.0)
        raise InputError(f"codesign fit: no candidate fits {base.device.part}: even {smallest.rows}x{smallest.cols} "
                         f"needs {worst[1]['fraction']:.0%} of its {worst[0].upper()}")
    largest = min(fitting, key=lambda d: (-d.macs_per_cycle, d.latency_ms))
    lanes = largest.lanes
    while lanes * 2 <= MAX_LANES_PER_COL * largest.cols:
        wider = _design(request, largest.rows, largest.cols, lanes * 2)
        designs.append(wider)
        if not wider.fits:
            break
        largest, lanes = wider, lanes * 2
    fastest = min((d for d in designs if d.fits), key=lambda d: (d.latency_ms, d.macs_per_cycle))
    return FitResult(target=base.name, largest=largest, fastest=fastest, designs=tuple(designs))
