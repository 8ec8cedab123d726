"""compiler/backend/gemm_ws.py: weight-stationary GEMM layers on the functional machine, bit-exact against the
integer reference and the functional simulator (the pattern of tests/test_backend.py)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from test_backend import random_gemm_layer, run_model

from compiler.backend import Geometry, Machine, ProgramBuilder, run_program
from compiler.backend.gemm import GemmLayer
from compiler.dialect import dataflow as df
from compiler.simulate import intkernels as K
from hw.errors import InputError
from hw.isa import Gemm, Load, check_tokens, listing, parse_listing
from hw.perf.execute_queue_ws import ws_block_rows

MODELS = Path(__file__).resolve().parents[1] / "examples" / "models"
ORDERS = ("loads_first", "compute_first")


def _reference(x: np.ndarray, layer: GemmLayer) -> np.ndarray:
    acc = x @ layer.weights + (0 if layer.bias is None else layer.bias)
    if layer.requant is None:
        return acc
    m, e, bits = layer.requant
    return K.requantize(acc, m, e, bits)


@pytest.mark.parametrize(("rows", "cols", "sp_rows", "acc_rows"),
                         [(4, 4, 1024, 256), (8, 8, 1024, 256), (4, 8, 1024, 256), (8, 4, 1024, 256),
                          (4, 4, 1024, 16),   # blocks of 4 output rows (the accumulator holds four)
                          (4, 4, 200, 16)])  # X reloaded per block (the scratchpad holds no reuse)
@pytest.mark.parametrize(("requant", "out_bits"), [("none", 32), ("tensor", 8), ("channel", 8), ("channel", 16)])
def test_ws_layer_equals_the_integer_reference(rows: int, cols: int, sp_rows: int, acc_rows: int, requant: str,
                                               out_bits: int) -> None:
    rng = np.random.default_rng(rows * 100 + cols + sp_rows + acc_rows)
    layer = random_gemm_layer(rng, 19, 37, 21, requant, out_bits)
    builder = ProgramBuilder(Geometry(rows, cols, sp_rows=sp_rows, acc_rows=acc_rows, dataflow="ws"))
    x_region, y_region = builder.gemm(layer)
    program = builder.finish()
    check_tokens(program)
    assert parse_listing(listing(program)) == program
    gemms = [i for i in program.instructions if isinstance(i, Gemm)]
    mt = ws_block_rows(19, acc_rows)
    blocks = -(-19 // mt) * -(-21 // cols)
    assert len(gemms) == blocks * -(-37 // rows)  # one GEMM per weight tile per block
    assert all(g.dataflow == 1 and g.k <= rows and g.n <= cols for g in gemms)
    assert sum(g.accumulate for g in gemms) == blocks * (-(-37 // rows) - 1)
    assert not any(isinstance(i, Load) and i.transpose for i in program.instructions)
    x = rng.integers(-128, 128, (19, 37))
    for order in ORDERS:
        image = builder.image
        image.write(x_region.name, x)
        run_program(program, Machine(builder.geometry, image.buffer()), order)
        np.testing.assert_array_equal(image.read(y_region.name), _reference(x, layer))


def test_chained_ws_layers_and_a_too_small_machine() -> None:
    rng = np.random.default_rng(9)
    builder = ProgramBuilder(Geometry(4, 4, sp_rows=512, acc_rows=64, dataflow="ws"))
    first = random_gemm_layer(rng, 23, 16, 24, "channel", name="first")
    second = random_gemm_layer(rng, 23, 24, 9, "tensor", name="second")
    x_region, mid = builder.gemm(first)
    _, y_region = builder.gemm(second, x=mid)
    program = builder.finish()
    check_tokens(program)
    x = rng.integers(-128, 128, (23, 16))
    for order in ORDERS:
        builder.image.write(x_region.name, x)
        run_program(program, Machine(builder.geometry, builder.image.buffer()), order)
        np.testing.assert_array_equal(builder.image.read(y_region.name), _reference(_reference(x, first), second))
    with pytest.raises(InputError, match=r"^system backend, layer 'big': K = 100 needs \d+ scratchpad rows"):
        ProgramBuilder(Geometry(4, 4, sp_rows=64, acc_rows=64, dataflow="ws")).gemm(
            random_gemm_layer(rng, 8, 100, 4, "none", 32, name="big"))
    with pytest.raises(InputError, match=r"^system backend, layer 'tiny': two halves of 1 accumulator rows"):
        ProgramBuilder(Geometry(4, 4, sp_rows=64, acc_rows=1, dataflow="ws")).gemm(
            random_gemm_layer(rng, 8, 4, 4, "none", 32, name="tiny"))


def test_a_whole_model_with_ws_weight_gemms_equals_the_simulator() -> None:
    """bert_tiny (int8, I-ViT set) compiled for fpga-u280 with gemm.dataflow=ws: its weight GEMMs run ws, the
    attention's products os, and every device value equals the functional simulator's in both queue orders."""
    from codesign.api import compile_options, run_compile
    from compiler.backend.constants import learn_scales
    from compiler.backend.model import build_model_program
    from compiler.calibrate import synthetic_inputs
    from compiler.simulate import Simulator

    options = compile_options("fpga-u280", {"gemm.rows": "8", "gemm.cols": "8", "gemm.partitions": "1",
                                            "gemm.dataflow": "ws"}, quant="int8", softmax="shiftmax",
                              gelu="shiftgelu", layernorm="ilayernorm")
    result, _ = run_compile(str(MODELS / "bert_tiny.onnx"), options)
    geo = Geometry.from_target(result.env.target)
    assert geo.dataflow == "ws"
    mp = build_model_program(result.module, result.env.weights, learn_scales(result), geo)
    assert mp.program is not None
    check_tokens(mp.program)
    flows = {g.dataflow for g in mp.program.instructions if isinstance(g, Gemm)}
    assert flows == {0, 1}  # weight GEMMs ws, attention os
    imported = result.imported
    sim = Simulator(result.module, result.env.weights, imported.input_names, imported.output_names)
    feeds = {name: batch[0] for name, batch in synthetic_inputs(result.module, sim.input_names, 1).items()}
    feeds["attention_mask"] = feeds["attention_mask"].copy()
    feeds["attention_mask"][..., -3:] = 0
    values = {}

    def observe(op, outs) -> None:
        for value, tensor in zip(op.results, outs):
            values[value] = np.asarray(tensor.data)

    sim.run(feeds, observe)
    for order in ORDERS:
        device = run_model(mp, geo, values, order)
        for value, region in mp.regions.items():
            if value not in mp.inputs:
                np.testing.assert_array_equal(device[value], values[value], err_msg=f"{region.name} ({order})")
    gemm_ops = [op for op in result.module.walk() if isinstance(op, df.GemmOp)]
    assert gemm_ops
