"""Shape folding turns exporter-built tables and masks into constants; rotary embeddings and masks are recognised by
what they compute (compiler/frontend/onnx_loader.py, rope.py, recognize.py)."""

from __future__ import annotations

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from compiler.frontend.masks import mask_kind as _mask_kind
from compiler.frontend.masks import window_mask
from compiler.frontend.onnx_loader import load_graph
from compiler.frontend.rope import fit_rope
from hw.errors import InputError


def _model(nodes, inputs, outputs, inits=()) -> onnx.ModelProto:
    tensors = [numpy_helper.from_array(v, k) for k, v in inits]
    graph = helper.make_graph(nodes, "g", inputs, outputs, initializer=tensors)
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])


def _const(name: str, value) -> onnx.NodeProto:
    return helper.make_node("Constant", [], [name], value=numpy_helper.from_array(np.asarray(value)))


def test_rotary_table_from_shapes_folds_to_constant() -> None:
    """The legacy exporter's rotary table: positions from Shape/Range, angles through Cos and Sin."""
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 6, 4])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 6, 4])
    nodes = [
        helper.make_node("Shape", ["x"], ["shape"], start=1, end=2),
        helper.make_node("Squeeze", ["shape"], ["len"]),
        _const("zero", np.int64(0)), _const("one", np.int64(1)),
        helper.make_node("Range", ["zero", "len", "one"], ["pos"]),
        helper.make_node("Cast", ["pos"], ["posf"], to=TensorProto.FLOAT),
        helper.make_node("Unsqueeze", ["posf", "ax"], ["col"]),
        helper.make_node("Mul", ["col", "freq"], ["ang"]),
        helper.make_node("Cos", ["ang"], ["cos"]), helper.make_node("Sin", ["ang"], ["sin"]),
        helper.make_node("Mul", ["x", "cos"], ["a"]), helper.make_node("Mul", ["x", "sin"], ["b"]),
        helper.make_node("Add", ["a", "b"], ["y"]),
    ]
    freq = np.array([1.0, 0.5, 0.25, 0.125], dtype=np.float32)
    g = load_graph(_model(nodes, [x], [y], [("freq", freq), ("ax", np.array([1], dtype=np.int64))]))
    assert [n.op_type for n in g.nodes] == ["Mul", "Mul", "Add"]
    cos = g.constants[g.nodes[0].inputs[1]]
    np.testing.assert_allclose(cos, np.cos(np.arange(6, dtype=np.float32)[:, None] * freq), rtol=1e-6)


def test_causal_mask_from_trilu_equal_where_folds_and_is_recognised() -> None:
    """A mask built in the graph (ConstantOfShape -> Trilu -> Equal -> Where) is a constant after folding."""
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 2, 5, 5])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 2, 5, 5])
    nodes = [
        helper.make_node("Shape", ["x"], ["shape"], start=2),
        helper.make_node("ConstantOfShape", ["shape"], ["ones"],
                         value=numpy_helper.from_array(np.array([1], np.int64))),
        helper.make_node("Trilu", ["ones"], ["tri"], upper=0),
        helper.make_node("Equal", ["tri", "zero"], ["blocked"]),
        helper.make_node("Where", ["blocked", "neg", "fzero"], ["mask"]),
        helper.make_node("Add", ["x", "mask"], ["y"]),
    ]
    inits = [("zero", np.array(0, np.int64)), ("neg", np.array(-np.inf, np.float32)),
             ("fzero", np.array(0, np.float32))]
    g = load_graph(_model(nodes, [x], [y], inits))
    assert [n.op_type for n in g.nodes] == ["Add"]
    assert _mask_kind(g.constants[g.nodes[0].inputs[1]], 5, 5) == "causal"


def test_unsupported_op_in_shape_arithmetic_is_named() -> None:
    """An op with no NumPy semantics that a shape depends on is named with its node, not blamed on --shape."""
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [2, 6])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, None)
    nodes = [
        helper.make_node("Shape", ["x"], ["shape"]),
        helper.make_node("Cast", ["shape"], ["shapef"], to=TensorProto.FLOAT),
        helper.make_node("Hardmax", ["shapef"], ["odd"], name="shape_math/Hardmax"),
        helper.make_node("Cast", ["odd"], ["newshape"], to=TensorProto.INT64),
        helper.make_node("Reshape", ["x", "newshape"], ["y"], name="reshape"),
    ]
    with pytest.raises(InputError, match=r"unsupported op Hardmax 'shape_math/Hardmax': it cannot be evaluated") as err:
        load_graph(_model(nodes, [x], [y]))
    assert "--shape" not in str(err.value) and "\n" not in str(err.value)


