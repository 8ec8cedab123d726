"""Write a design's RTL: one Verilog file per (kernel, parameters) and a ``manifest.json`` describing them.

``codesign rtl`` decides from a compiled model which kernels its design uses and how often
(:class:`KernelUse`); this module turns those into files. Each kernel's timing (its exact cycles per
invocation and their formula) comes from the kernel registry (``hw.rtl.kernels``: the class's
``predicted_cycles``, which the cocotb tests pin exactly), its ports from the Amaranth component's
signature.

An output folder holds a marker file (:data:`MARKER`): :func:`prepare_out_dir` refuses a non-empty
folder without it, so ``--out`` never overwrites a user's files, and clears the files a previous run
listed in its manifest, so no stale kernel lingers.

Manifest (``manifest.json``, format :data:`FORMAT`)::

    {"format": 2, "source": {...model, target, choices...}, "clock_mhz": 300.0,
     "config_file": "config.npz",                              # null when no invocation has an array
     "kernels": [{"name": "shiftmax", "module": "shiftmax_n17_...", "verilog": "shiftmax_n17_....v",
                  "parameters": {...}, "ports": [{"name": "inputs__valid", "direction": "in", "width": 1}, ...],
                  "cycles_formula": "rows * (3 * n + 16) - 1",
                  "instances": 1,                              # copies side by side (GEMM sub-arrays)
                  "predicted_cycles_per_invocation": 67,       # null when invocations differ
                  "invocations": [{"layer": "...", "work": {"rows": 68}, "count": 1, "cycles": 67,
                                   "config": {"x0": -40, "input_shift": 0, ...}}, ...],
                  "total_invocations": 2, "total_cycles": 134}],
     "notes": ["..."]}

An invocation's ``config`` is what the unit's configuration inputs take for that layer (``Invocation.config``;
``codesign rtl`` fills it, docs/RTL.md lists the keys per kernel). Scalars are written inline (``null`` where the
value is only known per call); an array is written to :data:`CONFIG_FILE` (``numpy.savez``) and replaced by a
reference ``{"npz": "<layer>/<key>", "shape": [...], "dtype": "int64"}``; :func:`resolve_config` reads them back.
Format 1 had no ``config`` and no ``config_file``. ``instances`` (1 unless a GEMM array is built as
``gemm.partitions`` sub-arrays) is the copies of the kernel the design instantiates; the invocations listed are then
the busiest copy's, so ``total_cycles`` is the time the kernel's work takes.
"""

from __future__ import annotations

import json
import numbers
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from amaranth.back import verilog
from amaranth.hdl import Fragment, Shape, Value
from amaranth.lib import data, wiring

from hw.errors import InputError
from hw.rtl.emit import build_kernel, canonical_params, params_tag
from hw.rtl.kernels import cycles_formula, invocation_cycles

__all__ = [
    "FORMAT",
    "MARKER",
    "CONFIG_FILE",
    "Invocation",
    "KernelUse",
    "kernel_ports",
    "prepare_out_dir",
    "resolve_config",
    "write_design",
]

FORMAT = 2
"""Version of the manifest layout (2: per-invocation ``config`` and the ``config_file`` of its arrays)."""
MARKER = ".codesign-rtl"
"""File that marks a folder as written by ``codesign rtl`` (and so safe to overwrite)."""
CONFIG_FILE = "config.npz"
"""The ``numpy.savez`` archive next to the manifest holding the invocations' configuration arrays."""

def kernel_ports(kernel: str, params: Mapping[str, int]) -> list[dict[str, Any]]:
    """The top module's ports: ``clk``, ``rst``, then the signature's, with Verilog names and widths."""

    component = build_kernel(kernel, params)
    ports = [{"name": "clk", "direction": "in", "width": 1}, {"name": "rst", "direction": "in", "width": 1}]
    for path, member, value in component.signature.flatten(component):
        port = {
            "name": "__".join(str(part) for part in path),
            "direction": "in" if member.flow == wiring.In else "out",
            "width": Value.cast(value).shape().width,
        }
        if isinstance(value, data.View) and isinstance(value.shape(), data.StructLayout):
            port["fields"] = _fields(value.shape())
        ports.append(port)

    Fragment.get(component, None)  # elaborated, so Amaranth does not warn it was never used
    return ports


