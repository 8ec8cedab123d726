"""``VEC topk`` on the functional machine (compiler/backend/machine.py, docs/ISA.md): the MoE router's integer kernel
(compiler.simulate.intkernels.topk) against the compiler's router, the instruction's layout (indices at ``dst``,
logits at ``aux``, lanes past ``k`` untouched, values wrapped to the space) and its one-line refusals."""

from __future__ import annotations

import numpy as np
import pytest

from compiler.backend import Geometry, Machine
from compiler.numerics.router import route
from compiler.simulate import intkernels as K
from hw.errors import InputError
from hw.isa import Config, ConfigReg, Space, Vec, VecFn
from hw.perf import vec_queue
from hw.perf.execute_queue import VEC_ISSUE_CYCLES

GEO = Geometry(4, 4, sp_rows=64, acc_rows=64, const_rows=16)


@pytest.mark.parametrize(("n", "k"), [(1, 1), (4, 1), (6, 2), (9, 9), (64, 8), (300, 3)])
def test_the_kernel_is_the_compilers_router(n: int, k: int) -> None:
    """Equal to ``route(logits * scale, k).experts`` (the integer MoE's ranking, compiler/simulate/moe.py) for
    narrow logits (many ties), wide ones and the 32-bit extremes; the logits are the chosen experts' own."""
    rng = np.random.default_rng(n * 31 + k)
    for x in (rng.integers(-3, 3, (40, n)), rng.integers(-(1 << 31), 1 << 31, (40, n)),
              rng.choice([-(1 << 31), (1 << 31) - 1, 0], (40, n))):
        experts, logits = K.topk(x, k)
        for scale in (1.0, 0.0123, 3.5e-7):
            np.testing.assert_array_equal(experts, route(x.astype(np.float64) * scale, k).experts)
        np.testing.assert_array_equal(logits, np.take_along_axis(x, experts, axis=-1))
        assert (np.diff(logits, axis=-1) <= 0).all()


def test_ties_go_to_the_lower_index() -> None:
    experts, logits = K.topk(np.array([[3, -1, 3, 9, 9, 2], [5, 5, 5, 5, 5, 5], [-8, -2, -9, -2, -2, -7]]), 3)
    assert experts.tolist() == [[3, 4, 0], [0, 1, 2], [1, 3, 4]]
    assert logits.tolist() == [[9, 9, 3], [5, 5, 5], [-2, -2, -2]]


@pytest.mark.parametrize("k", [0, 7])
def test_the_kernel_refuses_k_outside_1_to_n(k: int) -> None:
    with pytest.raises(ValueError, match=rf"^topk: k={k} must be in 1\.\.6$"):
        K.topk(np.zeros((2, 6), np.int64), k)


def _vec(src: tuple[Space, int], dst: tuple[Space, int], aux: tuple[Space, int], rows: int, n: int) -> Vec:
    return Vec(fn=VecFn.TOPK, src_space=src[0], src=src[1], dst_space=dst[0], dst=dst[1], rows=rows, n=n,
               out_log2=5, aux_space=aux[0], aux=aux[1])


def _machine(k: int | None) -> Machine:
    m = Machine(GEO, bytearray(64))
    m.spaces[Space.ACC][:] = -7  # every lane the VEC must leave alone
    m.spaces[Space.SP][:] = -7
    if k is not None:
        m.execute(Config(reg=ConfigReg.TOPK_K, value=k), "config")
    return m


def test_indices_at_dst_logits_at_aux_lanes_past_k_untouched() -> None:
    """Rows of 6 logits (two space rows each) choosing 3: one output space row per element row at dst and aux,
    lane 3 untouched."""
    m = _machine(3)
    acc = m.spaces[Space.ACC]
    acc[0:4].reshape(2, 8)[:, :6] = [[3, -1, 3, 9, 9, 2], [-8, -2, -9, -2, -2, -7]]
    m.execute(_vec((Space.ACC, 0), (Space.ACC, 10), (Space.ACC, 20), 2, 6), "vec")
    assert acc[10:12].tolist() == [[3, 4, 0, -7], [1, 3, 4, -7]]
    assert acc[20:22].tolist() == [[9, 9, 3, -7], [-2, -2, -2, -7]]


def test_k_equal_n_over_two_output_rows_and_wrapping_into_the_scratchpad() -> None:
    """k = n = 5 on 4 lanes: each output row spans two space rows (lanes 1-3 of the second untouched); logits wider
    than the scratchpad's 8 bits wrap there, as every VEC's outputs do; in place (aux = src) is allowed."""
    m = _machine(5)
    acc = m.spaces[Space.ACC]
    acc[0:4].reshape(2, 8)[:, :5] = [[300, 1, 2, 3, 4], [0, 0, 0, 0, -1]]
    m.execute(_vec((Space.ACC, 0), (Space.SP, 0), (Space.ACC, 0), 2, 5), "vec")
    assert m.spaces[Space.SP][0:4].tolist() == [[0, 4, 3, 2], [1, -7, -7, -7], [0, 1, 2, 3], [4, -7, -7, -7]]
    assert acc[0:4].reshape(2, 8)[:, :5].tolist() == [[300, 4, 3, 2, 1], [0, 0, 0, 0, -1]]
    m.execute(_vec((Space.ACC, 0), (Space.SP, 8), (Space.SP, 16), 1, 5), "vec")
    assert m.spaces[Space.SP][16:18].reshape(-1)[:5].tolist() == [300 - 256, 4, 3, 2, 1]