def test_unsupported_op_on_data_is_one_line_exit_2(tmp_path, capsys) -> None:
    """The CLI: an unsupported op that touches data is named with its node, in one line, exit status 2."""
    from codesign.cli import main

    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 4, 8])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 4, 8])
    path = tmp_path / "hardmax.onnx"
    onnx.save(_model([helper.make_node("Hardmax", ["x"], ["y"], name="blocks.0/Hardmax")], [x], [y]), str(path))
    assert main(["compile", str(path), "-q"]) == 2
    err = capsys.readouterr().err.strip()
    assert "unsupported op Hardmax (node 'blocks.0/Hardmax')" in err and len(err.splitlines()) == 1


@pytest.mark.parametrize("allowed, kind", [
    (np.tril(np.ones((6, 6), bool)), "causal"),
    (np.tril(np.ones((6, 6), bool)) & ~np.tril(np.ones((6, 6), bool), -3), "banded"),
    (np.kron(np.eye(3, dtype=bool), np.ones((2, 2), bool)), "block"),
    (np.broadcast_to(np.arange(6) < 4, (6, 6)), "padding"),
    (np.ones((6, 6), bool), None),
])
def test_mask_kind(allowed: np.ndarray, kind: str | None) -> None:
    assert _mask_kind(allowed, 6, 6) == kind
    additive = np.where(allowed, 0.0, np.finfo(np.float32).min).astype(np.float32)[None, None]
    assert _mask_kind(additive, 6, 6) == kind


def test_additive_bias_is_not_a_mask_structure() -> None:
    bias = -np.abs(np.subtract.outer(np.arange(6), np.arange(6))).astype(np.float32)  # ALiBi-like
    assert _mask_kind(bias, 6, 6) == "other"


def _tables(s: int, r: int) -> tuple[np.ndarray, np.ndarray]:
    inv = 1.0 / 10000 ** (np.arange(0, r, 2) / r)
    ang = np.arange(s)[:, None] * inv[None, :]
    return np.cos(ang), np.sin(ang)


@pytest.mark.parametrize("style", ["half", "interleaved"])
def test_fit_rope_recovers_rotation_partial_dims_and_scale(style: str) -> None:
    """Partial rotary (6 of 8 dims) with the attention scale folded in: the fit finds the rotation and the scale."""
    b, s, h, dh, r = 1, 5, 2, 8, 6
    cos, sin = _tables(s, r)

    def chain(x: np.ndarray) -> np.ndarray:  # [B, S, H*dh] -> [B, H, S, dh], as an export computes it
        x4 = x.reshape(b, s, h, dh)
        rot, rest = x4[..., :r], x4[..., r:]
        if style == "half":
            c, sn = np.concatenate([cos, cos], -1)[None, :, None], np.concatenate([sin, sin], -1)[None, :, None]
            turned = np.concatenate([-rot[..., r // 2:], rot[..., : r // 2]], -1)
        else:
            c, sn = np.repeat(cos, 2, -1)[None, :, None], np.repeat(sin, 2, -1)[None, :, None]
            turned = np.stack([-rot[..., 1::2], rot[..., ::2]], -1).reshape(rot.shape)
        y = np.concatenate([rot * c + turned * sn, rest], -1)
        return 0.5 * y.transpose(0, 2, 1, 3)

    fit = fit_rope(chain, (b, s, h * dh), dh, lambda x: x.reshape(b, s, h, dh).transpose(0, 2, 1, 3))
    assert fit is not None
    factor, rope = fit
    assert factor == pytest.approx(0.5)
    assert rope is not None and rope.style == style
    assert np.array_equal(rope.partner[r:], np.arange(r, dh))  # the pass-through dims


def test_fit_rope_rejects_a_non_rotation() -> None:
    """A per-position scaling that is not norm-preserving is not RoPE."""
    b, s, h, dh = 1, 4, 2, 4
    ramp = np.arange(1, s + 1, dtype=np.float64)[None, :, None, None]
    fit = fit_rope(lambda x: (x.reshape(b, s, h, dh) * ramp).transpose(0, 2, 1, 3), (b, s, h * dh), dh,
                   lambda x: x.reshape(b, s, h, dh).transpose(0, 2, 1, 3))
    assert fit is None


def test_shape_chain_deeper_than_a_few_rounds_is_inferred() -> None:
    """Each block reshapes by the Shape of its own MatMul (DINOv2, Swin): one more inference/folding round per block,
    so six blocks need more rounds than a fixed cap of four gave."""
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 4, 4])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, None)
    nodes, prev = [], "x"
    for i in range(6):
        nodes += [helper.make_node("MatMul", [prev, "w"], [f"m{i}"]),
                  helper.make_node("Shape", [f"m{i}"], [f"s{i}"]),
                  helper.make_node("Reshape", [f"m{i}", f"s{i}"], [f"r{i}"])]
        prev = f"r{i}"
    nodes.append(helper.make_node("Identity", [prev], ["y"]))
    g = load_graph(_model(nodes, [x], [y], [("w", np.eye(4, dtype=np.float32))]))
    assert g.shapes["y"] == (1, 4, 4)


