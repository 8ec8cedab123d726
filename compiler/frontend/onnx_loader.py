"""Load an ONNX model into a ``Graph``: read (external data too), check, fix input shapes, infer shapes, fold.

Exporters spell shape arithmetic as Shape/Gather/Unsqueeze/Concat/Reshape chains; with static input shapes those are
constants, and folding them away is what lets the pattern matcher see ``Reshape(x, [1, 197, 12, 64])`` instead of a
dozen nodes. Shape inference runs on a *skeleton* of the model whose large initializers are replaced by typed graph
inputs: onnx.shape_inference serialises the whole proto, and copying 340 MB of ViT-Base weights for it would cost
more than the rest of the compile.

Nothing from the file is trusted before ``onnx_checks`` has looked at it (regular file, external data inside the
model's folder, tensors whose data matches their dims, UTF-8 names, a known opset), and folding asks ``op_sizes`` how
big a result would be before building it: hostile input ends as one ``InputError`` line, never an allocation.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import onnx
from google.protobuf.message import DecodeError
from onnx import external_data_helper, numpy_helper
from onnx.external_data_helper import ExternalDataInfo

from compiler.frontend.graph import PARAM_INPUTS, Graph, Node
from compiler.frontend.input_shapes import dims_by_name, parse_shape_arg
from compiler.frontend.input_shapes import input_shapes as resolve_input_shapes
from compiler.frontend.kv_cache import check_cache_inputs
from compiler.frontend.merged_decoder import CACHE_SWITCH, cache_switch, inline_cache_switch
from compiler.frontend.onnx_checks import (
    PACKED_ELEM_TYPES,
    check_domains,
    check_elem_type,
    check_external_data,
    check_model_file,
    check_opset,
    check_tensor,
    check_utf8,
)
from compiler.frontend.onnx_functions import function_body
from compiler.frontend.onnx_ops import ONNX_OPS, UnsupportedOp, onnx_dtype, run_node
from compiler.frontend.op_sizes import output_elements
from compiler.frontend.opset_upgrade import default_opset, upgrade_opset
from compiler.frontend.ort_contrib import expand_contrib_ops
from compiler.frontend.ort_gather_block import expand_gather_block_quantized
from compiler.frontend.ort_nbits import expand_matmul_nbits
from compiler.frontend.qoperator import expand_qoperator, qoperator_note
from compiler.frontend.static_if import inline_static_ifs, outer_reads
from compiler.frontend.windows import check_windows
from hw.errors import InputError, first_line
from hw.perf.kahn import kahn_order

__all__ = ["QUANTIZED_OPS", "check_shape_names", "load_graph", "node_attrs", "parse_shape_arg", "read_model"]

#: Op types that make a file a quantized model (besides onnxruntime's QLinear* / QGemm): QDQ pairs, quantize_dynamic's
#: integer GEMMs, MatMulNBitsQuantizer's block-quantized GEMMs.
QUANTIZED_OPS = frozenset({"QuantizeLinear", "DequantizeLinear", "DynamicQuantizeLinear", "MatMulInteger",
                           "ConvInteger", "MatMulNBits", "GatherBlockQuantized"})

#: Initializers up to this many elements stay in the skeleton (shape inference may need their values).
_SKELETON_CONST_LIMIT = 4096
#: Folding never materialises a tensor bigger than this (elements); bigger constants stay as ops.
_FOLD_LIMIT = 1 << 24


def read_model(source: str | os.PathLike[str] | onnx.ModelProto, external: bool = True
               ) -> tuple[onnx.ModelProto, str]:
    """(the model, its name for messages), every file-level check passed; ``external=False`` leaves external data
    unread (its location and size are still checked)."""
    if isinstance(source, onnx.ModelProto):
        name = source.graph.name if isinstance(source.graph.name, str) else ""
        check_utf8(source, name or "<ModelProto>")
        return source, name or "<ModelProto>"
    path = Path(source)
    if not path.exists():
        raise InputError(f"{path}: no such file")
    check_model_file(path)
    try:
        model = onnx.load(str(path), load_external_data=False)
    except (DecodeError, RuntimeWarning, ValueError, onnx.checker.ValidationError) as err:
        raise InputError(f"{path}: not a valid ONNX model (truncated or not ONNX: {first_line(err)})") from None
    check_utf8(model, str(path))
    if not model.graph.node:
        raise InputError(f"{path}: not a valid ONNX model (the graph has no nodes)")
    check_external_data(model, path.parent, str(path))
    if not external:
        return model, str(path)
    try:  # the checks above cover what onnx refuses; this keeps any refusal they missed to one line
        external_data_helper.load_external_data_for_model(model, str(path.parent))
    except (OSError, ValueError, onnx.checker.ValidationError) as err:
        raise InputError(f"{path}: cannot load external data: {first_line(err)}") from None
    return model, str(path)


def check_shape_names(source: str | os.PathLike[str], given: Mapping[str, tuple[int, ...]]) -> None:
    """Raise InputError when a key of ``given`` (``--shape`` / a sweep's ``shapes``) is neither an input of the model
    nor, with one size, the name of a symbolic dim of its inputs."""
    model, name = read_model(source, external=False)
    dims_by_name(model, given, name, {t.name for t in model.graph.initializer})


#: Element types whose raw little-endian bytes are the NumPy array as they stand (no decoding).
_RAW_TYPES = frozenset({onnx.TensorProto.FLOAT, onnx.TensorProto.INT64, onnx.TensorProto.INT32,
                        onnx.TensorProto.INT8, onnx.TensorProto.UINT8, onnx.TensorProto.FLOAT16,
                        onnx.TensorProto.DOUBLE, onnx.TensorProto.INT16, onnx.TensorProto.UINT16,
                        onnx.TensorProto.UINT32, onnx.TensorProto.UINT64, onnx.TensorProto.BOOL})


def _to_array(tensor: onnx.TensorProto, label: str, source: str) -> np.ndarray:
    """A read-only NumPy array of an embedded initializer, checked against its dims.

    upb hands out a fresh copy of ``raw_data`` on every access (ViT-Base carries 340 MB of it), so the bytes are
    taken once and both the check and the array use that copy."""
    if tensor.HasField("raw_data") and tensor.data_type in _RAW_TYPES:
        raw = tensor.raw_data
        check_tensor(tensor, label, source, raw_bytes=len(raw))
        dtype = onnx_dtype(tensor.data_type).newbyteorder("<")
        return np.frombuffer(raw, dtype=dtype).reshape(tuple(tensor.dims))
    check_tensor(tensor, label, source)
    return _decoded(tensor, numpy_helper.to_array(tensor))


def _decoded(tensor: onnx.TensorProto, array: np.ndarray) -> np.ndarray:
    """``array`` of ``tensor`` in a NumPy type with arithmetic: int4 / uint4 weights as int8 / uint8."""
    packed = PACKED_ELEM_TYPES.get(tensor.data_type)
    return array if packed is None else np.asarray(array).astype(packed)


def _map_external(tensor: onnx.TensorProto, base: Path) -> np.ndarray:
    """A read-only memory map of an external initializer (``check_external_data`` has checked its location, bounds
    and length): the weights are paged in from the file only where the compile reads them, never copied, so a
    4.4 GB model does not need 4.4 GB (or twice that, bytes then array) of memory to compile."""
    info = ExternalDataInfo(tensor)
    dims = tuple(int(d) for d in tensor.dims)
    count = int(np.prod(dims, dtype=np.int64))
    if tensor.data_type not in _RAW_TYPES or count == 0:  # bfloat16 needs decoding; mmap refuses zero bytes
        copy = onnx.TensorProto()
        copy.CopyFrom(tensor)
        external_data_helper.load_external_data_for_tensor(copy, str(base))
        return _decoded(tensor, numpy_helper.to_array(copy))
    dtype = onnx_dtype(tensor.data_type).newbyteorder("<")
    mapped = np.memmap(base / info.location, dtype=dtype, mode="r", offset=int(info.offset or 0), shape=(count,))
    return np.asarray(mapped).reshape(dims)


def _topological(nodes: list[Node], known: set[str]) -> list[Node]:
    """``nodes`` in an order where each reads only tensors produced before it, otherwise in file order (a sorted
    graph is unchanged). Why: onnxruntime's float16 converter (``keep_io_types=True``) appends the Casts of the graph
    inputs after the nodes that read them, and onnxruntime runs such a model. A graph with a cycle keeps its order,
    and the checker names the culprit; a tensor nobody produces is left for the checker too."""
    producer = {o: k for k, n in enumerate(nodes) for o in n.outputs if o and o not in known}
    deps = [{producer[i] for i in n.inputs if i in producer and producer[i] != k} for k, n in enumerate(nodes)]
    if all(d < k for k, ds in enumerate(deps) for d in ds):
        return nodes
    order, _ = kahn_order(deps)
    return [nodes[k] for k in order] if len(order) == len(nodes) else nodes


def _control_flow_hint(node: Node, nodes: list[Node], inputs: list[str]) -> str:
    """What to do about a control-flow ``node``: an If whose condition the graph's inputs set (HF Optimum's merged
    decoder chooses its cache branch by ``use_cache_branch``) is two models in one file; anything else, a
    re-export."""
    producers = {o: n for n in nodes for o in n.outputs if o}
    name = node.inputs[0] if node.op_type == "If" and node.inputs else ""
    while name in producers and producers[name].op_type in _FLAG_VIEWS:
        name = producers[name].inputs[0]
    if name in inputs:
        return (f"its condition is input '{name}', so the file holds one model per branch: export each on its own "
                "(Optimum: decoder_model.onnx and decoder_with_past_model.onnx, not decoder_model_merged.onnx)")
    return "export with static shapes and without data-dependent branches"


#: Ops that pass a boolean flag on unchanged in value (an If's condition read from an input through them).
_FLAG_VIEWS = frozenset({"Identity", "Cast", "Squeeze", "Unsqueeze", "Reshape", "Flatten", "Not"})


def node_attrs(node: onnx.NodeProto, name: str, source: str) -> dict[str, Any]:
    """``node``'s attributes as Python values: tensors as NumPy arrays (checked against the limits), strings decoded;
    a string that is not UTF-8 is one InputError line naming the node (``name``) in file ``source``."""
    out: dict[str, Any] = {}
    for attr in node.attribute:
        label = f"attribute '{attr.name}' of {node.op_type} '{name}'"
        if attr.HasField("t"):
            check_tensor(attr.t, label, source)
        for tensor in attr.tensors:
            check_tensor(tensor, label, source)
        value = onnx.helper.get_attribute_value(attr)
        try:
            if isinstance(value, onnx.TensorProto):
                value = numpy_helper.to_array(value)
            elif isinstance(value, bytes):
                value = value.decode()
            elif isinstance(value, list) and value and isinstance(value[0], bytes):
                value = [v.decode() for v in value]
        except UnicodeDecodeError:
            raise InputError(f"{source}: {label} is a string that is not valid UTF-8") from None
        out[attr.name] = value
    return out


def _skeleton(model: onnx.ModelProto, nodes: list[Node], constants: dict[str, np.ndarray],
              dtypes: dict[str, np.dtype], input_shapes: dict[str, tuple[int, ...]]) -> onnx.ModelProto:
    """A weight-free copy of the current graph for shape inference."""
    inputs = [
        onnx.helper.make_tensor_value_info(name, onnx.helper.np_dtype_to_tensor_dtype(dtypes[name]), shape)
        for name, shape in input_shapes.items()
    ]
    inits = []
    used = {name for node in nodes for name in outer_reads(node)}
    for name in used:
        value = constants.get(name)
        if value is None:
            continue
        if value.size <= _SKELETON_CONST_LIMIT:
            inits.append(numpy_helper.from_array(value, name))
        else:
            inputs.append(onnx.helper.make_tensor_value_info(
                name, onnx.helper.np_dtype_to_tensor_dtype(value.dtype), value.shape))
    protos = [onnx.helper.make_node(n.op_type, n.inputs, n.outputs, name=n.name, **_proto_attrs(n)) for n in nodes]
    graph = onnx.helper.make_graph(protos, "skeleton", inputs, [], initializer=inits)
    out = onnx.helper.make_model(graph, opset_imports=model.opset_import, ir_version=model.ir_version)
    return out


def _proto_attrs(node: Node) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in node.attrs.items():
        out[key] = numpy_helper.from_array(value) if isinstance(value, np.ndarray) else value
    return out


def _infer(skeleton: onnx.ModelProto, shapes: dict[str, tuple[int, ...]], dtypes: dict[str, np.dtype]) -> None:
    # No data propagation: onnx propagates a 1-D tensor's values as one shape dim per element, so Range(0, 10^10)
    # -> Cast allocates 10^10 dims in C++ (std::bad_alloc, or the machine's memory). ``_fold`` propagates values
    # itself, with a size estimate first; every example model gives the same graph either way.
    try:
        inferred = onnx.shape_inference.infer_shapes(skeleton, strict_mode=False, data_prop=False)
    except onnx.shape_inference.InferenceError:
        return
    for info in list(inferred.graph.value_info) + list(inferred.graph.output):
        ttype = info.type.tensor_type
        if not ttype.HasField("shape") or ttype.elem_type == 0:
            continue
        dims = [d.dim_value if d.HasField("dim_value") else -1 for d in ttype.shape.dim]
        if all(d >= 0 for d in dims):
            shapes[info.name] = tuple(dims)
            dtypes[info.name] = onnx_dtype(ttype.elem_type)



def _uniform_where(node: Node, constants: dict[str, np.ndarray], shapes: dict[str, tuple[int, ...]]) -> bool:
    """Turn ``Where(c, a, b)`` into ``Identity`` of ``a`` or ``b`` when the constant ``c`` is all true or all false
    and that branch already has the output's shape (no broadcast to do); True when it did. Why: the ONNX
    ``Attention`` function's guard for rows whose every key is masked is such a Where once the mask is a folded
    constant with no fully masked row, and it would hide the softmax -> AV chain from the attention matcher."""
    cond = constants.get(node.inputs[0])
    if cond is None or cond.size == 0 or len(node.inputs) != 3:
        return False
    branch = node.inputs[1] if bool(cond.all()) else node.inputs[2] if not cond.any() else None
    out = node.outputs[0]
    if branch is None or branch in constants or shapes.get(branch) is None or shapes.get(branch) != shapes.get(out):
        return False
    node.op_type, node.inputs[:], node.attrs = "Identity", [branch], {}
    return True


def _fold(nodes: list[Node], constants: dict[str, np.ndarray], shapes: dict[str, tuple[int, ...]],
          dtypes: dict[str, np.dtype], source: str) -> list[Node]:
    """Evaluate every node whose inputs are all known (values, or only the shape for Shape / Size / EyeLike);
    returns the nodes that remain. A node its constant inputs do not fit (the legacy exporter's Expand of a token
    to a shape computed for another tensor: onnxruntime refuses such a model too) raises one line naming it."""
    remaining: list[Node] = []
    for node in nodes:
        value: list[np.ndarray] | None = None
        if node.op_type == "If":
            remaining.append(node)  # static_if.inline_static_ifs takes the branch once its condition is known
            continue
        if node.op_type == "Shape" and node.inputs[0] in shapes:
            full = np.array(shapes[node.inputs[0]], dtype=np.int64)
            value = [full[node.attrs.get("start", 0):node.attrs.get("end", None)]]
        elif node.op_type == "Size" and node.inputs[0] in shapes:
            value = [np.array(int(np.prod(shapes[node.inputs[0]])), dtype=np.int64)]
        elif node.op_type == "CastLike" and node.inputs[0] in constants and node.inputs[1] in dtypes:
            value = [constants[node.inputs[0]].astype(dtypes[node.inputs[1]])]  # reads only the other's type
        elif node.op_type == "Where" and _uniform_where(node, constants, shapes):
            remaining.append(node)  # now an Identity of the branch its constant condition always picks
            continue
        elif node.op_type == "EyeLike" and len(shapes.get(node.inputs[0], ())) == 2:  # a shape-only op
            like = np.empty(shapes[node.inputs[0]], dtype=dtypes.get(node.inputs[0], np.dtype(np.float32)))
            value = run_node("EyeLike", [like], node.attrs)
        elif node.op_type == "Constant" or all(not n or n in constants for n in node.inputs):
            args = [constants[n] if n else None for n in node.inputs]
            if output_elements(node.op_type, args, node.attrs, [shapes.get(o) for o in node.outputs]) > _FOLD_LIMIT:
                remaining.append(node)  # estimated before building: a 1 KB model may ask for a 4 GiB constant
                continue
            try:
                with np.errstate(all="ignore"):  # folding -inf masks through Cast/Mul is expected
                    value = run_node(node.op_type, args, node.attrs, len(node.outputs))
            except UnsupportedOp:
                value = None
            except (ValueError, IndexError, TypeError, ZeroDivisionError) as err:  # ill-typed / 0-d operands
                raise InputError(f"{source}: invalid ONNX model: {node.describe()} cannot run on its constant inputs "
                                 f"(shapes {[list(np.shape(a)) if a is not None else None for a in args]}): "
                                 f"{first_line(err)}") from None
            if value is not None and any(v.size > _FOLD_LIMIT for v in value):
                value = None
        if value is None:
            remaining.append(node)
            continue
        for name, arr in zip(node.outputs, value):
            if name:
                constants[name] = np.asarray(arr)
                shapes[name] = tuple(np.shape(arr))
    return remaining


def _expand_functions(nodes: list[Node], shapes: dict[str, tuple[int, ...]], dtypes: dict[str, np.dtype],
                      opset: int, native: set[str], source: str) -> list[Node]:
    """Every node of an op the frontend does not handle itself that the ONNX standard defines as a function
    (compiler/frontend/onnx_functions.py) replaced by its body, once its inputs' types are known."""
    out: list[Node] = []
    for node in nodes:
        body = None
        if node.op_type not in native and all(not i or (i in shapes and i in dtypes) for i in node.inputs):
            types = [onnx.helper.make_tensor_type_proto(onnx.helper.np_dtype_to_tensor_dtype(dtypes[i]), shapes[i])
                     if i else onnx.TypeProto() for i in node.inputs]
            proto = onnx.helper.make_node(node.op_type, node.inputs, node.outputs, name=node.name,
                                          **_proto_attrs(node))
            body = function_body(proto, opset, types)
        if body is None:
            out.append(node)
            continue
        out += [Node(b.op_type, b.name, list(b.input), list(b.output), node_attrs(b, b.name, source)) for b in body]
    return out


