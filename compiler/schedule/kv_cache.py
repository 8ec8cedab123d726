"""The KV cache of a decoder step as the plan sees it: which moves are the cache's, and what it costs in bytes.

The frontend (compiler/frontend/kv_cache.py) marks the moves of a cache kept in place with ``kv_cache`` in their
``attrs``; lowering costs them as views. What a step moves is then: the whole cache (every past row plus this step's)
read by each attention as its K and V operands, and this step's rows written by the projections that produce them.
:func:`kv_cache_section` puts those bytes in the report with the capacity the cache needs and whether it fits.
"""

from __future__ import annotations

from typing import Any

from xdsl.dialects.builtin import DictionaryAttr, StringAttr
from xdsl.ir import BlockArgument, Operation, SSAValue

from compiler.dialect import dataflow as df
from compiler.frontend.kv_cache import KV_ATTR
from compiler.schedule.attention import attention_buffers
from compiler.schedule.plan import tensor_bytes

__all__ = ["KvLayer", "kv_role", "cached_attentions", "kv_cache_section"]


def kv_role(op: Operation) -> str | None:
    """The role (past, append, present) of a ``dataflow.move`` in a KV cache, or None."""
    attrs = op.attrs if isinstance(op, df.MoveOp) else None
    role = attrs.data.get(KV_ATTR) if isinstance(attrs, DictionaryAttr) else None
    return role.data if isinstance(role, StringAttr) else None


def _append(value: SSAValue) -> df.MoveOp | None:
    """The cache append (a ``concat`` of role append) that produces ``value``, possibly through the quantizing cast
    ``--quant`` puts before an integer attention, or None."""
    owner = value.owner
    if isinstance(owner, df.ElementwiseOp) and owner.kind_value() == "cast":
        owner = owner.operands[0].owner
    if isinstance(owner, df.MoveOp) and kv_role(owner) == "append" and owner.kind_value() == "concat":
        return owner
    return None


class KvLayer:
    """One attention that keeps a KV cache: bytes of one cached position (K and V rows, all KV heads), the positions
    it holds this step and how many of them this step writes, and the graph inputs holding its past (if any)."""

    def __init__(self, op: df.AttentionOp, new_rows: int | None = None) -> None:
        self.op = op
        k_rows = op.k.type.get_shape()[1]  # type: ignore[attr-defined]
        k_cat, v_cat = _append(op.k), _append(op.v)
        self.positions = k_rows
        self.row_bytes = (tensor_bytes(op.k) + tensor_bytes(op.v)) // k_rows
        if k_cat is not None and v_cat is not None:
            self.new_rows = k_cat.inputs[-1].type.get_shape()[1]  # type: ignore[attr-defined]
            self.past_inputs: tuple[int | None, ...] = (_past_input(k_cat), _past_input(v_cat))
        else:  # a prefill: every position is new
            self.new_rows = k_rows if new_rows is None else new_rows
            self.past_inputs = ()
        self.past = k_rows - self.new_rows


def _past_input(cat: df.MoveOp) -> int | None:
    """The index of the function argument (graph input) holding ``cat``'s past rows."""
    value: SSAValue = cat.inputs[0]
    while isinstance(value.owner, df.MoveOp):
        value = value.owner.inputs[0]
    return value.index if isinstance(value, BlockArgument) else None


def cached_attentions(module: Operation) -> list[KvLayer]:
    """The attention ops of ``module`` whose K and V are KV-cache appends, in program order."""
    return [KvLayer(op) for op in module.walk()
            if isinstance(op, df.AttentionOp) and _append(op.k) is not None and _append(op.v) is not None]


def _onchip_bytes(target: Any) -> float:
    """Bytes of on-chip buffer a resident cache could use: every buffer the attention tiles use (their whole
    capacity, double-buffered halves included)."""
    half = 2.0 if getattr(getattr(target, "buffers", None), "double_buffered", False) else 1.0
    return sum(attention_buffers(target)) * half


def kv_cache_section(layers: list[KvLayer], target: Any, positions: int | None = None,
                     input_names: list[str] | None = None) -> dict[str, Any]:
    """The report's ``kv_cache`` section for ``layers`` holding ``positions`` positions each (default: this
    step's); ``past_len`` the positions held before this step, ``inputs`` the graph inputs holding them (named by
    ``input_names``, the function's arguments in order). Bytes: ``capacity_bytes`` the whole cache,
    ``read_bytes_per_token`` what attention reads per step (the whole cache), ``write_bytes_per_token`` the new
    rows; ``fits_onchip`` against the buffers attention tiles use, ``fits_offchip`` against the target's off-chip
    memory (``offchip.capacity_gb``)."""
    per_position = sum(layer.row_bytes for layer in layers)
    held = positions if positions is not None else max(layer.positions for layer in layers)
    capacity = per_position * held
    onchip = _onchip_bytes(target)
    offchip = float(target.offchip.capacity_gb) * 1e9
    first = layers[0]
    return {
        "layers": len(layers),
        "past_len": held - first.new_rows,
        "positions": held,
        "bytes_per_position": per_position,
        "capacity_bytes": capacity,
        "read_bytes_per_token": capacity,
        "write_bytes_per_token": sum(layer.row_bytes * layer.new_rows for layer in layers),
        "onchip_buffer_bytes": int(onchip),
        "fits_onchip": capacity <= onchip,
        "offchip_capacity_bytes": int(offchip),
        "fits_offchip": capacity <= offchip,
        **({"inputs": [input_names[i] for layer in layers for i in layer.past_inputs if i is not None]}
           if first.past_inputs and input_names else {}),
    }
