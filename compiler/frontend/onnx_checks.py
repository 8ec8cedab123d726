"""Checks on an ONNX file and its tensors that must pass before anything is allocated or decoded.

onnx and protobuf trust the file: a tensor's ``dims`` are believed (``ValueError: cannot reshape`` when the data
disagrees), external data is read with a ``length`` taken from the file (one ``read()`` allocating that much), names
that are not UTF-8 come back from upb as ``bytes`` and fail later in some ``str`` operation, and an opset from the
future is silently accepted. Each check here raises one ``InputError`` line naming the file and the culprit tensor,
node, field or opset import.
"""

from __future__ import annotations

import math
import os
import stat
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import onnx
from google.protobuf.descriptor import FieldDescriptor
from google.protobuf.message import Message
from onnx.external_data_helper import ExternalDataInfo

from compiler.limits import check_memory, format_bytes, format_shape
from hw.errors import InputError

__all__ = ["PACKED_ELEM_TYPES", "SUPPORTED_ELEM_TYPES", "check_domains", "check_model_file", "check_opset",
           "check_utf8", "check_external_data", "check_tensor", "check_elem_type", "external_tensors"]

_T = onnx.TensorProto
#: Element types with NumPy arithmetic here (bytes per element); STRING, complex, 2/4/6/8-bit floats and ints are not.
SUPPORTED_ELEM_TYPES: dict[int, int] = {
    _T.FLOAT: 4, _T.DOUBLE: 8, _T.FLOAT16: 2, _T.BFLOAT16: 2, _T.BOOL: 1, _T.INT8: 1, _T.UINT8: 1, _T.INT16: 2,
    _T.UINT16: 2, _T.INT32: 4, _T.UINT32: 4, _T.INT64: 8, _T.UINT64: 8,
}
#: Sub-byte integer types (two elements a byte, low nibble first) a weight may have: decoded at load into the NumPy
#: type here (blocked int4 QDQ weights, ONNX opset 21). Graph inputs of these types are refused.
PACKED_ELEM_TYPES: dict[int, type] = {_T.INT4: np.int8, _T.UINT4: np.uint8}
#: protobuf parses the whole file, then onnx copies what it touches: about twice the file in memory (bytes).
_PARSE_FACTOR = 2


def _type_name(elem_type: int) -> str:
    try:
        return _T.DataType.Name(elem_type)
    except ValueError:
        return str(elem_type)


def check_model_file(path: Path) -> None:
    """A regular file whose parse fits in memory (/dev/zero, a FIFO or a directory never reach protobuf)."""
    try:
        info = path.stat()
    except OSError as err:
        raise InputError(f"{path}: cannot read ({err.strerror})") from None
    if stat.S_ISDIR(info.st_mode):
        raise InputError(f"{path}: is a directory, expected an .onnx file")
    if not stat.S_ISREG(info.st_mode):
        raise InputError(f"{path}: not a regular file (a device, FIFO or socket); expected an .onnx file")
    check_memory(f"{path}: parsing a {format_bytes(info.st_size)} model", _PARSE_FACTOR * info.st_size)


def check_opset(model: onnx.ModelProto, source: str) -> None:
    """Refuse default-domain opsets newer than the installed onnx knows: their ops' semantics are unknown here."""
    newest = onnx.defs.onnx_opset_version()
    for imp in model.opset_import:
        if imp.domain in ("", "ai.onnx") and imp.version > newest:
            raise InputError(f"{source}: opset_import of domain '{imp.domain or 'ai.onnx'}' is version {imp.version}, "
                             f"newer than the {newest} this onnx {onnx.__version__} supports; re-export with "
                             f"opset_version <= {newest}")