def test_an_index_past_the_scratchpads_range_wraps() -> None:
    m = _machine(1)
    m.spaces[Space.ACC][0:50].reshape(1, 200)[0, 150] = 5
    m.execute(_vec((Space.ACC, 0), (Space.SP, 0), (Space.ACC, 60), 1, 200), "vec")
    assert m.spaces[Space.SP][0, 0] == 150 - 256 and m.spaces[Space.ACC][60, 0] == 5


@pytest.mark.parametrize(("k", "vec", "message"), [
    (None, _vec((Space.ACC, 0), (Space.ACC, 8), (Space.ACC, 16), 1, 4),
     "reads configuration register topk_k before any CONFIG set it"),
    (0, _vec((Space.ACC, 0), (Space.ACC, 8), (Space.ACC, 16), 1, 4),
     r"VEC topk needs 1 <= topk_k <= n = 4, got topk_k = 0"),
    (5, _vec((Space.ACC, 0), (Space.ACC, 8), (Space.ACC, 16), 1, 4),
     r"VEC topk needs 1 <= topk_k <= n = 4, got topk_k = 5"),
    (2, _vec((Space.ACC, 0), (Space.ACC, 8), (Space.CONST, 0), 1, 4),
     "VEC topk writes its logits at aux; the constant memory is not writable"),
    (2, _vec((Space.ACC, 0), (Space.ACC, 8), (Space.ACC, 9), 2, 4),
     "VEC topk's dst rows from 8 and aux rows from 9 overlap"),
    (2, _vec((Space.ACC, 0), (Space.ACC, 1), (Space.ACC, 16), 3, 4),
     r"VEC topk's dst rows 1\.\.3 overwrite input rows 0\.\.2 before they are read"),
    (2, _vec((Space.ACC, 0), (Space.ACC, 16), (Space.ACC, 2), 3, 6),
     r"VEC topk's aux rows 2\.\.4 overwrite input rows 0\.\.5 before they are read"),
])
def test_refusals_are_one_line_naming_the_culprit(k: int | None, vec: Vec, message: str) -> None:
    with pytest.raises(InputError, match=rf"^instruction 3 \(VEC\): {message}$"):
        _machine(k).execute(vec, "instruction 3 (VEC)")


def test_in_place_and_behind_the_input_are_allowed() -> None:
    """Outputs may land on input rows already read: dst = src, or one space row in for rows of two (6 logits,
    one output row): each output row lands in its own element row's input."""
    for dst in (0, 1):
        m = _machine(2)
        acc = m.spaces[Space.ACC]
        acc[0:6].reshape(3, 8)[:, :6] = np.arange(18).reshape(3, 6) % 5
        want = K.topk(np.arange(18).reshape(3, 6) % 5, 2)
        m.execute(_vec((Space.ACC, 0), (Space.ACC, dst), (Space.ACC, 30), 3, 6), "vec")
        assert acc[dst:dst + 3, :2].tolist() == want[0].tolist()
        assert acc[30:33, :2].tolist() == want[1].tolist()


def test_the_cycle_model_counts_the_vector_units_states() -> None:
    """Per element row: two states per input space row, a cycle per logit, two writes per output space row (the
    figures tests/test_rtl_system_vec.py measures on the top level)."""
    assert vec_queue.topk_cycles(4, 6, 2, 4) == 4 * (2 * 2 + 6 + 2) + VEC_ISSUE_CYCLES
    assert vec_queue.topk_cycles(4, 16, 8, 4) == 4 * (2 * 4 + 16 + 2 * 2) + VEC_ISSUE_CYCLES


@pytest.mark.slow
def test_the_backend_refuses_an_moe_block_naming_what_is_missing() -> None:
    """m3vit_tiny's integer MoE block: VEC topk could route it, the rest has no instructions (docs/ISA.md)."""
    from conftest import model_path

    from codesign.api import compile_options, run_compile
    from compiler.backend.constants import learn_scales
    from compiler.backend.model import build_model_program

    options = compile_options("fpga-u280", {"gemm.rows": "8", "gemm.cols": "8", "gemm.partitions": "1"},
                              quant="int8", softmax="shiftmax", gelu="shiftgelu", layernorm="ilayernorm")
    result, _ = run_compile(str(model_path("m3vit_tiny.onnx")), options)
    with pytest.raises(InputError, match=r"^system backend: dataflow\.moe 'blocks\.1\.ffn': an MoE block has no code "
                                         r"generator: VEC topk computes its routing, but its float64 combine weights "
                                         r"and its data-dependent dispatch have no cds1 instructions \(docs/ISA\.md, "
                                         r"Host split\)$"):
        build_model_program(result.module, result.env.weights, learn_scales(result),
                            Geometry.from_target(result.env.target))
