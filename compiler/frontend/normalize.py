"""Graph rewrites that run before recognition, so each matcher sees one spelling of what exporters write many ways.

Each rewrite computes what the nodes it replaces computed; the matchers (compiler/frontend/recognize.py) then need
not know that a pool, a BatchNormalization, a KV-cache concat or a fused QKV projection was ever there.
"""

from __future__ import annotations

from compiler.frontend.batchnorm import lower_batchnorms
from compiler.frontend.col2im import lower_col2ims
from compiler.frontend.compound_ops import lower_compound_ops
from compiler.frontend.conv_transpose import lower_conv_transposes
from compiler.frontend.fused_proj import split_selected_projections
from compiler.frontend.fused_qkv import split_fused_qkv
from compiler.frontend.graph import Graph, Node
from compiler.frontend.grid_tokens import flatten_grid_projections
from compiler.frontend.head_concat import hoist_head_concats
from compiler.frontend.head_rows import hoist_head_rows
from compiler.frontend.instancenorm import lower_instance_norms
from compiler.frontend.kv_cache import rewrite_kv_cache
from compiler.frontend.pooling import lower_pools
from compiler.frontend.reductions import lower_norm_reductions
from compiler.frontend.scatter_box import lower_box_scatters

__all__ = ["normalize_for_recognition"]


def _single_concats(nodes: list[Node]) -> None:
    """A Concat of one tensor is that tensor: an Identity, which the matchers' movement chains cross. Why: XLM
    concatenates its keys and values with a cache list of none (``torch.cat([k])``), which hid the attention."""
    for node in nodes:
        if node.op_type == "Concat" and len([i for i in node.inputs if i]) == 1:
            node.op_type, node.inputs[:], node.attrs = "Identity", [i for i in node.inputs if i], {}


def _noop_expands(graph: Graph) -> None:
    """An Expand whose output has its input's shape copies it: an Identity, which the matchers' walks cross. Why:
    the legacy exporter writes ``t[:, :, a:, b:] = x`` of a whole tensor (MViT-v2's relative-position term added to
    the scores) through an Expand of the scores to their own shape."""
    for node in graph.nodes:
        if node.op_type == "Expand" and node.inputs[0] and graph.shapes.get(node.inputs[0]) is not None \
                and graph.shapes.get(node.inputs[0]) == graph.shapes.get(node.outputs[0]):
            node.op_type, node.inputs[:], node.attrs = "Identity", node.inputs[:1], {}


def _flat_softmaxes(graph: Graph) -> None:
    """``Reshape(Softmax(Flatten(x, axis=rank - 1)), shape(x))`` is a Softmax of ``x`` over its last axis: one op,
    which the attention matcher reads. Why: onnx's version converter spells an opset < 13 Softmax (which coerced
    its input to 2-D) that way (compiler/frontend/opset_upgrade.py), and so do exporters that flatten by hand. The
    Flatten stays for its other readers; the Reshape becomes an Identity of the softmax, which the matchers cross."""
    producers, consumers = graph.producers(), graph.consumers()
    for node in graph.nodes:
        if node.op_type not in ("Softmax", "LogSoftmax") or node.outputs[0] in graph.outputs:
            continue
        flat = producers.get(node.inputs[0])
        users = consumers.get(node.outputs[0], [])
        if flat is None or flat.op_type != "Flatten" or len(users) != 1 or users[0].op_type != "Reshape":
            continue
        shape = graph.shapes.get(flat.inputs[0])
        if shape is None or len(shape) < 2 or int(flat.attrs.get("axis", 1)) % len(shape) != len(shape) - 1 \
                or int(node.attrs.get("axis", -1)) % 2 != 1 or graph.shapes.get(users[0].outputs[0]) != shape:
            continue
        node.inputs[0], node.attrs["axis"] = flat.inputs[0], -1
        graph.shapes[node.outputs[0]] = shape
        users[0].op_type, users[0].inputs[:], users[0].attrs = "Identity", node.outputs[:1], {}
        if len(consumers.get(flat.outputs[0], [])) == 1 and flat.outputs[0] not in graph.outputs:
            graph.nodes.remove(flat)


def normalize_for_recognition(graph: Graph) -> None:
    """Rewrite ``graph`` in place, in this order (a later rewrite reads what an earlier one wrote)."""
    _single_concats(graph.nodes)  # Concat of one tensor -> Identity
    _noop_expands(graph)  # Expand to the shape it already has -> Identity
    _flat_softmaxes(graph)  # Reshape(Softmax(Flatten(x))) over the last axis -> Softmax(x)
    lower_compound_ops(graph)  # variadic Sum / Mean / Max / Min, LogSoftmax, global pools, DepthToSpace -> basic ops
    lower_conv_transposes(graph)  # ConvTranspose -> MatMul over the input positions + Col2Im of the columns
    lower_col2ims(graph)  # Col2Im (F.fold) -> Reshape + Transpose + Reshape, or per axis Slice + Pad + Add
    lower_pools(graph)  # non-overlapping pools -> Reshape + ReduceMean / ReduceMax
    lower_norm_reductions(graph)  # ReduceL2 / ReduceL1 / ReduceSumSquare -> element-wise ops + ReduceSum
    hoist_head_rows(graph)  # per-row work on Q / K heads (Swin-v2's L2 norms) moved before the head transpose
    lower_batchnorms(graph)  # inference BatchNormalization -> folded into its producer, or per-channel Mul + Add
    lower_instance_norms(graph)  # InstanceNormalization (torch's GroupNorm export) -> last-axis LayerNormalization
    rewrite_kv_cache(graph)  # decoder steps: Concat(past, new) moved to the [B, S, D] layout attention reads
    flatten_grid_projections(graph)  # projections over a [B, H, W, C] token grid viewed as [B, H*W, C]
    split_fused_qkv(graph)  # timm-style fused QKV -> three projections the attention matcher follows
    split_selected_projections(graph)  # BLOOM / NeoX / Falcon / CodeGen fused QKV read through Gather / Slice
    lower_box_scatters(graph)  # ScatterND writing a constant box (t[..., a:b] = x) -> Slice / Concat
    hoist_head_concats(graph)  # heads concatenated from two projections (MLA's key) -> one [B, S, H*Dh] tensor