def _fields(layout) -> list[dict[str, Any]]:
    """A payload's fields, LSB first: name, bit offset, width, signedness (and lane count for arrays)."""

    out = []
    for name, fld in layout:
        entry: dict[str, Any] = {"name": name, "offset": fld.offset, "width": fld.width}
        shape = fld.shape
        if isinstance(shape, data.ArrayLayout):
            entry["lanes"] = shape.length
            shape = shape.elem_shape
            entry["lane_width"] = shape.size if isinstance(shape, data.Layout) else Shape.cast(shape).width
        if not isinstance(shape, data.Layout):
            entry["signed"] = Shape.cast(shape).signed
        out.append(entry)
    return out


@dataclass(frozen=True)
class Invocation:
    """Calls of a kernel for one layer: ``count`` identical calls on ``work`` (see :func:`invocation_cycles`).

    ``config``: what the unit's configuration inputs take for this layer, by name: ints, floats, strings or None
    (written inline), or NumPy arrays (written to :data:`CONFIG_FILE`).
    """

    layer: str
    work: dict[str, int]
    count: int = 1
    config: Mapping[str, Any] = field(default_factory=dict)


@dataclass
class KernelUse:
    """One parameterization of a kernel that a design uses, and its calls. ``instances`` copies of it work side by
    side (a GEMM array built as sub-arrays, ``gemm.partitions``): the invocations listed are the busiest copy's, so
    their cycles are the time the kernel's work takes, not the sum over copies."""

    kernel: str
    params: dict[str, int]
    invocations: list[Invocation] = field(default_factory=list)
    instances: int = 1

    @property
    def tag(self) -> str:
        """The file stem and Verilog module name: ``<kernel>_<params tag>``."""
        return f"{self.kernel}_{params_tag(self.params)}"


def prepare_out_dir(out: str | Path) -> Path:
    """Create ``out`` (and parents) or reuse one a previous ``codesign rtl`` wrote; refuse anything else.

    Files the previous manifest listed are removed. ``InputError`` for a file, or for a non-empty folder
    without :data:`MARKER`.
    """
    path = Path(out)
    if path.exists() and not path.is_dir():
        raise InputError(f"--out {out}: is a file, not a folder")
    if path.is_dir() and any(path.iterdir()) and not (path / MARKER).is_file():
        raise InputError(
            f"--out {out}: folder is not empty and was not written by `codesign rtl` (no {MARKER} marker); "
            "choose a new or empty folder"
        )
    path.mkdir(parents=True, exist_ok=True)
    old = path / "manifest.json"
    if old.is_file():
        try:
            previous = json.loads(old.read_text())
            listed = [k.get("verilog", "") for k in previous.get("kernels", [])]
            listed.append(previous.get("config_file") or "")
        except (json.JSONDecodeError, AttributeError):
            listed = []
        for name in listed:
            stale = path / Path(name).name
            if name and stale.suffix in (".v", ".npz") and stale.is_file():
                stale.unlink()
        old.unlink()
    (path / MARKER).write_text("written by `codesign rtl`; the folder may be overwritten by it\n")
    return path


def _config_json(config: Mapping[str, Any], layer: str, arrays: dict[str, Any]) -> dict[str, Any]:
    """``config`` with its arrays moved into ``arrays`` (keyed ``<layer>/<key>``, unique) and referenced."""

    out: dict[str, Any] = {}
    for key, value in config.items():
        if isinstance(value, np.generic) or (isinstance(value, np.ndarray) and value.ndim == 0):
            value = value.item()
        if isinstance(value, np.ndarray):
            ref, n = f"{layer}/{key}", 1
            while ref in arrays:  # two invocations of one layer name
                n += 1
                ref = f"{layer}/{key}#{n}"
            arrays[ref] = value
            out[key] = {"npz": ref, "shape": list(value.shape), "dtype": str(value.dtype)}
        elif value is None or isinstance(value, (bool, str)):
            out[key] = value
        elif isinstance(value, numbers.Integral):
            out[key] = int(value)
        elif isinstance(value, numbers.Real):
            out[key] = float(value)
        else:
            raise TypeError(f"layer '{layer}': config {key}={value!r} is neither a scalar nor an array")
    return out


