"""ONNX Conv -> ``dataflow`` ops: an unfold move (``patchify`` or ``im2col``) and a GEMM, back to NCHW.

A convolution is a GEMM over the unfolded input: each output position reads ``C/groups x prod(kernel)`` input
values. Patch embeddings (kernel == stride, no padding, groups 1) unfold by a pure reshape/transpose (``patchify``,
each input element read once); every other convolution goes through ``im2col``, whose output, the unfolded matrix,
is what the move costs (each input element read up to prod(kernel) / prod(stride) times). Both then run the same
GEMM the scheduler, the quantizer and ``codesign rtl`` already handle:

* groups 1: lhs [B, L, C*k] times the weight [C*k, Cout] (rank 2, so B and L merge into the GEMM's rows, and a
  batch-1 dimension changes nothing), bias in the GEMM;
* groups G > 1 (depthwise: G = C): one batched GEMM, lhs [G, B*L, C/G*k] times [G, C/G*k, Cout/G]; the group is
  the batch, so a depthwise conv is one op, not C tiny ones. Its bias (per output channel, not per GEMM column)
  is an add after the result is back in NCHW.

``L`` is the number of output positions, ``k`` = prod(kernel). Convolutions of any spatial rank (1-D audio, 2-D
images, 3-D video tubelets) with any strides, pads (asymmetric too, ``auto_pad`` resolved), dilations and groups
are lowered; the im2col ``attrs`` hold ``kernel``,
``strides``, ``dilations``, ``pads`` ([begin..., end...]), ``groups`` and the output's spatial ``out`` dims.
"""

from __future__ import annotations

import math
from typing import Any, Protocol

import numpy as np
from xdsl.dialects.builtin import DenseArrayBase, DictionaryAttr, IntegerAttr, StringAttr, TensorType, f32, i64
from xdsl.ir import Attribute, Operation, SSAValue

from compiler.dialect import dataflow as df
from compiler.frontend.graph import Graph, Node
from compiler.frontend.onnx_ops import conv_pads
from hw.errors import InputError

__all__ = ["emit_conv", "conv_params", "zero_pads_into_convs"]


class _Builder(Protocol):  # compiler/frontend/to_dialect.py's builder, as far as a Conv uses it
    g: Graph
    patterns: dict[str, int]

    def ttype(self, name: str) -> TensorType: ...
    def add(self, op: Operation) -> Operation: ...
    def weight(self, key: str, value: np.ndarray) -> SSAValue: ...
    def value(self, name: str) -> SSAValue: ...
    def bind(self, name: str, op: Operation, index: int = 0) -> None: ...


def _ints(values: list[int]) -> DenseArrayBase:
    return DenseArrayBase.from_list(i64, [int(v) for v in values])


def _move(layer: str, kind: str, x: SSAValue, out: TensorType, attrs: dict[str, Attribute]) -> Operation:
    return df.MoveOp.create(operands=[x], result_types=[out], properties={
        "layer": StringAttr(layer), "kind": StringAttr(kind), "attrs": DictionaryAttr(attrs)})


def _transpose(layer: str, x: SSAValue, out: TensorType, perm: list[int]) -> Operation:
    return _move(layer, "transpose", x, out, {"onnx_op": StringAttr("Transpose"), "nin": IntegerAttr(1, i64),
                                              "perm": _ints(perm)})


def _reshape(layer: str, x: SSAValue, out: TensorType) -> Operation:
    return _move(layer, "reshape", x, out, {"onnx_op": StringAttr("Reshape"), "nin": IntegerAttr(2, i64),
                                            "#1": _ints(list(out.get_shape()))})