def _prune(nodes: list[Node], outputs: list[str]) -> list[Node]:
    """Drop nodes none of whose outputs is used (folding leaves many)."""
    live = set(outputs)
    kept: list[Node] = []
    for node in reversed(nodes):
        if any(o in live for o in node.outputs if o):
            kept.append(node)
            live.update(outer_reads(node))
    kept.reverse()
    return kept


def _data_dependent(nodes: list[Node]) -> set[str]:
    """Tensors downstream of a NonZero: their shapes depend on values, so only a recognised block (an MoE's expert
    queues) may contain them; ``to_dialect.build_module`` rejects any left outside one."""
    dynamic: set[str] = set()
    for node in nodes:
        if node.op_type == "NonZero" or any(i in dynamic for i in node.inputs if i):
            dynamic.update(o for o in node.outputs if o)
    return dynamic


def _drop_empty_concat_inputs(nodes: list[Node], shapes: dict[str, tuple[int, ...]]) -> list[Node]:
    """Drop zero-size inputs of a Concat: they add nothing to its output. Why: a rotary embedding over the whole
    head (Phi-3) still concatenates the empty pass-through slice, which would otherwise be refused as empty."""
    for node in nodes:
        if node.op_type == "Concat":
            kept = [i for i in node.inputs if not (i in shapes and 0 in shapes[i])]
            if kept and len(kept) < len(node.inputs):
                node.inputs[:] = kept
    return nodes


