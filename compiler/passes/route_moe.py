"""``route-moe``: give every ``dataflow.moe`` its expert queue lengths, from real routing when there is data.

With real inputs (the compile's ``env.artifacts["calibration"]``, i.e. ``--inputs``, or this pass's ``inputs=`` npz
whose arrays, in the model's input order, carry a leading sample axis) the functional simulator runs the model and
the router of each block (compiler/simulate/moe.py) records where every token went; the queue length of expert e
is its kept assignments per inference averaged over the samples, rounded so the total is kept (largest remainder)
and an expert any sample used keeps at least one token (its weights are loaded). Without data the queues follow
the uniform assumption of compiler/schedule/moe.py and are marked ``assumed``.

Writes the ``tokens_per_expert`` and ``routing`` (``measured`` | ``assumed``) attributes the lowering prices, and the
report's ``moe`` section (per block: experts, top_k, mode, tokens per expert, active experts, drops, expert-weight
bytes).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from xdsl.context import Context
from xdsl.dialects.builtin import DenseArrayBase, ModuleOp, StringAttr, i64
from xdsl.ir import Operation
from xdsl.passes import ModulePass

from compiler.dialect import dataflow as df
from compiler.npz import read_npz
from compiler.schedule.moe import ROUTING_ATTR, TOKENS_ATTR, expert_weight_bytes, moe_shape, tokens_per_expert_of
from hw.errors import InputError

__all__ = ["RouteMoe", "measure_routing"]


def _load_npz(path: str) -> tuple[list[str], dict[str, np.ndarray], str]:
    p = Path(path)
    if not p.exists():
        raise InputError(f"route-moe: inputs file {path} does not exist")
    data = read_npz(p, f"route-moe: inputs file {path}")
    if not data:
        raise InputError(f"route-moe: {path} holds no arrays")
    return list(data), data, p.name


def measure_routing(module: ModuleOp, weights: dict[str, np.ndarray], names: list[str],
                    data: dict[str, np.ndarray], samples: int = 0) -> dict[int, list[np.ndarray]]:
    """Run the simulator on ``data`` (leading sample axis) and return, per MoE op id, each sample's [E] kept
    assignments per expert. ``samples`` > 0 caps the number of samples run."""
    # the simulator (and calibrate, which imports it) load torch: only a compile given routing data runs them
    from compiler.calibrate import check_simulation_memory
    from compiler.simulate import Simulator

    count = len(next(iter(data.values())))
    if samples > 0:
        count = min(count, samples)
    check_simulation_memory(module, count, sum(int(np.asarray(v).nbytes) for v in data.values()), "route-moe")
    sim = Simulator(module, weights, names)
    traces: dict[int, list[np.ndarray]] = {}

    def observe(op: Operation, outs: list[Any]) -> None:
        if isinstance(op, df.MoeOp):
            traces.setdefault(id(op), []).append(sim.ctx.memo(op)["routing"].tokens_per_expert())

    for i in range(count):
        try:
            sim.run({k: v[i] for k, v in data.items()}, observer=observe)
        except KeyError as err:
            raise InputError(f"route-moe: the inputs lack the model input {err}; inputs given: "
                             f"{', '.join(data)}") from None
    return traces


@dataclass(frozen=True)
class RouteMoe(ModulePass):
    """Annotate MoE ops with queue lengths (measured from ``inputs`` / the compile's data, else assumed)."""

    name = "route-moe"
    inputs: str | None = None
    samples: int = 0

    def apply(self, ctx: Context, op: ModuleOp) -> None:
        moes = [o for o in op.walk() if isinstance(o, df.MoeOp)]
        if not moes:
            return
        env = getattr(ctx, "env", None)
        source = None
        if self.inputs is not None:
            if env is None:
                raise InputError("route-moe{inputs=...} needs the model's weights; run it from `codesign compile`")
            names, data, label = _load_npz(self.inputs)
            source = label
        elif env is not None and env.artifacts.get("calibration") is not None:
            calib = env.artifacts["calibration"]
            names, data = list(calib["names"]), calib["data"]
            source = str(calib.get("source", "inputs"))
            if source.startswith("synthetic"):
                source = None
        traces: dict[int, list[np.ndarray]] = {}
        if source is not None:
            traces = measure_routing(op, env.weights, names, data, self.samples)  # type: ignore[union-attr]
        rows = []
        for moe in moes:
            samples = traces.get(id(moe))
            if samples:
                counts = _round_mean(np.mean(np.stack(samples), axis=0))
                moe.attributes[TOKENS_ATTR] = DenseArrayBase.from_list(i64, counts)
                moe.attributes[ROUTING_ATTR] = StringAttr("measured")
            else:  # the uniform assumption, written down so the IR shows what the schedule prices
                moe.attributes.pop(TOKENS_ATTR, None)
                moe.attributes.pop(ROUTING_ATTR, None)
                counts, _ = tokens_per_expert_of(moe)
                moe.attributes[TOKENS_ATTR] = DenseArrayBase.from_list(i64, counts)
                moe.attributes[ROUTING_ATTR] = StringAttr("assumed")
            rows.append(_row(moe, samples))
        if env is not None:
            section = env.artifacts.setdefault("report", {})
            section["moe"] = {
                "routing": (f"measured on {len(next(iter(traces.values()), []))} samples of {source}"
                            if traces else "assumed: uniform (T x top_k assignments spread evenly over the experts)"),
                "layers": rows,
            }


def _round_mean(mean: np.ndarray) -> list[int]:
    """Integers summing to round(sum(mean)), largest remainders first; a used expert (mean > 0) keeps >= 1."""
    floor = np.floor(mean + 1e-9).astype(int)
    short = int(round(float(mean.sum()))) - int(floor.sum())
    for idx in np.argsort(-(mean - floor), kind="stable")[:max(0, short)]:
        floor[idx] += 1
    return [max(int(c), 1) if m > 0 else 0 for c, m in zip(floor, mean)]


def _row(moe: df.MoeOp, samples: list[np.ndarray] | None) -> dict[str, Any]:
    counts, source = tokens_per_expert_of(moe)
    s = moe_shape(moe)
    active_w, all_w = expert_weight_bytes(moe, counts)
    mean = sum(counts) / len(counts)
    row: dict[str, Any] = {
        "name": moe.layer_name(), "experts": s["experts"], "top_k": s["top_k"],
        "mode": moe.mode_choice().value, "capacity_factor": moe.capacity_factor_value(),
        "tokens": s["tokens"], "routing": source, "tokens_per_expert": counts,
        "active_experts": sum(1 for c in counts if c > 0), "max_tokens_per_expert": max(counts),
        "load_imbalance": max(counts) / mean if mean else 0.0,
        "dropped_assignments": max(0, s["tokens"] * s["top_k"] - sum(counts)),
        "expert_weight_bytes": active_w, "expert_weight_bytes_all": all_w,
    }
    if samples:
        stacked = np.stack(samples)
        row["samples"] = len(samples)
        row["tokens_per_expert_min"] = stacked.min(axis=0).astype(int).tolist()
        row["tokens_per_expert_max"] = stacked.max(axis=0).astype(int).tolist()
    return row
