"""Per-token (decode) latency of a decoder: each generated token re-runs the graph on one row against a KV cache.

Two ways in:

* a **decode-step export** (``past_key_values`` inputs, compiler/frontend/kv_cache.py): the compile *is* one step, at
  the cache length its ``--shape`` gives; its latency is the per-token latency (shared among the step's tokens when
  it appends several, a chunk). ``tokens`` steps re-plan its attention for caches growing by that many rows a step.
* a **prefill export** of S tokens with ``tokens`` = N (``--decode-tokens N``): the same graph is re-planned at one
  row per step (every activation's token axis S becomes 1, so GEMM M and every vector and move shrink; weights are
  still read once per step) and its attention at S + 1 .. S + N cache positions (step t reads the S + t cached rows
  and its own); a mixture-of-experts block routes the step's token to ``top_k`` experts, which load their weights
  (the uniform routing assumption of compiler/schedule/moe.py: the prompt's measured queues say nothing of one
  token's). Only causal self-attention decodes; anything else is refused with one line. A decode-step export
  compiled against an empty cache (``--shape past_sequence_length=0``: Optimum's first step) is such a prefill; its
  attention's mask may come from its ``attention_mask`` input.

Each step is priced and scheduled like the compile itself (compiler/schedule/plan.py), so a step's figure is the
makespan of its own schedule. The token axis of an activation is its first dimension equal to S (B*S for a
flattened batch); a tensor without one (a weight, a pooled vector) is kept as it is.
"""

from __future__ import annotations

from typing import Any

from xdsl.dialects.builtin import IntegerAttr, ModuleOp, TensorType, i64
from xdsl.ir import Operation, SSAValue

from compiler.dialect import dataflow as df
from compiler.schedule.attention import (
    TILE_Q_ATTR,
    attention_buffers,
    choose_flash_tiles,
    with_kv_len,
)
from compiler.schedule.kv_cache import KvLayer, cached_attentions, kv_cache_section
from compiler.schedule.lower import TILES_ATTR, gemm_work, plan_module
from compiler.schedule.moe import ROUTING_ATTR, TOKENS_ATTR
from compiler.schedule.plan import LayerPlan, Plan, element_bits, machine, price
from hw.errors import InputError
from hw.models.base import AcceleratorModel
from hw.perf.scheduler import schedule

__all__ = ["MAX_DECODE_TOKENS", "decode_sections"]

MAX_DECODE_TOKENS = 4096
"""Each step is scheduled on its own; more steps than this would make the report step the compile's slowest part."""


def _attentions(module: Operation) -> list[df.AttentionOp]:
    return [op for op in module.walk() if isinstance(op, df.AttentionOp)]


def _causal(op: df.AttentionOp) -> bool:
    return op.causal_value() or op.mask_kind_choice() in (df.MaskKind.CAUSAL, df.MaskKind.BANDED)


def _step_export(input_names: list[str] | None) -> bool:
    """Whether the graph has KV-cache inputs (``past_key_values.0.key`` / ``past.0.value``, as transformers, Optimum
    and the onnxruntime-genai builder name them): a decode-step export, here compiled against an empty cache."""
    return any("past" in n and ("key" in n or "value" in n) for n in input_names or ())


def _check_prefill(module: ModuleOp, source: str, step_export: bool = False) -> tuple[int, int]:
    """(batch, S) of a prefill export that can decode, or InputError naming what cannot. A decode-step export's
    prompt step (``step_export``: its caches empty) is a decoder by construction, so an attention whose mask comes
    from its inputs (Optimum's causal mask combined with the ``attention_mask`` input) decodes too, and so does one
    with no mask over a one-token prompt (one query, one key: nothing to mask; each later step's one query is the
    newest position, which attends to every cached one)."""
    attns = _attentions(module)
    if not attns:
        raise InputError(f"--decode-tokens: {source} has no recognised attention, so there is no KV cache to decode "
                         f"against (patterns in the report say what was recognised)")
    b, s, _ = attns[0].q.type.get_shape()  # type: ignore[attr-defined]
    for op in attns:
        sq, sk = op.q.type.get_shape()[1], op.k.type.get_shape()[1]  # type: ignore[attr-defined]
        if sq != s or sk != s or not (_causal(op) or (step_export and (op.mask is not None or s == 1))):
            raise InputError(f"--decode-tokens: attention '{op.layer_name()}' of {source} is not causal "
                             f"self-attention over the {s} prefill tokens (queries {sq}, keys {sk}); only decoder "
                             f"stacks decode token by token")
    for op in module.walk():
        if isinstance(op, df.GemmOp) and not isinstance(op.rhs.owner, df.WeightOp) and _mixes_tokens(op, s):
            raise InputError(f"--decode-tokens: '{op.layer_name()}' of {source} multiplies two activations "
                             f"outside a recognised attention; its decode-step shape is unknown")
    return b, s


