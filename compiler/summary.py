"""The ``report`` step: turn the schedule, the per-layer plans and the target model into report numbers.

Everything here is computed from the schedule and the model; a field the model cannot give (e.g. resources of a
GPU, the area of anything but an ASIC) is left out rather than filled with a placeholder. ``edp`` is the
energy-delay product, mJ x ms. Resources are those of the design that runs this compile's
work (the plans' ``works``): on an FPGA each vector lane holds only the units that work needs, and
``resources_detail`` says which, with what each costs. Rendering (tables, JSON, HTML) is codesign's job.
"""

from __future__ import annotations

import os
from typing import Any

from xdsl.dialects.builtin import ModuleOp

from compiler.context import CompileEnv
from compiler.frontend.to_dialect import ImportResult
from compiler.schedule.decode import decode_sections
from hw.models.asic import SiliconModel
from hw.models.base import WorkloadSizedModel, workload_sized
from hw.models.run_energy import run_energy_mj, total_mj

__all__ = ["build_report", "report_lane_units", "REPORT_VERSION"]

REPORT_VERSION = 1


def _model_name(source: str) -> str:
    return os.path.basename(source) if source else "<model>"


def build_report(env: CompileEnv, imported: ImportResult, module: ModuleOp | None = None) -> dict[str, Any]:
    """The report dict (the JSON contract of `codesign compile --json`) of the plans and schedule in ``env``, for the
    model ``imported`` describes; ``module`` (the scheduled IR) adds the KV-cache and decode-step sections."""
    model, target, sched = env.model, env.target, env.schedule
    if sched is None or model is None or target is None:
        raise RuntimeError("the report step needs the schedule pass to have run")
    clock = float(target.clock_mhz)
    cycles = int(sched.makespan)
    layers = []
    macs = 0
    macs_by_bits: dict[int, int] = {}
    onchip = 0
    bytes_off = 0
    for plan in env.plans:
        times = [sched.task(t.name) for t in plan.tasks]
        if not times:
            continue
        start = min(t.start for t in times)
        end = max(t.end for t in times)
        # A GEMM array's readout is scheduled with its compute but reported apart: compute_cycles stays the
        # array's count (SCALE-Sim's for a GEMM), drain_cycles the readout the RTL adds (hw/models/fpga.py).
        drain = int(plan.detail.get("drain_cycles", 0))
        layer = {
            "name": plan.name,
            "op": plan.op,
            "unit": ",".join(sorted({t.unit for t in plan.tasks})),
            "macs": plan.macs,
            "bytes_offchip": plan.bytes_offchip,
            "weight_bytes": plan.weight_bytes,
            "compute_cycles": sum(t.compute_cycles for t in times) - drain,
            "drain_cycles": drain,
            "memory_cycles": sum(t.memory_cycles for t in times),
            "stall_cycles": sum(t.stall_cycles for t in times),
            "cycles": end - start,
            "start_cycle": start,
            "end_cycle": end,
            "tiles": sum(t.tiles for t in plan.tasks),
        }
        if plan.detail:
            layer["detail"] = {k: v for k, v in plan.detail.items() if isinstance(v, (int, float, str, bool))}
        layers.append(layer)
        macs += plan.macs
        for bits, n in plan.macs_by_bits.items():
            macs_by_bits[bits] = macs_by_bits.get(bits, 0) + n
        onchip += plan.onchip_bytes
        bytes_off += plan.bytes_offchip
    peak = float(model.peak_macs_per_cycle())
    bandwidth = float(model.offchip_bytes_per_cycle())
    # Operands wider than the array's native width take several passes (e.g. fp32 on an int8 array): the bound
    # counts them, so it stays a bound the schedule can reach.
    pass_macs = sum(plan.macs * int(plan.detail.get("passes", 1)) for plan in env.plans)
    compute_bound = pass_macs / peak if peak else 0.0
    memory_bound = bytes_off / bandwidth if bandwidth else 0.0
    roofline = max(compute_bound, memory_bound)
    latency_ms = cycles / (clock * 1e3)
    # Throughput counts samples: the leading dim of the first model input is the batch of one inference.
    batch = int(imported.batch) if imported.batch else 1
    # An ASIC prices each work item's access counts (hw/models/asic.py), other models the aggregate counts.
    energy = run_energy_mj(model, (w for plan in env.plans for w in plan.works), macs_by_bits, onchip, bytes_off,
                           cycles)
    energy_mj = total_mj(energy)
    report: dict[str, Any] = {
        "version": REPORT_VERSION,
        "model": _model_name(imported.source),
        "target": target.name,
        "target_kind": target.kind,
        "clock_mhz": clock,
        "latency_cycles": cycles,
        "latency_ms": latency_ms,
        "throughput_per_s": (batch * 1e3 / latency_ms) if latency_ms > 0 else None,
        "macs": macs,
        "bytes_offchip": bytes_off,
        "roofline_cycles": int(round(roofline)),
        "roofline_bound": "compute" if compute_bound >= memory_bound else "memory",
        "roofline_efficiency": (roofline / cycles) if cycles else None,
        "peak_macs_per_cycle": peak,
        "offchip_bytes_per_cycle": bandwidth,
        "energy_mj": energy_mj,
        "energy_breakdown_mj": {k: v for k, v in energy.items() if k != "total"},
        "edp": energy_mj * latency_ms,  # energy-delay product, mJ x ms
        "patterns": dict(imported.patterns),
        "precision": imported.precision,
        "recognition_notes": list(imported.notes),
        **({"import_notes": list(imported.import_notes)} if imported.import_notes else {}),
        "options": dict(env.options),
        "layers": layers,
    }
    if isinstance(model, SiliconModel):
        report["area_breakdown_mm2"] = model.area_breakdown_mm2()
        report["area_mm2"] = sum(report["area_breakdown_mm2"].values())
    units = None
    sized = workload_sized(model)
    if sized is not None:
        units = sized.design_units(w for plan in env.plans for w in plan.works)
        resources = sized.resources(units)
    else:
        resources = model.resources()
    if resources:
        report["resources"] = {
            name: {"used": used, "available": avail, "fraction": (used / avail) if avail else None}
            for name, (used, avail) in resources.items()
        }
    if sized is not None and units is not None:
        report["resources_detail"] = sized.resource_detail(units)
    # KV caches and decode steps (compiler/schedule/decode.py): per-token latency next to this compile's. They re-plan
    # the module, so a report built from a plan alone (a sweep's plan tier) has none, and sweeps re-check that tier.
    if module is not None:
        names = imported.input_names
        report.update(decode_sections(module, model, target, report["model"], cycles,
                                      env.artifacts.get("decode_tokens"), names))
    masked = [layer["detail"] for layer in layers if "masked_tiles_skipped" in layer.get("detail", {})]
    if masked:
        report["attention"] = {"masked_tiles_skipped": sum(d["masked_tiles_skipped"] for d in masked),
                               "tiles_total": sum(d["tiles_total"] for d in masked),
                               "cycles_saved": sum(d["cycles_saved"] for d in masked)}
    # Feature areas (numerics accuracy, MoE routing ...) add their own sections through the env.
    for key, value in env.artifacts.get("report", {}).items():
        report[key] = value
    token = [lay for lay in layers if lay.get("detail", {}).get("prologue_cycles")]
    if token and isinstance(report.get("numerics"), dict):  # --act-granularity per-token: what its quantizers cost
        report["numerics"] = {**report["numerics"], "per_token_cost": {
            "gemms": len(token), "row_quantizer_cycles": sum(int(lay["detail"]["prologue_cycles"]) for lay in token)}}
    busy = getattr(sched, "busy_cycles", {})
    if busy:
        report["unit_busy_cycles"] = dict(busy)
    return report


def report_lane_units(model: Any, report: dict[str, Any]) -> tuple[str, ...] | None:
    """The units the compiled design's vector lanes hold (``report["resources_detail"]``), to ask ``model`` for that
    design's fit and resources; None for a model whose resources do not depend on the workload."""
    if isinstance(model, WorkloadSizedModel) and "resources_detail" in report:
        return tuple(report["resources_detail"]["lane_units"])
    return None
