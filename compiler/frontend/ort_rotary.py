"""Rotary position embeddings in onnxruntime's contrib ops, spelled as standard ONNX at load.

``com.microsoft.RotaryEmbedding(input, position_ids, cos_cache, sin_cache)`` (onnxruntime docs/ContribOperators.md)
is what onnxruntime's LLaMA conversion scripts and the onnxruntime-genai builder write where the attention op does
not rotate itself (its MultiHeadAttention decoders): ``input`` [B, S, hidden] (heads of ``num_heads``, or of twice
the cos table's width) or [B, N, S, H]; ``position_ids`` [B, S], or one start offset (positions offset .. offset +
S - 1); the first ``rotary_embedding_dim`` dims of each head (all by default) rotate by the tables' rows at those
positions, rotate-half pairs (i, i + R/2), or (2i, 2i + 1) with ``interleaved``; the rest pass through.
GroupQueryAttention's ``do_rotary`` (compiler/frontend/ort_gqa.py) is the same rotation inside the attention.

The rotation is written as torch exports transformers' ``apply_rotary_pos_emb`` (``x * cos + rotate_half(x) *
sin``), so the RoPE recogniser (compiler/frontend/rope.py) finds it between a projection and its attention once the
positions fold to constants; positions read from a graph input stay the generic ops they are (exact). ``scale``
other than 1 and packed batching are refused in one line naming the node.
"""

from __future__ import annotations

import numpy as np

from compiler.frontend.contrib_body import ContribBody

__all__ = ["ROTARY_ATTRS", "expand_rotary_embedding", "rotary_shapes_needed", "rotate"]

#: Attributes a RotaryEmbedding may carry (scale and is_packed_batching only at their defaults).
ROTARY_ATTRS = frozenset({"interleaved", "num_heads", "rotary_embedding_dim", "scale", "is_packed_batching"})


def rotate(b: ContribBody, x: str, cos: str, sin: str, half: int, head: int, interleaved: bool) -> str:
    """``x`` [B, n, S, head] with its first 2 ``half`` dims rotated by ``cos`` / ``sin`` (broadcastable to
    [B, n, S, half]) and the rest passed through."""
    rotated = 2 * half
    r, rest = b.split(x, [rotated, head - rotated], axis=-1) if rotated < head else (x, "")
    if interleaved:
        pairs = b.op("Reshape", [r, b.const([0, 0, 0, half, 2], np.int64)])  # [B, n, S, half, 2]
        even, odd = (b.op("Squeeze", [t, b.const([-1], np.int64)]) for t in b.split(pairs, [1, 1], axis=-1))
        out_even = b.op("Sub", [b.op("Mul", [even, cos]), b.op("Mul", [odd, sin])])
        out_odd = b.op("Add", [b.op("Mul", [odd, cos]), b.op("Mul", [even, sin])])
        joined = b.op("Concat", [b.unsqueeze(out_even, [-1]), b.unsqueeze(out_odd, [-1])], axis=-1)
        r = b.op("Reshape", [joined, b.const([0, 0, 0, rotated], np.int64)])
    else:
        x1, x2 = b.split(r, [half, half], axis=-1)
        cos2 = b.op("Concat", [cos, cos], axis=-1)
        sin2 = b.op("Concat", [sin, sin], axis=-1)
        rotate_half = b.op("Concat", [b.op("Neg", [x2]), x1], axis=-1)
        r = b.op("Add", [b.op("Mul", [r, cos2]), b.op("Mul", [rotate_half, sin2])])
    return b.op("Concat", [r, rest], axis=-1) if rest else r


def rotary_shapes_needed(b: ContribBody) -> list[str]:
    """The inputs whose shapes the expansion reads: the input (its rank and width), position_ids (its rank) and the
    cos table (its width)."""
    return [t for t in (b.input(0), b.input(1), b.input(2)) if t]


def expand_rotary_embedding(b: ContribBody, ranks: dict[str, int], dims: dict[str, list[int | str]],
                            weights: dict[str, list[int]]) -> None:
    """Write ``b``'s RotaryEmbedding as standard ops (the module docstring's rotation)."""
    if b.int_attr("is_packed_batching", 0):
        raise b.refuse("is_packed_batching=1 is not supported")
    if b.float_attr("scale", 1.0) != 1.0:
        raise b.refuse(f"scale={b.attrs['scale']} is not supported")
    if not all(b.input(i) for i in range(4)):
        raise b.refuse("input, position_ids, cos_cache and sin_cache are all required")
    shape = dims.get(b.input(0), [])
    table = weights.get(b.input(2)) or dims.get(b.input(2), [])
    if len(table) != 2 or not isinstance(table[1], int) or table[1] <= 0:
        raise b.refuse("a cos_cache that is not a [positions, rotary_dim / 2] table of known width")
    half = table[1]
    heads, rotary = b.int_attr("num_heads", 0), b.int_attr("rotary_embedding_dim", 0)
    if rotary and rotary != 2 * half:
        raise b.refuse(f"rotary_embedding_dim={rotary} with a cos_cache of width {half} (it must be twice the width)")
    if len(shape) == 4 and isinstance(shape[3], int) and isinstance(shape[1], int):
        head, heads = shape[3], shape[1]
    elif len(shape) == 3 and isinstance(shape[2], int):
        hidden = shape[2]
        head = hidden // heads if heads > 0 else 2 * half
        heads = heads if heads > 0 else hidden // head
        if heads * head != hidden:
            raise b.refuse(f"hidden size {hidden} is not num_heads x head size ({heads} x {head})")
    else:
        raise b.refuse("an input that is not [batch, sequence, hidden] or [batch, heads, sequence, head] of known "
                       "width")
    if 2 * half > head:
        raise b.refuse(f"a rotary dim of {2 * half} wider than the head size {head}")
    x = b.input(0)
    if len(shape) == 3:
        x = b.op("Transpose", [b.op("Reshape", [x, b.const([0, 0, heads, head], np.int64)])], perm=[0, 2, 1, 3])
    position_rank = ranks.get(b.input(1), len(weights.get(b.input(1), [])) or None)  # an input, or a constant
    if position_rank == 2:  # [B, S] -> tables [B, 1, S, half]
        cos = b.unsqueeze(b.op("Gather", [b.input(2), b.input(1)], axis=0), [1])
        sin = b.unsqueeze(b.op("Gather", [b.input(3), b.input(1)], axis=0), [1])
    elif position_rank == 1:  # one start offset -> positions offset .. offset + S - 1, tables [S, half]
        start = b.op("Squeeze", [b.op("Cast", [b.input(1)], to=7)])  # int64
        length = b.op("Gather", [b.op("Shape", [x]), b.const(2, np.int64)], axis=0)
        positions = b.op("Range", [start, b.op("Add", [start, length]), b.const(1, np.int64)])
        cos = b.op("Gather", [b.input(2), positions], axis=0)
        sin = b.op("Gather", [b.input(3), positions], axis=0)
    else:
        raise b.refuse("position_ids that are neither [batch, sequence] nor one start offset")
    out = rotate(b, x, cos, sin, half, head, bool(b.int_attr("interleaved", 0)))
    if len(shape) == 3:
        b.op("Reshape", [b.op("Transpose", [out], perm=[0, 2, 1, 3]), b.const([0, 0, heads * head], np.int64)],
             b.output(0))
    else:
        b.op("Identity", [out], b.output(0))
