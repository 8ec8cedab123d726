"""KV caches of decoder-step exports: ``Concat(past, new)`` along the sequence axis, rewritten so attention sees it.

An export of one decoder step with ``past_key_values`` inputs (transformers with ``use_cache=True``) appends this
step's keys and values to the cache in the head layout: ``present = Concat(past [B, kv, P, d], new [B, kv, n, d],
axis=2)``, and the attention reads ``present``. The attention op reads K and V as [B, S, kv*d], so the concatenation
is moved to that layout:

    past_f = Reshape(Transpose(past, [0, 2, 1, 3]), [B, P, kv*d])     role "past"
    new_f  = Reshape(Transpose(new, [0, 2, 1, 3]), [B, n, kv*d])      role "append"
    cat    = Concat(past_f, new_f, axis=1)                            role "append"  (the attention's K or V)
    read   = Transpose(Reshape(cat, [B, P+n, kv, d]), [0, 2, 1, 3])  role "append"  (what the attention read)
    present = Transpose(Reshape(cat, [B, P+n, kv, d]), [0, 2, 1, 3])  role "present" (a graph output: the same tensor)

The rewritten nodes carry the attribute ``kv_cache`` (their role). The cache is state the accelerator keeps in the
layout it chooses, and this step's rows are written into it in place, so the schedule costs those moves as views
(compiler/schedule/lower.py): what a step moves is the whole cache read by attention (its K and V operands) and the
new rows written by the projections that produce them. The simulator runs the moves as they are, so a step's
outputs equal the export's.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from compiler.frontend.graph import Graph, Node
from hw.errors import InputError

__all__ = ["KV_ATTR", "KvAppend", "check_cache_inputs", "rewrite_kv_cache"]

KV_ATTR = "kv_cache"
"""Node (and ``dataflow.move`` ``attrs``) key naming a move's role in a KV cache: past, append or present."""


@dataclass(frozen=True)
class KvAppend:
    """One rewritten cache append: the graph input holding the past rows, their count, and the concatenation the
    attention reads ([B, past_len + new_len, kv*d])."""

    past_input: str
    past_len: int
    new_len: int
    concat: str


def _graph_input(g: Graph, producers: dict[str, Node], name: str) -> str | None:
    """The graph input ``name`` is, possibly through single-input Concat / Identity nodes (DynamicCache's first
    update concatenates the past with nothing)."""
    passed: list[Node] = []
    for _ in range(4):
        if name in g.inputs and name not in g.constants:
            for node in passed:  # copies of the cache: views of it too
                node.attrs[KV_ATTR] = "past"
            return name
        node = producers.get(name)
        if node is None or node.op_type not in ("Concat", "Identity") or len([i for i in node.inputs if i]) != 1:
            return None
        passed.append(node)
        name = node.inputs[0]
    return None


def _const(g: Graph, name: str, value: list[int]) -> str:
    g.constants[name] = np.array(value, dtype=np.int64)
    g.shapes[name], g.dtypes[name] = (len(value),), np.dtype(np.int64)
    return name


def _add(g: Graph, out: list[Node], op: str, name: str, inputs: list[str], shape: tuple[int, ...], dtype: np.dtype,
         role: str, **attrs: object) -> str:
    tensor = f"{name}_output_0"
    g.shapes[tensor], g.dtypes[tensor] = shape, dtype
    out.append(Node(op, name, inputs, [tensor], {**attrs, KV_ATTR: role}))
    return tensor


