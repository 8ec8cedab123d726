"""Mixture-of-experts routing, dispatch and combine: the float64 reference the compiler and simulator follow.

Three routing modes (``dataflow.moe``'s ``mode``):

``token``   Switch / GShard / V-MoE: each token picks its ``top_k`` experts from a softmax over the gate logits.
            With a capacity limit C, assignments are served rank-major, then in token order (all first choices
            before any second choice, the earlier token first: Switch's cumsum over tokens for top-1, V-MoE's
            batch-priority order without the priority), and an assignment beyond an expert's C-th is *dropped*:
            it contributes nothing, the block's residual carries the token. ``C = ceil(capacity_factor * T * k / E)``
            (Switch: ``ceil(cf * T / E)`` for k = 1), or an absolute ``capacity`` when the export fixes one.
``task``    Edge-MoE / M3ViT: one gate matrix per task, fixed before inference; per token the top-k of the full
            softmax, ranked on the logits with a strict ``>`` scan (ties go to the lower expert index), weights the
            full-softmax probabilities, NOT renormalised over the k picks; no capacity limit.
``image``   Mobile V-MoE: one routing decision per image: the gate sees the mean of the image's tokens (equal to
            the mean of the per-token logits, the gate being linear) and every token of the image goes to the
            image's top-k experts with the image's weights.

Ties: every mode ranks with a stable sort on the logits, so equal logits go to the lower expert index.
``renormalize`` divides the k kept weights of a token by their sum (Mixtral style) before capacity drops.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np

__all__ = ["Routing", "Scoring", "route", "capacity_of", "dispatch", "combine", "expert_ffn", "moe_reference",
           "ACTIVATIONS", "softmax64"]


def softmax64(x: np.ndarray, axis: int = -1) -> np.ndarray:
    """Softmax in float64 along ``axis``."""
    z = np.asarray(x, dtype=np.float64)
    z = z - z.max(axis=axis, keepdims=True)
    e = np.exp(z)
    return e / e.sum(axis=axis, keepdims=True)


def _gelu(x: np.ndarray) -> np.ndarray:
    import torch

    erf = torch.erf(torch.from_numpy(np.asarray(x, dtype=np.float64) / math.sqrt(2.0))).numpy()
    return 0.5 * x * (1.0 + erf)


ACTIVATIONS: dict[str, Callable[[np.ndarray], np.ndarray]] = {
    "gelu": _gelu,
    "gelu_tanh": lambda x: 0.5 * x * (1 + np.tanh(math.sqrt(2 / math.pi) * (x + 0.044715 * x**3))),
    "relu": lambda x: np.maximum(x, 0.0),
    "silu": lambda x: x / (1.0 + np.exp(-x)),
    "identity": lambda x: x,
}
"""Expert hidden activations by the names ``dataflow.moe``'s ``activation`` takes."""


@dataclass(frozen=True)
class Routing:
    """Where each token of a block goes.

    ``experts`` [T, k] int64: the expert of each (token, rank); ``weights`` [T, k] float64: its combine weight (0
    where dropped); ``kept`` [T, k] bool: the assignment survived the capacity limit. ``capacity``: per-expert
    limit in tokens, None when unlimited.
    """

    experts: np.ndarray
    weights: np.ndarray
    kept: np.ndarray
    num_experts: int
    capacity: int | None = None

    @property
    def tokens(self) -> int:
        """Tokens routed (T)."""
        return int(self.experts.shape[0])

    def tokens_per_expert(self) -> np.ndarray:
        """[E] int64: kept assignments per expert (the rows each expert's GEMMs process)."""
        return np.bincount(self.experts[self.kept], minlength=self.num_experts).astype(np.int64)

    def requested_per_expert(self) -> np.ndarray:
        """[E] int64: assignments per expert before the capacity limit."""
        return np.bincount(self.experts.reshape(-1), minlength=self.num_experts).astype(np.int64)

    def dropped(self) -> int:
        """Assignments dropped by the capacity limit."""
        return int((~self.kept).sum())

    def queues(self) -> list[np.ndarray]:
        """Per expert, the token indices it processes in ascending token order (Edge-MoE's patch queues)."""
        out = []
        for e in range(self.num_experts):
            out.append(np.sort(np.nonzero((self.experts == e) & self.kept)[0]).astype(np.int64))
        return out


