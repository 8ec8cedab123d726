"""onnxruntime's fused transformer ops (``com.microsoft`` domain) spelled out as standard ONNX at load.

``onnxruntime.transformers.optimizer.optimize_model`` (what HF Optimum's ORTOptimizer writes) replaces the ops of a
transformer's layers by fused contrib ops. Each op expanded here is rewritten into the standard-op subgraph that
onnxruntime's docs/ContribOperators.md defines, spelled the way torch's exporter spells the un-fused model, so the
recognisers find attention, the norms and GELU exactly as in the model before the optimizer ran:

- ``Gelu(x)`` = x * (1 + erf(x / sqrt 2)) / 2; ``BiasGelu(a, b)`` = Gelu(a + b);
- ``FastGelu(x[, b])`` = y/2 * (1 + tanh(sqrt(2/pi) (y + 0.044715 y^3))), y = x (+ b);
- ``QuickGelu(x)`` = x * sigmoid(alpha x) (alpha = 1.702 by default; 1 is SiLU);
- ``SkipLayerNormalization(x, skip, gamma[, beta[, bias]])`` = LayerNorm(x + skip (+ bias)) over the last axis,
  its fourth output the sum; ``SkipSimplifiedLayerNormalization`` and ``SimplifiedLayerNormalization`` the RMS norm
  (onnxruntime registers the latter in the default domain, and its optimizer writes it there);
- ``EmbedLayerNormalization(ids, [segment_ids], word, position, [segment], gamma, beta[, mask[, position_ids]])``
  = LayerNorm(word[ids] + position[position_ids, or 0 .. seq - 1] (+ segment[segment_ids])), its third output the
  sum; its ``mask_index`` output each row's count of mask == 1 (what onnxruntime's kernel computes), zeros without
  a mask;
- ``Attention(x, W[, b[, mask_index[, , attention_bias]]])``: packed QKV projection, ``num_heads`` heads, scores
  scaled by ``scale`` (1/sqrt(head size) by default), ``mask_filter_value`` (-10000) added where ``mask_index``
  (1-D end positions, or a 2-D / 3-D 0/1 mask) masks a key and above the diagonal when ``unidirectional``, the
  ``attention_bias`` added, softmax, concatenated heads;
- ``MultiHeadAttention(q, k, v[, bias[, key_padding_mask[, attention_bias]]])``: the same on separate [batch,
  length, hidden] Q, K and V (self or cross attention), ``bias`` the three projections' biases packed.

- ``GroupQueryAttention`` (the onnxruntime-genai model builder's decoder attention: KV cache, RoPE, grouped heads):
  compiler/frontend/ort_gqa.py; ``RotaryEmbedding``: compiler/frontend/ort_rotary.py.

Everything else is refused in one line naming the node and what is not supported (a past / present KV cache for
Attention / MultiHeadAttention, packed QKV / KV, a BNSH key or causal cross attention for MultiHeadAttention, rotary
``Attention``, a 1-D mask of neither the batch's length nor twice it, the mean / inverse-std outputs, bfloat16): the
op is left alone only when its type is not expanded at all, and ``check_domains`` then refuses it by name.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from compiler.frontend.contrib_body import CONTRIB_DOMAIN
from compiler.frontend.contrib_body import ContribBody as _Body
from compiler.frontend.opset_upgrade import default_opset
from compiler.frontend.ort_gqa import GQA_ATTRS, expand_group_query_attention, gqa_shapes_needed
from compiler.frontend.ort_rotary import ROTARY_ATTRS, expand_rotary_embedding, rotary_shapes_needed
from hw.errors import InputError

__all__ = ["CONTRIB_DOMAIN", "EXPANDED_OPS", "expand_contrib_ops"]

#: Attributes each expanded op may carry (any other is refused); their defaults are the contrib op schema's.
_ATTRS: dict[str, set[str]] = {
    "Gelu": set(), "BiasGelu": set(), "FastGelu": set(), "QuickGelu": {"alpha"},
    "SkipLayerNormalization": {"epsilon"}, "SkipSimplifiedLayerNormalization": {"epsilon"},
    "SimplifiedLayerNormalization": {"axis", "epsilon", "stash_type"},
    "Attention": {"num_heads", "qkv_hidden_sizes", "unidirectional", "mask_filter_value", "scale", "do_rotary",
                  "rotary_embedding_dim", "past_present_share_buffer"},
    "MultiHeadAttention": {"num_heads", "unidirectional", "mask_filter_value", "scale"},
    "EmbedLayerNormalization": {"epsilon", "mask_index_type"},
    "GroupQueryAttention": set(GQA_ATTRS),
    "RotaryEmbedding": set(ROTARY_ATTRS),
}
EXPANDED_OPS = frozenset(_ATTRS)
#: Contrib ops onnxruntime registers in the default domain (ONNX itself defines no op of that name before opset 23's
#: RMSNormalization, so no standard op is shadowed): its optimizer writes them without a domain.
_DEFAULT_DOMAIN_OPS = frozenset({"SimplifiedLayerNormalization"})
#: Initializers up to this many elements keep their values in the shape-inference skeleton (axes, shapes).
_SKELETON_CONST_LIMIT = 4096


def _gelu(b: _Body, x: str, out: str) -> None:
    erf = b.op("Erf", [b.op("Div", [x, b.const(math.sqrt(2.0))])])
    b.op("Mul", [b.op("Mul", [x, b.op("Add", [erf, b.const(1.0)])]), b.const(0.5)], out)


def _expand_gelu(b: _Body) -> None:
    x = b.input(0)
    if b.node.op_type == "BiasGelu":
        x = b.op("Add", [x, b.input(1)])
    _gelu(b, x, b.output(0))


def _expand_fast_gelu(b: _Body) -> None:
    x = b.input(0)
    if b.input(1):
        x = b.op("Add", [x, b.input(1)])
    half = b.op("Mul", [x, b.const(0.5)])
    cube = b.op("Mul", [b.op("Pow", [x, b.const(3.0)]), b.const(0.044715)])
    tanh = b.op("Tanh", [b.op("Mul", [b.op("Add", [x, cube]), b.const(math.sqrt(2.0 / math.pi))])])
    b.op("Mul", [half, b.op("Add", [tanh, b.const(1.0)])], b.output(0))


def _expand_quick_gelu(b: _Body) -> None:
    x, alpha = b.input(0), b.float_attr("alpha", 1.702)
    scaled = x if alpha == 1.0 else b.op("Mul", [x, b.const(alpha)])
    b.op("Mul", [x, b.op("Sigmoid", [scaled])], b.output(0))


def _rms(b: _Body, x: str, gamma: str, eps: float, out: str) -> None:
    """x / sqrt(mean(x^2) + eps) * gamma, as torch exports an RMSNorm (LlamaRMSNorm): a half-precision x is cast to
    float32 for the statistics and the product cast back before gamma (onnxruntime's kernels accumulate in float32
    too, and x^2 of a float16 activation above 256 would overflow)."""
    half = b.dtype != np.float32
    wide = b.op("Cast", [x], to=TensorProto.FLOAT) if half else x
    var = b.mean_last(b.op("Pow", [wide, b.const(2.0, np.float32)]))
    inv = b.op("Div", [b.const(1.0, np.float32), b.op("Sqrt", [b.op("Add", [var, b.const(eps, np.float32)])])])
    normed = b.op("Mul", [wide, inv])
    if half:
        normed = b.op("Cast", [normed], to=helper.np_dtype_to_tensor_dtype(b.dtype))
    b.op("Mul", [gamma, normed], out)


def _layer_norm(b: _Body, x: str, gamma: str, beta: str, eps: float, out: str) -> None:
    if b.opset >= 17:
        b.op("LayerNormalization", [x, gamma] + [beta] * bool(beta), out, axis=-1, epsilon=eps)
        return
    centred = b.op("Sub", [x, b.mean_last(x)])
    var = b.mean_last(b.op("Pow", [centred, b.const(2.0)]))
    normed = b.op("Div", [centred, b.op("Sqrt", [b.op("Add", [var, b.const(eps)])])])
    if beta:
        b.op("Add", [b.op("Mul", [normed, gamma]), beta], out)
    else:
        b.op("Mul", [normed, gamma], out)


def _expand_skip_norm(b: _Body) -> None:
    if b.output(1) or b.output(2):
        raise b.refuse("its mean / inv_std_var outputs are used")
    simplified = b.node.op_type == "SkipSimplifiedLayerNormalization"
    bias = b.input(3 if simplified else 4)
    eps = b.float_attr("epsilon", 1e-12)
    total = b.op("Add", [b.input(0), b.input(1)], "" if bias else b.output(3))
    if bias:
        total = b.op("Add", [total, bias], b.output(3))
    if simplified:
        _rms(b, total, b.input(2), eps, b.output(0))
    else:
        _layer_norm(b, total, b.input(2), b.input(3), eps, b.output(0))


def _expand_simplified_norm(b: _Body) -> None:
    if b.output(1):
        raise b.refuse("its inv_std_var output is used")
    if b.int_attr("axis", -1) != -1:
        raise b.refuse(f"axis={b.attrs['axis']} (only the last axis, -1, is supported)")
    _rms(b, b.input(0), b.input(1), b.float_attr("epsilon", 1e-5), b.output(0))


def _attention_inputs_refused(b: _Body, refused: list[tuple[int, str]], outputs: list[tuple[int, str]]) -> None:
    for i, what in refused:
        if b.input(i):
            raise b.refuse(f"{what} (only attention without a KV cache is supported)")
    for i, what in outputs:
        if b.output(i):
            raise b.refuse(f"{what} output (only attention without a KV cache is supported)")


def _num_heads(b: _Body) -> int:
    heads = b.int_attr("num_heads", 0)
    if heads <= 0:
        raise b.refuse("num_heads is missing or not positive")
    return heads


def _mask_bias(b: _Body, mask: str, query: str, kv_len: str, ranks: dict[str, int],
               dims: dict[str, list[int | str]]) -> str:
    """``mask_filter_value`` where a ``mask_index`` / ``key_padding_mask`` masks a key, 0 elsewhere, broadcastable to
    the [batch, heads, query, key] scores: a 1-D mask holds each batch row's key count (right padding), a 2-D
    [batch, keys] or 3-D [batch, queries, keys] one is 1 where a key is kept (onnxruntime keeps a key where the mask
    is > 0)."""
    zero, masked = b.const(0.0), b.const(b.float_attr("mask_filter_value", -10000.0))
    name = "mask_index" if b.node.op_type == "Attention" else "key_padding_mask"
    rank = ranks.get(mask)
    if rank == 1:
        length, batch = (dims.get(mask) or [""])[0], (dims.get(query) or [""])[0]
        keys = b.op("Range", [b.const(0, np.int64), kv_len, b.const(1, np.int64)])
        if length not in (0, "") and length == batch:  # each row's end position (right padding)
            ends = b.unsqueeze(b.op("Cast", [mask], to=TensorProto.INT64), [1])
            keep = b.op("Less", [keys, ends])
            return b.unsqueeze(b.op("Where", [keep, zero, masked]), [1, 2])
        if isinstance(length, int) and isinstance(batch, int) and length not in (batch, 2 * batch):
            raise b.refuse(f"a 1-D {name} of length {length} with a batch of {batch} (onnxruntime reads the batch's "
                           "end positions, or end then start positions)")
        # A length shape inference cannot relate to the batch (a computed position-id slice before the embeddings'
        # Add leaves it unknown): onnxruntime's two layouts, [batch] end positions or [2 x batch] end then start
        # positions, read by the batch size at run time. starts = (mask ++ batch zeros)[batch : 2 batch] is the
        # start half, or zeros when there is none.
        m = b.op("Cast", [mask], to=TensorProto.INT64)
        rows = b.op("Slice", [b.op("Shape", [query]), b.const([0], np.int64), b.const([1], np.int64)])
        twice = b.op("Mul", [rows, b.const([2], np.int64)])
        zeros = b.op("ConstantOfShape", [rows], value=numpy_helper.from_array(np.zeros(1, np.int64)))
        ends = b.op("Slice", [m, b.const([0], np.int64), rows])
        starts = b.op("Slice", [b.op("Concat", [m, zeros], axis=0), rows, twice])
        keep = b.op("And", [b.op("Less", [keys, b.unsqueeze(ends, [1])]),
                            b.op("GreaterOrEqual", [keys, b.unsqueeze(starts, [1])])])
        return b.unsqueeze(b.op("Where", [keep, zero, masked]), [1, 2])
    if rank in (2, 3):
        keep = b.op("Greater", [b.op("Cast", [mask], to=TensorProto.INT64), b.const(0, np.int64)])
        return b.unsqueeze(b.op("Where", [keep, zero, masked]), [1, 2] if rank == 2 else [1])
    raise b.refuse(f"a {name} of rank {rank if rank is not None else 'unknown'} (supported: 1-D end positions, "
                   "2-D or 3-D 0/1 masks)")


def _attend(b: _Body, q: str, k: str, v: str, sizes: tuple[int, int, int], mask: str, bias: str,
            ranks: dict[str, int], dims: dict[str, list[int | str]]) -> None:
    """softmax(Q K^T * scale + mask + attention_bias (+ causal mask)) V over ``num_heads`` heads of the [batch,
    length, hidden] ``q``, ``k``, ``v``, heads split by Reshape / Transpose and joined back into ``b.output(0)``,
    as torch exports eager attention."""
    heads = _num_heads(b)
    if sizes[0] != sizes[1] or any(s <= 0 or s % heads for s in sizes):
        raise b.refuse(f"hidden sizes (Q, K, V) = {list(sizes)} with num_heads={heads} (Q and K sizes must be equal "
                       "and every size a multiple of num_heads)")
    head, vhead = sizes[0] // heads, sizes[2] // heads

    def heads_of(t: str, size: int, perm: list[int]) -> str:
        return b.op("Transpose", [b.op("Reshape", [t, b.const([0, 0, heads, size], np.int64)])], perm=perm)

    scale = b.float_attr("scale", 0.0) or 1.0 / math.sqrt(head)
    scores = b.op("Mul", [b.op("MatMul", [heads_of(q, head, [0, 2, 1, 3]), heads_of(k, head, [0, 2, 3, 1])]),
                          b.const(scale)])

    def length(t: str) -> str:
        return b.op("Gather", [b.op("Shape", [t]), b.const(1, np.int64)], axis=0)

    q_len, kv_len = length(q), length(k)
    if mask:
        scores = b.op("Add", [scores, _mask_bias(b, mask, q, kv_len, ranks, dims)])
    if bias:
        scores = b.op("Add", [scores, bias])
    if b.int_attr("unidirectional", 0):
        step = b.const(1, np.int64)
        keys = b.op("Range", [b.const(0, np.int64), kv_len, step])
        future = b.op("Greater", [keys, b.unsqueeze(b.op("Range", [b.const(0, np.int64), q_len, step]), [1])])
        scores = b.op("Add", [scores, b.op("Where", [future, b.const(b.float_attr("mask_filter_value", -10000.0)),
                                                     b.const(0.0)])])
    probs = b.op("Softmax", [scores], axis=-1)
    ctx = b.op("Transpose", [b.op("MatMul", [probs, heads_of(v, vhead, [0, 2, 1, 3])])], perm=[0, 2, 1, 3])
    b.op("Reshape", [ctx, b.const([0, 0, sizes[2]], np.int64)], b.output(0))


def _expand_attention(b: _Body, ranks: dict[str, int], dims: dict[str, list[int | str]],
                      weights: dict[str, list[int]]) -> None:
    _attention_inputs_refused(b, [(4, "a past key/value input"), (6, "a past_sequence_length")],
                              [(1, "a present key/value")])
    for name in ("do_rotary", "rotary_embedding_dim", "past_present_share_buffer"):
        if b.int_attr(name, 0):
            raise b.refuse(f"{name}={b.attrs[name]}")
    heads = _num_heads(b)
    sizes = b.attrs.get("qkv_hidden_sizes", [])
    if not isinstance(sizes, list) or not all(isinstance(s, int) for s in sizes):
        raise b.refuse("attribute qkv_hidden_sizes is not a list of integers")
    if not sizes:
        shape = weights.get(b.input(1))
        if shape is None or len(shape) != 2 or shape[1] % 3:
            raise b.refuse("its weights are not a constant [input_hidden, 3 * hidden] initializer")
        sizes = [shape[1] // 3] * 3
    if len(sizes) != 3 or sizes[0] != sizes[1] or any(s <= 0 or s % heads for s in sizes):
        raise b.refuse(f"qkv_hidden_sizes={sizes} with num_heads={heads} (Q and K sizes must be equal and every "
                       "size a multiple of num_heads)")
    qkv = b.op("MatMul", [b.input(0), b.input(1)])
    if b.input(2):
        qkv = b.op("Add", [qkv, b.input(2)])
    q, k, v = b.split(qkv, sizes)
    # the mask's batch is checked against the input's (q is a fresh name shape inference has not seen)
    dims = {**dims, q: dims.get(b.input(0), [])}
    _attend(b, q, k, v, (sizes[0], sizes[1], sizes[2]), b.input(3), b.input(5), ranks, dims)


def _expand_multi_head_attention(b: _Body, ranks: dict[str, int], dims: dict[str, list[int | str]],
                                 weights: dict[str, list[int]]) -> None:
    """Separate [batch, length, hidden] Q, K and V (what the optimizer writes with ``use_multi_head_attention``),
    their projections' biases packed in one [Dq + Dk + Dv] input."""
    _attention_inputs_refused(b, [(6, "a past_key input"), (7, "a past_value input"),
                                  (8, "a past_sequence_length"), (9, "a cache_indirection input")],
                              [(1, "a present_key"), (2, "a present_value"), (3, "a qk")])
    q, k, v = b.input(0), b.input(1), b.input(2)
    if not (k and v):
        raise b.refuse("packed QKV or packed KV (no separate key and value inputs)")
    found = [ranks.get(t) for t in (q, k, v)]
    if found != [3, 3, 3]:
        raise b.refuse(f"query / key / value of ranks {['unknown' if r is None else r for r in found]} (only 3-D "
                       "[batch, length, hidden] query, key and value are supported: not packed, not a BNSH past key)")
    sizes = [d for d in (dims[t][2] for t in (q, k, v)) if isinstance(d, int) and d > 0]
    if len(sizes) != 3:
        raise b.refuse("the hidden sizes of query / key / value are not known from the graph")
    if b.int_attr("unidirectional", 0) and (dims[q][1] in (0, "") or dims[q][1] != dims[k][1]):
        # onnxruntime's CPU kernel masks neither j > i nor j > i + (keys - queries) when the lengths differ
        raise b.refuse("unidirectional with a key length that shape inference cannot prove equal to the query "
                       "length (causal cross attention)")
    if b.input(3):
        q, k, v = (b.op("Add", [t, part]) for t, part in zip((q, k, v), b.split(b.input(3), sizes),
                                                              strict=True))
        dims = {**dims, q: dims.get(b.input(0), [])}
    _attend(b, q, k, v, (sizes[0], sizes[1], sizes[2]), b.input(4), b.input(5), ranks, dims)


