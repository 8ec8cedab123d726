"""``--quant auto --accuracy-target T``: per GEMM, the cheapest weight recipe that keeps the model's output at
mean per-row cosine >= T against the float model on the calibration data (rows an ``attention_mask`` input marks
as padding excluded).

Recipes (:data:`RECIPES`, cheapest first by the bytes of weights and scales they load): int4 per output channel,
int4 with a step per 128 / 64 / 32 input rows (compiler/quant_groups.py; each adds a multiply-add per group and
output on the requant path), int8 per channel. Activations stay int8 with the compile's other recipes (balance,
observer, rounding), so only the weights' format is searched.

Method (greedy, as compiler/passes/quantize.py's report says):

1. every static GEMM's sensitivity: for each recipe, the SQNR (dB) of the GEMM's own output on its calibration
   input rows with only its weights quantized that way (round to nearest, float activations);
2. a promotion order: start with every GEMM at the cheapest recipe, then repeatedly promote the GEMM whose current
   SQNR is lowest to its next recipe, until all are int8;
3. the shortest prefix of that order whose quantized model (the real integer datapath, simulated) meets the target,
   found by bisection on the prefix length (each probe one quantization and simulation of the calibration data;
   the accuracy is taken as monotone along the order, and the chosen prefix is always one that was measured to
   pass). If even all-int8 weights miss the target, all-int8 is kept and the report says the target was not met.

The report (``numerics.quant_auto``) lists every GEMM's choice with its SQNR and hardware cost (weight + scale
bytes, the group rescale's multiply-adds, and the GEMM's cycles on the target, rescale included), and every
candidate beside it.
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass
from typing import Any

import numpy as np
from xdsl.context import Context
from xdsl.dialects import func
from xdsl.dialects.builtin import ModuleOp

from compiler.calibrate import activation_ranges, synthetic_inputs
from compiler.context import CompileEnv, env_of, make_context
from compiler.dialect import dataflow as df
from compiler.output_rows import as_rows
from compiler.quant_groups import group_scale_bits, groups_of, quantize_grouped
from compiler.quant_recipes import quantize_weight
from compiler.schedule.lower import gemm_work
from compiler.simulate import Simulator
from hw.errors import InputError
from hw.models.base import ceil_div
from hw.perf.workload import GemmWork, VectorWork

__all__ = ["METHOD", "RECIPES", "Recipe", "choose_recipes", "output_cosine", "recipe_cost"]

METHOD = ("greedy: GEMMs promoted lowest weight-SQNR first (w4 -> w4g128 -> w4g64 -> w4g32 -> w8), "
          "bisection on the number of promotions against the simulated output cosine on the calibration data")


@dataclass(frozen=True)
class Recipe:
    """A weight format: ``bits`` per code, one step per ``group`` input rows and output channel (0: per channel)."""

    name: str
    bits: int
    group: int


RECIPES = (Recipe("w4", 4, 0), Recipe("w4g128", 4, 128), Recipe("w4g64", 4, 64), Recipe("w4g32", 4, 32),
           Recipe("w8", 8, 0))


@dataclass
class _Gemm:
    layer: str
    k: int
    n: int
    work: GemmWork
    weight: np.ndarray
    rows: np.ndarray | None
    candidates: list[Recipe]
    sqnr: list[float]


def recipe_cost(work: GemmWork, recipe: Recipe, model: Any | None) -> dict[str, Any]:
    """Hardware cost of one GEMM under ``recipe``: weight bytes (codes + scales: 4-byte steps per channel, b-bit
    group multipliers), the group rescale's multiply-adds, and cycles on ``model`` (GEMM and rescale overlapped as
    the lowering prices them; absent without a model)."""
    k, n = work.k, work.n
    grouped = recipe.group and k > recipe.group
    g = groups_of(k, recipe.group) if grouped else 0
    scale_bits = group_scale_bits(k, recipe.bits) if grouped else 0
    out: dict[str, Any] = {"recipe": recipe.name,
                           "weight_bytes": ceil_div(k * n * recipe.bits, 8) + 4 * n + ceil_div(g * n * scale_bits, 8),
                           "group_macs": work.batch * work.m * n * g}
    if model is not None:
        w = dataclasses.replace(work, w_bits=recipe.bits)
        cycles = model.cost(w).compute_cycles
        if grouped:
            rescale = VectorWork(kind="requant", elements=work.batch * work.m * n * g, rows=work.batch * work.m * g,
                                 bits=work.acc_bits)
            cycles = max(cycles, model.cost(rescale).compute_cycles)
        out["cycles"] = int(cycles)
    return out


def _sqnr(x: np.ndarray | None, w: np.ndarray, recipe: Recipe) -> float:
    """SQNR (dB) of x @ w with w alone quantized by ``recipe`` (weights' own SQNR without calibration rows)."""
    if recipe.group and w.shape[0] > recipe.group:
        wq = quantize_grouped(w, recipe.bits, recipe.group).real()
    else:
        codes, s = quantize_weight(w, recipe.bits)
        wq = codes * s
    ref, err = (x @ w, x @ (w - wq)) if x is not None else (w, w - wq)
    return float(10 * np.log10(max(float((ref * ref).sum()), 1e-30) / max(float((err * err).sum()), 1e-30)))


def output_cosine(got: list[dict[str, np.ndarray]], ref: list[dict[str, np.ndarray]],
                  masks: list[np.ndarray] | None = None) -> float:
    """Mean over every output row (compiler/output_rows.py: the last axis, merged with those before it when it holds
    fewer than 16 values) of every sample of cos(got, ref); rows of zeros in the reference are
    skipped, and so are the rows a sample's ``masks`` entry (an attention mask, one entry per row) marks 0: padding
    the model ignores (codesign/accuracy.py's ``cosine_mean_valid``)."""
    cos: list[np.ndarray] = []
    for i, (g, r) in enumerate(zip(got, ref)):
        for name, want in r.items():
            b = as_rows(np.asarray(want))
            a = np.asarray(g[name], np.float64).reshape(b.shape)
            na, nb = np.linalg.norm(a, axis=1), np.linalg.norm(b, axis=1)
            keep = nb > 0
            if masks is not None and np.size(masks[i]) == len(a):
                keep &= np.asarray(masks[i]).reshape(-1).astype(bool)
            cos.append((a[keep] * b[keep]).sum(1) / np.maximum(na[keep] * nb[keep], 1e-30))
    joined = np.concatenate(cos) if cos else np.zeros(0)
    return float(joined.mean()) if joined.size else 0.0


def _calibration(op: ModuleOp, env: CompileEnv, samples: int) -> tuple[list[str], dict[str, np.ndarray]]:
    calib = env.artifacts.get("calibration")
    if calib is not None:
        return list(calib["names"]), calib["data"]
    fn = next(o for o in op.walk() if isinstance(o, func.FuncOp))
    names = [f"arg{i}" for i in range(len(fn.body.block.args))]
    return names, synthetic_inputs(op, names, samples)


def _gemms(op: ModuleOp, env: CompileEnv, names: list[str], data: dict[str, np.ndarray]) -> list[_Gemm]:
    static = [o for o in op.walk() if isinstance(o, df.GemmOp) and isinstance(o.rhs.owner, df.WeightOp)
              and len(o.rhs.type.get_shape()) == 2]  # type: ignore[attr-defined]
    rows: dict[Any, list[np.ndarray]] = {o.lhs: [] for o in static}
    activation_ranges(op, env.weights, names, data, rows=rows)
    out = []
    for o in static:
        w = np.asarray(env.weights[df.layer_of(o.rhs.owner)], np.float64)  # type: ignore[arg-type]
        x = np.concatenate(rows[o.lhs]).astype(np.float64) if rows[o.lhs] else None
        if x is not None and len(x) > 512:
            x = x[np.linspace(0, len(x) - 1, 512).astype(np.int64)]
        cands = [r for r in RECIPES if not r.group or (w.shape[0] > r.group and group_scale_bits(w.shape[0], r.bits))]
        out.append(_Gemm(o.layer_name(), w.shape[0], w.shape[1], dataclasses.replace(
            gemm_work(o), in_bits=8, acc_bits=32), w, x, cands, [_sqnr(x, w, r) for r in cands]))
    return out


def _order(gemms: list[_Gemm]) -> list[list[int]]:
    """States along the greedy promotion order: state[i] is the index of GEMM i's recipe in its candidates."""
    state = [0] * len(gemms)
    states = [list(state)]
    while True:
        open_ = [i for i, g in enumerate(gemms) if state[i] + 1 < len(g.candidates)]
        if not open_:
            return states
        worst = min(open_, key=lambda i: (gemms[i].sqnr[state[i]], i))
        state[worst] += 1
        states.append(list(state))


def choose_recipes(quantize: Any, ctx: Context, op: ModuleOp) -> None:
    """Run ``quantize`` (the compile's Quantize pass, ``mode=auto``) as the cheapest per-GEMM weight recipes that
    meet its ``accuracy_target``, and write the choice and its costs to the report (``numerics.quant_auto``).

    ``quantize`` is passed in (not imported) so this module and the pass do not import each other."""
    target = float(quantize.accuracy_target)
    if not 0 < target <= 1:
        raise InputError(f"--accuracy-target {target:g}: must be in (0, 1]")
    env = env_of(ctx, quantize.name, "the model's weights and calibration data")
    names, data = _calibration(op, env, quantize.samples)
    gemms = _gemms(op, env, names, data)
    base = "int8" if any(isinstance(o, df.MoeOp) for o in op.walk()) else "w4a8"  # MoE experts: not searched
    count = len(next(iter(data.values())))
    reference = Simulator(op, env.weights, names, exact=True)
    refs = [reference.run({k: v[i] for k, v in data.items()}) for i in range(count)]
    masks = list(data["attention_mask"]) if "attention_mask" in data else None

    def layers_of(state: list[int]) -> str:
        return json.dumps({g.layer: [g.candidates[s].bits, g.candidates[s].group] for g, s in zip(gemms, state)})

    def probe(state: list[int]) -> float:
        trial = op.clone()
        trial_env = CompileEnv(weights=dict(env.weights), target=env.target, model=env.model,
                               options=dict(env.options),
                               artifacts={k: v for k, v in env.artifacts.items() if k == "calibration"})
        dataclasses.replace(quantize, mode=base, layers=layers_of(state)).apply(make_context(trial_env), trial)
        sim = Simulator(trial, trial_env.weights, names)
        return output_cosine([sim.run({k: v[i] for k, v in data.items()}) for i in range(count)], refs, masks)

    states = _order(gemms)
    measured: dict[int, float] = {}

    def cos_at(i: int) -> float:
        if i not in measured:
            measured[i] = probe(states[i])
        return measured[i]

    lo, hi = 0, len(states) - 1
    if cos_at(lo) >= target:
        best = lo
    elif cos_at(hi) < target:
        best = hi
    else:  # cos_at(lo) < target <= cos_at(hi): the shortest passing prefix between them
        while hi - lo > 1:
            mid = (lo + hi) // 2
            lo, hi = (lo, mid) if cos_at(mid) >= target else (mid, hi)
        best = hi
    chosen = states[best]
    dataclasses.replace(quantize, mode=base, layers=layers_of(chosen)).apply(ctx, op)
    model = env.model
    layers = []
    for g, s in zip(gemms, chosen):
        cands = [{**recipe_cost(g.work, r, model), "sqnr_db": round(q, 2)} for r, q in zip(g.candidates, g.sqnr)]
        layers.append({"layer": g.layer, "k": g.k, "n": g.n, **cands[s], "candidates": cands})
    section = env.artifacts.setdefault("report", {}).setdefault("numerics", {})
    bits = sorted({g.candidates[s].bits for g, s in zip(gemms, chosen)})
    section.update({"quant": "auto", "weight_bits": bits[0] if len(bits) == 1 else bits})
    section["quant_auto"] = {
        "method": METHOD, "accuracy_target": target, "output_cosine": round(measured[best], 6),
        "met": measured[best] >= target, "probes": len(measured), "promotions": best,
        "weight_bytes": sum(x["weight_bytes"] for x in layers),
        "weight_bytes_all_w8": sum(next(c for c in x["candidates"] if c["recipe"] == "w8")["weight_bytes"]
                                   for x in layers),
        "layers": layers}