def _mixes_tokens(op: df.GemmOp, s: int) -> bool:
    """Whether a product of two activations combines token rows (contracts over S, or is S x S), so one row of it is
    not its shape with S made 1; an outer product along the tokens (RoPE's inverse frequencies times the
    ``position_ids`` input) is not."""
    lhs = op.lhs.type.get_shape()  # type: ignore[attr-defined]
    rhs = op.rhs.type.get_shape()  # type: ignore[attr-defined]
    return lhs[-1] == s or (lhs[-2] == s and rhs[-1] == s)


def _one_row(module: ModuleOp, b: int, s: int, model: AcceleratorModel) -> ModuleOp:
    """A copy of ``module`` whose activations hold one token row (module docstring), GEMMs re-tiled on ``model``.
    Only the plan reads it: it is not verified (reshape targets still name S)."""
    step = module.clone()

    def retype(value: SSAValue) -> None:
        if isinstance(value.owner, df.WeightOp) or not isinstance(value.type, TensorType):
            return
        shape = list(value.type.get_shape())
        first = 1 if b > 1 and len(shape) >= 3 and shape[0] == b else 0  # a batch axis is never the token axis
        for axis, dim in enumerate(shape[first:], first):
            if dim == s or (b > 1 and dim == b * s and len(shape) == 2):
                shape[axis] = dim // s
                value._type = TensorType(value.type.element_type, shape)  # noqa: SLF001  (xDSL has no setter)
                return

    for op in step.walk():
        for region in op.regions:
            for block in region.blocks:
                for arg in block.args:
                    retype(arg)
        for result in op.results:
            retype(result)
    for op in step.walk():
        if isinstance(op, df.GemmOp):
            op.attributes[TILES_ATTR] = IntegerAttr(max(1, model.cost(gemm_work(op)).tiles), i64)
        elif isinstance(op, df.MoeOp):
            # the prompt's measured queues do not describe one token's: a step's b tokens route to top_k experts
            # each, spread as evenly as the uniform assumption spreads them (one token: top_k experts, each loading
            # its weights once; compiler/schedule/moe.py)
            for key in (TOKENS_ATTR, ROUTING_ATTR):
                op.attributes.pop(key, None)
    return step