def _expand_embed_layer_norm(b: _Body) -> None:
    """word[input_ids] + position[position_ids, or 0 .. seq - 1] (+ segment[segment_ids]), then LayerNorm; the
    mask_index output is each row's count of mask == 1 (onnxruntime's kernel; zeros without a mask)."""
    missing = [name for i, name in [(0, "input_ids"), (2, "word_embedding"), (3, "position_embedding"),
                                    (5, "gamma"), (6, "beta")] if not b.input(i)]
    if missing:
        raise b.refuse(f"its required input {', '.join(missing)} is missing")
    ids = b.input(0)
    if b.input(8):
        pos = b.input(8)
    else:
        seq = b.op("Gather", [b.op("Shape", [ids]), b.const(1, np.int64)], axis=0)
        pos = b.op("Range", [b.const(0, np.int64), seq, b.const(1, np.int64)])
    total = b.op("Add", [b.op("Gather", [b.input(2), ids], axis=0), b.op("Gather", [b.input(3), pos], axis=0)],
                 "" if b.input(1) else b.output(2))
    if b.input(1):
        if not b.input(4):
            raise b.refuse("segment_ids without a segment_embedding")
        total = b.op("Add", [total, b.op("Gather", [b.input(4), b.input(1)], axis=0)], b.output(2))
    _layer_norm(b, total, b.input(5), b.input(6), b.float_attr("epsilon", 1e-12), b.output(0))
    if not b.output(1):
        return
    if b.input(7):
        ones = b.op("Cast", [b.op("Equal", [b.input(7), b.const(1, np.int32)])], to=TensorProto.INT32)
        if b.opset >= 13:
            b.op("ReduceSum", [ones, b.const([1], np.int64)], b.output(1), keepdims=0)
        else:
            b.op("ReduceSum", [ones], b.output(1), axes=[1], keepdims=0)
    else:
        batch = b.op("Slice", [b.op("Shape", [ids]), b.const([0], np.int64), b.const([1], np.int64)])
        b.op("ConstantOfShape", [batch], b.output(1), value=numpy_helper.from_array(np.zeros(1, np.int32)))


