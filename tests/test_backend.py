"""The compiler backend (compiler/backend): GEMM programs on the cds1 machine model equal the integer reference.

A program is run in both legal queue orders (loads ahead, compute ahead), so a missing dependency token shows up as
a wrong result; the mutation tests below show that it does.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
import pytest

from compiler.backend import GemmLayer, Geometry, Machine, ProgramBuilder, run_program
from compiler.backend.select import fused_requant, gemm_layer
from compiler.dialect import dataflow as df
from compiler.simulate import intkernels as K
from hw.errors import InputError
from hw.isa import Gemm, Load, Program, check_tokens, from_bytes, listing, parse_listing, to_bytes

MODELS = Path(__file__).resolve().parents[1] / "examples" / "models"
ORDERS = ("loads_first", "compute_first")


def _reference(x, layer: GemmLayer) -> np.ndarray:
    acc = x @ layer.weights + (0 if layer.bias is None else layer.bias)
    if layer.requant is None:
        return acc
    m, e, bits = layer.requant
    return K.requantize(acc, m, e, bits)


def _run(builder: ProgramBuilder, program: Program, feeds: dict[str, np.ndarray], out: str, order: str):
    image = builder.image
    for name, value in feeds.items():
        image.write(name, value)
    run_program(program, Machine(builder.geometry, image.buffer()), order)  # type: ignore[arg-type]
    return image.read(out)


def _layer(rng, m, k, n, requant: str, out_bits: int = 8) -> GemmLayer:
    w = rng.integers(-128, 128, (k, n))
    bias = rng.integers(-20000, 20000, n)
    rq = None
    if requant == "tensor":
        rq = (np.array([1 << 29]), np.array([38 if out_bits == 8 else 30]), out_bits)
    elif requant == "channel":
        rq = (rng.integers(1 << 28, 1 << 31, n), rng.integers(34, 40, n), out_bits)
    return GemmLayer("layer", m, w, bias, rq)


@pytest.mark.parametrize(("rows", "cols"), [(4, 4), (8, 8), (16, 16), (4, 8), (8, 4)])
@pytest.mark.parametrize(("requant", "out_bits"), [("none", 32), ("tensor", 8), ("channel", 8), ("channel", 16)])
def test_gemm_program_equals_the_integer_reference(rows: int, cols: int, requant: str, out_bits: int) -> None:
    rng = np.random.default_rng(rows * 100 + cols)
    layer = _layer(rng, 19, 37, 21, requant, out_bits)
    geo = Geometry(rows, cols, sp_rows=1024, acc_rows=256)
    builder = ProgramBuilder(geo)
    x_region, y_region = builder.gemm(layer)
    program = builder.finish()
    check_tokens(program)
    x = rng.integers(-128, 128, (19, 37))
    for order in ORDERS:
        got = _run(builder, program, {x_region.name: x}, y_region.name, order)
        np.testing.assert_array_equal(got, _reference(x, layer))
    # the binary file and the listing carry the whole program
    assert from_bytes(to_bytes(program)) == program
    assert parse_listing(listing(program)) == program


def test_chained_layers_wait_for_each_other() -> None:
    """The second layer reads the first one's output from DRAM: the barrier between them orders it."""
    rng = np.random.default_rng(7)
    first, second = _layer(rng, 23, 16, 24, "channel"), _layer(rng, 23, 24, 9, "tensor")
    builder = ProgramBuilder(Geometry(4, 4, sp_rows=512, acc_rows=64))
    x_region, mid = builder.gemm(first)
    _, y_region = builder.gemm(dataclasses.replace(second, name="second"), x=mid)
    program = builder.finish()
    check_tokens(program)
    x = rng.integers(-128, 128, (23, 16))
    want = _reference(_reference(x, first), second)
    for order in ORDERS:
        np.testing.assert_array_equal(_run(builder, program, {x_region.name: x}, y_region.name, order), want)


def _without(program: Program, kind: type, flag: str) -> Program:
    """``program`` with ``flag`` cleared on every ``kind`` instruction that has it."""
    out = []
    for instr in program.instructions:
        if isinstance(instr, kind) and getattr(instr.deps, flag):
            instr = dataclasses.replace(instr, deps=dataclasses.replace(instr.deps, **{flag: False}))
        out.append(instr)
    return Program(tuple(out), program.dram_bytes)


@pytest.mark.parametrize(("kind", "flag", "order"), [(Load, "pop_next", "loads_first"),
                                                      (Gemm, "pop_prev", "compute_first")])
