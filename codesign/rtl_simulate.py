"""``codesign rtl ... --system --simulate``: run a compiled model's program on the top level, per sample.

Per ``--inputs`` sample (the synthetic calibration sample without ``--inputs``): the functional simulator runs the
host prologue (codesign/rtl_system.py writes its results into the DRAM image), Verilator runs the program on
``cds1_system`` through cocotb (``hw.rtl.system.run_system``: cocotbext-axi's ``AxiRam`` serves DRAM), and the host
epilogue runs in the functional simulator on the outputs the RTL left in DRAM (``Simulator.run(overrides=...)``).
The outputs are written as ``codesign compile --outputs`` writes them (one array per model output, a leading sample
axis), so the two files can be compared directly.

Cycles: ``rtl_cycles`` is the top level's own count from ``start`` to ``done``; per layer, the difference of the
trace marks the backend put behind each layer (docs/ISA.md, NOP), read from the trace memory after ``done``.
``latency_cycles`` is the performance model's (``codesign compile``'s report), in total and per layer of the same
name; a layer the model prices apart from the one the program runs it in (a requant fused into a GEMM) has none.
``host_latency_cycles`` is the part of the model's total spent on the ops the host runs (``host_ops``: the float
prologue and epilogue, which the model prices on the accelerator and the top level does not run; ``host_layers``
names each with its cycles), so ``device_latency_cycles`` (``latency_cycles - host_latency_cycles``) is the
model's figure for what ``rtl_cycles`` counts. ``device_outputs_equal_simulator`` says whether every program
output equals the functional simulator's value. ``run_s`` is the simulator's wall time per run summed (start-up,
image load and read-back included), ``program_s`` the part from ``start`` to ``done``.
:func:`agreement` compares the two per layer.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

__all__ = ["simulate", "agreement", "Agreement"]


def _decode(raw: bytes, region: Any) -> np.ndarray:
    dtype = np.dtype(f"<i{region.elem_bytes}")
    return np.frombuffer(raw, dtype).astype(np.int64).reshape(region.shape)


@dataclass(frozen=True)
class Agreement:
    """The model against the RTL in one ``--json`` report, all errors ``(model - rtl) / rtl``: ``total`` (the
    model's device part, ``device_latency_cycles``), and per model layer ``layers`` as ``(name, rtl_cycles,
    latency_cycles, error)``, a model layer's RTL cycles being its own with those of the RTL layers after it that
    the model does not price apart (a fused GELU, residual add or requant: ``latency_cycles`` null)."""

    total: float
    layers: tuple[tuple[str, int, int, float], ...]

    @property
    def worst(self) -> tuple[str, int, int, float]:
        """The layer with the largest ``|error|``."""
        return max(self.layers, key=lambda layer: abs(layer[3]))


def agreement(report: dict[str, Any]) -> Agreement:
    """:class:`Agreement` of a ``--json`` report (:func:`simulate`'s)."""
    groups: list[list[Any]] = []
    for layer in report["layers"]:
        if layer["latency_cycles"] is None and groups:
            groups[-1][1] += layer["rtl_cycles"]
        else:
            groups.append([layer["name"], layer["rtl_cycles"], layer["latency_cycles"]])
    rtl = report["rtl_cycles"]
    layers = tuple((name, r, m, (m - r) / r) for name, r, m in groups if m is not None and r)
    return Agreement((report["device_latency_cycles"] - rtl) / rtl, layers)


def simulate(design: Any, sim: str, outputs_path: Path | None, json_path: Path | None) -> dict[str, Any]:
    """Run every sample (module docstring); write ``outputs_path`` and ``json_path`` if given; return the report."""
    from codesign._io import write_json_atomic
    from codesign.accuracy import write_outputs
    from codesign.rtl_system import first_feeds, host_values, sample_image
    from compiler.simulate import Simulator
    from hw.isa import to_bytes
    from hw.rtl.system import run_system

    result, mp = design.result, design.mp
    imported = result.imported
    if design.samples is not None:
        count = len(next(iter(design.samples.values())))
        feeds_of = [{k: v[i] for k, v in design.samples.items()} for i in range(count)]
    else:
        feeds_of = [first_feeds(design)[0]]
    spans = mp.builder.layers
    binary = to_bytes(mp.program)
    reads = {region.name: (region.addr, region.nbytes) for region in mp.outputs.values()}
    sim_model = Simulator(result.module, result.env.weights, imported.input_names, imported.output_names)
    stacked: dict[str, list[np.ndarray]] = {name: [] for name in imported.output_names}
    cycles: list[int] = []
    traces: list[tuple[int, ...]] = []
    equal = True
    build_s = run_s = program_s = 0.0
    for i, feeds in enumerate(feeds_of):
        values = host_values(design, feeds)
        run = run_system(design.config, binary, sample_image(design, values), reads, sim, run_name=f"sample{i}",
                         trace=len(spans))
        device = {value: _decode(run.reads[region.name], region) for value, region in mp.outputs.items()}
        equal = equal and all(np.array_equal(device[v], np.asarray(values[v]).reshape(device[v].shape))
                              for v in device)
        for name, out in sim_model.run(feeds, overrides=device).items():
            stacked[name].append(out)
        cycles.append(run.cycles)
        traces.append(run.trace)
        build_s += run.build_s
        run_s += run.run_s
        program_s += run.program_s
    model_layers = {layer["name"]: layer["cycles"] for layer in (result.report or {}).get("layers", [])}
    trace = traces[0]
    layers = []
    for span in spans:
        previous = trace[span.mark - 1] if span.mark else 0
        layers.append({"name": span.name, "op": design.ops.get(span.name, "?"),
                       "instructions": [span.first, span.end], "rtl_cycles": int(trace[span.mark] - previous),
                       "latency_cycles": model_layers.get(span.name)})
    latency = (result.report or {}).get("latency_cycles")
    host = sum(model_layers.get(name) or 0 for name in mp.host_ops)
    report = {
        "model": design.source["model"], "target": design.source["target"], "simulator": sim,
        "samples": len(feeds_of), "clock_mhz": float(result.env.target.clock_mhz),
        "rtl_cycles": cycles[0], "rtl_cycles_per_sample": cycles,
        "latency_cycles": (result.report or {}).get("latency_cycles"),
        "host_latency_cycles": host,
        "device_latency_cycles": None if latency is None else latency - host,
        "device_outputs_equal_simulator": equal,
        "layers": layers, "host_ops": list(mp.host_ops),
        "host_layers": [{"name": name, "latency_cycles": model_layers.get(name)} for name in mp.host_ops],
        "source": design.source, "system": {**asdict(design.config), "width": design.config.width},
        "build_s": round(build_s, 1), "run_s": round(run_s, 1), "program_s": round(program_s, 2),
    }
    if outputs_path is not None:
        write_outputs(outputs_path, {name: np.stack(v) for name, v in stacked.items()})
    if json_path is not None:
        write_json_atomic(json_path, report)
    return report
