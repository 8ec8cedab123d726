"""Generators of malformed inputs for the CLI fuzz suite (tests/test_fuzz.py): ONNX models and .npz sample files.

Every strategy draws a *plan* (a small tuple of mutation steps) and returns a ``Case`` whose ``build`` writes the
mutated files when the case runs, so thousands of cases cost no memory until they run and a failing case can be
written again as a reproducer. The text formats (target YAML, ``--set``, MLIR, pass pipelines, sweep specs) live in
tests/fuzz/text_inputs.py. Seeds are the tiny model below (fast to compile: ~50 ms) and the example ViT.
"""

from __future__ import annotations

import io
import struct
import zipfile
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import onnx
from hypothesis import strategies as st
from onnx import TensorProto, helper, numpy_helper

from tests.conftest import MODELS

__all__ = [
    "INTERESTING_INTS",
    "SENTINEL",
    "Case",
    "npz_cases",
    "onnx_bytes_cases",
    "onnx_proto_cases",
    "tiny_model",
    "write_files",
]

SENTINEL = "sentinel.txt"
"""A file in every case folder, outside its inputs and outputs; planted symlinks point at it: it must not change."""

INTERESTING_INTS = (0, 1, -1, 2, 3, 7, 255, 256, 2**15, 2**31 - 1, 2**31, -(2**31), 2**32, 2**40, 2**62, -(2**62),
                    2**63 - 1, 10**6)


@dataclass(frozen=True)
class Case:
    """One CLI run: ``argv`` (paths relative to the case folder), ``files`` (relative path -> bytes, or a
    ``"->target"`` str for a symlink), ``note`` (how the input was made, for the catalogue), ``outputs`` (paths
    the run may write; everything else in the case folder must stay as it was)."""

    family: str
    argv: tuple[str, ...]
    note: str
    files: Callable[[], Mapping[str, bytes | str]] = field(compare=False)
    outputs: tuple[str, ...] = ("out",)


def write_files(case: Case, folder: Path) -> None:
    """Write ``case``'s inputs, its empty ``out/`` and the sentinel into ``folder``."""
    (folder / "in").mkdir(parents=True)
    (folder / "out").mkdir()
    (folder / SENTINEL).write_text("must not change\n")
    for rel, content in case.files().items():
        path = folder / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        if isinstance(content, str):
            path.symlink_to(content.removeprefix("->"))
        else:
            path.write_bytes(content)


# --- Seeds ------------------------------------------------------------------------------------------------------------

DIM = 16


def tiny_model() -> onnx.ModelProto:
    """MatMul + bias, softmax, MatMul, LayerNorm, ReLU on x[1, 8, 16]: every frontend area, compiles in ~50 ms."""
    rng = np.random.default_rng(0)
    inits = [numpy_helper.from_array((rng.standard_normal((DIM, DIM)) * 0.1).astype(np.float32), "w_q"),
             numpy_helper.from_array(np.zeros(DIM, np.float32), "b_q"),
             numpy_helper.from_array((rng.standard_normal((DIM, DIM)) * 0.1).astype(np.float32), "w_v"),
             numpy_helper.from_array(np.ones(DIM, np.float32), "ln_scale"),
             numpy_helper.from_array(np.zeros(DIM, np.float32), "ln_bias")]
    nodes = [helper.make_node("MatMul", ["x", "w_q"], ["q"], name="mm_q"),
             helper.make_node("Add", ["q", "b_q"], ["qb"], name="add_q"),
             helper.make_node("Softmax", ["qb"], ["p"], name="softmax", axis=-1),
             helper.make_node("MatMul", ["p", "w_v"], ["v"], name="mm_v"),
             helper.make_node("LayerNormalization", ["v", "ln_scale", "ln_bias"], ["n"], name="ln", axis=-1,
                              epsilon=1e-5),
             helper.make_node("Relu", ["n"], ["y"], name="relu")]
    graph = helper.make_graph(nodes, "tiny", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 8, DIM])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 8, DIM])], inits)
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=8)


_SEEDS: dict[str, bytes] = {}


def seed_bytes(name: str) -> bytes:
    """The serialized seed model ``tiny`` or an example model (``vit_tiny.onnx``), read once."""
    if name not in _SEEDS:
        _SEEDS[name] = tiny_model().SerializeToString() if name == "tiny" else (MODELS / name).read_bytes()
    return _SEEDS[name]