_SIMPLE: dict[str, Callable[[_Body], None]] = {
    "Gelu": _expand_gelu, "BiasGelu": _expand_gelu, "FastGelu": _expand_fast_gelu, "QuickGelu": _expand_quick_gelu,
    "SkipLayerNormalization": _expand_skip_norm, "SkipSimplifiedLayerNormalization": _expand_skip_norm,
    "SimplifiedLayerNormalization": _expand_simplified_norm, "EmbedLayerNormalization": _expand_embed_layer_norm,
}
_ATTENTION = {"Attention": _expand_attention, "MultiHeadAttention": _expand_multi_head_attention,
              "GroupQueryAttention": expand_group_query_attention, "RotaryEmbedding": expand_rotary_embedding}


def _shapes_needed(b: _Body) -> list[str]:
    """The inputs whose shapes an attention's expansion reads."""
    if b.node.op_type == "Attention":
        return [b.input(0), b.input(3)] if b.input(3) else []
    if b.node.op_type == "GroupQueryAttention":
        return gqa_shapes_needed(b)
    if b.node.op_type == "RotaryEmbedding":
        return rotary_shapes_needed(b)
    return [t for t in (b.input(0), b.input(1), b.input(2), b.input(4)) if t]


def _infer(model: onnx.ModelProto, nodes: list[onnx.NodeProto], shapes: Mapping[str, tuple[int, ...]] | None = None
           ) -> tuple[dict[str, int], dict[str, list[int | str]]]:
    """Rank and dims (ints, or symbolic names) of every tensor onnx's shape inference reaches, on a copy of the
    graph whose initializers are typed inputs (no weight is copied) and whose inputs have the concrete ``shapes``
    where given; contrib ops' outputs stay unknown."""
    graph = model.graph
    inputs = [i if i.name not in (shapes or {}) else
              helper.make_tensor_value_info(i.name, i.type.tensor_type.elem_type, list(shapes[i.name]))  # type: ignore[index]
              for i in graph.input]
    given = {i.name for i in inputs}
    small = [t for t in graph.initializer if math.prod(t.dims) <= _SKELETON_CONST_LIMIT
             and t.data_location != TensorProto.EXTERNAL]  # axes, shapes: inference needs their values
    kept = {t.name for t in small}
    inputs += [helper.make_tensor_value_info(t.name, t.data_type, list(t.dims)) for t in graph.initializer
               if t.name not in given and t.name not in kept]
    skeleton = helper.make_model(helper.make_graph(nodes, "skeleton", inputs, list(graph.output), small),
                                 opset_imports=list(model.opset_import), ir_version=model.ir_version)
    skeleton.functions.extend(model.functions)
    try:
        # with concrete inputs, values computed from shapes (Shape -> Gather -> Concat) propagate too (onnx does not
        # carry them into a Slice's ends: the 1-D mask's batch is then read at run time, _mask_bias)
        inferred = onnx.shape_inference.infer_shapes(skeleton, data_prop=shapes is not None)
    except (onnx.shape_inference.InferenceError, onnx.checker.ValidationError, RuntimeError):
        return {}, {}
    ranks: dict[str, int] = {}
    dims: dict[str, list[int | str]] = {}
    for vi in [*inferred.graph.input, *inferred.graph.value_info, *inferred.graph.output]:
        t = vi.type.tensor_type
        if t.HasField("shape"):
            ranks[vi.name] = len(t.shape.dim)
            dims[vi.name] = [d.dim_value if d.HasField("dim_value") else d.dim_param for d in t.shape.dim]
    return ranks, dims