def check_domains(model: onnx.ModelProto, source: str) -> None:
    """Refuse a node of an operator set outside the ONNX standard (onnxruntime's ``com.microsoft`` contrib ops: its
    QOperator quantized ops that compiler/frontend/qoperator.py does not expand (QAttention, QEmbedLayerNormalization,
    QOrdered*), transformer-optimizer ops that compiler/frontend/ort_contrib.py does not expand;
    ``ai.onnx.ml``) by name, before the checker reports it as an invalid model: the model is valid, its ops are not
    ours to price."""
    local = {f.domain for f in model.functions}
    for i, node in enumerate(model.graph.node):
        if node.domain not in ("", "ai.onnx") and node.domain not in local:
            hint = (" (an onnxruntime QOperator op that is not expanded: quantize with QuantFormat.QDQ or "
                    "quantize_dynamic instead)"
                    if node.op_type.startswith(("QLinear", "QGemm", "QAttention", "QEmbed", "QOrdered",
                                                "DynamicQuantize"))
                    else " (an onnxruntime-optimized graph: compile the model before its transformer optimizer ran)"
                    if node.domain == "com.microsoft"
                    else " (onnxruntime's CPU-specific NCHWc layout, written from opt_level 99: optimize with "
                    "opt_level 2 or lower)" if node.domain == "com.microsoft.nchwc" else "")
            raise InputError(f"{source}: unsupported op {node.domain}.{node.op_type} (node '{node.name or i}'): only "
                             f"the standard ONNX operator set is supported{hint}")


def _non_utf8(msg: Message, path: str) -> tuple[str, bytes] | None:
    """The first string field (depth first) that upb handed back as ``bytes``: it was not valid UTF-8."""
    for field, value in msg.ListFields():
        items = list(value) if field.is_repeated else [value]
        if field.type == FieldDescriptor.TYPE_MESSAGE:
            for i, item in enumerate(items):
                where = f"{path}.{field.name}[{i}]" if field.is_repeated else f"{path}.{field.name}"
                op = getattr(item, "op_type", None)
                if isinstance(op, str) and op:
                    where += f" ({op})"
                found = _non_utf8(item, where)
                if found is not None:
                    return found
        elif field.type == FieldDescriptor.TYPE_STRING:
            for i, item in enumerate(items):
                if isinstance(item, bytes):
                    return (f"{path}.{field.name}[{i}]" if field.is_repeated else f"{path}.{field.name}"), item
    return None


def check_utf8(model: onnx.ModelProto, source: str) -> None:
    """Every string field (names, op types, domains, docs) must be UTF-8; name the first that is not."""
    found = _non_utf8(model, "model")
    if found is not None:
        where, raw = found
        shown = raw[:40] + (b"..." if len(raw) > 40 else b"")
        raise InputError(f"{source}: {where} is not valid UTF-8 ({shown!r})")


def _graph_tensors(graph: onnx.GraphProto) -> Iterator[tuple[str, onnx.TensorProto]]:
    for init in graph.initializer:
        yield f"initializer '{init.name}'", init
    for node in graph.node:
        for attr in node.attribute:
            label = f"attribute '{attr.name}' of {node.op_type} '{node.name}'"
            if attr.HasField("t"):
                yield label, attr.t
            for t in attr.tensors:
                yield label, t
            if attr.HasField("g"):
                yield from _graph_tensors(attr.g)
            for g in attr.graphs:
                yield from _graph_tensors(g)


def external_tensors(model: onnx.ModelProto) -> Iterator[tuple[str, onnx.TensorProto]]:
    """(label, tensor) of every tensor whose data lives in an external file."""
    for label, tensor in _graph_tensors(model.graph):
        if tensor.data_location == _T.EXTERNAL:
            yield label, tensor


def _declared(tensor: onnx.TensorProto, label: str, source: str) -> tuple[int, int]:
    """(elements, bytes) the tensor's dims and type declare; refuses negative dims and unsupported types."""
    dims = [int(d) for d in tensor.dims]
    if any(d < 0 for d in dims):
        raise InputError(f"{source}: {label} has a negative dimension in shape [{', '.join(map(str, dims))}]")
    check_elem_type(tensor.data_type, label, source, packed=True)
    count = math.prod(dims)
    if tensor.data_type in PACKED_ELEM_TYPES:
        return count, (count + 1) // 2
    return count, count * SUPPORTED_ELEM_TYPES[tensor.data_type]


def check_elem_type(elem_type: int, label: str, source: str, packed: bool = False) -> None:
    """Refuse element types without arithmetic here (STRING, complex, sub-byte floats; int4 / uint4 unless
    ``packed``: a weight's, decoded at load), naming the tensor."""
    if elem_type not in SUPPORTED_ELEM_TYPES and not (packed and elem_type in PACKED_ELEM_TYPES):
        names = ", ".join(sorted(_type_name(t) for t in SUPPORTED_ELEM_TYPES))
        raise InputError(f"{source}: {label} has element type {_type_name(elem_type)}, which codesign cannot "
                         f"compute with (supported: {names})")


