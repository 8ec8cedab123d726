"""onnxruntime's ``GroupQueryAttention`` (``com.microsoft``) spelled out as standard ONNX at load.

The onnxruntime-genai model builder (``python -m onnxruntime_genai.models.builder``: LLaMA, Mistral, Qwen, Phi,
Gemma, ...) and onnxruntime's LLaMA / Phi conversion scripts write every decoder attention as one
GroupQueryAttention node: packed or separate Q / K / V of one step, the past KV cache in, the grown cache out,
rotary embeddings from cos / sin tables, a causal mask and grouped KV heads. It is rewritten here into the subgraph a
transformers decoder exported by torch writes for the same computation, so the recognisers find the attention, its
RoPE, its KV cache append (compiler/frontend/kv_cache.py) and its grouped heads as in such an export:

    q, k, v  = Split(query) or the key / value inputs, heads split: [B, n, S, d]
    q, k     = RoPE(q, k) at positions P .. P + S - 1 (rotate-half, or interleaved pairs; the first 2 x
               cos_cache.shape[1] dims of each head rotate, the rest pass through)        when do_rotary = 1
    K, V     = Concat(past_key, k, axis=2), Concat(past_value, v, axis=2)   (the ``present_*`` outputs)
    scores   = q K^T x scale (1 / sqrt(d) by default), softcap x tanh(scores / softcap) when softcap > 0
    scores  += mask_filter_value where key j > P + i (causal), or j <= P + i - local_window_size (sliding window)
    output   = Softmax(scores) V, KV heads repeated num_heads / kv_num_heads times, heads joined: [B, S, n d]

where P is the past input's length. The semantics are those of onnxruntime's CPU kernel
(onnxruntime/contrib_ops/cpu/bert/group_query_attention.cc and gqa_attention_base.h, microsoft/onnxruntime;
docs/ContribOperators.md): each row's past length is seqlens_k + 1 - S, which the kernel assumes is the past
buffer's own length ("assume no padding sequence length") except in a first prompt (S = total_sequence_length),
whose rows may be right-padded (a padded row's output is left undefined by that kernel). The expansion is exact on
every row the kernel defines for such batches: every row of a batch whose rows all fill the past buffer, and the
unpadded rows of a right-padded prompt. seqlens_k and total_sequence_length only restate those lengths, so the
expansion reads the lengths from the shapes instead, which lets them fold once the shapes are fixed.

Refused in one line naming the node: position_ids, attention_bias and head_sink inputs, smooth_softmax, quantized KV
caches (k_quant_type / v_quant_type / kv_cache_bit_width), qk_output, and shapes the graph does not tell (head
size, a past of another rank).
"""

from __future__ import annotations

import numpy as np

from compiler.frontend.contrib_body import ContribBody
from compiler.frontend.ort_rotary import rotate

__all__ = ["GQA_ATTRS", "expand_group_query_attention", "gqa_shapes_needed"]

#: Attributes a GroupQueryAttention may carry; those not implemented are accepted only at their schema default.
GQA_ATTRS = frozenset({"num_heads", "kv_num_heads", "scale", "local_window_size", "softcap", "do_rotary",
                       "rotary_interleaved", "smooth_softmax", "mask_filter_value", "qk_output", "k_quant_type",
                       "v_quant_type", "kv_cache_bit_width"})
_DEFAULTS_ONLY = {"smooth_softmax": 0, "qk_output": 0, "kv_cache_bit_width": 0}
_QUANT_TYPES = ("k_quant_type", "v_quant_type")
_INPUTS_REFUSED = ((9, "a position_ids input"), (10, "an attention_bias input"), (11, "a head_sink input"))


def gqa_shapes_needed(b: ContribBody) -> list[str]:
    """The inputs whose shapes the expansion reads: the query (its hidden size), the key, the past key (its rank),
    the cos table (its width)."""
    return [t for t in (b.input(0), b.input(1), b.input(3), b.input(7)) if t]


