"""onnxruntime's block-quantized weight-only GEMMs (``com.microsoft.MatMulNBits``) as float MatMuls at load.

``onnxruntime.quantization.matmul_nbits_quantizer.MatMulNBitsQuantizer`` (ORT's int4 weight-only path, and what
onnxruntime-genai's model builder writes for every projection) replaces ``MatMul(A, W)`` by
``MatMulNBits(A, B, scales[, zero_points[, g_idx[, bias]]])`` with attributes ``K``, ``N``, ``bits`` and
``block_size`` (onnxruntime docs/ContribOperators.md, ``com.microsoft.MatMulNBits``):

- ``B``: uint8 ``[N, ceil(K / block_size), block_size * bits / 8]``, each column's codes along K packed low bits
  first (two 4-bit codes a byte, the first in the low nibble);
- ``scales``: ``[N, n_blocks]`` (or flat), one step per column and block, in A's float type;
- ``zero_points``: uint8 packed like ``B`` (``[N, ceil(n_blocks * bits / 8)]``), default ``2^(bits - 1)``;
- ``Y = A @ W^T (+ bias)`` with ``W[n, k] = (code - zero_point) * scale`` of k's block.

As with quantize_dynamic's and QDQ models (compiler/frontend/dynamic_quant.py, qdq.py) the compiler reads the
float graph on the model's own dequantized weights: each node becomes ``MatMul(A, W^T)`` (+ ``Add(bias)``) with
``W^T`` a constant, so attention, norms and GELU are recognised as in the model before quantization, and
``--quant w4a8 --weight-group 32`` puts the weights back on a 4-bit grid per group. ``accuracy_level`` (how
onnxruntime's CPU kernel computes, not what) is accepted; ``g_idx`` (act-order, deprecated), float zero points and
weights that are not initializers are refused in one line naming the node.
"""

from __future__ import annotations

import numpy as np
import onnx
from onnx import helper, numpy_helper

from compiler.frontend.contrib_body import Rewrite, model_dir, rewrite_contrib
from hw.errors import InputError, first_line

__all__ = ["NBITS_OP", "expand_matmul_nbits", "unpack_codes"]

NBITS_OP = "MatMulNBits"
_ATTRS = {"K", "N", "bits", "block_size", "accuracy_level"}


def unpack_codes(packed: np.ndarray, bits: int) -> np.ndarray:
    """uint8 ``[..., n]`` of ``8 / bits`` codes a byte, low bits first -> ``[..., n * 8 / bits]`` codes (int64)."""
    per = 8 // bits
    shifts = np.arange(per, dtype=np.uint8) * bits
    codes = (packed[..., None] >> shifts) & np.uint8((1 << bits) - 1)
    return codes.reshape(*packed.shape[:-1], packed.shape[-1] * per).astype(np.int64)


def _dequantized(node: onnx.NodeProto, values: list[np.ndarray | None], attrs: dict, where: str) -> np.ndarray:
    """``W^T`` [K, N] in the scales' float type."""
    k, n, bits, block = attrs["K"], attrs["N"], attrs.get("bits", 4), attrs["block_size"]
    b, scales, zp = values[0], values[1], values[2]
    if b is None or scales is None:
        raise InputError(f"{where}: its required input {'B' if b is None else 'scales'} is missing")
    if bits not in (2, 4, 8) or block < 16 or block & (block - 1):
        raise InputError(f"{where}: bits={bits}, block_size={block} (bits 2, 4 or 8; a power-of-two block >= 16)")
    if k <= 0 or n <= 0:
        raise InputError(f"{where}: K={k}, N={n} (both positive)")
    blocks = -(-k // block)
    if b.dtype != np.uint8 or b.size != n * blocks * block * bits // 8 or scales.size != n * blocks:
        raise InputError(f"{where}: B {list(b.shape)} {b.dtype} / scales {list(scales.shape)} do not fit K={k}, N={n}, "
                         f"block_size={block}, bits={bits}")
    codes = unpack_codes(b.reshape(n, blocks, block * bits // 8), bits).reshape(n, blocks * block)[:, :k]
    step = scales.reshape(n, blocks).astype(np.float64)
    if zp is None:
        zero = np.full((n, blocks), 1 << (bits - 1), np.int64)
    elif zp.dtype == np.uint8 and zp.size == n * -(-blocks * bits // 8):
        zero = unpack_codes(zp.reshape(n, -1), bits)[:, :blocks]
    else:
        raise InputError(f"{where}: zero_points {list(zp.shape)} {zp.dtype} (uint8 zero points packed like B are "
                         "supported; float zero points are not)")
    w = (codes - np.repeat(zero, block, axis=1)[:, :k]) * np.repeat(step, block, axis=1)[:, :k]
    return np.ascontiguousarray(w.T.astype(scales.dtype))


def expand_matmul_nbits(model: onnx.ModelProto, source: str) -> onnx.ModelProto:
    """``model`` with every ``com.microsoft.MatMulNBits`` node a MatMul on its dequantized weight (a copy; ``model``
    itself when there is none). External weight data is read from the model's folder."""

    def start(graph: onnx.GraphProto) -> Rewrite:
        inits = {t.name: t for t in graph.initializer}
        return lambda node, name, where, attrs: _as_matmul(graph, inits, model_dir(source), node, name, where, attrs)

    return rewrite_contrib(model, NBITS_OP, source, start)


def _as_matmul(graph: onnx.GraphProto, inits: dict[str, onnx.TensorProto], base: str, node: onnx.NodeProto,
               name: str, where: str, attrs: dict) -> list[onnx.NodeProto]:
    unknown = sorted(set(attrs) - _ATTRS)
    missing = sorted({"K", "N", "block_size"} - set(attrs))
    if unknown or missing:
        raise InputError(f"{where}: attribute {', '.join(unknown or missing)} "
                         f"{'is not supported' if unknown else 'is missing'}")
    ins = list(node.input) + [""] * (6 - len(node.input))
    if ins[4]:
        raise InputError(f"{where}: g_idx (act-order column permutation, deprecated) is not supported")
    values: list[np.ndarray | None] = []
    for j, role in ((1, "B"), (2, "scales"), (3, "zero_points")):
        if not ins[j]:
            values.append(None)
            continue
        if ins[j] not in inits:
            raise InputError(f"{where}: its {role} '{ins[j]}' is computed, not a weight")
        try:
            values.append(numpy_helper.to_array(inits[ins[j]], base_dir=base))
        except (OSError, ValueError) as err:
            raise InputError(f"{where}: cannot read its {role} '{ins[j]}': {first_line(err)}") from None
    weight = _dequantized(node, values, attrs, where)
    w_name = f"{name}/dequantized_weight"
    graph.initializer.append(numpy_helper.from_array(weight, w_name))
    out = node.output[0]
    nodes = [helper.make_node("MatMul", [ins[0], w_name], [f"{out}/matmul" if ins[5] else out], name=f"{name}/MatMul")]
    if ins[5]:
        nodes.append(helper.make_node("Add", [f"{out}/matmul", ins[5]], [out], name=f"{name}/bias"))
    return nodes