def rewrite_kv_cache(g: Graph) -> list[KvAppend]:
    """Rewrite every cache append of ``g`` in place (module docstring) and return them in graph order.

    Raises InputError when a past input's batch, head or head-dim sizes differ from this step's rows (a ``--shape``
    that contradicts the graph); :func:`check_cache_inputs` compares key and value cache lengths before that.
    """
    producers = g.producers()
    found: list[KvAppend] = []
    nodes: list[Node] = []
    renamed: dict[str, str] = {}  # a cache output -> the copy the attention reads
    for node in g.nodes:
        inputs = [i for i in node.inputs if i]
        shape = g.shapes.get(node.outputs[0], ())
        axis = int(node.attrs.get("axis", 0))
        past = _graph_input(g, producers, inputs[0]) if node.op_type == "Concat" and len(inputs) == 2 else None
        if past is None or len(shape) != 4 or axis not in (2, -2) or g.is_const(inputs[1]):
            nodes.append(node)
            continue
        p_shape, n_shape = g.shapes.get(inputs[0], ()), g.shapes.get(inputs[1], ())
        if len(p_shape) != 4 or len(n_shape) != 4 or p_shape[:2] + p_shape[3:] != n_shape[:2] + n_shape[3:]:
            raise InputError(f"{g.source}: KV cache input '{past}' has shape {'x'.join(map(str, p_shape))}, which "
                             f"does not fit this step's rows {'x'.join(map(str, n_shape))} (node '{node.name}': "
                             f"batch, heads and head size must agree)")
        b, kv, p, d = p_shape
        n = n_shape[2]
        dtype = g.dtypes.get(node.outputs[0], np.dtype(np.float32))
        base = node.name
        pt = _add(g, nodes, "Transpose", f"{base}/kv_past_t", [inputs[0]], (b, p, kv, d), dtype, "past",
                  perm=[0, 2, 1, 3])
        pf = _add(g, nodes, "Reshape", f"{base}/kv_past", [pt, _const(g, f"{base}/kv_past_shape", [b, p, kv * d])],
                  (b, p, kv * d), dtype, "past")
        nt = _add(g, nodes, "Transpose", f"{base}/kv_new_t", [inputs[1]], (b, n, kv, d), dtype, "append",
                  perm=[0, 2, 1, 3])
        nf = _add(g, nodes, "Reshape", f"{base}/kv_new", [nt, _const(g, f"{base}/kv_new_shape", [b, n, kv * d])],
                  (b, n, kv * d), dtype, "append")
        cat = _add(g, nodes, "Concat", f"{base}/kv_append", [pf, nf], (b, p + n, kv * d), dtype, "append", axis=1)
        # The attention reads its own head split of the concatenation; the graph output (the next step's cache)
        # gets another, so the attention match never swallows a node the output needs.
        heads = _add(g, nodes, "Reshape", f"{base}/kv_read_r",
                     [cat, _const(g, f"{base}/kv_read_shape", [b, p + n, kv, d])], (b, p + n, kv, d), dtype, "append")
        read = _add(g, nodes, "Transpose", f"{base}/kv_read", [heads], (b, kv, p + n, d), dtype, "append",
                    perm=[0, 2, 1, 3])
        renamed[node.outputs[0]] = read
        if node.outputs[0] in g.outputs:
            split = _add(g, nodes, "Reshape", f"{base}/kv_present_r",
                         [cat, _const(g, f"{base}/kv_read_shape", [b, p + n, kv, d])], (b, p + n, kv, d), dtype,
                         "present")
            nodes.append(Node("Transpose", f"{base}/kv_present", [split], list(node.outputs),
                              {"perm": [0, 2, 1, 3], KV_ATTR: "present"}))
        found.append(KvAppend(past, p, n, cat))
    for node in nodes:
        if KV_ATTR not in node.attrs:
            node.inputs = [renamed.get(i, i) for i in node.inputs]
    g.nodes[:] = nodes
    return found


def check_cache_inputs(shapes: dict[str, tuple[int, ...]], source: str) -> None:
    """Raise InputError when a key-cache input and its value-cache input (names that differ only by ``key`` /
    ``value``, as transformers and optimum name them: ``past_key_values.0.key``) hold different numbers of
    positions (axis -2 of [B, kv, P, d]); usually a ``--shape`` that contradicts the other."""
    for name, shape in shapes.items():
        if len(shape) != 4 or "key" not in name:
            continue
        head, _, tail = name.rpartition("key")
        other = shapes.get(f"{head}value{tail}")
        if other is not None and len(other) == 4 and other[2] != shape[2]:
            raise InputError(f"{source}: KV cache input '{head}value{tail}' holds {other[2]} positions but "
                             f"'{name}' holds {shape[2]}; the keys and values of one layer have the same cache "
                             f"length (check --shape)")