def _check(b: ContribBody) -> tuple[int, int]:
    """(num_heads, kv_num_heads), after refusing what the expansion does not implement."""
    for name, default in _DEFAULTS_ONLY.items():
        if b.int_attr(name, default) != default:
            raise b.refuse(f"{name}={b.attrs[name]} is not supported")
    for name in _QUANT_TYPES:
        value = b.attrs.get(name, b"NONE")
        text = value.decode() if isinstance(value, bytes) else str(value)
        if text.upper() != "NONE":
            raise b.refuse(f"{name}={text} (a quantized KV cache) is not supported")
    for i, what in _INPUTS_REFUSED:
        if b.input(i):
            raise b.refuse(f"{what} is not supported")
    if b.output(3):
        raise b.refuse("its output_qk output is not supported")
    heads, kv_heads = b.int_attr("num_heads", 0), b.int_attr("kv_num_heads", 0)
    if heads <= 0 or kv_heads <= 0 or heads % kv_heads:
        raise b.refuse(f"num_heads={heads}, kv_num_heads={kv_heads} (both positive, num_heads a multiple of "
                       "kv_num_heads)")
    if bool(b.input(3)) != bool(b.input(4)):
        raise b.refuse("past_key and past_value must both be given or both be absent")
    if bool(b.input(7)) != bool(b.input(8)):
        raise b.refuse("cos_cache and sin_cache must both be given or both be absent")
    if b.int_attr("do_rotary", 0) and not b.input(7):
        raise b.refuse("do_rotary=1 without cos_cache / sin_cache")
    return heads, kv_heads


def _head_size(b: ContribBody, heads: int, kv_heads: int, dims: dict[str, list[int | str]]) -> int:
    query = dims.get(b.input(0), [])
    hidden = query[2] if len(query) == 3 else None
    parts = heads if b.input(1) else heads + 2 * kv_heads
    if not isinstance(hidden, int) or hidden <= 0 or hidden % parts:
        raise b.refuse(f"a query whose hidden size ({hidden if hidden else 'unknown'}) is not a known multiple of "
                       f"{'num_heads' if b.input(1) else 'num_heads + 2 x kv_num_heads'} = {parts} (only 3-D "
                       "[batch, sequence, hidden] inputs are supported)")
    return hidden // parts


def _repeat_heads(b: ContribBody, x: str, groups: int, heads: int, head: int) -> str:
    """[B, kv, T, d] -> [B, kv x groups, T, d], each KV head repeated for its group of query heads (transformers'
    ``repeat_kv``: unsqueeze, expand, reshape)."""
    if groups == 1:
        return x
    shape = b.op("Shape", [x])
    grown = b.op("Concat", [b.op("Slice", [shape, b.const([0], np.int64), b.const([2], np.int64)]),
                            b.const([groups], np.int64),
                            b.op("Slice", [shape, b.const([2], np.int64), b.const([4], np.int64)])], axis=0)
    expanded = b.op("Expand", [b.unsqueeze(x, [2]), grown])
    return b.op("Reshape", [expanded, b.const([0, heads, -1, head], np.int64)])


def _causal_bias(b: ContribBody, past_len: str, q_len: str, kv_len: str) -> str:
    """[S, T]: 0 where query i (at position P + i) may read key j, mask_filter_value elsewhere: j > P + i, and with
    local_window_size w > 0 also j <= P + i - w (onnxruntime 1.31's CPU kernel keeps the w keys ending at the
    query's own, transformers' ``sliding_window``; measured against it in tests/test_frontend_ort_gqa.py)."""
    step = b.const(1, np.int64)
    keys = b.op("Range", [b.const(0, np.int64), kv_len, step])  # [T]
    rows = b.op("Add", [b.unsqueeze(b.op("Range", [b.const(0, np.int64), q_len, step]), [1]), past_len])  # [S, 1]
    blocked = b.op("Greater", [keys, rows])
    window = b.int_attr("local_window_size", -1)
    if window > 0:
        blocked = b.op("Or", [blocked, b.op("Less", [keys, b.op("Sub", [rows, b.const(window - 1, np.int64)])])])
    masked = b.float_attr("mask_filter_value", float(np.finfo(b.dtype).min))
    return b.op("Where", [blocked, b.const(masked), b.const(0.0)])