def check_external_data(model: onnx.ModelProto, base: Path, source: str) -> None:
    """Every external tensor: a relative location inside the model's folder, no symlink, a regular file holding
    ``offset + bytes`` (its declared length, if any, equal to what its dims need); the sum fits in memory."""
    root = base.resolve()
    total = 0
    for label, tensor in external_tensors(model):
        where = f"{source}: external data of {label}"
        try:
            info = ExternalDataInfo(tensor)  # onnx checks the entry's own fields (a negative offset or length ...)
        except ValueError as err:
            raise InputError(f"{where}: {str(err).splitlines()[0]}") from None
        _, need = _declared(tensor, label, source)
        location = info.location or ""
        if not location:
            raise InputError(f"{where}: no 'location' key")
        if os.path.isabs(location) or Path(location).drive:
            raise InputError(f"{where}: location '{location}' is absolute; it must be relative to the model's folder")
        parts = Path(location).parts
        if any(base.joinpath(*parts[:i]).is_symlink() for i in range(1, len(parts) + 1)):
            raise InputError(f"{where}: location '{location}' is (or passes through) a symbolic link")
        if not (base / location).resolve().is_relative_to(root):
            raise InputError(f"{where}: location '{location}' points outside the model's folder {base}")
        path = base / location
        if not path.exists():
            raise InputError(f"{where}: file '{location}' is missing (next to the model in {base})")
        if not path.is_file():
            raise InputError(f"{where}: '{location}' is not a regular file")
        size = path.stat().st_size
        offset = int(info.offset or 0)
        if offset < 0 or offset > size:
            raise InputError(f"{where}: offset {offset} is past the end of '{location}' ({size} bytes)")
        if info.length is not None and int(info.length) != need:
            raise InputError(f"{where}: length {info.length} bytes, but shape "
                             f"{format_shape(tensor.dims)} {_type_name(tensor.data_type)} needs {need}")
        if offset + need > size:
            raise InputError(f"{where}: needs bytes {offset}..{offset + need} but '{location}' has {size}")
        total += need
    if total:
        check_memory(f"{source}: loading {format_bytes(total)} of external data", total)


def _stored_count(tensor: onnx.TensorProto, raw_bytes: int | None) -> int:
    """Elements actually present in the tensor (raw bytes or its typed repeated field)."""
    if tensor.data_type in PACKED_ELEM_TYPES:  # two a byte: the byte count was checked against the dims
        count = math.prod(int(d) for d in tensor.dims)
        return count if raw_bytes is None or raw_bytes == (count + 1) // 2 else 2 * raw_bytes
    if raw_bytes is not None:
        return raw_bytes // SUPPORTED_ELEM_TYPES[tensor.data_type]
    return len(getattr(tensor, onnx.helper.tensor_dtype_to_field(tensor.data_type)))


def check_tensor(tensor: onnx.TensorProto, label: str, source: str, raw_bytes: int | None = None) -> None:
    """dims >= 0, a supported element type, and exactly as many values stored as the dims need.

    ``raw_bytes`` is ``len(tensor.raw_data)`` when the caller has the bytes already: upb copies the whole field on
    every access, so reading it here again would copy each weight twice more."""
    count, need = _declared(tensor, label, source)
    if tensor.data_location == _T.EXTERNAL:
        raise InputError(f"{source}: {label} is stored as external data that was not loaded")
    if raw_bytes is None and tensor.HasField("raw_data"):
        raw_bytes = len(tensor.raw_data)
    if raw_bytes is not None and raw_bytes != need:
        raise InputError(f"{source}: {label} has {raw_bytes} bytes of data but shape "
                         f"[{', '.join(map(str, tensor.dims))}] {_type_name(tensor.data_type)} needs {need}")
    stored = _stored_count(tensor, raw_bytes)
    if stored != count:
        raise InputError(f"{source}: {label} has {stored} values but shape [{', '.join(map(str, tensor.dims))}] "
                         f"needs {count}")