def _refuse_empty(nodes: list[Node], constants: dict[str, np.ndarray], shapes: dict[str, tuple[int, ...]],
                  source: str) -> None:
    """A node left to compute that produces a zero-size tensor: nothing to price or simulate (a GEMM of n = 0 would
    reach the cost models), so name it and the empty tensor it was given."""
    for node in nodes:
        for out in node.outputs:
            shape = shapes.get(out) if out else None
            if shape is None or 0 not in shape:
                continue
            empty = [n for n in node.inputs if n and 0 in shapes.get(n, (1,))]
            given = next((n for n in empty if n in constants), empty[0] if empty else None)
            kind = "constant" if given in constants else "tensor"
            cause = f" from the empty {kind} '{given}' (shape {_dims(shapes[given])})" if given else ""
            raise InputError(f"{source}: {node.describe()} produces an empty tensor '{out}' (shape {_dims(shape)})"
                             f"{cause}; a zero-size tensor has nothing to compute")


def _dims(shape: tuple[int, ...]) -> str:
    return "x".join(map(str, shape)) or "scalar"


def _shape_culprit(node: Node, out: str, nodes: list[Node], shapes: dict[str, tuple[int, ...]],
                   constants: dict[str, np.ndarray]) -> str:
    """Why ``out`` of ``node`` has no static shape, naming the node where it starts: an op with no NumPy semantics
    that shape arithmetic (tensors computed from constants and shapes only, which folding should have evaluated)
    runs through, or the first op whose shape inference failed."""
    producers = {o: n for n in nodes for o in n.outputs if o}
    value_free: set[str] = set()  # computed from constants and shapes only: folding should have evaluated them
    for n in nodes:
        if n.op_type in ("Shape", "Size") or all(not i or i in constants or i in value_free for i in n.inputs):
            value_free.update(o for o in n.outputs if o)
    culprit, seen = node, {id(node)}
    while True:
        unknown = [producers[i] for i in culprit.inputs if i and i in producers
                   and (i not in shapes or (i in value_free and i not in constants))]
        if not unknown or id(unknown[0]) in seen:
            break
        culprit = unknown[0]
        seen.add(id(culprit))
    if culprit.op_type not in ONNX_OPS and culprit.op_type != "Split":
        return (f"unsupported op {culprit.describe()}: it cannot be evaluated, and the shape of '{out}' of "
                f"{node.describe()} depends on it")
    if culprit is node:
        given = [shapes.get(i) for i in node.inputs if i]
        sizing = [i for k, i in enumerate(node.inputs) if i and k in PARAM_INPUTS.get(node.op_type, ())
                  and i not in constants and i not in value_free]
        if sizing:  # the output's shape follows the values of an operand computed from the inputs' values
            return (f"cannot infer a static shape for '{out}' of {node.describe()}: its shape is set by the values "
                    f"of '{sizing[0]}', which are computed from the model's input values at run time (a "
                    "data-dependent shape, such as per-expert token counts); a static compile needs every shape to "
                    "follow from the input shapes")
        if given and all(g is not None for g in given):  # every operand known: they do not fit the op (ORT agrees)
            dims = ", ".join(_dims(g) for g in given if g is not None)
            return (f"cannot infer a static shape for '{out}' of {node.describe()}: its operands' shapes ({dims}) "
                    "do not fit it; the export is inconsistent (re-export, or report it to the exporter)")
        return f"cannot infer a static shape for '{out}' of {node.describe()}"
    return (f"cannot infer a static shape for '{out}' of {node.describe()}: it depends on {culprit.describe()}, "
            "whose output shape could not be computed")