def expand_group_query_attention(b: ContribBody, ranks: dict[str, int], dims: dict[str, list[int | str]],
                                 weights: dict[str, list[int]]) -> None:
    """Write ``b``'s GroupQueryAttention as standard ops (the module docstring's subgraph)."""
    heads, kv_heads = _check(b)
    head = _head_size(b, heads, kv_heads, dims)
    if b.input(3) and ranks.get(b.input(3)) != 4:
        raise b.refuse("a past_key that is not 4-D [batch, kv_num_heads, past_sequence, head_size]")
    if b.input(1):
        if not b.input(2):
            raise b.refuse("a key input without a value input")
        q, k, v = b.input(0), b.input(1), b.input(2)
    else:
        q, k, v = b.split(b.input(0), [heads * head, kv_heads * head, kv_heads * head], axis=-1)

    def heads_of(t: str, n: int) -> str:
        return b.op("Transpose", [b.op("Reshape", [t, b.const([0, 0, n, head], np.int64)])], perm=[0, 2, 1, 3])

    q, k, v = heads_of(q, heads), heads_of(k, kv_heads), heads_of(v, kv_heads)

    def length(t: str, axis: int) -> str:
        return b.op("Gather", [b.op("Shape", [t]), b.const(axis, np.int64)], axis=0)

    past_len = length(b.input(3), 2) if b.input(3) else b.const(0, np.int64)
    q_len = length(q, 2)
    if b.int_attr("do_rotary", 0):
        table = weights.get(b.input(7)) or dims.get(b.input(7), [])  # a table, or one an If picks (Phi-3 LongRoPE)
        if len(table) != 2 or not isinstance(table[1], int) or table[1] <= 0 or 2 * table[1] > head:
            raise b.refuse(f"a cos_cache that is not a [positions, rotary_dim / 2] table of known width with "
                           f"rotary_dim <= head size {head}")
        positions = b.op("Range", [past_len, b.op("Add", [past_len, q_len]), b.const(1, np.int64)])
        cos = b.op("Gather", [b.input(7), positions], axis=0)  # [S, half]
        sin = b.op("Gather", [b.input(8), positions], axis=0)
        interleaved = bool(b.int_attr("rotary_interleaved", 0))
        q, k = (rotate(b, t, cos, sin, table[1], head, interleaved) for t in (q, k))
    if b.input(3):
        k = b.op("Concat", [b.input(3), k], b.output(1), axis=2)
        v = b.op("Concat", [b.input(4), v], b.output(2), axis=2)
    else:
        for t, out in ((k, b.output(1)), (v, b.output(2))):
            if out:
                b.op("Identity", [t], out)
    groups = heads // kv_heads
    keys, values = _repeat_heads(b, k, groups, heads, head), _repeat_heads(b, v, groups, heads, head)
    scale = b.float_attr("scale", 0.0) or 1.0 / float(np.sqrt(head))
    scores = b.op("Mul", [b.op("MatMul", [q, b.op("Transpose", [keys], perm=[0, 1, 3, 2])]), b.const(scale)])
    softcap = b.float_attr("softcap", 0.0)
    if softcap > 0:
        scores = b.op("Mul", [b.op("Tanh", [b.op("Div", [scores, b.const(softcap)])]), b.const(softcap)])
    scores = b.op("Add", [scores, _causal_bias(b, past_len, q_len, length(keys, 2))])
    probs = b.op("Softmax", [scores], axis=-1)
    ctx = b.op("Transpose", [b.op("MatMul", [probs, values])], perm=[0, 2, 1, 3])
    b.op("Reshape", [ctx, b.const([0, 0, heads * head], np.int64)], b.output(0))