def zero_pads_into_convs(g: Graph, consumers: dict[str, list[Node]]) -> dict[int, tuple[Node, list[int]]]:
    """Conv node id -> (the Pad it absorbs, that Pad's spatial pads [begin..., end...]).

    A constant-mode Pad by zeros, on the spatial axes only, whose one reader is a Conv is the Conv's own padding
    (``F.pad`` before a conv, TF-style asymmetric "same" padding): folding it saves writing and re-reading the
    padded tensor. Negative pads (crops), non-zero values and other modes stay a ``pad`` move.
    """
    out: dict[int, tuple[Node, list[int]]] = {}
    for node in g.nodes:
        if node.op_type != "Pad" or node.outputs[0] in g.outputs:
            continue
        users = consumers.get(node.outputs[0], [])
        if len(users) != 1 or users[0].op_type != "Conv" or users[0].inputs[0] != node.outputs[0]:
            continue
        mode = node.attrs.get("mode", "constant")
        ins = list(node.inputs) + [""] * (4 - len(node.inputs))
        if (mode not in ("constant", b"constant") or not ins[1] or not g.is_const(ins[1]) or ins[3]
                or (ins[2] and (not g.is_const(ins[2]) or np.any(g.constants[ins[2]] != 0)))):
            continue
        pads = [int(v) for v in g.constants[ins[1]].reshape(-1)]
        rank = len(pads) // 2
        begin, end = pads[:rank], pads[rank:]
        if rank < 3 or any(v < 0 for v in pads) or any(begin[:2]) or any(end[:2]):
            continue
        out[id(users[0])] = (node, begin[2:] + end[2:])
    return out


def conv_params(g: Graph, node: Node, pre_pad: tuple[Node, list[int]] | None = None) -> dict[str, Any]:
    """The Conv's geometry (kernel, strides, dilations, pads, groups), checked; one line naming the node if not.

    ``pre_pad``: a zero Pad folded into it (``zero_pads_into_convs``); its pads add to the Conv's own."""
    x, w = node.inputs[0], node.inputs[1]

    def refuse(why: str) -> InputError:
        return InputError(f"{g.source}: unsupported op Conv (node '{node.name}'): {why}")

    if not g.is_const(w):
        raise refuse("the weight is not a constant")
    shape = g.shapes[x]
    rank = len(shape) - 2
    if rank < 1 or len(g.shapes[w]) != rank + 2:
        raise refuse(f"input {list(shape)} and weight {list(g.shapes[w])} are not an [N, C, *spatial] "
                     "convolution")
    kernel = [int(k) for k in node.attrs.get("kernel_shape", g.shapes[w][2:])]
    group = int(node.attrs.get("group", 1))
    cin, cout = shape[1], g.shapes[w][0]
    if group < 1 or cin % group or cout % group or g.shapes[w][1] != cin // group:
        raise refuse(f"group {group} does not fit {cin} input / {cout} output channels and weight "
                     f"{list(g.shapes[w])}")
    try:
        pads = conv_pads(node.attrs, shape[2:], kernel)
    except TypeError:
        raise refuse(f"auto_pad {node.attrs.get('auto_pad')!r} is not understood") from None
    if pre_pad is not None:
        pads = [a + b for a, b in zip(pads, pre_pad[1], strict=True)]
    return {"kernel": kernel, "strides": [int(s) for s in node.attrs.get("strides", [1] * rank)],
            "dilations": [int(d) for d in node.attrs.get("dilations", [1] * rank)], "pads": pads, "groups": group}


def emit_conv(b: _Builder, node: Node, name: str, pre_pad: tuple[Node, list[int]] | None = None) -> None:
    """``node`` (an ONNX Conv) as unfold + GEMM + back to NCHW under layer ``name``; ``pre_pad``: a zero Pad it
    absorbs (``zero_pads_into_convs``), whose input it then reads."""
    g = b.g
    p = conv_params(g, node, pre_pad)
    shape = g.shapes[node.inputs[0]]
    kernel = p["kernel"]
    patch = pre_pad is None and (len(kernel) == 2 and kernel == p["strides"] and not any(p["pads"]) and p["groups"] == 1
             and p["dilations"] == [1, 1] and shape[2] % kernel[0] == 0 and shape[3] % kernel[1] == 0)
    if patch:
        _emit_patchify(b, node, name)
    else:
        _emit_im2col(b, node, name, p, pre_pad[0].inputs[0] if pre_pad is not None else node.inputs[0])