def _native_ops() -> set[str]:
    """Op types the frontend lowers itself (``codesign ops``): those are never expanded into a function body."""
    from compiler.frontend.to_dialect import supported_onnx_ops  # the dialect builder's table, read when loading

    return set(ONNX_OPS).union(*supported_onnx_ops().values())


def _early_shapes(model: onnx.ModelProto, given: Mapping[str, tuple[int, ...]], source: str,
                  batch: int | None) -> dict[str, tuple[int, ...]] | None:
    """The inputs' concrete shapes before the rewrites that read them (a merged decoder's branch, the contrib ops'
    expansions), or None while some are not given (the full check, with its message, runs after them)."""
    try:
        return resolve_input_shapes(model, given, source, {t.name for t in model.graph.initializer}, batch)
    except InputError:
        return None


def load_graph(source: str | os.PathLike[str] | onnx.ModelProto,
               shapes: Mapping[str, tuple[int, ...]] | None = None, batch: int | None = None) -> Graph:
    """Read, check and fold an ONNX model into a static-shaped ``Graph``.

    ``shapes`` gives concrete shapes for inputs with symbolic dims (the CLI's ``--shape``); ``batch`` (``--batch``)
    sets the leading dim of every other input, which must be symbolic (or already that size); any input left
    symbolic is an ``InputError`` naming it.
    """
    model, source_name = read_model(source, external=False)
    quantized = any(n.op_type in QUANTIZED_OPS or n.op_type.startswith(("QLinear", "QGemm")) for n in model.graph.node)
    check_opset(model, source_name)
    model = upgrade_opset(model, source_name)  # opsets before 13 through onnx's version converter
    early = _early_shapes(model, shapes or {}, source_name, batch)
    model = inline_cache_switch(model, early, source_name)  # Optimum's merged decoder: the branch its caches imply
    # its int4 / int8 weight-only GEMMs on dequantized weights first: a GroupQueryAttention's expansion reads the
    # hidden size of the projection feeding it (the onnxruntime-genai builder's int4 files)
    model = expand_matmul_nbits(model, source_name)
    model = expand_gather_block_quantized(model, source_name)  # its int4 embedding tables (tied lm_head weights)
    # onnxruntime's fused ops as their standard definitions, on the given input shapes where they are all given
    model = expand_contrib_ops(model, source_name, early)
    qoperator = qoperator_note(model)
    model = expand_qoperator(model, source_name)  # onnxruntime's QOperator quantized ops in QDQ form
    check_domains(model, source_name)
    graph = model.graph
    base = Path(source).parent if not isinstance(source, onnx.ModelProto) else None
    constants: dict[str, np.ndarray] = {}
    for init in graph.initializer:
        label = f"initializer '{init.name}'"
        if base is not None and init.data_location == onnx.TensorProto.EXTERNAL:
            constants[init.name] = _map_external(init, base)  # checked by read_model's check_external_data
        else:
            constants[init.name] = _to_array(init, label, source_name)
    if base is not None:  # a Constant's value stored externally (rare and small): read into its attribute
        for node in graph.node:
            for attr in node.attribute:
                for tensor in [attr.t] * attr.HasField("t") + list(attr.tensors):
                    if tensor.data_location == onnx.TensorProto.EXTERNAL:
                        external_data_helper.load_external_data_for_tensor(tensor, str(base))
    # resolved once before the rewrites when every shape was given; the full check, with its message, otherwise
    input_shapes = dict(early) if early is not None else resolve_input_shapes(model, shapes or {}, source_name,
                                                                              set(constants), batch)
    check_cache_inputs(input_shapes, source_name)  # before shape inference, which would only name a MatMul
    switch = cache_switch(model, input_shapes, source_name)  # Optimum's merged decoder: the branch the caches imply
    if switch is not None:
        constants[CACHE_SWITCH] = switch
        del input_shapes[CACHE_SWITCH]
    dtypes: dict[str, np.dtype] = {}
    for inp in graph.input:
        if inp.name not in constants:
            check_elem_type(inp.type.tensor_type.elem_type, f"input '{inp.name}'", source_name)
            dtypes[inp.name] = onnx_dtype(inp.type.tensor_type.elem_type)
    nodes = []
    for i, n in enumerate(graph.node):
        name = n.name or f"{n.op_type}_{i}"
        nodes.append(Node(n.op_type, name, list(n.input), list(n.output), node_attrs(n, name, source_name)))
    nodes = _topological(nodes, {i.name for i in graph.input} | set(constants))
    for node in nodes:
        if node.op_type == "Loop" or node.op_type == "Scan":
            raise InputError(f"{source_name}: unsupported op {node.describe()}: control flow is not supported; "
                             + _control_flow_hint(node, nodes, list(input_shapes)))
    opset = default_opset(model)
    all_shapes: dict[str, tuple[int, ...]] = dict(input_shapes)
    for name, value in constants.items():
        all_shapes[name] = tuple(value.shape)
        dtypes[name] = value.dtype
    try:
        onnx.checker.check_model(_skeleton(model, nodes, constants, dtypes, input_shapes))
    except onnx.checker.ValidationError as err:
        raise InputError(f"{source_name}: invalid ONNX model: {first_line(err)}") from None
    outputs = [o.name for o in graph.output]
    # Inference and folding alternate until neither learns anything: each layer of a model that reshapes by the
    # Shape of its own attention output (DINOv2, Swin) needs one more round than the layer before it. Every round
    # either folds a node away or learns a shape, so the loop ends.
    native = _native_ops()
    while True:
        before = (len(nodes), len(all_shapes))
        _infer(_skeleton(model, nodes, constants, dtypes, input_shapes), all_shapes, dtypes)
        nodes = _expand_functions(nodes, all_shapes, dtypes, opset, native, source_name)
        nodes = _prune(_fold(nodes, constants, all_shapes, dtypes, source_name), outputs)
        # an If whose condition folded (a shape test) is its taken branch (static_if.py)
        nodes = inline_static_ifs(nodes, constants, lambda proto, name: node_attrs(proto, name, source_name))
        for name, value in constants.items():
            dtypes.setdefault(name, value.dtype)
        if len(nodes) == before[0] and (len(all_shapes) == before[1]
                                        or all(o in all_shapes for n in nodes for o in n.outputs if o)):
            break  # everything known, or a round that learnt nothing: the next would learn nothing either
    for node in nodes:
        if node.op_type == "If":
            raise InputError(f"{source_name}: unsupported op {node.describe()}: control flow is not supported (its "
                             "condition depends on input values); " + _control_flow_hint(node, nodes,
                                                                                        list(input_shapes)))
    nodes = _prune(_drop_empty_concat_inputs(nodes, all_shapes), outputs)
    check_windows(nodes, all_shapes, source_name)  # onnx's inference gives an overhanging window one output
    dynamic = _data_dependent(nodes)
    for node in nodes:
        for out in node.outputs:
            if out and out not in all_shapes and out not in dynamic:
                raise InputError(f"{source_name}: {_shape_culprit(node, out, nodes, all_shapes, constants)}")
    _refuse_empty(nodes, constants, all_shapes, source_name)
    used = {n for node in nodes for n in node.inputs if n} | set(outputs)
    constants = {k: v for k, v in constants.items() if k in used}
    return Graph(nodes=nodes, inputs=list(input_shapes), outputs=outputs, constants=constants, shapes=all_shapes,
                 dtypes=dtypes, source=source_name, import_notes=[qoperator] if qoperator else [], quantized=quantized)
