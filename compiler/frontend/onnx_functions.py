"""Expand an ONNX op that the standard defines as a function into the nodes of its function body.

The ONNX standard gives many ops a body of simpler ops: ``Attention`` and ``RMSNormalization`` (opset 23, what
``torch.onnx.export(..., opset_version=23)`` writes for SDPA and ``nn.RMSNorm``), ``GroupNormalization``,
``MeanVarianceNormalization``, ``RotaryEmbedding``, ``AffineGrid``, ... The body comes from onnx's own schema
(``OpSchema.function_body`` / ``get_context_dependent_function_with_opset_version``, the definition the ONNX
reference and its ``_expanded`` conformance tests use), so what the expansion computes is the standard's definition,
not ours. The recogniser then sees the spelled-out ops (an expanded ``Attention`` is the QK^T / softmax / AV chain
every exporter used to write; an expanded ``RMSNormalization`` a decomposed RMSNorm).

Body tensors are renamed ``<node name>/<body name>`` so two expansions never share a name; the body's formal inputs
and outputs become the node's actual ones (an omitted optional input stays omitted).
"""

from __future__ import annotations

from typing import Any

import onnx
from onnx import defs

__all__ = ["function_body"]


def _schema(op_type: str, opset: int) -> defs.OpSchema | None:
    try:
        return defs.get_schema(op_type, opset, "")
    except defs.SchemaError:
        return None


def _bind(body: onnx.FunctionProto, node: onnx.NodeProto, schema: defs.OpSchema) -> list[onnx.NodeProto]:
    """The body's nodes on the node's tensors, attribute references replaced by the node's values (or the
    schema's defaults); an attribute referenced but given by neither is dropped, as the standard says."""
    given = {a.name: a for a in node.attribute}
    names = dict(zip(body.input, [*node.input, *[""] * (len(body.input) - len(node.input))]))
    outs = list(node.output) + [""] * (len(body.output) - len(node.output))
    prefix = node.name or node.op_type
    for formal, actual in zip(body.output, outs):
        names[formal] = actual or f"{prefix}/{formal}"

    def rename(name: str) -> str:
        if not name:
            return ""
        if name not in names:
            names[name] = f"{prefix}/{name}"
        return names[name]

    nodes = []
    for i, inner in enumerate(body.node):
        attrs = []
        for attr in inner.attribute:
            if not attr.ref_attr_name:
                attrs.append(attr)
                continue
            source = given.get(attr.ref_attr_name)
            if source is None:
                default = schema.attributes.get(attr.ref_attr_name)
                if default is None or not default.default_value.type:
                    continue
                source = default.default_value
            bound = onnx.AttributeProto()
            bound.CopyFrom(source)
            bound.name = attr.name
            attrs.append(bound)
        out = onnx.NodeProto()
        out.CopyFrom(inner)
        del out.attribute[:]
        out.attribute.extend(attrs)
        out.name = f"{prefix}/{inner.name or inner.op_type + '_' + str(i)}"
        out.input[:] = [rename(n) for n in inner.input]
        out.output[:] = [rename(n) for n in inner.output]
        nodes.append(out)
    return nodes


def function_body(node: onnx.NodeProto, opset: int, input_types: list[onnx.TypeProto]) -> list[onnx.NodeProto] | None:
    """The nodes ``node`` stands for under default-domain ``opset`` (``input_types``: one per input of ``node``, an
    empty ``TypeProto`` for an omitted one), or None when the standard gives the op no function body (or the body
    uses another domain)."""
    schema = _schema(node.op_type, opset)
    if schema is None:
        return None
    body = None
    bound: Any = schema  # onnx's type stubs (onnx/defs/__init__.pyi) do not declare these OpSchema bindings
    # A body is defined at some opset versions only (GroupNormalization-21's at 21): the newest not after ``opset``.
    if bound.has_context_dependent_function:
        version = max((v for v in bound.context_dependent_function_opset_versions if v <= opset), default=None)
        raw = None if version is None else bound.get_context_dependent_function_with_opset_version(
            version, node.SerializeToString(), [t.SerializeToString() for t in input_types])
    elif bound.has_function:
        version = max((v for v in bound.function_opset_versions if v <= opset), default=None)
        raw = None if version is None else bound.get_function_with_opset_version(version)
    else:
        return None
    if raw:
        body = onnx.FunctionProto()
        body.ParseFromString(raw)
    if body is None or not body.node:
        return None
    if any(n.domain not in ("", "ai.onnx") for n in body.node):
        return None
    return _bind(body, node, schema)