def tiny_samples(n: int = 2, seed: int = 0) -> np.ndarray:
    """Valid ``x`` samples for the tiny model: [n, 1, 8, 16] float32."""
    return np.random.default_rng(seed).standard_normal((n, 1, 8, DIM)).astype(np.float32)


def npz_bytes(arrays: dict[str, np.ndarray], compressed: bool = False) -> bytes:
    buf = io.BytesIO()
    named: dict[str, Any] = arrays  # keyword arrays: numpy's stub would match them against allow_pickle
    (np.savez_compressed if compressed else np.savez)(buf, **named)
    return buf.getvalue()


# --- ONNX: bytes ------------------------------------------------------------------------------------------------------

_BYTE_OPS = ("truncate", "flip", "bit", "bit", "insert", "fill", "duplicate")


def _mutate_bytes(data: bytes, steps: tuple[tuple[str, float, bytes], ...]) -> bytes:
    buf = bytearray(data)
    for op, where, blob in steps:
        at = min(int(where * len(buf)), max(len(buf) - 1, 0))
        if op == "truncate":
            del buf[at:]
        elif op == "flip" and buf:
            for i, b in enumerate(blob):
                buf[(at + i) % len(buf)] ^= b or 0xFF
        elif op == "bit" and buf:
            buf[at] ^= 1 << (blob[0] % 8)  # one bit: often keeps the protobuf framing, changes a value or a name
        elif op == "insert":
            buf[at:at] = blob
        elif op == "fill":
            buf[at:at + 4 * len(blob)] = b"\xff" * (4 * len(blob))
        elif op == "duplicate":
            buf[at:at] = buf[at:at + 64 * len(blob)]
    return bytes(buf)


def _compile_argv(model: str = "in/model.onnx", extra: tuple[str, ...] = ()) -> tuple[str, ...]:
    return ("compile", model, "-q", *extra)


@st.composite
def onnx_bytes_cases(draw: st.DrawFn) -> Case:
    """A seed model's bytes truncated, flipped, grown or overwritten: the protobuf decoder's and checker's input."""
    seed = draw(st.sampled_from(("tiny", "tiny", "tiny", "vit_tiny.onnx")))
    steps = tuple(draw(st.lists(st.tuples(st.sampled_from(_BYTE_OPS), st.floats(0, 1),
                                          st.binary(min_size=1, max_size=6)), min_size=1, max_size=3)))
    extra = draw(st.sampled_from(((), ("--stop-after", "import"), ("--json", "out/r.json"))))
    note = f"bytes of {seed} mutated by {steps!r}"
    return Case("onnx-bytes", _compile_argv(extra=extra), note,
                lambda: {"in/model.onnx": _mutate_bytes(seed_bytes(seed), steps)})


# --- ONNX: structure --------------------------------------------------------------------------------------------------

_OP_TYPES = ("MatMul", "Softmax", "Conv", "Gemm", "Foo", "", "Loop", "If", "Scan", "NonZero", "Resize", "TopK",
             "Reshape", "ConstantOfShape", "Range", "Expand", "Gather", "Einsum", "Attention", "Unique")
_VALUES = (0.0, -1.0, 1e-300, 1e308, float("nan"), float("inf"), float("-inf"))
_LOCATIONS = ("missing.bin", "/etc/hostname", "../sentinel.txt", "../../../../etc/passwd", "sub/../../x.bin", "",
              "link.bin", "in", ".", "model.onnx", "\u00e9\u00e8.bin", "a" * 300)


def _attr(value: object) -> onnx.AttributeProto:
    return helper.make_attribute("axis" if isinstance(value, int) else "epsilon", value)


