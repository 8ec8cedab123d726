"""onnxruntime's block-quantized embedding lookup (``com.microsoft.GatherBlockQuantized``) as a Gather at load.

The onnxruntime-genai model builder writes it for a model whose embedding table is its int4 ``lm_head`` weight
(tied embeddings: Gemma, Qwen, Phi-4-mini, ...): ``GatherBlockQuantized(data, indices, scales[, zero_points])`` with
attributes ``gather_axis``, ``quantize_axis``, ``block_size`` and ``bits`` (onnxruntime docs/ContribOperators.md,
``com.microsoft.GatherBlockQuantized``). With uint8 ``data`` it follows MatMulNBits' storage (compiler/frontend/
ort_nbits.py): two 4-bit codes a byte along the quantized axis, low nibble first, zero points packed the same way
and 8 when there are none (onnxruntime's own test, onnxruntime/test/contrib_ops/gather_block_quantized_op_test.cc,
packs its expected data so). The table is dequantized once, ``(code - zero_point) * scale`` per block of
``block_size`` along ``quantize_axis``, and the node becomes ``Gather(table, indices, axis=gather_axis)``, which the
recognisers read as the embedding it is.

``data`` may be computed from weights (the builder reshapes the lm_head's ``[N, blocks, block / 2]`` codes to the
table's ``[N, K / 2]``): a chain of shape-only ops (Reshape, Squeeze, Unsqueeze, Identity, Flatten, Constant) over
initializers is evaluated here. Other widths, layouts and computed scales are refused in one line naming the node.
"""

from __future__ import annotations

import numpy as np
import onnx
from onnx import helper, numpy_helper

from compiler.frontend.contrib_body import Rewrite, model_dir, rewrite_contrib
from compiler.frontend.onnx_ops import UnsupportedOp, run_node
from compiler.frontend.ort_nbits import unpack_codes
from hw.errors import InputError, first_line

__all__ = ["GATHER_BLOCK_OP", "expand_gather_block_quantized"]

GATHER_BLOCK_OP = "GatherBlockQuantized"
_ATTRS = {"gather_axis", "quantize_axis", "block_size", "bits"}
#: Ops a weight may pass through on its way to ``data`` (views of the stored codes).
_VIEWS = frozenset({"Reshape", "Squeeze", "Unsqueeze", "Identity", "Flatten", "Constant"})


class _Constants:
    """Values of initializers and of view chains over them."""

    def __init__(self, graph: onnx.GraphProto, base: str) -> None:
        self.inits = {t.name: t for t in graph.initializer}
        self.producers = {o: n for n in graph.node for o in n.output if o}
        self.base = base
        self.cache: dict[str, np.ndarray] = {}

    def value(self, name: str, depth: int = 0) -> np.ndarray | None:
        if name in self.cache:
            return self.cache[name]
        if name in self.inits:
            got: np.ndarray | None = numpy_helper.to_array(self.inits[name], base_dir=self.base)
        else:
            node = self.producers.get(name)
            if node is None or node.op_type not in _VIEWS or node.domain not in ("", "ai.onnx") or depth > 16:
                return None
            args = [self.value(i, depth + 1) if i else None for i in node.input]
            if any(a is None for a, i in zip(args, node.input, strict=True) if i):
                return None
            attrs = {a.name: helper.get_attribute_value(a) for a in node.attribute}
            if "value" in attrs and isinstance(attrs["value"], onnx.TensorProto):
                attrs["value"] = numpy_helper.to_array(attrs["value"])
            try:
                got = run_node(node.op_type, args, attrs)[0]
            except (UnsupportedOp, ValueError, TypeError, IndexError):
                return None
        self.cache[name] = got
        return got


def _table(data: np.ndarray, scales: np.ndarray, zp: np.ndarray | None, block: int, where: str) -> np.ndarray:
    """The dequantized table, quantized along its last axis, in the scales' float type."""
    codes = unpack_codes(data, 4)  # [..., K] (K even: a padded last code is sliced off by the scales' extent)
    blocks = scales.shape[-1]
    k = min(codes.shape[-1], blocks * block)
    if scales.shape[:-1] != data.shape[:-1] or -(-k // block) != blocks:
        raise InputError(f"{where}: scales {list(scales.shape)} do not fit data {list(data.shape)} in blocks of "
                         f"{block}")
    if zp is None:
        zero = np.full(scales.shape, 8, np.int64)
    elif zp.dtype == np.uint8 and zp.shape[:-1] == scales.shape[:-1] and zp.shape[-1] == -(-blocks // 2):
        zero = unpack_codes(zp, 4)[..., :blocks]
    else:
        raise InputError(f"{where}: zero_points {list(zp.shape)} {zp.dtype} (uint8 zero points packed like data "
                         "are supported)")
    step = np.repeat(scales.astype(np.float64), block, axis=-1)[..., :k]
    table = (codes[..., :k] - np.repeat(zero, block, axis=-1)[..., :k]) * step
    return np.ascontiguousarray(table.astype(scales.dtype))


def expand_gather_block_quantized(model: onnx.ModelProto, source: str) -> onnx.ModelProto:
    """``model`` with every ``com.microsoft.GatherBlockQuantized`` a Gather of its dequantized table (a copy;
    ``model`` itself when there is none). External data is read from the model's folder."""

    def start(graph: onnx.GraphProto) -> Rewrite:
        constants = _Constants(graph, model_dir(source))
        return lambda node, name, where, attrs: _as_gather(graph, constants, node, name, where, attrs)

    return rewrite_contrib(model, GATHER_BLOCK_OP, source, start)


def _as_gather(graph: onnx.GraphProto, constants: _Constants, node: onnx.NodeProto, name: str, where: str,
               attrs: dict) -> list[onnx.NodeProto]:
    unknown = sorted(set(attrs) - _ATTRS)
    if unknown:
        raise InputError(f"{where}: attribute {', '.join(unknown)} is not supported")
    bits, block = attrs.get("bits", 4), attrs.get("block_size", 128)
    ins = list(node.input) + [""] * (4 - len(node.input))
    try:
        data, scales = constants.value(ins[0]), constants.value(ins[2])
        zp = constants.value(ins[3]) if ins[3] else None
    except (OSError, ValueError) as err:
        raise InputError(f"{where}: cannot read its weights: {first_line(err)}") from None
    if data is None or scales is None or (ins[3] and zp is None):
        raise InputError(f"{where}: its data / scales / zero_points are computed, not weights")
    rank = data.ndim
    q_axis = attrs.get("quantize_axis", 1) % max(rank, 1)
    if bits != 4 or data.dtype != np.uint8 or q_axis != rank - 1 or block < 16 or block & (block - 1):
        raise InputError(f"{where}: bits={bits}, {data.dtype} data quantized along axis {q_axis} of {rank}, "
                         f"block_size={block} (4-bit codes packed in uint8 along the last axis, a power-of-two "
                         "block >= 16, are supported)")
    t_name = f"{name}/dequantized_table"
    graph.initializer.append(numpy_helper.from_array(_table(data, scales, zp, block, where), t_name))
    return [helper.make_node("Gather", [t_name, ins[1]], list(node.output[:1]), name=f"{name}/Gather",
                             axis=attrs.get("gather_axis", 0))]
