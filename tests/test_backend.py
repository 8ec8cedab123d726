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


def random_gemm_layer(rng, m: int, k: int, n: int, requant: str, out_bits: int = 8,
                      name: str = "layer") -> GemmLayer:
    """An int8 weight GEMM layer of random weights and bias, with no requant, a per-tensor or a per-channel one
    (``requant``: none / tensor / channel) to ``out_bits``; shared by the backend, ws and system RTL tests."""
    w = rng.integers(-128, 128, (k, n))
    bias = rng.integers(-20000, 20000, n)
    rq = None
    if requant == "tensor":
        rq = (np.array([1 << 29]), np.array([38 if out_bits == 8 else 30]), out_bits)
    elif requant == "channel":
        rq = (rng.integers(1 << 28, 1 << 31, n), rng.integers(34, 40, n), out_bits)
    return GemmLayer(name, m, w, bias, rq)


@pytest.mark.parametrize(("rows", "cols"), [(4, 4), (8, 8), (16, 16), (4, 8), (8, 4)])
@pytest.mark.parametrize(("requant", "out_bits"), [("none", 32), ("tensor", 8), ("channel", 8), ("channel", 16)])
def test_gemm_program_equals_the_integer_reference(rows: int, cols: int, requant: str, out_bits: int) -> None:
    rng = np.random.default_rng(rows * 100 + cols)
    layer = random_gemm_layer(rng, 19, 37, 21, requant, out_bits)
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
    first, second = random_gemm_layer(rng, 23, 16, 24, "channel"), random_gemm_layer(rng, 23, 24, 9, "tensor")
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
    layer = random_gemm_layer(rng, 24, 12, 16, "none")
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

    geo = Geometry.from_target(load_target("fpga-u280", {"gemm.rows": "8", "gemm.cols": "16", "gemm.partitions": "1"}))
    assert (geo.rows, geo.cols, geo.width) == (8, 16, 16)
    assert geo.sp_rows == min(65536, (512 + 2048) * 1024 // 16)
    assert geo.acc_rows == 512 * 1024 // (16 * 4)
    with pytest.raises(InputError, match=r"^target 'gpu-a100': the system backend needs a systolic array"):
        Geometry.from_target(load_target("gpu-a100"))


def _int8_compile(model: str, rows: int, cols: int, softmax: str = "shiftmax"):
    from codesign.api import compile_options, run_compile

    options = compile_options("fpga-u280", {"gemm.rows": str(rows), "gemm.cols": str(cols), "gemm.partitions": "1"}, quant="int8",
                              softmax=softmax, gelu="shiftgelu", layernorm="ilayernorm")
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


# --- whole models ------------------------------------------------------------------------------------------------


def _whole_model(model: str, rows: int, cols: int, *, masked_tail: int = 0, softmax: str = "shiftmax"):
    """A model's program (compiler/backend/model.py) and the simulator's value of every IR value on one sample
    (its attention mask's last ``masked_tail`` positions padding, when it has one)."""
    from compiler.backend.constants import learn_scales
    from compiler.backend.model import build_model_program
    from compiler.calibrate import synthetic_inputs
    from compiler.simulate import Simulator

    result = _int8_compile(model, rows, cols, softmax)
    geo = Geometry.from_target(result.env.target)
    assert (geo.rows, geo.cols) == (rows, cols)
    mp = build_model_program(result.module, result.env.weights, learn_scales(result), geo)
    imported = result.imported
    sim = Simulator(result.module, result.env.weights, imported.input_names, imported.output_names)
    feeds = {name: batch[0] for name, batch in synthetic_inputs(result.module, sim.input_names, 1).items()}
    if masked_tail:
        feeds["attention_mask"] = feeds["attention_mask"].copy()
        feeds["attention_mask"][..., -masked_tail:] = 0
    values = {}

    def observe(op, outs) -> None:
        for value, tensor in zip(op.results, outs):
            values[value] = np.asarray(tensor.data)

    sim.run(feeds, observe)
    for value, tensor in sim.consts.items():  # constant masks (GPT-Neo's causal table) are weights, not op results
        values.setdefault(value, np.asarray(tensor.data))
    return result, mp, geo, values


def run_model(mp, geo, values, order: str) -> dict:
    """Run ``mp`` on a fresh copy of its image with the host prologue's values written in; every device value."""
    from compiler.backend.attention import host_mask_halves

    image = mp.builder.image
    pristine = bytes(image.buffer())
    try:
        for value, region in mp.inputs.items():
            image.write(region.name, values[value].reshape(region.shape))
        for plan, mask in mp.masks:
            a, b = host_mask_halves(None if mask is None else values[mask], plan)
            image.write(plan.mask[0].name, a)
            image.write(plan.mask[1].name, b)
        run_program(mp.program, Machine(geo, image.buffer()), order)  # type: ignore[arg-type]
        return {v: image.read(r.name).reshape(np.shape(values[v])) for v, r in mp.regions.items()}
    finally:
        image.buffer()[:] = pristine


def _check_model(model: str, rows: int, cols: int, orders=ORDERS, masked_tail: int = 0,
                 softmax: str = "shiftmax") -> None:
    result, mp, geo, values = _whole_model(model, rows, cols, masked_tail=masked_tail, softmax=softmax)
    assert mp.program is not None
    check_tokens(mp.program)
    assert parse_listing(listing(mp.program)) == mp.program
    # every transformer op runs on the device: the host keeps only the float prologue and epilogue
    device_kinds = (df.AttentionOp, df.LayerNormOp, df.GeluOp, df.RequantOp)
    for op in result.module.walk():
        if isinstance(op, device_kinds) and not isinstance(op, df.WeightOp):
            assert op.results[0] in mp.regions, df.str_attr(op, "layer")
    assert mp.outputs
    for order in orders:
        got = run_model(mp, geo, values, order)
        for value, region in mp.regions.items():
            if value not in mp.inputs:
                np.testing.assert_array_equal(got[value], values[value], err_msg=f"{region.name} ({order})")


@pytest.mark.parametrize(("model", "rows", "cols"), [("vit_tiny.onnx", 16, 16), ("gpt2_tiny.onnx", 16, 16)])
def test_a_whole_model_program_equals_the_simulator(model: str, rows: int, cols: int) -> None:
    """Every device value of the program (each layer's DRAM output, the program's outputs among them) equals the
    functional simulator's, bit for bit, in both queue orders."""
    _check_model(model, rows, cols)


def test_the_online_softmax_runs_on_its_unit() -> None:
    """``--softmax online``: the attention's vector layer runs ``VEC online_softmax`` with its (m_c, e_c)."""
    _check_model("vit_tiny.onnx", 16, 16, orders=("compute_first",), softmax="online")


@pytest.mark.slow
@pytest.mark.parametrize(("model", "rows", "cols"), [
    ("vit_tiny.onnx", 4, 4), ("vit_tiny.onnx", 8, 16), ("bert_tiny.onnx", 4, 4), ("bert_tiny.onnx", 16, 16),
    ("bert_tiny.onnx", 8, 16), ("gpt2_tiny.onnx", 4, 4), ("gpt2_tiny.onnx", 8, 16)])
def test_whole_model_programs_on_every_array(model: str, rows: int, cols: int) -> None:
    _check_model(model, rows, cols)


@pytest.mark.slow
def test_a_padding_mask_reaches_the_scores() -> None:
    """BERT with its last three tokens masked: the host's mask halves, added on the device, give the simulator's
    probabilities (the masked keys get none)."""
    _check_model("bert_tiny.onnx", 8, 8, orders=("loads_first",), masked_tail=3)


def test_the_host_split_of_vit() -> None:
    """ViT's float class-token concat and position add run on the host (with the patch projection before them);
    the class-token gather between the last LayerNorm and the classifier is a device threshold island."""
    _, mp, _, _ = _whole_model("vit_tiny.onnx", 16, 16)
    assert "model.vit.embeddings.Concat" in mp.host_ops
    assert "model.vit.embeddings.patch_embeddings.projection.Conv" in mp.host_ops
    assert [r.name for r in mp.outputs.values()] == ["model.classifier.Gemm.out"]
    assert any(r.name.startswith("model.Gather.quant8") for r in mp.regions.values())


@pytest.mark.parametrize(("bits", "in_bits", "per_channel"), [(8, 16, False), (8, 32, True), (16, 32, False)])
def test_threshold_tables_are_the_float_island_exactly(bits: int, in_bits: int, per_channel: bool) -> None:
    """``VEC threshold`` with the backend's table equals dequantize -> quantize at every checked input: all int16
    values, or the int32 extremes and a dense sample of them."""
    from compiler.backend.island import island_function, threshold_table
    from hw.isa import Space, Vec, VecFn

    rng = np.random.default_rng(bits + in_bits)
    c = 4
    lo, hi = -(1 << (in_bits - 1)), (1 << (in_bits - 1)) - 1
    s_out = 0.03 if bits == 8 else 1e-4
    s_in = (rng.uniform(0.5, 2.0, c) if per_channel else np.full(c, 1.0)) * s_out * 2.0 ** (10 - in_bits)
    table = threshold_table(s_in, s_out, bits, lo, hi)
    x = np.arange(lo, hi + 1).reshape(-1, 1) if in_bits == 16 else np.concatenate(
        [np.array([lo, lo + 1, -1, 0, 1, hi - 1, hi]), rng.integers(lo, hi, 20000)]).reshape(-1, 1)
    x = np.broadcast_to(x, (x.shape[0], c))
    want = island_function(s_in, s_out, bits)(x)
    geo = Geometry(4, 4, sp_rows=16, acc_rows=x.shape[0], const_rows=table.shape[0])
    machine = Machine(geo, bytearray())
    machine.spaces[Space.ACC][:x.shape[0]] = x
    machine.spaces[Space.CONST][:, :c] = table & 0xFFFFFFFF
    machine.execute(Vec(fn=VecFn.THRESHOLD, src_space=Space.ACC, src=0, dst_space=Space.ACC, dst=0, rows=x.shape[0],
                        n=c, out_log2=bits.bit_length() - 1, aux_space=Space.CONST, aux=0), "test")
    np.testing.assert_array_equal(machine.spaces[Space.ACC][:x.shape[0]], want)


def test_a_float_model_is_refused_by_op_and_node() -> None:
    from codesign.api import compile_options, run_compile
    from compiler.backend.constants import learn_scales
    from compiler.backend.model import build_model_program

    result, _ = run_compile(str(MODELS / "vit_tiny.onnx"), compile_options("fpga-u280", {}))
    with pytest.raises(InputError, match=r"^system backend: dataflow.move 'model.vit.embeddings.patch_embeddings."
                                         r"projection.Conv.patchify': the model has no integer ops for the device "
                                         r"\(compile with --quant int8\)$"):
        build_model_program(result.module, result.env.weights, learn_scales(result), Geometry(4, 4))


def test_a_unit_the_device_lacks_is_refused_by_op_and_node() -> None:
    from codesign.api import compile_options, run_compile
    from compiler.backend.constants import learn_scales
    from compiler.backend.model import build_model_program

    options = compile_options("fpga-u280", {"gemm.rows": "4", "gemm.cols": "4", "gemm.partitions": "1"}, quant="int8", softmax="ibert",
                              gelu="shiftgelu", layernorm="ilayernorm")
    result, _ = run_compile(str(MODELS / "vit_tiny.onnx"), options)
    with pytest.raises(InputError, match=r"^system backend: dataflow.attention 'model.vit.layers.0.attention': "
                                         r"softmax 'ibert' has no vector unit here \(the system backend runs "
                                         r"shiftmax and online\)$"):
        build_model_program(result.module, result.env.weights, learn_scales(result), Geometry(4, 4))


def test_a_float_op_between_integer_ops_is_refused_by_op_and_node(tmp_path: Path) -> None:
    """A float ``|x|`` (not monotone) between an I-LayerNorm and a GEMM is neither prologue, epilogue nor an island of
    movement and non-decreasing pointwise steps (SiLU was the example once: it is an integer product now,
    tests/test_backend_glu.py)."""
    import torch

    from codesign.api import compile_options, run_compile
    from compiler.backend.constants import learn_scales
    from compiler.backend.model import build_model_program
    from examples._common import export_onnx

    class Net(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.fc1, self.norm, self.fc2 = torch.nn.Linear(16, 16), torch.nn.LayerNorm(16), torch.nn.Linear(16, 8)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.fc2(torch.abs(self.norm(self.fc1(x))))

    torch.manual_seed(0)
    path = tmp_path / "island.onnx"
    export_onnx(Net().eval(), (torch.randn(1, 4, 16),), path, input_names=["x"], output_names=["y"],
                exporter="legacy")
    options = compile_options("fpga-u280", {"gemm.rows": "4", "gemm.cols": "4", "gemm.partitions": "1"}, quant="int8",
                              softmax="shiftmax", gelu="shiftgelu", layernorm="ilayernorm")
    result, _ = run_compile(str(path), options)
    with pytest.raises(InputError, match=r"^system backend: dataflow\.\w+ '[^']*Abs[^']*': a float op between "
                                         r"integer ops; the system backend runs float ops only before and after the "
                                         r"integer ops \(docs/ISA.md, Host split\)$"):
        build_model_program(result.module, result.env.weights, learn_scales(result), Geometry(4, 4))


def test_two_mask_halves_saturate_as_one_mask() -> None:
    """Adding the host's two same-signed int32 halves with two saturating adds equals the simulator's single add
    and clamp, causal positions included, on scores up to the accumulator's bound."""
    from compiler.backend.attention import AttentionPlan, host_mask_halves

    rng = np.random.default_rng(5)
    plan = AttentionPlan("a", 2, 6, 8, 0.01, True, None)
    mask = np.where(rng.random((1, 1, 6, 8)) < 0.3, np.finfo(np.float32).min,
                    rng.normal(0, 50, (1, 1, 6, 8))).astype(np.float32)
    x = rng.integers(-(1 << 30), 1 << 30, (2, 6, 8))
    with np.errstate(over="ignore"):
        grid = np.clip(np.round(mask.astype(np.float64) / plan.scores_scale), -(2.0**32), 2.0**32).astype(np.int64)
    want = np.where(np.triu(np.ones((6, 8), bool), 1 + 8 - 6), -(2**31), x + grid[0])
    want = np.clip(want, -(2**31), 2**31 - 1).reshape(-1, 8)
    a, b = host_mask_halves(mask, plan)
    assert a.min() >= -(2**31) and b.max() < 2**31 and (a * b >= 0).all()  # int32 halves, never opposite signs
    got = K.requantize_add(K.requantize_add(x.reshape(-1, 8), 1, 0, a, 1, 0, 32), 1, 0, b, 1, 0, 32)
    np.testing.assert_array_equal(got, want)


def test_host_refuses_a_fully_masked_row_it_cannot_zero() -> None:
    """An op that gives a row with every key masked 0 (``masked_rows_zero``) has no vector step for it: the host
    refuses such a mask in one line naming the op, the row and the head; a mask without one gives the usual halves."""
    from compiler.backend.attention import AttentionPlan, host_mask_halves

    plan = AttentionPlan("att", 2, 4, 4, 0.01, False, None, masked_rows_zero=True)
    mask = np.zeros((1, 1, 4, 4), np.float32)
    mask[..., 2, :3] = -np.inf
    plain = AttentionPlan("att", 2, 4, 4, 0.01, False, None)
    for got, want in zip(host_mask_halves(mask, plan), host_mask_halves(mask, plain), strict=True):
        np.testing.assert_array_equal(got, want)
    mask[..., 2, 3] = -np.inf
    with pytest.raises(InputError, match=r"^system backend: dataflow.attention 'att': query row 2 of head 0 has every "
                                         r"key masked; the model gives it 0, which has no code generator"):
        host_mask_halves(mask, plan)


def test_gpt2s_qkv_split_runs_on_the_device() -> None:
    """GPT-2's dequantize -> Split -> quantize between its QKV GEMM and attention is a device island: the host
    runs only the embedding sum, the mask and the final dequantize."""
    _, mp, _, _ = _whole_model("gpt2_tiny.onnx", 16, 16)
    assert not any("attn" in name for name in mp.host_ops), mp.host_ops
    assert any(r.name.startswith("model.h.0.attn.Split.quant8") for r in mp.regions.values())