@pytest.mark.parametrize("scales, sizes", [(np.array([1, 1, 1, 1], np.float32), None),
                                            (None, np.array([1, 3, 4, 4], np.int64))])
def test_resize_to_its_own_size_is_the_identity(scales, sizes) -> None:
    from compiler.frontend.onnx_ops import run_node

    table = np.arange(48, dtype=np.float32).reshape(1, 3, 4, 4)
    out = run_node("Resize", [table, None, scales, sizes], {"mode": "cubic"})
    np.testing.assert_array_equal(out[0], table)


def test_resize_to_another_size_is_evaluated_as_onnx_defines_it() -> None:
    """Half-pixel linear (ONNX's default transform) is torch's bilinear; asymmetric linear, which torch has no mode
    for, is ONNX's x_original = x_resized / scale (the row of a 2x upsample alternates samples and midpoints)."""
    import torch

    from compiler.frontend.onnx_ops import run_node

    table = np.random.default_rng(0).normal(size=(1, 3, 4, 4)).astype(np.float32)
    scales = np.array([1, 1, 2, 2], np.float32)
    (got,) = run_node("Resize", [table, None, scales, None], {"mode": "linear"})
    want = torch.nn.functional.interpolate(torch.from_numpy(table), scale_factor=2, mode="bilinear").numpy()
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6)
    (asym,) = run_node("Resize", [table, None, scales, None], {"mode": "linear",
                                                               "coordinate_transformation_mode": "asymmetric"})
    np.testing.assert_allclose(asym[..., ::2, ::2], table, rtol=1e-6)
    np.testing.assert_allclose(asym[..., 0, 1:-1:2], (table[..., 0, :-1] + table[..., 0, 1:]) / 2, rtol=1e-5)
    np.testing.assert_allclose(asym[..., -1], asym[..., -2])  # past the last sample: the edge repeats


def test_empty_concat_input_is_dropped_not_refused() -> None:
    """Rotary over the whole head (Phi-3) concatenates the rotated part with an empty pass-through slice."""
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 4, 8])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, None)
    nodes = [_const("st", np.array([8], np.int64)), _const("en", np.array([9], np.int64)),
             _const("ax", np.array([-1], np.int64)),
             helper.make_node("Slice", ["x", "st", "en", "ax"], ["rest"]),
             helper.make_node("Neg", ["x"], ["rot"]),
             helper.make_node("Concat", ["rot", "rest"], ["y"], axis=-1)]
    g = load_graph(_model(nodes, [x], [y]))
    assert [n.op_type for n in g.nodes] == ["Neg", "Concat"] and g.nodes[1].inputs == ["rot"]
    assert g.shapes["y"] == (1, 4, 8)


