"""Recognise GELU and LayerNorm / RMSNorm regions by evaluating them on random data.

A candidate region (compiler/frontend/regions.py) around an anchor node (``Erf``, ``Tanh`` or ``Sigmoid`` for GELU,
``ReduceMean`` for a norm) is evaluated on random inputs and compared with the reference function: GELU in its erf,
tanh or sigmoid (x * sigmoid(1.702 x)) form; a norm by fitting per-channel (gamma, beta) by least squares over
three random batches, with or without centring (LayerNorm or RMSNorm). Matching by value instead of by spelling is
what lets every exporter's decomposition through.
"""

from __future__ import annotations

import numpy as np

from compiler.frontend.graph import Graph, Node
from compiler.frontend.match import Match, MatchContext
from compiler.frontend.precision import pattern_eps, tolerance
from compiler.frontend.regions import Region, candidate_regions, cone_tensors, erf64, eval_region

__all__ = ["match_gelu", "match_norm"]


def _gelu_ref(x: np.ndarray, form: str) -> np.ndarray:
    if form == "sigmoid":  # x * sigmoid(1.702 x): OpenAI CLIP's quick_gelu, I-ViT ShiftGELU's own form
        return x / (1 + np.exp(-1.702 * x))
    if form == "tanh":
        return 0.5 * x * (1 + np.tanh(np.sqrt(2 / np.pi) * (x + 0.044715 * x**3)))
    return 0.5 * x * (1 + erf64(x / np.sqrt(2)))


def match_gelu(ctx: MatchContext, anchor: Node) -> Match | None:
    g = ctx.graph
    form = {"Erf": "erf", "Tanh": "tanh", "Sigmoid": "sigmoid"}[anchor.op_type]
    rng = np.random.default_rng(0)
    for x in cone_tensors(g, anchor.inputs[0], ctx.producers, 5):
        shape = g.shapes.get(x)
        if not shape:
            continue
        for region in candidate_regions(g, x, ctx.consumers, ctx.order, lambda ns: any(n is anchor for n in ns)):
            if any(id(n) in ctx.taken for n in region.nodes):
                continue
            # With only scalar constants the region is element-wise: a short vector judges it as well as the
            # whole [B, S, 4D] activation, at a fraction of the cost.
            scalar = all(g.constants[i].size == 1 for n in region.nodes for i in n.inputs if i in g.constants)
            sample_shape = (512,) if scalar else shape
            sample = rng.normal(0, 2, size=sample_shape)
            try:
                got = eval_region(g, region, sample)
            except (ValueError, KeyError):
                continue
            # a half-precision export's constants (1/sqrt(2), 0.044715, 1.702) are rounded: allowed that, no more
            eps = pattern_eps(g, region.nodes)
            if got.shape == sample_shape and np.allclose(got, _gelu_ref(sample, form), rtol=tolerance(1e-5, eps),
                                                         atol=tolerance(1e-6, eps, 1.0)):
                return Match("gelu", region.nodes, region.output, {"input": x},
                             {"approx": "exact" if form == "erf" else form})
    return None


def _norm_fit(g: Graph, region: Region, shape: tuple[int, ...], eps: float, rms: bool):
    """Per-channel (gamma, beta) making the region equal a normalisation, or None."""
    rng = np.random.default_rng(1)
    # Per-channel constants broadcast over rows, so 4 rows judge a norm as well as all B*S of them.
    consts = [g.constants[i] for n in region.nodes for i in n.inputs if i in g.constants]
    if all(c.size == 1 or c.shape == (shape[-1],) for c in consts) and not any(
            n.op_type not in ("ReduceMean",) and n.attrs.get("axes") not in (None, [-1], [len(shape) - 1])
            for n in region.nodes):
        # keep the rank: a reduction over the last axis by its positive index (I-BERT's mean(axis=2)) still is one
        shape = (1,) * (len(shape) - 2) + (4, shape[-1])
    xs = [rng.normal(0.3, 1.5, size=shape) for _ in range(3)]
    try:
        ys = [eval_region(g, region, x) for x in xs]
    except (ValueError, KeyError):
        return None
    if any(y.shape != tuple(shape) for y in ys):
        return None
    ns = []
    for x in xs:
        if rms:
            ns.append(x / np.sqrt((x * x).mean(-1, keepdims=True) + eps))
        else:
            d = x - x.mean(-1, keepdims=True)
            ns.append(d / np.sqrt((d * d).mean(-1, keepdims=True) + eps))
    c = shape[-1]
    n_all = np.concatenate([n.reshape(-1, c) for n in ns])
    y_all = np.concatenate([y.reshape(-1, c) for y in ys])
    gamma = ((n_all[1:] - n_all[0]) * (y_all[1:] - y_all[0])).sum(0) / ((n_all[1:] - n_all[0]) ** 2).sum(0)
    beta = (y_all - n_all * gamma).mean(0)
    if not np.allclose(n_all * gamma + beta, y_all, rtol=1e-4, atol=1e-5):
        return None
    return gamma, beta


def _exact_param(g: Graph, region: Region, fitted: np.ndarray, default: float) -> tuple[str | None, np.ndarray]:
    """Prefer a constant of the region that equals the fitted parameter; else the fitted value."""
    for node in region.nodes:
        for name in node.inputs:
            value = g.constants.get(name)
            if value is not None and value.shape[-1:] == fitted.shape and value.size == fitted.size:
                if np.allclose(value.reshape(-1), fitted, rtol=1e-4, atol=1e-5):
                    return name, value.reshape(-1)
    if np.allclose(fitted, default, atol=1e-5):
        return None, np.full(fitted.shape, default, dtype=np.float32)
    return None, fitted.astype(np.float32)


def match_norm(ctx: MatchContext, anchor: Node) -> Match | None:
    g = ctx.graph
    for x in cone_tensors(g, anchor.inputs[0], ctx.producers, 3):
        shape = g.shapes.get(x)
        if not shape or shape[-1] < 2:
            continue
        for region in candidate_regions(g, x, ctx.consumers, ctx.order, lambda ns: any(n is anchor for n in ns)):
            normalises = any(n.op_type in ("Sqrt", "Pow", "Reciprocal", "Div") for n in region.nodes)
            if any(id(n) in ctx.taken for n in region.nodes) or not normalises:
                continue
            eps_candidates = [s for n in region.nodes if n.op_type == "Add" for i in n.inputs
                              if (s := g.scalar(i)) is not None and 0 < s < 1e-2]
            eps = eps_candidates[0] if eps_candidates else 0.0
            has_center = sum(n.op_type == "ReduceMean" for n in region.nodes) >= 2
            for rms in ((False, True) if has_center else (True,)):
                fit = _norm_fit(g, region, shape, eps, rms)
                if fit is None:
                    continue
                gname, gamma = _exact_param(g, region, fit[0], 1.0)
                bname, beta = _exact_param(g, region, fit[1], 0.0)
                return Match("layernorm", region.nodes, region.output, {"input": x, "weight": gname, "bias": bname},
                             {"epsilon": eps, "kind": "rmsnorm" if rms else "layernorm", "gamma": gamma,
                              "beta": None if rms and bname is None and not np.any(beta) else beta})
    return None