def resolve_config(out: str | Path, config: Mapping[str, Any]) -> dict[str, Any]:
    """An invocation's manifest ``config`` with every ``{"npz": ...}`` reference replaced by its array, read from
    :data:`CONFIG_FILE` in the design folder ``out``."""

    refs = {key: v["npz"] for key, v in config.items() if isinstance(v, Mapping) and "npz" in v}
    resolved = dict(config)
    if refs:
        with np.load(Path(out) / CONFIG_FILE) as archive:
            resolved.update({key: archive[ref] for key, ref in refs.items()})
    return resolved


def _entry(use: KernelUse, out: Path, arrays: dict[str, Any]) -> dict[str, Any]:

    text = verilog.convert(build_kernel(use.kernel, use.params), name=use.tag, emit_src=False)
    (out / f"{use.tag}.v").write_text(text)
    invocations = []
    for inv in use.invocations:
        cycles = invocation_cycles(use.kernel, use.params, inv.work)
        invocations.append({"layer": inv.layer, "work": dict(inv.work), "count": inv.count, "cycles": cycles,
                            "config": _config_json(inv.config, inv.layer, arrays)})
    per = {inv["cycles"] for inv in invocations}
    return {
        "name": use.kernel,
        "module": use.tag,
        "verilog": f"{use.tag}.v",
        "parameters": dict(use.params),
        "ports": kernel_ports(use.kernel, use.params),
        "cycles_formula": cycles_formula(use.kernel, use.params),
        "instances": use.instances,
        "predicted_cycles_per_invocation": per.pop() if len(per) == 1 else None,
        "invocations": invocations,
        "total_invocations": sum(inv["count"] for inv in invocations),
        "total_cycles": sum(inv["count"] * inv["cycles"] for inv in invocations),
    }


def write_design(out: str | Path, uses: Sequence[KernelUse], source: Mapping[str, Any],
                 clock_mhz: float | None = None, notes: Sequence[str] = ()) -> dict[str, Any]:
    """Emit every use's Verilog into ``out`` and write ``manifest.json`` (and :data:`CONFIG_FILE` when an
    invocation's config has arrays); returns the manifest.

    Parameters are checked (``InputError``) before the folder is touched. Uses with the same kernel and
    parameters are merged.
    """
    merged: dict[tuple[str, str], KernelUse] = {}
    for use in uses:
        full = canonical_params(use.kernel, use.params)
        key = (use.kernel, params_tag(full), use.instances)
        if key not in merged:
            merged[key] = KernelUse(use.kernel, full, instances=use.instances)
        merged[key].invocations.extend(use.invocations)
    for use in merged.values():  # timing inputs checked before anything is written
        for inv in use.invocations:
            invocation_cycles(use.kernel, use.params, inv.work)
    path = prepare_out_dir(out)
    arrays: dict[str, Any] = {}
    kernels = [_entry(use, path, arrays) for use in sorted(merged.values(), key=lambda u: (u.kernel, u.tag))]
    if arrays:

        np.savez(path / CONFIG_FILE, **arrays)
    manifest = {
        "format": FORMAT,
        "source": dict(source),
        "clock_mhz": clock_mhz,
        "config_file": CONFIG_FILE if arrays else None,
        "kernels": kernels,
        "notes": list(notes),
    }
    if clock_mhz:
        for entry in kernels:
            entry["total_us"] = round(entry["total_cycles"] / clock_mhz, 3)
    (path / "manifest.json").write_text(json.dumps(manifest, indent=2) + "\n")
    return manifest