@dataclass(frozen=True)
class Scoring:
    """A sigmoid router (DeepSeek-V3, GLM-4-MoE): ``s = sigmoid(logits)``; experts chosen by ``s + bias`` (a
    selection-only bias), restricted to the ``topk_groups`` of ``groups`` equal expert groups whose two best choice
    scores sum highest (the other experts' choice scores set to 0, as the reference implementation's masked_fill);
    weights ``s`` of the chosen experts, divided by their sum (+1e-20) when the block renormalises, times
    ``scale``. No capacity limit."""

    bias: tuple[float, ...] | None = None
    groups: int = 1
    topk_groups: int = 1
    scale: float = 1.0


def capacity_of(tokens: int, num_experts: int, top_k: int, capacity_factor: float) -> int | None:
    """Per-expert capacity ``ceil(capacity_factor * tokens * top_k / num_experts)``; None for factor 0 (no limit)."""
    if capacity_factor <= 0:
        return None
    return int(math.ceil(capacity_factor * tokens * top_k / num_experts - 1e-9))


def _sigmoid_route(z: np.ndarray, top_k: int, renormalize: bool, scoring: Scoring) -> Routing:
    t, e = z.shape
    s = 1.0 / (1.0 + np.exp(-z))
    choice = s + (0.0 if scoring.bias is None else np.asarray(scoring.bias, np.float64))
    if scoring.groups > 1:
        per = choice.reshape(t, scoring.groups, e // scoring.groups)
        best = -np.sort(-per, axis=-1)[..., :2].sum(axis=-1)  # [T, G]
        keep = np.argsort(-best, axis=-1, kind="stable")[:, :scoring.topk_groups]
        mask = np.zeros((t, scoring.groups), dtype=bool)
        np.put_along_axis(mask, keep, True, axis=-1)
        choice = np.where(np.repeat(mask, e // scoring.groups, axis=-1), choice, 0.0)
    experts = np.argsort(-choice, axis=-1, kind="stable")[:, :top_k].astype(np.int64)
    weights = np.take_along_axis(s, experts, axis=-1)
    if renormalize:
        weights = weights / (weights.sum(axis=-1, keepdims=True) + 1e-20)
    return Routing(experts, weights * scoring.scale, np.ones_like(experts, dtype=bool), e, None)


def route(logits: np.ndarray, top_k: int, mode: str = "token", *, capacity_factor: float = 0.0,
          capacity: int | None = None, renormalize: bool = False, images: int = 1,
          scoring: Scoring | None = None) -> Routing:
    """Route the tokens whose gate logits are ``logits`` [T, E] (float; T = images x tokens per image).

    ``mode``, ``capacity_factor`` / ``capacity`` and ``renormalize`` as in the module docstring; ``images`` splits
    T into that many equal images for ``image`` mode. ``task`` mode ignores capacity and renormalisation requests
    only in the sense that its callers pass none; the arithmetic is the same as ``token`` without them.
    """
    z = np.asarray(logits, dtype=np.float64)
    if z.ndim != 2:
        raise ValueError(f"route: logits must be [tokens, experts], got shape {z.shape}")
    t, e = z.shape
    if not 1 <= top_k <= e:
        raise ValueError(f"route: top_k={top_k} must be in 1..{e}")
    if mode not in ("token", "task", "image"):
        raise ValueError(f"route: unknown mode {mode!r}")
    if scoring is not None:  # sigmoid router (token mode, no capacity)
        if e % scoring.groups or not 1 <= scoring.topk_groups <= scoring.groups:
            raise ValueError(f"route: {e} experts do not split into {scoring.groups} groups keeping "
                             f"{scoring.topk_groups}")
        return _sigmoid_route(z, top_k, renormalize, scoring)
    if mode == "image":
        if images <= 0 or t % images:
            raise ValueError(f"route: {t} tokens do not split into {images} images")
        per = t // images
        pooled = z.reshape(images, per, e).mean(axis=1)
        sub = route(pooled, top_k, "token", renormalize=renormalize)
        experts = np.repeat(sub.experts, per, axis=0)
        weights = np.repeat(sub.weights, per, axis=0)
        return Routing(experts, weights, np.ones_like(experts, dtype=bool), e, None)
    probs = softmax64(z)
    # Stable sort on -logits: equal logits keep index order, so the lower expert index wins a tie.
    experts = np.argsort(-z, axis=-1, kind="stable")[:, :top_k].astype(np.int64)
    weights = np.take_along_axis(probs, experts, axis=-1)
    if renormalize:
        weights = weights / weights.sum(axis=-1, keepdims=True)
    cap = capacity if capacity is not None else capacity_of(t, e, top_k, capacity_factor)
    kept = np.ones_like(experts, dtype=bool)
    if cap is not None:
        used = np.zeros(e, dtype=np.int64)
        for rank in range(top_k):
            for tok in range(t):
                ex = experts[tok, rank]
                if used[ex] < cap:
                    used[ex] += 1
                else:
                    kept[tok, rank] = False
    weights = np.where(kept, weights, 0.0)
    return Routing(experts, weights, kept, e, cap)


def dispatch(x: np.ndarray, routing: Routing) -> list[np.ndarray]:
    """Per expert, its queue's token rows of ``x`` [T, D], gathered in queue order ([n_e, D] each)."""
    return [np.asarray(x)[q] for q in routing.queues()]


def combine(expert_out: Sequence[np.ndarray], routing: Routing, shape: tuple[int, int]) -> np.ndarray:
    """The weighted scatter-add: ``y[t] = sum_k w[t, k] * out_{e(t,k)}[row of t in e's queue]``, [T, D] float64."""
    y = np.zeros(shape, dtype=np.float64)
    for e, q in enumerate(routing.queues()):
        if len(q) == 0:
            continue
        w = np.zeros(len(q), dtype=np.float64)
        for rank in range(routing.experts.shape[1]):
            hit = (routing.experts[q, rank] == e) & routing.kept[q, rank]
            w += np.where(hit, routing.weights[q, rank], 0.0)
        np.add.at(y, q, w[:, None] * np.asarray(expert_out[e], dtype=np.float64))
    return y


def expert_ffn(x: np.ndarray, w1: np.ndarray, w2: np.ndarray, b1: np.ndarray | None = None,
               b2: np.ndarray | None = None, activation: str = "gelu", w3: np.ndarray | None = None) -> np.ndarray:
    """One expert: ``act(x @ w1 + b1) @ w2 + b2`` in float64; x [n, D], w1 [D, H], w2 [H, D]. Gated (SwiGLU /
    GeGLU, ``w3`` [D, H] the up projection): ``(act(x @ w1 + b1) * (x @ w3)) @ w2 + b2``."""
    x = np.asarray(x, np.float64)
    h = x @ np.asarray(w1, np.float64)
    if b1 is not None:
        h = h + b1
    h = ACTIVATIONS[activation](h)
    if w3 is not None:
        h = h * (x @ np.asarray(w3, np.float64))
    y = h @ np.asarray(w2, np.float64)
    return y + b2 if b2 is not None else y


def moe_reference(x: np.ndarray, gate: np.ndarray, w1: np.ndarray, w2: np.ndarray, *, top_k: int,
                  mode: str = "token", b1: np.ndarray | None = None, b2: np.ndarray | None = None,
                  activation: str = "gelu", capacity_factor: float = 0.0, capacity: int | None = None,
                  renormalize: bool = False, images: int = 1, w3: np.ndarray | None = None,
                  scoring: Scoring | None = None) -> tuple[np.ndarray, Routing]:
    """A whole MoE block in float64: route -> dispatch -> per-expert FFN -> combine.

    ``x`` [..., T, D] (leading dims are images), ``gate`` [D, E], ``w1`` [E, D, H], ``w2`` [E, H, D], ``b1`` [E, H],
    ``b2`` [E, D], ``w3`` [E, D, H] (gated experts' up projection), ``scoring`` a sigmoid router. Returns (y
    shaped like x, routing of the flattened tokens).
    """
    x = np.asarray(x, dtype=np.float64)
    d = x.shape[-1]
    flat = x.reshape(-1, d)
    if mode == "image" and x.ndim >= 3:
        images = int(np.prod(x.shape[:-2]))
    routing = route(flat @ np.asarray(gate, np.float64), top_k, mode, capacity_factor=capacity_factor,
                    capacity=capacity, renormalize=renormalize, images=images, scoring=scoring)
    outs = [expert_ffn(rows, w1[e], w2[e], None if b1 is None else b1[e], None if b2 is None else b2[e], activation,
                       None if w3 is None else w3[e])
            for e, rows in enumerate(dispatch(flat, routing))]
    return combine(outs, routing, flat.shape).reshape(x.shape), routing