def _proto_step(model: onnx.ModelProto, step: tuple, files: dict[str, bytes | str]) -> None:
    """Apply one structural mutation in place (indices wrap around the lists they index)."""
    g = model.graph
    kind, i, j = step[0], step[1], step[2]
    node = g.node[i % len(g.node)] if g.node else None
    init = g.initializer[i % len(g.initializer)] if g.initializer else None
    value_infos = list(g.input) + list(g.output)
    vi = value_infos[i % len(value_infos)] if value_infos else None
    if kind == "op_type" and node is not None:
        node.op_type = _OP_TYPES[j % len(_OP_TYPES)]
    elif kind == "domain" and node is not None:
        node.domain = ("com.microsoft", "ai.onnx.ml", "x.y", "")[j % 4]
    elif kind == "attr_int" and node is not None:
        del node.attribute[:]
        node.attribute.append(helper.make_attribute(("axis", "group", "perm", "kernel_shape", "to")[j % 5],
                                                    INTERESTING_INTS[j % len(INTERESTING_INTS)]))
    elif kind == "attr_float" and node is not None:
        node.attribute.append(helper.make_attribute(("epsilon", "alpha", "beta")[j % 3], _VALUES[j % len(_VALUES)]))
    elif kind == "attr_wrong_type" and node is not None:
        node.attribute.append(helper.make_attribute(("axis", "epsilon", "perm")[j % 3], ("x", [1.5], b"\xff")[i % 3]))
    elif kind == "drop_attrs" and node is not None:
        del node.attribute[:]
    elif kind == "inputs" and node is not None:
        names = [n for n in node.input] + ["", "nope", node.output[0] if node.output else "y"]
        del node.input[:]
        node.input.extend(names[k % len(names)] for k in range(j % 4))
    elif kind == "drop_node" and g.node:
        del g.node[i % len(g.node)]
    elif kind == "swap_nodes" and len(g.node) > 1:
        a, b = i % len(g.node), j % len(g.node)
        na, nb = onnx.NodeProto(), onnx.NodeProto()
        na.CopyFrom(g.node[a])
        nb.CopyFrom(g.node[b])
        g.node[a].CopyFrom(nb)
        g.node[b].CopyFrom(na)
    elif kind == "cycle" and node is not None and g.node:
        node.input.append(g.node[j % len(g.node)].output[0] if g.node[j % len(g.node)].output else "y")
    elif kind == "drop_init" and g.initializer:
        del g.initializer[i % len(g.initializer)]
    elif kind == "init_dims" and init is not None:
        init.dims[i % max(len(init.dims), 1) if init.dims else 0:] = [INTERESTING_INTS[j % len(INTERESTING_INTS)]]
    elif kind == "init_dtype" and init is not None:
        init.data_type = j % 24
    elif kind == "init_raw_cut" and init is not None and init.raw_data:
        init.raw_data = init.raw_data[: j % max(len(init.raw_data), 1)]
    elif kind == "init_external" and init is not None:
        location = _LOCATIONS[j % len(_LOCATIONS)]
        init.ClearField("raw_data")
        init.data_location = TensorProto.EXTERNAL
        del init.external_data[:]
        entries = {"location": location, "offset": str((0, 4, -8, 2**62)[i % 4]),
                   "length": str((64, 0, -1, 2**40)[(i // 4) % 4])}
        for key, val in entries.items():
            init.external_data.add(key=key, value=val)
        files["in/sub/.keep"] = b""
        files["in/link.bin"] = "->../sentinel.txt"
        files["in/short.bin"] = b"\x00" * 8
    elif kind == "vi_dim" and vi is not None and vi.type.HasField("tensor_type"):
        dims = vi.type.tensor_type.shape.dim
        if dims:
            d = dims[j % len(dims)]
            d.Clear()
            if i % 3:
                d.dim_value = INTERESTING_INTS[(i + j) % len(INTERESTING_INTS)]
            else:
                d.dim_param = ("N", "", "batch size", "-1")[j % 4]
    elif kind == "vi_dtype" and vi is not None and vi.type.HasField("tensor_type"):
        vi.type.tensor_type.elem_type = j % 24
    elif kind == "vi_rank" and vi is not None and vi.type.HasField("tensor_type"):
        shape = vi.type.tensor_type.shape
        if j % 3 == 0:
            vi.type.tensor_type.ClearField("shape")
        else:
            for _ in range(j % 7):
                shape.dim.add().dim_value = 1
    elif kind == "vi_no_type" and vi is not None:
        vi.ClearField("type")
    elif kind == "opset":
        del model.opset_import[:]
        if j % 8:
            model.opset_import.append(helper.make_opsetid(("", "x")[i % 2], (1, 7, 11, 13, 21, 99, 10**6)[j % 7]))
    elif kind == "ir_version":
        model.ir_version = (0, 1, 3, 11, 99, 2**40)[j % 6]
    elif kind == "no_outputs":
        del g.output[:]
    elif kind == "dup_output" and g.node:
        g.node[i % len(g.node)].output[:] = [g.node[j % len(g.node)].output[0]] if g.node[j % len(g.node)].output \
            else ["y"]
    elif kind == "huge_const":
        _append_huge(model, i, j)


def _append_huge(model: onnx.ModelProto, i: int, j: int) -> None:
    """Splice in a tensor of a huge declared size (ConstantOfShape, Range or Expand) that reaches the output."""
    g = model.graph
    dims = ((10**6, 10**6), (2**31, 16), (1, 2**40), (0, 16), (10**5, 10**5, 8))[j % 5]
    out = g.output[0].name if g.output else "y"
    shape = numpy_helper.from_array(np.array(dims, np.int64), "huge_shape")
    g.initializer.append(shape)
    choice = i % 3
    if choice == 0:
        g.node.append(helper.make_node("ConstantOfShape", ["huge_shape"], ["huge"], name="huge",
                                       value=numpy_helper.from_array(np.ones(1, np.float32))))
    elif choice == 1:
        for name, val in (("r_start", 0), ("r_limit", int(np.prod(dims, dtype=np.float64)) % 2**62), ("r_delta", 1)):
            g.initializer.append(numpy_helper.from_array(np.array(val, np.int64), name))
        g.node.append(helper.make_node("Range", ["r_start", "r_limit", "r_delta"], ["huge_i"], name="huge_range"))
        g.node.append(helper.make_node("Cast", ["huge_i"], ["huge"], name="huge_cast", to=TensorProto.FLOAT))
    else:
        g.node.append(helper.make_node("Expand", [out, "huge_shape"], ["huge"], name="huge_expand"))
    g.node.append(helper.make_node("ReduceSum", ["huge"], ["huge_sum"], name="huge_sum", keepdims=0))
    g.output.append(helper.make_tensor_value_info("huge_sum", TensorProto.FLOAT, None))


_PROTO_KINDS = ("op_type", "domain", "attr_int", "attr_float", "attr_wrong_type", "drop_attrs", "inputs", "drop_node",
                "swap_nodes", "cycle", "drop_init", "init_dims", "init_dtype", "init_raw_cut", "init_external",
                "vi_dim", "vi_dtype", "vi_rank", "vi_no_type", "opset", "ir_version", "no_outputs", "dup_output",
                "huge_const", "bad_utf8")


def _build_proto(seed: str, steps: tuple[tuple[str, int, int], ...]) -> dict[str, bytes | str]:
    model = onnx.load_from_string(seed_bytes(seed))
    files: dict[str, bytes | str] = {}
    renames = []
    for step in steps:
        if step[0] == "bad_utf8":
            renames.append(step)
        else:
            _proto_step(model, step, files)
    data = model.SerializeToString()
    for _, i, j in renames:
        # Same-length replacement keeps the protobuf framing valid while the string stops being UTF-8.
        names = [n.name for n in model.graph.node if len(n.name) >= 2] + [x.name for x in model.graph.initializer]
        if names:
            name = names[i % len(names)].encode()
            bad = (b"\xff\xfe", b"\xc3\x28", b"\xed\xa0\x80", b"\x00\x00")[j % 4]
            data = data.replace(name, (bad * len(name))[: len(name)], 1)
    files["in/model.onnx"] = data
    return files


@st.composite
def onnx_proto_cases(draw: st.DrawFn) -> Case:
    """A seed model changed structurally: op types, attributes, dims, dtypes, opsets, dropped or cyclic nodes, huge
    ConstantOfShape / Range / Expand, non-UTF-8 names and external data pointing anywhere."""
    seed = draw(st.sampled_from(("tiny",) * 5 + ("vit_tiny.onnx",)))
    steps = tuple(draw(st.lists(st.tuples(st.sampled_from(_PROTO_KINDS), st.integers(0, 200), st.integers(0, 200)),
                                min_size=1, max_size=3)))
    extra = draw(st.sampled_from(((), (), ("--stop-after", "import"), ("--quant", "int8"),
                                  ("--shape", "x=1x8x16"), ("--json", "out/r.json", "--trace", "out/t.json"))))
    return Case("onnx-proto", _compile_argv(extra=extra), f"{seed} with {steps!r}",
                lambda: _build_proto(seed, steps))


# --- .npz --------------------------------------------------------------------------------------------------------------

_DTYPES = ("float32", "float64", "float16", "int8", "int64", "bool", "complex64", "uint8", "<U3", "object", "V4")


def _npy_header(shape: tuple[int, ...], dtype: str = "<f4", body: bytes = b"") -> bytes:
    """A .npy file whose header declares ``shape`` whatever the body holds (huge or lying shapes)."""
    header = repr({"descr": dtype, "fortran_order": False, "shape": shape}).encode()
    header += b" " * (63 - (len(header) + 10) % 64) + b"\n"
    return b"\x93NUMPY\x01\x00" + struct.pack("<H", len(header)) + header + body


def _zip(members: dict[str, bytes]) -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        for name, data in members.items():
            zf.writestr(name, data)
    return buf.getvalue()


def _npz_content(kind: str, i: int, j: int) -> bytes:
    good = tiny_samples(1 + i % 3, seed=j)
    if kind == "name":
        return npz_bytes({("X", "x ", "input", "", "x\u00e9")[j % 5]: good})
    if kind == "extra":
        return npz_bytes({"x": good, "y": good[:1], "z": np.zeros(3)})
    if kind == "dtype":
        dtype = _DTYPES[j % len(_DTYPES)]
        arr = good.astype(dtype) if dtype not in ("<U3", "object", "V4") else np.zeros((1, 3), dtype=dtype)
        return npz_bytes({"x": arr}) if dtype != "object" else _zip({"x.npy": _object_npy()})
    if kind == "shape":
        shapes = ((0, 1, 8, 16), (1, 8, 16), (2, 1, 8, 15), (2, 1, 8, 16, 1), (2,), (), (1, 1, 1, 8, 16), (3, 2, 8, 16))
        return npz_bytes({"x": np.zeros(shapes[j % len(shapes)], np.float32) + i})
    if kind == "values":
        arr = good.copy()
        arr.reshape(-1)[j % arr.size] = (np.nan, np.inf, -np.inf, 3e38, 0.0)[i % 5]
        if i % 7 == 0:
            arr[:] = (0.0, np.nan, 1.0)[j % 3]  # constant data: calibration cannot learn a range from it
        return npz_bytes({"x": arr}, compressed=bool(i % 2))
    if kind == "huge_header":
        shape = ((10**6, 10**6), (2**40, 1, 8, 16), (1, 1, 8, 16), (2**62,), (-1, 1, 8, 16))[j % 5]
        return _zip({"x.npy": _npy_header(shape, ("<f4", "<f8", "|O", "<i8")[i % 4], b"\x00" * (i % 64))})
    if kind == "npy_renamed":
        buf = io.BytesIO()
        np.save(buf, good)
        return buf.getvalue()
    if kind == "truncate":
        data = npz_bytes({"x": good}, compressed=bool(j % 2))
        return data[: (i * 7919) % max(len(data), 1)]
    if kind == "flip":
        data = bytearray(npz_bytes({"x": good}, compressed=bool(j % 2)))
        data[(i * 104729) % len(data)] ^= 1 + j % 255
        return bytes(data)
    if kind == "not_npy_member":
        return _zip({"x.npy": b"not a npy", "x.txt": b"hello", "../x.npy": b"\x93NUMPY"}) if j % 2 else \
            _zip({"x": b"\x00" * 16})
    if kind == "empty":
        return b"" if j % 2 else b"PK\x05\x06" + b"\x00" * 18
    return npz_bytes({"x": good})


def _object_npy() -> bytes:
    buf = io.BytesIO()
    np.save(buf, np.array([{"a": 1}, None], dtype=object), allow_pickle=True)
    return buf.getvalue()


_NPZ_KINDS = ("name", "extra", "dtype", "shape", "values", "huge_header", "npy_renamed", "truncate", "flip",
              "not_npy_member", "empty", "good")


@st.composite
def npz_cases(draw: st.DrawFn) -> Case:
    """A malformed --inputs / --calibrate file for the tiny model: wrong names, dtypes, shapes, values; truncated,
    flipped, empty or foreign zips; a .npy renamed; pickled object arrays; .npy headers declaring huge shapes."""
    kind, i, j = draw(st.sampled_from(_NPZ_KINDS)), draw(st.integers(0, 500)), draw(st.integers(0, 500))
    flag = draw(st.sampled_from(("inputs", "inputs+outputs", "calibrate", "both")))
    def files() -> dict[str, bytes]:
        return {"in/model.onnx": seed_bytes("tiny"), "in/s.npz": _npz_content(kind, i, j),
                "in/good.npz": npz_bytes({"x": tiny_samples()})}

    extra: tuple[str, ...] = {
        "inputs": ("--inputs", "in/s.npz"),
        "inputs+outputs": ("--inputs", "in/s.npz", "--outputs", "out/o.npz"),
        "calibrate": ("--quant", "int8", "--calibrate", "in/s.npz"),
        "both": ("--quant", "w4a8", "--inputs", "in/good.npz", "--calibrate", "in/s.npz"),
    }[flag]
    return Case("npz", _compile_argv(extra=extra), f"npz {kind} (i={i}, j={j}) via {flag}", files)