def _mask_bytes(op: df.AttentionOp, kv_len: int) -> int:
    """Bytes of the mask one query row reads over ``kv_len`` keys (its batch and head broadcast kept)."""
    if op.mask is None:
        return 0
    lead = 1
    for d in op.mask.type.get_shape()[:-2]:  # type: ignore[attr-defined]
        lead *= d
    return -(-lead * kv_len * element_bits(op.mask) // 8)


def _step_cycles(plan: Plan, priced: list[LayerPlan], attns: dict[str, df.AttentionOp], kv_len: int,
                 model: AcceleratorModel, target: Any) -> tuple[int, int]:
    """(makespan cycles, off-chip bytes) of one step whose attentions hold ``kv_len`` positions; ``priced`` is
    ``plan`` priced once (only the attentions change from step to step)."""
    layers: list[LayerPlan] = []
    for layer, done in zip(plan.layers, priced, strict=True):
        op = attns.get(layer.name)
        if op is None:
            layers.append(done)
            continue
        tiles = None
        if op.algorithm_choice() == df.AttentionAlgorithm.FLASH and TILE_Q_ATTR in op.attributes:
            sq = op.q.type.get_shape()[1]  # type: ignore[attr-defined]
            dv = op.v.type.get_shape()[2] // op.kv_heads_value()  # type: ignore[attr-defined]
            acc = getattr(getattr(target, "gemm", None), "acc_bits", 32)
            try:
                tiles = choose_flash_tiles(sq, kv_len, op.head_dim_value(), dv, element_bits(op.q), acc,
                                           attention_buffers(target))
            except ValueError:
                tiles = None  # the op's own tiles (they fit one row already)
        layers.append(with_kv_len(layer, kv_len, _mask_bytes(op, kv_len), tiles).price(model.cost))
    sched = schedule([t for layer in layers for t in layer.tasks], machine(model))
    return int(sched.makespan), sum(p.bytes_offchip for p in layers)


def decode_sections(module: ModuleOp, model: AcceleratorModel, target: Any, source: str, latency_cycles: int,
                    tokens: int | None, input_names: list[str] | None = None) -> dict[str, Any]:
    """The report's ``decode`` and ``kv_cache`` sections (empty for a model that neither has a KV cache nor was
    asked for ``tokens`` decode steps). ``latency_cycles`` is this compile's own latency (the prefill's; a step
    export's first step re-planned equals it). ``kv_cache`` describes the cache at the last step. The keys are
    listed in README.md (Decode steps)."""
    clock = float(target.clock_mhz)
    cached = cached_attentions(module)
    if tokens is not None and not 1 <= tokens <= MAX_DECODE_TOKENS:
        raise InputError(f"--decode-tokens {tokens}: expected a whole number of tokens from 1 to {MAX_DECODE_TOKENS}")
    if not cached and tokens is None:
        return {}
    if cached:  # this compile is one step; tokens more steps follow it
        attns = {k.op.layer_name(): k.op for k in cached}
        plan = plan_module(module)
        start = cached[0].past  # step t (0-based) holds start + rows * t cached rows and writes rows more
        rows = cached[0].new_rows
        layers = cached
        decode: dict[str, Any] = {"source": "step"}
    else:
        b, s = _check_prefill(module, source, _step_export(input_names))
        step = _one_row(module, b, s, model)
        attns = {op.layer_name(): op for op in _attentions(step)}
        plan = plan_module(step)
        start, rows = s, 1
        layers = [KvLayer(op, new_rows=1) for op in _attentions(module)]
        decode = {"source": "prefill", "prefill_tokens": s, "prefill_latency_cycles": latency_cycles,
                  "prefill_latency_ms": latency_cycles / (clock * 1e3)}
    steps = tokens or 1
    cycles, traffic = [], []
    priced = price(plan, model)
    moe = [{"name": p.name, "active_experts": p.detail["active_experts"], "top_k": p.detail["top_k"],
            "expert_weight_bytes": p.detail["expert_weight_bytes"]} for p in priced if "active_experts" in p.detail]
    if moe:
        decode["moe_per_step"] = moe
    for t in range(steps):
        c, bytes_off = _step_cycles(plan, priced, attns, start + rows * (t + 1), model, target)
        cycles.append(c)
        traffic.append(bytes_off)
    total = sum(cycles)

    def per_token(c: float) -> float:
        return c / rows if rows > 1 else c  # a step of several tokens (a chunk) shares its latency among them

    decode.update({
        "tokens": steps * rows, "tokens_per_step": rows,
        "cache_len_first": start, "cache_len_last": start + rows * (steps - 1),
        "per_token_cycles_first": per_token(cycles[0]), "per_token_cycles_last": per_token(cycles[-1]),
        "per_token_cycles_mean": total / (steps * rows),
        "per_token_ms_first": per_token(cycles[0]) / (clock * 1e3),
        "per_token_ms_last": per_token(cycles[-1]) / (clock * 1e3),
        "per_token_ms_mean": total / (steps * rows) / (clock * 1e3),
        "bytes_offchip_per_token_first": traffic[0], "bytes_offchip_per_token_last": traffic[-1],
        "decode_ms_total": total / (clock * 1e3),
        "tokens_per_s": steps * rows * clock * 1e6 / total if total else None,
        "step_cycles": cycles,
    })
    return {"decode": decode, "kv_cache": kv_cache_section(layers, target, start + rows * steps, input_names)}