#: The float types the expansions are written for: onnxruntime's optimizer writes float32 graphs, and its float16
#: converter turns them into float16 ones (bfloat16 / double: no CPU kernels to check against).
_FLOATS: dict[int, np.dtype] = {TensorProto.FLOAT: np.dtype(np.float32), TensorProto.FLOAT16: np.dtype(np.float16)}
_ANY_FLOAT: set[int] = {TensorProto.FLOAT, TensorProto.FLOAT16, TensorProto.BFLOAT16, TensorProto.DOUBLE}


def _node_float(node: onnx.NodeProto, initializers: dict[str, int], where: str) -> np.dtype:
    """The float type a contrib node computes in: that of its first float initializer input (weights, gamma, a
    bias), else the model's one float weight type (an input-only op, Gelu, in a float16 graph)."""
    own = [initializers[t] for t in node.input if initializers.get(t) in _ANY_FLOAT]
    types = set(own[:1]) or set(initializers.values()) & _ANY_FLOAT or {TensorProto.FLOAT}
    kind = next(iter(types))
    if len(types) > 1 or kind not in _FLOATS:
        what = ("a model mixing float types, and none of its inputs a weight that says which" if len(types) > 1
                else f"{TensorProto.DataType.Name(kind).lower()} weights (float32 and float16 graphs are expanded)")
        raise InputError(f"{where}: unsupported {CONTRIB_DOMAIN}.{node.op_type} (node '{node.name}'): in {what}")
    return _FLOATS[kind]


