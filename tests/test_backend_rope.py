"""Integer rotary embeddings on the system backend (compiler/backend/rope.py): a partner product on the array and a
vector layer of two ``VEC mul``, a unit-multiplier ``requant_add`` and the op's requant.

Zoo decoders with each spelling run whole on the cds1 machine model, every device value equal to the functional
simulator's (tests/test_backend.py's check): GPT-NeoX (rotate-half over a quarter of each head, the rest passed
through), CodeGen (interleaved pairs), StarCoder2 (rotate-half over whole heads, grouped K/V). GPT-NeoX also runs on
Verilator, where the model prices each rotary layer as the RTL runs it.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from compiler.backend.rope import rope_constants
from compiler.simulate.rope import ROPE_FRAC_BITS, rope_int
from examples import zoo
from tests.test_backend import _check_model


@pytest.mark.parametrize("name", ["gpt-neox", "codegen", "starcoder2"])
def test_rotary_models_run_bit_exact_on_the_machine_model(tmp_path: Path, name: str) -> None:
    path = tmp_path / f"{name}.onnx"
    zoo.export(name, zoo.variants(name)[0], path)
    _check_model(str(path), 8, 8, orders=("loads_first",))


@pytest.mark.parametrize("style", ["rotate_half", "interleaved"])
def test_the_constants_give_the_simulators_sums(style: str) -> None:
    """``x * C + (x @ P) * S`` is rope_int's int32 sum before its requant, pass-through columns included."""
    rng = np.random.default_rng(1)
    positions, heads, head_dim, rotary = 5, 3, 8, 4
    cos_q, sin_q = (rng.integers(-(1 << 14), 1 << 14, (positions, rotary)) for _ in range(2))
    x = rng.integers(-128, 128, (1, positions, heads * head_dim))
    p, c, s = rope_constants(cos_q, sin_q, style, head_dim, heads * head_dim)
    assert sorted(p.sum(axis=0)) == [1] * heads * head_dim == sorted(p.sum(axis=1))  # a permutation
    assert (c.reshape(positions, heads, head_dim)[..., rotary:] == 1 << ROPE_FRAC_BITS).all()
    got = x[0] * c + (x[0] @ p) * s
    np.testing.assert_array_equal(rope_int(x, cos_q, sin_q, style, head_dim, 1, 0)[0],
                                  np.clip(got, -128, 127))  # m / 2^e = 1: the requant only clamps


def test_the_model_prices_a_rotary_layer_as_the_system_runs_it(tmp_path: Path) -> None:
    from codesign.api import compile
    from compiler.backend import Geometry
    from compiler.dialect import dataflow as df
    from hw.perf import vec_queue as vq

    path = tmp_path / "neox.onnx"
    zoo.export("gpt-neox", zoo.variants("gpt-neox")[0], path)
    result = compile(str(path), target="fpga-u280", quant="int8", softmax="shiftmax",
                     overrides={"gemm.rows": 8, "gemm.cols": 8, "gemm.partitions": 1, "gemm.fold_overlap": "false",
                                "gemm.execute_queue": "true"})
    geo = Geometry.from_target(result.env.target)
    mach = vq.Machine(lanes=geo.cols, width=geo.width, acc_rows=geo.acc_rows, sp_rows=geo.sp_rows)
    ropes = [op for op in result.module.walk() if isinstance(op, df.RopeOp)]
    layers = {layer["name"]: layer for layer in result.report["layers"]}
    assert len(ropes) == 4
    for op in ropes:
        _, rows, width = op.input.type.get_shape()  # type: ignore[attr-defined]
        assert layers[op.layer_name()]["cycles"] == vq.rope_cycles(rows, width, mach, geo.rows)


@pytest.mark.rtl
@pytest.mark.slow
@pytest.mark.timeout(1800)
def test_gpt_neox_runs_on_the_top_level_and_the_model_prices_its_rotations(tmp_path: Path, capsys) -> None:
    """`codesign rtl --system --simulate` on Verilator: the device's outputs equal the simulator's, the whole
    program within 1% of the RTL's cycles and every rotary layer within 2% (measured 2026-12-05: 230,109 RTL
    cycles against 229,882, -0.1%; the four rotations 32,182 against 32,268, +0.3%)."""
    from tests.top_level import zoo_on_top_level

    r = zoo_on_top_level("gpt-neox", tmp_path, capsys)
    assert abs(r["device_latency_cycles"] - r["rtl_cycles"]) <= 0.01 * r["rtl_cycles"]
    ropes = [layer for layer in r["layers"] if layer["op"] == "dataflow.rope"]
    assert len(ropes) == 4
    assert all(abs(x["latency_cycles"] - x["rtl_cycles"]) <= 0.02 * x["rtl_cycles"] for x in ropes)


def test_vec_mul_takes_data_rows_not_constant_words() -> None:
    """``VEC mul``'s second factor is data rows at ``aux`` (sp or acc): the constant memory there is refused by the
    top level statically and by the machine model in one line."""
    from compiler.backend import Geometry, Machine
    from hw.errors import InputError
    from hw.isa import Space, Vec, VecFn
    from hw.rtl.system import SystemConfig
    from hw.rtl.system.support import rtl_lacks

    config = SystemConfig(4, 4, sp_rows=64, acc_rows=64, const_rows=64)
    vec = Vec(fn=VecFn.MUL, src_space=Space.ACC, src=0, dst_space=Space.ACC, dst=8, rows=2, n=4, out_log2=5,
              aux_space=Space.ACC, aux=16)
    assert rtl_lacks(vec, config) is None
    const = Vec(fn=VecFn.MUL, src_space=Space.ACC, src=0, dst_space=Space.ACC, dst=8, rows=2, n=4, out_log2=5,
                aux_space=Space.CONST, aux=0)
    assert rtl_lacks(const, config) == "VEC mul reading or writing the constant memory as data"
    machine = Machine(Geometry(4, 4, 8, 32, 64, 64, 64), bytearray(64))
    machine.spaces[Space.ACC][:4] = [[3, -2, 1 << 20, 0]] * 4
    machine.spaces[Space.ACC][16:20] = [[5, 7, 1 << 12, 9]] * 4
    machine.execute(vec, "here")
    np.testing.assert_array_equal(machine.spaces[Space.ACC][8], [15, -14, (1 << 31) - 1, 0])  # 2^32 clamps
    with pytest.raises(InputError, match="VEC mul reads its second factor's rows at aux"):
        machine.execute(const, "here")