def _emit_patchify(b: _Builder, node: Node, name: str) -> None:
    """Kernel == stride, no padding, groups 1: the unfold is a reshape/transpose (ViT's patch embedding)."""
    g = b.g
    x, w = node.inputs[0], node.inputs[1]
    batch, cin, h, wd = g.shapes[x]
    kh, kw = g.shapes[w][2:]
    hp, wp = h // kh, wd // kw
    cout = g.shapes[w][0]
    el = b.ttype(x).get_element_type()
    patches = b.add(_move(name + ".patchify", "patchify", b.value(x), TensorType(el, [batch, hp * wp, cin * kh * kw]),
                          {"kernel": _ints([kh, kw])}))
    weight = g.constants[w].reshape(cout, cin * kh * kw).T
    rhs = b.weight(w + ".patches", np.ascontiguousarray(weight))
    bias = b.weight(node.inputs[2], g.constants[node.inputs[2]]) if len(node.inputs) > 2 and node.inputs[2] else None
    gemm = b.add(df.GemmOp(name, patches.results[0], rhs, bias, TensorType(el, [batch, hp * wp, cout]), f32))
    b.patterns["gemm"] += 1
    trans = b.add(_transpose(name + ".to_nchw", gemm.results[0], TensorType(el, [batch, cout, hp * wp]), [0, 2, 1]))
    reshape = b.add(_reshape(name + ".unflatten", trans.results[0], b.ttype(node.outputs[0])))
    b.bind(node.outputs[0], reshape)


def _emit_im2col(b: _Builder, node: Node, name: str, p: dict[str, Any], x: str) -> None:
    g = b.g
    w = node.inputs[1]
    batch, cin = g.shapes[x][:2]
    out_type = b.ttype(node.outputs[0])
    out_sp = list(out_type.get_shape())[2:]
    positions = math.prod(out_sp)
    el = out_type.get_element_type()
    weight = g.constants[w]
    cout, groups = weight.shape[0], p["groups"]
    k = cin // groups * math.prod(p["kernel"])
    ng = cout // groups
    cols_shape = [batch, positions, k] if groups == 1 else [groups, batch * positions, k]
    attrs: dict[str, Attribute] = {key: _ints(p[key]) for key in ("kernel", "strides", "dilations", "pads")}
    attrs["groups"] = IntegerAttr(groups, i64)
    attrs["out"] = _ints(out_sp)
    cols = b.add(_move(name + ".im2col", "im2col", b.value(x), TensorType(el, cols_shape), attrs))
    bias_name = node.inputs[2] if len(node.inputs) > 2 and node.inputs[2] else None
    if groups == 1:
        rhs = b.weight(w + ".im2col", np.ascontiguousarray(weight.reshape(cout, k).T))
        bias = b.weight(bias_name, g.constants[bias_name]) if bias_name else None
        gemm = b.add(df.GemmOp(name, cols.results[0], rhs, bias, TensorType(el, [batch, positions, cout]), f32))
        b.patterns["gemm"] += 1
        nchw = b.add(_transpose(name + ".to_nchw", gemm.results[0], TensorType(el, [batch, cout, positions]),
                                [0, 2, 1]))
        out = b.add(_reshape(name + ".unflatten", nchw.results[0], out_type))
        b.bind(node.outputs[0], out)
        return
    rhs = b.weight(w + ".im2col", np.ascontiguousarray(weight.reshape(groups, ng, k).transpose(0, 2, 1)))
    gemm = b.add(df.GemmOp(name, cols.results[0], rhs, None, TensorType(el, [groups, batch * positions, ng]), f32))
    b.patterns["gemm"] += 1
    split = b.add(_reshape(name + ".split_batch", gemm.results[0], TensorType(el, [groups, batch, positions, ng])))
    nchw = b.add(_transpose(name + ".to_nchw", split.results[0], TensorType(el, [batch, groups, ng, positions]),
                            [1, 0, 3, 2]))
    out = b.add(_reshape(name + ".unflatten", nchw.results[0], out_type))
    if bias_name:
        value = np.asarray(g.constants[bias_name]).reshape([cout] + [1] * len(out_sp))
        bias_w = b.weight(bias_name + ".nchw", value)
        out = b.add(df.ElementwiseOp.create(operands=[out.results[0], bias_w], result_types=[out_type], properties={
            "layer": StringAttr(name + ".bias"), "kind": StringAttr("add"),
            "attrs": DictionaryAttr({"onnx_op": StringAttr("Add"), "nin": IntegerAttr(2, i64)})}))
    b.bind(node.outputs[0], out)