def _expanded(node: onnx.NodeProto) -> bool:
    return node.op_type in EXPANDED_OPS and (node.domain == CONTRIB_DOMAIN or (
        node.domain in ("", "ai.onnx") and node.op_type in _DEFAULT_DOMAIN_OPS))


def expand_contrib_ops(model: onnx.ModelProto, source: str, shapes: Mapping[str, tuple[int, ...]] | None = None
                       ) -> onnx.ModelProto:
    """``model`` with every ``com.microsoft`` node of an ``EXPANDED_OPS`` type replaced by its standard-ONNX
    definition (a copy; ``model`` itself when there is none). Other contrib ops are left for ``check_domains``.
    ``shapes``: the inputs' concrete shapes when they are known, so the dims the expansions check (a 1-D mask's
    length against the batch) are numbers even where symbolic dims would not relate (a position-embedding Slice whose
    end is computed leaves onnx's inference an unknown batch dim after the broadcast Add)."""
    graph = model.graph
    if not any(_expanded(n) for n in graph.node):
        return model
    opset = default_opset(model)
    weights = {t.name: list(t.dims) for t in graph.initializer}
    types = {t.name: t.data_type for t in graph.initializer}
    nodes = list(graph.node)
    # The attentions need ranks and dims (a mask's rank, a 1-D mask's length against the batch, MultiHeadAttention's
    # Q / K / V hidden sizes): shape inference, rerun while such an input comes from a contrib op still unexpanded
    # (the layer before's attention).
    ranks: dict[str, int] = {}
    dims: dict[str, list[int | str]] = {}
    inferred = force = False
    while True:
        out: list[onnx.NodeProto] = []
        waiting = False
        for i, node in enumerate(nodes):
            if not _expanded(node):
                out.append(node)
                continue
            if not node.name:
                node = onnx.NodeProto()
                node.CopyFrom(nodes[i])
                node.name = f"{node.op_type}_{i}"
            body = _Body(node, opset, source, _node_float(node, types, source))
            unknown = sorted(set(body.attrs) - _ATTRS[node.op_type])
            if unknown:
                raise body.refuse(f"attribute {', '.join(unknown)} is not supported")
            if node.op_type in _SIMPLE:
                _SIMPLE[node.op_type](body)
            elif not force and any(t not in dims for t in _shapes_needed(body)):
                waiting = True
                out.append(node)
                continue
            else:
                _ATTENTION[node.op_type](body, ranks, dims, weights)
            out += body.nodes
        progressed = len(out) != len(nodes) or any(a is not b for a, b in zip(out, nodes))
        nodes = out
        if not waiting:
            break
        if inferred and not progressed:
            force = True  # shapes can tell no more: the next round expands (or refuses by name) what waits
            continue
        ranks, dims = _infer(model, nodes, shapes)
        inferred = True
    result = onnx.ModelProto()
    result.CopyFrom(model)
    del result.graph.node[:]
    result.graph.node.extend(nodes)
    return result