def test_empty_tensor_on_the_data_path_is_still_refused() -> None:
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 4, 8])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, None)
    nodes = [_const("st", np.array([8], np.int64)), _const("en", np.array([9], np.int64)),
             _const("ax", np.array([-1], np.int64)),
             helper.make_node("Slice", ["x", "st", "en", "ax"], ["rest"]),
             helper.make_node("Neg", ["rest"], ["y"])]
    with pytest.raises(InputError, match="empty tensor"):
        load_graph(_model(nodes, [x], [y]))


def _swin_shift_mask(size: int = 8, window: int = 4, shift: int = 2) -> np.ndarray:
    """Swin's cyclic-shift mask [windows, 1, N, N] (N = window^2): 0 within a region of the shifted image, -100
    across regions (transformers' SwinLayer.get_attn_mask)."""
    bands = np.zeros(size, dtype=int)
    bands[size - window:size - shift], bands[size - shift:] = 1, 2
    image = bands[:, None] * 3 + bands[None, :]
    parts = image.reshape(size // window, window, size // window, window).transpose(0, 2, 1, 3)
    labels = parts.reshape(-1, window * window)
    return np.where(labels[:, :, None] == labels[:, None, :], 0.0, -100.0)[:, None].astype(np.float32)


def test_shifted_windows_with_relative_position_bias_are_block_masks() -> None:
    """Swin's SDPA mask: a per-head relative-position bias plus the per-window shift mask (-100), summed into one
    constant: the windows' regions are blocks; a bias alone, or windows that are not regions, are not."""
    mask = _swin_shift_mask()
    bias = np.random.default_rng(0).normal(size=(1, 2, 16, 16)).astype(np.float32)
    assert _mask_kind(mask, 16, 16) == "block"
    assert _mask_kind(mask + bias, 16, 16) == "block"
    keep = window_mask(mask + bias)
    assert keep is not None and keep.shape == (4, 1, 16, 16) and np.array_equal(keep, mask == 0)
    assert _mask_kind(np.broadcast_to(bias, (4, 2, 16, 16)), 16, 16) == "other"  # nothing blocked
    causal_windows = np.where(np.tril(np.ones((16, 16), bool)), 0.0, -100.0)[None, None] * np.array([0, 1])[:, None,
                                                                                                    None, None]
    assert _mask_kind(causal_windows + bias, 16, 16) == "other"  # blocked, but not regions


def test_rounding_trigonometry_and_norm_reductions_on_data_compile_and_simulate(tmp_path) -> None:
    """Rounding, sign, trigonometry and Xor left on data (LongT5's transient-global block ids from the attention
    mask: Floor of a cumulative sum) are generic element-wise ops, and ReduceL2 / ReduceL1 / ReduceSumSquare
    (F.normalize: YOSO, Swin-v2) are lowered to element-wise ops and a ReduceSum; all simulated as onnxruntime
    computes them."""
    import onnxruntime as ort

    from codesign.api import compile

    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 4, 8])
    unary = ["Floor", "Ceil", "Round", "Sign", "Cos", "Sin"]
    nodes = [helper.make_node("Mul", ["x", "three"], ["s"])]
    nodes += [helper.make_node(op, ["s"], [f"y_{op}"], name=f"b/{op}") for op in unary]
    nodes += [helper.make_node("Greater", ["x", "zero"], ["a"]), helper.make_node("Greater", ["x", "one"], ["b"]),
              helper.make_node("Xor", ["a", "b"], ["c"], name="b/Xor"),
              helper.make_node("Cast", ["c"], ["y_Xor"], to=TensorProto.FLOAT)]
    reductions = ["ReduceL2", "ReduceL1", "ReduceSumSquare"]
    nodes += [helper.make_node(op, ["s"], [f"y_{op}"], name=f"b/{op}", axes=[-1], keepdims=1) for op in reductions]
    outs = [helper.make_tensor_value_info(f"y_{op}", TensorProto.FLOAT, None) for op in [*unary, "Xor", *reductions]]
    inits = [("zero", np.array(0, np.float32)), ("one", np.array(1, np.float32)), ("three", np.array(3, np.float32))]
    path = tmp_path / "ops.onnx"
    model = _model(nodes, [x], outs, inits)
    model.ir_version = 8  # what the installed onnxruntime reads (onnx's helper writes its newest)
    onnx.save(model, str(path))
    sample = np.random.default_rng(0).normal(size=(1, 4, 8)).astype(np.float32)
    result = compile(path, inputs={"x": sample[None]})
    want = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"]).run(None, {"x": sample})
    for out, ref in zip(outs, want, strict=True):
        np.testing.assert_allclose(result.env.artifacts["outputs"][out.name][0], np.asarray(ref), rtol=1e-5, atol=1e-5,
                                   err_msg=out.name)