def test_a_missing_token_gives_a_wrong_result(kind: type, flag: str, order: str) -> None:
    """Without the buffer-free wait, loads overwrite operands the array has not read; without the data-loaded wait,
    the array reads operands before they arrive. Either shows up in the result (the check can fail)."""
    rng = np.random.default_rng(3)
    layer = _layer(rng, 24, 12, 16, "none")
    builder = ProgramBuilder(Geometry(4, 4, sp_rows=256, acc_rows=64))
    x_region, y_region = builder.gemm(layer)
    broken = _without(builder.finish(), kind, flag)
    x = rng.integers(-128, 128, (24, 12))
    try:
        got = _run(builder, broken, {x_region.name: x}, y_region.name, order)
    except InputError:
        return  # the token imbalance made a queue wait forever: also caught
    assert not np.array_equal(got, _reference(x, layer))


def test_a_layer_too_big_for_the_buffers_is_one_line() -> None:
    layer = GemmLayer("model.fc1", 4, np.zeros((300, 8), np.int64))
    with pytest.raises(InputError, match=r"^system backend, layer 'model.fc1': K = 300 needs 1208 scratchpad rows "
                                         r"\(two halves of A and B and a staging fold\); the target has 1024$"):
        ProgramBuilder(Geometry(4, 4, sp_rows=1024)).gemm(layer)


def test_geometry_from_a_bundled_target() -> None:
    from hw.targets.loader import load_target

    geo = Geometry.from_target(load_target("fpga-u280", {"gemm.rows": "8", "gemm.cols": "16"}))
    assert (geo.rows, geo.cols, geo.width) == (8, 16, 16)
    assert geo.sp_rows == min(65536, (512 + 2048) * 1024 // 16)
    assert geo.acc_rows == 512 * 1024 // (16 * 4)
    with pytest.raises(InputError, match=r"^target 'gpu-a100': the system backend needs a systolic array"):
        Geometry.from_target(load_target("gpu-a100"))


def _int8_compile(model: str, rows: int, cols: int):
    from codesign.api import compile_options, run_compile

    options = compile_options("fpga-u280", {"gemm.rows": str(rows), "gemm.cols": str(cols)}, quant="int8",
                              softmax="shiftmax", gelu="shiftgelu", layernorm="ilayernorm")
    result, _ = run_compile(str(MODELS / model), options)
    return result


@pytest.mark.parametrize(("model", "rows", "cols"), [("vit_tiny.onnx", 4, 4), ("vit_tiny.onnx", 16, 16),
                                                     ("bert_tiny.onnx", 8, 8), ("gpt2_tiny.onnx", 8, 16)])
def test_every_weight_gemm_of_a_compiled_model_runs_bit_exact(model: str, rows: int, cols: int) -> None:
    """Each integer GEMM with a weight operand of an int8 I-ViT compile, fed the functional simulator's own input
    to it, gives the simulator's output (after the fused requant where there is one)."""
    from compiler.calibrate import synthetic_inputs
    from compiler.simulate import Simulator

    result = _int8_compile(model, rows, cols)
    imported = result.imported
    sim = Simulator(result.module, result.env.weights, imported.input_names, imported.output_names)
    feeds = {name: batch[0] for name, batch in synthetic_inputs(result.module, sim.input_names, 1).items()}
    values = {}

    def observe(op, outs) -> None:
        for value, tensor in zip(op.results, outs):
            values[value] = tensor.data

    sim.run(feeds, observe)
    geo = Geometry(rows, cols, sp_rows=4096, acc_rows=1024)
    checked = 0
    for op in result.module.walk():
        if not (isinstance(op, df.GemmOp) and isinstance(op.rhs.owner, df.WeightOp)
                and np.issubdtype(np.asarray(values.get(op.lhs, np.zeros(0))).dtype, np.integer)):
            continue
        layer = gemm_layer(op, result.env.weights)
        builder = ProgramBuilder(geo)
        x_region, y_region = builder.gemm(layer)
        program = builder.finish()
        x = np.asarray(values[op.lhs]).reshape(layer.m, layer.k)
        rq = fused_requant(op)
        want = np.asarray(values[rq.result if rq is not None else op.result]).reshape(layer.m, layer.n)
        got = _run(builder, program, {x_region.name: x}, y_region.name, "loads_first")
        np.testing.assert_array_equal(got, want, err_msg=layer.name)
        checked += 1
    assert checked >= 8


def test_ops_without_a_code_generator_are_refused_by_name() -> None:
    result = _int8_compile("vit_tiny.onnx", 4, 4)
    layernorm = next(op for op in result.module.walk() if isinstance(op, df.LayerNormOp))
    with pytest.raises(InputError, match=r"^system backend: dataflow.layernorm 'model.vit.layers.0.layernorm_before."
                                         r"LayerNormalization': no code generator for this op yet"):
        gemm_layer(layernorm, result.env.weights)
