"""The KV cache of a decoder step as the plan sees it: which moves are the cache's, and what it costs in bytes.

The frontend (compiler/frontend/kv_cache.py) marks the moves of a cache kept in place with ``kv_cache`` in their
``attrs``; lowering costs them as views. What a step moves is then: the whole cache (every past row plus this step's)
read by each attention as its K and V operands, and this step's rows written by the projections that produce them.
:func:`kv_cache_section` puts those bytes in the report with the capacity the cache needs and whether it fits.
"""

from __future__ import annotations

from typing import Any

from xdsl.dialects.builtin import DictionaryAttr, StringAttr
from xdsl.ir import Operation, SSAValue

from compiler.dialect import dataflow as df
from compiler.frontend.kv_cache import KV_ATTR
from compiler.schedule.attention import attention_buffers
from compiler.schedule.plan import tensor_bytes

__all__ = ["KvLayer", "kv_role", "cached_attentions", "kv_cache_section"]


def kv_role(op: Operation) -> str | None:
    """The role (past, append, present) of a ``dataflow.move`` in a KV cache, or None."""
    attrs = op.properties.get("attrs") if isinstance(op, df.MoveOp) else None
    role = attrs.data.get(KV_ATTR) if isinstance(attrs, DictionaryAttr) else None
    return role.data if isinstance(role, StringAttr) else None


def _append(value: SSAValue) -> df.MoveOp | None:
    """The cache append (a ``concat`` of role append) that produces ``value``, or None."""
    owner = value.owner
    if isinstance(owner, df.MoveOp) and kv_role(owner) == "append" and df.str_attr(owner, "kind") == "concat":
        return owner
    return None


class KvLayer:
    """One attention that reads a KV cache: bytes of one cached position (K and V rows, all KV heads) and the
    positions it holds this step (past plus new)."""

    def __init__(self, op: df.AttentionOp, k_cat: df.MoveOp, v_cat: df.MoveOp) -> None:
        self.op = op
        k_rows = op.k.type.get_shape()[1]  # type: ignore[attr-defined]
        self.positions = k_rows
        self.row_bytes = (tensor_bytes(op.k) + tensor_bytes(op.v)) // k_rows
        self.new_rows = k_cat.inputs[-1].type.get_shape()[1]  # type: ignore[attr-defined]
        self.past = k_rows - self.new_rows
        self.past_inputs = tuple(_past_input(c) for c in (k_cat, v_cat))


def _past_input(cat: df.MoveOp) -> str:
    value: SSAValue = cat.inputs[0]
    while isinstance(value.owner, df.MoveOp):
        value = value.owner.inputs[0]
    return value.name_hint or "?"


def cached_attentions(module: Operation) -> list[KvLayer]:
    """The attention ops of ``module`` whose K and V are KV-cache appends, in program order."""
    out = []
    for op in module.walk():
        if isinstance(op, df.AttentionOp):
            k, v = _append(op.k), _append(op.v)
            if k is not None and v is not None:
                out.append(KvLayer(op, k, v))
    return out


def _onchip_bytes(target: Any) -> float:
    """Bytes of on-chip buffer a resident cache could use: every buffer the attention tiles use (their whole
    capacity, double-buffered halves included)."""
    half = 2.0 if getattr(getattr(target, "buffers", None), "double_buffered", False) else 1.0
    return sum(attention_buffers(target)) * half


def kv_cache_section(layers: list[KvLayer], target: Any, positions: int | None = None) -> dict[str, Any]:
    """The report's ``kv_cache`` section for ``layers`` holding ``positions`` positions each (default: this
    step's). Bytes: ``capacity_bytes`` the whole cache, ``read_bytes_per_token`` what attention reads per step (the
    whole cache), ``write_bytes_per_token`` the new rows; ``fits_onchip`` against the buffers attention tiles use,
    ``fits_offchip`` against the target's off-chip memory (``offchip.capacity_gb``)."""
    per_position = sum(layer.row_bytes for layer in layers)
    held = positions if positions is not None else max(layer.positions for layer in layers)
    capacity = per_position * held
    onchip = _onchip_bytes(target)
    offchip = float(target.offchip.capacity_gb) * 1e9
    first = layers[0]
    return {
        "layers": len(layers),
        "past_len": first.past,
        "positions": held,
        "bytes_per_position": per_position,
        "capacity_bytes": capacity,
        "read_bytes_per_token": capacity,
        "write_bytes_per_token": sum(layer.row_bytes * layer.new_rows for layer in layers),
        "onchip_buffer_bytes": int(onchip),
        "fits_onchip": capacity <= onchip,
        "offchip_capacity_bytes": int(offchip),
        "fits_offchip": capacity <= offchip,
        "inputs": [name for layer in layers for name in layer.past_inputs],
    }