def test_operands_that_do_not_fit_are_named_with_their_shapes() -> None:
    """A node whose operands' shapes do not fit it (an inconsistent export: CANINE's legacy export with a mask) says
    so, with the shapes, in one line."""
    a = helper.make_tensor_value_info("a", TensorProto.FLOAT, [1, 4, 16, 16])
    b = helper.make_tensor_value_info("b", TensorProto.FLOAT, [1, 16, 16, 4])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, None)
    model = _model([helper.make_node("MatMul", ["a", "b"], ["y"], name="attn/MatMul")], [a, b], [y])
    with pytest.raises(InputError, match=r"of MatMul 'attn/MatMul': its operands' shapes \(1x4x16x16, 1x16x16x4\) "
                                         r"do not fit it") as err:
        load_graph(model)
    assert "\n" not in str(err.value)


def test_a_shape_set_by_input_values_is_named_as_data_dependent() -> None:
    """Split sizes counted from the data (JetMoE's experts split the routed tokens by per-expert counts): the shape
    follows the input's values, not its shape. Named as such, not as an inconsistent export."""
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [6, 4])
    outs = [helper.make_tensor_value_info(f"part{i}", TensorProto.FLOAT, None) for i in range(2)]
    nodes = [
        _const("zero", np.float32(0)), _const("axis1", np.array([1], np.int64)),
        _const("lo", np.array([0], np.int64)), _const("hi", np.array([2], np.int64)),
        helper.make_node("Greater", ["x", "zero"], ["pos"]),
        helper.make_node("Cast", ["pos"], ["pos_i"], to=TensorProto.INT64),
        helper.make_node("ReduceSum", ["pos_i", "axis1"], ["counts"], keepdims=0),
        helper.make_node("Slice", ["counts", "lo", "hi"], ["sizes"]),
        helper.make_node("Split", ["x", "sizes"], ["part0", "part1"], name="experts/Split", axis=0),
    ]
    with pytest.raises(InputError, match=r"of Split 'experts/Split': its shape is set by the values of 'sizes', which "
                                         r"are computed from the model's input values at run time") as err:
        load_graph(_model(nodes, [x], outs))
    assert "\n" not in str(err.value)


@pytest.mark.parametrize("have, shape", [
    ((3, 1), (2, 1, 4)),  # the shape has more dims, and a 1 where the input has 3
    ((2, 3, 4), (4,)),  # the shape has fewer dims than the input
    ((1, 1, 4), (1, 3, 1)),  # 1s on both sides
    ((2, 1, 4), (1, 1, 5, 1)),  # each side broadcasts the other
])
def test_expand_folds_by_bidirectional_broadcast(have: tuple[int, ...], shape: tuple[int, ...]) -> None:
    """Expand broadcasts its input and its shape both ways (ONNX's multidirectional rule, not numpy's one-way
    broadcast_to): a folded Expand equals onnxruntime's, whichever side holds the 1s or the extra dims. Only shapes
    that broadcast neither way are refused (test_frontend_hostile.py)."""
    import onnxruntime as ort

    value = np.arange(1, np.prod(have) + 1, dtype=np.float32).reshape(have)
    out = np.broadcast_shapes(have, shape)
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, list(out))
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, list(out))
    t = helper.make_tensor_value_info("t", TensorProto.FLOAT, list(out))
    nodes = [helper.make_node("Expand", ["v", "shape"], ["t"], name="expand"),
             helper.make_node("Add", ["x", "t"], ["y"], name="add")]
    model = _model(nodes, [x], [y, t], [("v", value), ("shape", np.array(shape, np.int64))])
    model.ir_version = 8  # what the installed onnxruntime reads (onnx's helper writes its newest)
    want = np.asarray(ort.InferenceSession(model.SerializeToString()).run(["t"], {"x": np.zeros(out, np.float32)})[0])
    folded = load_graph(model).constants["t"]
    assert folded.shape == want.shape and np.array_equal(folded, want)
