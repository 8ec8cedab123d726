"""hw.rtl.system.vec: every VEC function the top level builds runs bit-exactly against compiler/backend/machine.py.

Each program loads random rows into the scratchpad, accumulator and constant memory (the destination rows too,
so a lane the VEC must leave alone is checked), sets the configuration registers, runs one or more ``VEC`` and
stores the destination rows; the whole DRAM image after ``done`` must equal the machine model's. Rows of
``n = 6`` elements on a 4-lane array span two space rows, the second with two valid lanes. All share one
Verilator build (``VEC4``).
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field

import numpy as np
import pytest

from compiler.backend import Geometry, Machine, run_program
from compiler.numerics import dyadic
from hw.isa import Config, ConfigReg, Deps, Halt, Instruction, Load, Program, Space, Store, Vec, VecFn, to_bytes
from hw.rtl import ilayernorm
from hw.rtl.system import SystemConfig, run_system
from hw.rtl.system.support import rtl_lacks

VEC4 = SystemConfig(4, 4, sp_rows=256, acc_rows=128, const_rows=640, max_row=16)  # rows of up to 16 elements
LANES = 4
_ELEM = {Space.SP: 0, Space.ACC: 2, Space.CONST: 2}


def _geometry(config: SystemConfig) -> Geometry:
    return Geometry(config.rows, config.cols, config.in_bits, config.acc_bits, config.sp_rows, config.acc_rows,
                    config.const_rows)


@dataclass
class _Builder:
    """A one-block program: loads (each a space-row array), execute instructions, stores of whole space rows."""

    image: bytearray = field(default_factory=bytearray)
    loads: list[Load] = field(default_factory=list)
    execs: list[Instruction] = field(default_factory=list)
    stores: list[Store] = field(default_factory=list)

    def load(self, space: Space, row: int, values: np.ndarray) -> None:
        elem = _ELEM[space]
        raw = np.asarray(values, np.int64).astype(np.dtype(f"<i{1 << elem}"))
        addr = len(self.image)
        self.image += raw.tobytes()
        self.image += bytes(-len(self.image) % 16)
        self.loads.append(Load(space=space, row=row, rows=raw.shape[0], cols=raw.shape[1], elem_log2=elem,
                               dram=addr, stride=raw.shape[1] << elem))

    def store(self, space: Space, row: int, rows: int) -> None:
        elem = _ELEM[space]
        addr = len(self.image)
        self.image += bytes(rows * (LANES << elem))
        self.stores.append(Store(space=space, row=row, rows=rows, cols=LANES, elem_log2=elem, dram=addr,
                                 stride=LANES << elem))

    def program(self) -> Program:
        loads = self.loads[:-1] + [_with(self.loads[-1], Deps(push_next=True))]
        execs = [_with(self.execs[0], Deps(pop_prev=True))] + self.execs[1:-1] + \
            [_with(self.execs[-1], Deps(pop_prev=len(self.execs) == 1, push_next=True))]
        stores = [_with(self.stores[0], Deps(pop_prev=True))] + self.stores[1:]
        return Program((*loads, *execs, *stores, Halt()), len(self.image))


def _with(instr: Instruction, deps: Deps) -> Instruction:
    return dataclasses.replace(instr, deps=deps)


def _span_rows(rng, rows: int, n: int, lo: int, hi: int) -> np.ndarray:
    """``rows`` element rows of ``n`` values laid out as space rows of LANES lanes (tail lanes random too)."""
    span = -(-n // LANES)
    return rng.integers(lo, hi, (rows * span, LANES))


def _check(builder: _Builder, simulator: str = "verilator") -> int:
    program = builder.program()
    image = bytes(builder.image)
    dram = bytearray(image)
    run_program(program, Machine(_geometry(VEC4), dram))
    run = run_system(VEC4, to_bytes(program), image, {"dram": (0, len(image))}, simulator)
    assert run.reads["dram"] == bytes(dram)
    assert run.reads["dram"] != image  # the program wrote something
    return run.cycles


def _configs(b: _Builder, **regs: int) -> None:
    b.execs += [Config(reg=ConfigReg[name.upper()], value=value) for name, value in regs.items()]


def _vec(fn: VecFn, src: tuple[Space, int], dst: tuple[Space, int], rows: int, n: int, out_log2: int = 3,
         aux: tuple[Space, int] = (Space.SP, 0)) -> Vec:
    return Vec(fn=fn, src_space=src[0], src=src[1], dst_space=dst[0], dst=dst[1], rows=rows, n=n,
               out_log2=out_log2, aux_space=aux[0], aux=aux[1])


def _copy_digit(rng) -> _Builder:
    """copy acc -> sp (values wider than 8 bits wrap), sp -> acc (negative values sign-extend), digit."""
    b = _Builder()
    b.load(Space.ACC, 0, _span_rows(rng, 3, 6, -40000, 40000))
    b.load(Space.SP, 0, _span_rows(rng, 3, 6, -128, 128))
    b.load(Space.SP, 16, _span_rows(rng, 6, 6, -128, 128))  # destinations: tail lanes must survive
    b.load(Space.ACC, 16, _span_rows(rng, 3, 6, -5, 5))
    _configs(b, digit_shift=7)
    b.execs += [_vec(VecFn.COPY, (Space.ACC, 0), (Space.SP, 16), 3, 6),
                _vec(VecFn.COPY, (Space.SP, 0), (Space.ACC, 16), 3, 6),
                _vec(VecFn.DIGIT, (Space.ACC, 0), (Space.SP, 32), 3, 6)]
    b.store(Space.SP, 16, 6 + 6)
    b.store(Space.ACC, 16, 6)
    b.store(Space.SP, 32, 6)
    return b


def _requant(rng) -> _Builder:
    """Per tensor (8 bits, saturating), per channel over a two-row span (4 bits), 32-bit output into acc; the
    streamed path: per channel over one-row spans of 3 of the 4 lanes (a GEMM fold's), and in place in acc."""
    b = _Builder()
    b.load(Space.ACC, 0, _span_rows(rng, 3, 6, -(1 << 20), 1 << 20))
    b.load(Space.ACC, 32, _span_rows(rng, 5, 3, -(1 << 20), 1 << 20))
    b.load(Space.CONST, 0, np.concatenate([_span_rows(rng, 1, 6, 1 << 28, 1 << 31),
                                           _span_rows(rng, 1, 6, 28, 36)]))
    b.load(Space.CONST, 8, np.concatenate([_span_rows(rng, 1, 3, 1 << 28, 1 << 31), _span_rows(rng, 1, 3, 28, 36)]))
    b.load(Space.SP, 40, _span_rows(rng, 5, 3, -128, 128))  # destination: its fourth lane must survive
    _configs(b, requant_m=1 << 30, requant_e=36)
    b.execs += [_vec(VecFn.REQUANT, (Space.ACC, 0), (Space.SP, 0), 3, 6, 3),
                _vec(VecFn.REQUANT, (Space.ACC, 0), (Space.SP, 16), 3, 6, 2, aux=(Space.CONST, 0)),
                _vec(VecFn.REQUANT, (Space.ACC, 0), (Space.ACC, 16), 3, 6, 5),
                _vec(VecFn.REQUANT, (Space.ACC, 32), (Space.SP, 40), 5, 3, 3, aux=(Space.CONST, 8)),
                _vec(VecFn.REQUANT, (Space.ACC, 32), (Space.ACC, 32), 5, 3, 4)]
    b.store(Space.SP, 0, 6)
    b.store(Space.SP, 16, 6)
    b.store(Space.ACC, 16, 6)
    b.store(Space.SP, 40, 5)
    b.store(Space.ACC, 32, 5)
    return b


def _requant_add(rng) -> _Builder:
    """The residual from the accumulator and from the scratchpad, 8- and 16-bit outputs."""
    b = _Builder()
    b.load(Space.ACC, 0, _span_rows(rng, 3, 6, -(1 << 18), 1 << 18))
    b.load(Space.ACC, 32, _span_rows(rng, 3, 6, -(1 << 12), 1 << 12))
    b.load(Space.SP, 0, _span_rows(rng, 3, 6, -128, 128))
    _configs(b, requant_m=1 << 29, requant_e=40, residual_m=3 << 28, residual_e=29)
    b.execs += [_vec(VecFn.REQUANT_ADD, (Space.ACC, 0), (Space.SP, 16), 3, 6, 3, aux=(Space.ACC, 32)),
                _vec(VecFn.REQUANT_ADD, (Space.ACC, 0), (Space.ACC, 64), 3, 6, 4, aux=(Space.SP, 0))]
    b.store(Space.SP, 16, 6)
    b.store(Space.ACC, 64, 6)
    return b


def _shiftgelu(rng) -> _Builder:
    """From the accumulator (wide values) and the scratchpad, into the accumulator."""
    b = _Builder()
    b.load(Space.ACC, 0, _span_rows(rng, 3, 6, -3000, 3000))
    b.load(Space.SP, 0, _span_rows(rng, 2, 5, -128, 128))
    _configs(b, shiftgelu_x0=-37)
    b.execs += [_vec(VecFn.SHIFTGELU, (Space.ACC, 0), (Space.ACC, 16), 3, 6),
                _vec(VecFn.SHIFTGELU, (Space.SP, 0), (Space.ACC, 32), 2, 5)]
    b.store(Space.ACC, 16, 6)
    b.store(Space.ACC, 32, 4)
    return b


def _threshold(rng) -> _Builder:
    """4-bit levels over a two-row span, and 8-bit levels over one row; ascending tables with ties, a cap."""
    b = _Builder()
    b.load(Space.ACC, 0, _span_rows(rng, 3, 6, -3000, 3000))
    span = 2
    t4 = np.sort(rng.integers(-2500, 2500, (15, 6)), axis=0)
    cap4 = rng.integers(-8, 8, 6)
    table4 = np.concatenate([cap4[None], t4]).reshape(16, 6)
    rows4 = np.zeros((16 * span, LANES), np.int64)
    for level in range(16):
        rows4[level * span:(level + 1) * span].reshape(-1)[:6] = table4[level]
    b.load(Space.CONST, 0, rows4)
    t8 = np.sort(rng.integers(-3000, 3000, (255, LANES)), axis=0)
    t8[100:110] = t8[100]  # ties
    b.load(Space.CONST, 64, np.concatenate([np.full((1, LANES), 100), t8]))
    b.execs += [_vec(VecFn.THRESHOLD, (Space.ACC, 0), (Space.SP, 0), 3, 6, 2, aux=(Space.CONST, 0)),
                _vec(VecFn.THRESHOLD, (Space.ACC, 0), (Space.ACC, 16), 6, 4, 3, aux=(Space.CONST, 64))]
    b.store(Space.SP, 0, 6)
    b.store(Space.ACC, 16, 6)
    return b


def _shiftmax(rng) -> _Builder:
    """Pre-shifted accumulator scores: 8-bit probabilities over a two-row span, 16-bit over three rows (one lane
    in the last), 4-bit over a single element, and a row whose scores span a wide range (tiny exponentials)."""
    b = _Builder()
    scores = _span_rows(rng, 3, 6, -4000, 4000)
    scores[2] = [-(1 << 30), 1 << 20, -5, 7]
    b.load(Space.ACC, 0, scores)
    b.load(Space.ACC, 16, _span_rows(rng, 2, 9, -300, 300))
    _configs(b, shiftmax_shift=2, shiftmax_x0=-23)
    b.execs += [_vec(VecFn.SHIFTMAX, (Space.ACC, 0), (Space.SP, 0), 3, 6, 3),
                _vec(VecFn.SHIFTMAX, (Space.ACC, 16), (Space.ACC, 32), 2, 9, 4),
                _vec(VecFn.SHIFTMAX, (Space.ACC, 16), (Space.SP, 16), 4, 1, 2)]
    b.store(Space.SP, 0, 6)
    b.store(Space.ACC, 32, 6)
    b.store(Space.SP, 16, 4)
    return b


def _online_softmax(rng) -> _Builder:
    """Accumulator scores: 8-bit probabilities over a two-row span (one row at the 32-bit extremes, whose max jumps
    by far more than 32 halvings so the running sum shifts out, one whose max comes last), 16-bit over three rows
    (one lane in the last) in place, 4-bit over a single element; ``(m_c, e_c) = dyadic(scale * log2(e) * 2**8)``
    as the backend sets them, for two scales."""
    b = _Builder()
    scores = _span_rows(rng, 3, 6, -4000, 4000)
    scores[2] = [-(1 << 31), (1 << 31) - 1, -5, 7]
    scores[4] = [-3000, -3000, -2990, 2000]
    b.load(Space.ACC, 0, scores)
    b.load(Space.ACC, 16, _span_rows(rng, 2, 9, -300, 300))
    b.load(Space.SP, 0, _span_rows(rng, 3, 6, -128, 128))  # destination: the tail lanes must survive
    m_c, e_c = dyadic(0.002 * math.log2(math.e) * 256)
    _configs(b, softmax_m=m_c, softmax_e=e_c)
    b.execs += [_vec(VecFn.ONLINE_SOFTMAX, (Space.ACC, 0), (Space.SP, 0), 3, 6, 3),
                _vec(VecFn.ONLINE_SOFTMAX, (Space.ACC, 16), (Space.SP, 16), 4, 1, 2)]
    m_c, e_c = dyadic(0.01 * math.log2(math.e) * 256)
    _configs(b, softmax_m=m_c, softmax_e=e_c)
    b.execs += [_vec(VecFn.ONLINE_SOFTMAX, (Space.ACC, 16), (Space.ACC, 16), 2, 9, 4)]
    b.store(Space.SP, 0, 6)
    b.store(Space.ACC, 16, 6)
    b.store(Space.SP, 16, 4)
    return b


def _ilayernorm(rng) -> _Builder:
    """Accumulator rows (wide, one constant row: zero variance) over a two-row span with its bias rows and an
    epsilon near the rows' variance, and scratchpad rows of three channels written back to the scratchpad (wrapped
    to 8 bits) with the largest epsilon the top level takes (2^var_bits(16, 24) - 1: the one bit wider sum)."""
    b = _Builder()
    x = _span_rows(rng, 3, 6, -(1 << 15), 1 << 15)
    x[2:4] = 77
    b.load(Space.ACC, 0, x)
    b.load(Space.SP, 0, _span_rows(rng, 4, 3, -128, 128))
    b.load(Space.CONST, 0, _span_rows(rng, 1, 6, -(1 << 20), 1 << 20))
    b.load(Space.CONST, 8, _span_rows(rng, 1, 3, -50, 50))
    _configs(b, layernorm_eps=3 << 30)
    b.execs += [_vec(VecFn.ILAYERNORM, (Space.ACC, 0), (Space.ACC, 16), 3, 6, aux=(Space.CONST, 0))]
    _configs(b, layernorm_eps=(1 << ilayernorm.var_bits(VEC4.max_row, 24)) - 1)
    b.execs += [_vec(VecFn.ILAYERNORM, (Space.SP, 0), (Space.SP, 16), 4, 3, aux=(Space.CONST, 8))]
    b.store(Space.ACC, 16, 6)
    b.store(Space.SP, 16, 4)
    return b


def _mul(rng) -> _Builder:
    """Products into the accumulator at 32 bits (an int8 row times an int16 table, as the rotary layer takes them;
    a pair that leaves int32 saturates) and at 16 bits from a scratchpad factor (saturating both ways); the
    destinations preloaded, so the tail lanes of a two-row span must survive."""
    b = _Builder()
    x = _span_rows(rng, 3, 6, -128, 128)
    big = _span_rows(rng, 3, 6, -(1 << 15), 1 << 15)
    x[0, :2], big[0, :2] = [1 << 30, -(1 << 30)], [8, 8]  # 2^33 and -2^33: clamped to int32
    b.load(Space.ACC, 0, x)
    b.load(Space.ACC, 16, big)
    b.load(Space.SP, 0, _span_rows(rng, 3, 6, -128, 128))
    b.load(Space.ACC, 32, _span_rows(rng, 6, 6, -7, 7))
    b.execs += [_vec(VecFn.MUL, (Space.ACC, 0), (Space.ACC, 32), 3, 6, 5, aux=(Space.ACC, 16)),
                _vec(VecFn.MUL, (Space.ACC, 16), (Space.ACC, 38), 3, 6, 4, aux=(Space.SP, 0))]
    b.store(Space.ACC, 32, 12)
    return b


CASES = {"ilayernorm": _ilayernorm, "mul": _mul, "shiftmax": _shiftmax, "copy_digit": _copy_digit, "requant": _requant,
         "requant_add": _requant_add, "shiftgelu": _shiftgelu, "threshold": _threshold,
         "online_softmax": _online_softmax}


@pytest.mark.rtl
@pytest.mark.slow
@pytest.mark.parametrize("case", sorted(CASES))
def test_vec_functions_run_bit_exact_in_verilator(case: str) -> None:
    _check(CASES[case](np.random.default_rng(len(case))))


@pytest.mark.rtl
@pytest.mark.slow
def test_vec_functions_run_bit_exact_in_icarus() -> None:
    _check(_copy_digit(np.random.default_rng(3)), "icarus")
    _check(_requant_add(np.random.default_rng(4)), "icarus")


def _topk(rng) -> _Builder:
    """MoE routers: 6 logits over two space rows (ties, an all-equal row, all negative) choosing 2; 9 over three
    choosing 3, indices into the scratchpad; 4 scratchpad logits in place choosing 1; 5 choosing all 5 with the
    logits in place; 11 at the 32-bit extremes choosing the top level's most (8, two output rows); single-logit rows
    into the scratchpad. Every destination is preloaded, so a lane past ``k`` must survive."""
    b = _Builder()
    acc = rng.integers(-1000, 1000, (84, LANES))
    acc[0:8] = rng.integers(-3, 3, (8, LANES))  # n = 6: many ties
    acc[2:4] = 5  # an all-equal row (lanes past n too)
    acc[4:6] = rng.integers(-900, -800, (2, LANES))  # all negative
    acc[8:17] = rng.integers(-20, 20, (9, LANES))
    acc[28:37] = rng.choice([-(1 << 31), (1 << 31) - 1, -1, 0, 7], (9, LANES))
    b.load(Space.ACC, 0, acc)
    sp = rng.integers(-128, 128, (48, LANES))
    sp[0:3] = rng.integers(-4, 4, (3, LANES))
    b.load(Space.SP, 0, sp)
    _configs(b, topk_k=2)
    b.execs += [_vec(VecFn.TOPK, (Space.ACC, 0), (Space.ACC, 48), 4, 6, aux=(Space.ACC, 52))]
    _configs(b, topk_k=3)
    b.execs += [_vec(VecFn.TOPK, (Space.ACC, 8), (Space.SP, 16), 3, 9, aux=(Space.ACC, 56))]
    _configs(b, topk_k=1)
    b.execs += [_vec(VecFn.TOPK, (Space.SP, 0), (Space.SP, 0), 3, 4, aux=(Space.SP, 8)),
                _vec(VecFn.TOPK, (Space.ACC, 40), (Space.SP, 40), 2, 1, aux=(Space.SP, 44))]
    _configs(b, topk_k=5)
    b.execs += [_vec(VecFn.TOPK, (Space.ACC, 20), (Space.ACC, 60), 3, 5, aux=(Space.ACC, 20))]
    _configs(b, topk_k=8)
    b.execs += [_vec(VecFn.TOPK, (Space.ACC, 28), (Space.ACC, 66), 3, 11, aux=(Space.ACC, 72))]
    b.store(Space.ACC, 0, 84)
    b.store(Space.SP, 0, 48)
    return b


@pytest.mark.rtl
@pytest.mark.slow
def test_topk_runs_bit_exact_in_verilator() -> None:
    """The whole DRAM image after ``done`` equals the machine model's (compiler.simulate.intkernels.topk, the
    compiler's router order) for :func:`_topk`'s routers, and the model's result is the router's."""
    from compiler.numerics.router import route

    b = _topk(np.random.default_rng(17))
    _check(b)
    acc = np.frombuffer(bytes(b.image[:84 * 16]), "<i4").reshape(-1, 8)[:4, :6]  # case one's element rows
    dram = bytearray(b.image)
    run_program(b.program(), Machine(_geometry(VEC4), dram))
    got = np.frombuffer(bytes(dram[b.stores[0].dram:b.stores[0].dram + 84 * 16]), "<i4").reshape(84, LANES)
    np.testing.assert_array_equal(got[48:52, :2], route(acc.astype(np.float64), 2).experts)


@pytest.mark.rtl
@pytest.mark.slow
def test_topk_runs_bit_exact_in_icarus() -> None:
    b = _Builder()
    b.load(Space.ACC, 0, np.array([[3, -1, 3, 9], [9, 2, 0, 0], [-4, -4, -4, -4], [-4, -4, 0, 0]]))
    b.load(Space.ACC, 8, np.full((4, LANES), 77))
    _configs(b, topk_k=3)
    b.execs += [_vec(VecFn.TOPK, (Space.ACC, 0), (Space.ACC, 8), 2, 6, aux=(Space.ACC, 10))]
    b.store(Space.ACC, 8, 4)
    _check(b, "icarus")


@pytest.mark.rtl
@pytest.mark.slow
@pytest.mark.parametrize(("k", "n", "aux"), [(0, 4, Space.ACC), (5, 4, Space.ACC), (9, 12, Space.ACC),
                                             (2, 4, Space.CONST)])
def test_topk_out_of_range_raises_fault(k: int, n: int, aux: Space) -> None:
    """``topk_k`` outside ``[1, min(n, 8)]`` (0: never set) is data: refused when it runs; the constant memory as
    its logits' destination is refused statically too."""
    vec = _vec(VecFn.TOPK, (Space.ACC, 0), (Space.ACC, 8), 1, n, aux=(aux, 16))
    if aux == Space.CONST:
        assert rtl_lacks(vec, VEC4) == "VEC topk reading or writing the constant memory as data"
    else:
        assert rtl_lacks(vec, VEC4) is None
    program = Program((*([Config(reg=ConfigReg.TOPK_K, value=k)] if k else []), vec, Halt()), 64)
    with pytest.raises(RuntimeError, match="fault"):
        run_system(VEC4, to_bytes(program), bytes(64), {}, "verilator")


@pytest.mark.rtl
@pytest.mark.slow
def test_each_topk_takes_the_cycles_the_model_prices() -> None:
    """hw.perf.vec_queue.topk_cycles is what a second copy of a ``VEC topk`` adds to a program on the top level,
    for rows of one to four space rows and one or two output rows."""
    from hw.perf import vec_queue

    for rows, n, k in ((4, 6, 2), (3, 9, 5), (2, 1, 1), (4, 16, 8), (5, 4, 4)):
        runs = []
        for copies in (1, 2):
            b = _Builder()
            b.load(Space.ACC, 0, np.random.default_rng(n).integers(-50, 50, (32, LANES)))
            _configs(b, topk_k=k)
            b.execs += [_vec(VecFn.TOPK, (Space.ACC, 0), (Space.ACC, 64), rows, n, aux=(Space.ACC, 96))] * copies
            b.store(Space.ACC, 64, 1)
            runs.append(run_system(VEC4, to_bytes(b.program()), bytes(b.image), {"dram": (0, 16)},
                                   "verilator").cycles)
        assert runs[1] - runs[0] == vec_queue.topk_cycles(rows, n, k, LANES), (rows, n, k)


@pytest.mark.rtl
@pytest.mark.slow
@pytest.mark.parametrize(("reg", "value"), [("softmax_e", 63), ("softmax_m", (1 << 31) + 1)])
def test_online_softmax_registers_outside_the_kernel_range_raise_fault(reg: str, value: int) -> None:
    """``(m_c, e_c)`` must fit the kernel's ports (``[0, 2**31]``, ``[1, 62]``): data, so refused only when it runs;
    32-bit outputs are refused statically too. Rows of any length up to 4,096 are built (no row buffer)."""
    vec = _vec(VecFn.ONLINE_SOFTMAX, (Space.ACC, 0), (Space.SP, 0), 1, 4)
    assert rtl_lacks(vec, VEC4) is None
    assert rtl_lacks(dataclasses.replace(vec, n=4096), VEC4) is None
    assert rtl_lacks(dataclasses.replace(vec, out_log2=5), VEC4) == "VEC online_softmax to 32 bits (at most 16)"
    regs = {"softmax_m": 1 << 30, "softmax_e": 30, reg: value}
    configs = tuple(Config(reg=ConfigReg[name.upper()], value=v) for name, v in regs.items())
    with pytest.raises(RuntimeError, match="does not build yet"):
        run_system(VEC4, to_bytes(Program((*configs, vec, Halt()), 64)), bytes(64), {}, "verilator")


@pytest.mark.rtl
@pytest.mark.slow
@pytest.mark.parametrize("eps", [-1, 1 << 56])
def test_ilayernorm_epsilon_outside_the_kernel_range_raises_fault(eps: int) -> None:
    """``layernorm_eps`` must fit the kernel's ``eps`` port (``[0, 2**var_bits(max_row, 24))``, 2^52 on VEC4): data,
    so refused only when it runs."""
    vec = _vec(VecFn.ILAYERNORM, (Space.ACC, 0), (Space.ACC, 8), 1, 4, aux=(Space.CONST, 0))
    assert rtl_lacks(vec, VEC4) is None and ilayernorm.var_bits(VEC4.max_row, 24) == 52
    program = Program((Config(reg=ConfigReg.LAYERNORM_EPS, value=eps), vec, Halt()), 64)
    with pytest.raises(RuntimeError, match="fault"):
        run_system(VEC4, to_bytes(program), bytes(64), {}, "verilator")


def _repeated(kind: str, copies: int) -> _Builder:
    """``copies`` of one VEC (tests/test_vec_queue.py's MEASURED ``kind``) behind the same loads and configs."""
    rng = np.random.default_rng(0)
    b = _Builder()
    b.load(Space.ACC, 0, rng.integers(-1000, 1000, (32, LANES)))
    b.load(Space.CONST, 0, np.concatenate([rng.integers(1 << 20, 1 << 22, (2, LANES)), np.full((2, LANES), 20)]))
    _configs(b, requant_m=1 << 21, requant_e=20, shiftgelu_x0=-200, layernorm_eps=1 << 40)
    vec = {"requant_lane": _vec(VecFn.REQUANT, (Space.ACC, 0), (Space.ACC, 64), 16, 8, 5, (Space.CONST, 0)),
           "requant_stream": _vec(VecFn.REQUANT, (Space.ACC, 0), (Space.ACC, 64), 16, 8, 5),
           "copy": _vec(VecFn.COPY, (Space.ACC, 0), (Space.ACC, 64), 16, 8, 5),
           "mul": _vec(VecFn.MUL, (Space.ACC, 0), (Space.ACC, 64), 16, 8, 5, (Space.ACC, 0)),
           "shiftgelu": _vec(VecFn.SHIFTGELU, (Space.ACC, 0), (Space.ACC, 64), 16, 8, 5),
           "ilayernorm": _vec(VecFn.ILAYERNORM, (Space.ACC, 0), (Space.ACC, 64), 4, 16, 5, (Space.CONST, 0)),
           "shiftmax": _vec(VecFn.SHIFTMAX, (Space.ACC, 0), (Space.ACC, 64), 4, 16, 3)}[kind]
    b.execs += [vec] * copies
    b.store(Space.ACC, 64, 1)
    return b


@pytest.mark.rtl
@pytest.mark.slow
def test_each_vec_takes_the_cycles_the_model_prices() -> None:
    """hw.perf.vec_queue's cycles of each VEC (tests/test_vec_queue.py's MEASURED) are what a second copy of the
    instruction adds to a program on the top level."""
    from test_vec_queue import MEASURED, formulas

    got = {}
    for kind in MEASURED:
        runs = []
        for copies in (1, 2):
            program = _repeated(kind, copies)
            runs.append(run_system(VEC4, to_bytes(program.program()), bytes(program.image), {"dram": (0, 16)},
                                   "verilator").cycles)
        got[kind] = runs[1] - runs[0]
    assert got == MEASURED == formulas()


def _vector_layers(kind: str, rows: int, layers: int) -> tuple[Program, bytes]:
    """``layers`` back-to-back backend vector layers (compiler/backend/tiles.py) of ``rows`` x 8 int32 values on
    VEC4: a per-channel requant to int8, or a residual add with per-tensor multipliers."""
    from compiler.backend.gemm import ProgramBuilder
    from compiler.backend.tiles import Slot, VecStep, View, vector_layer

    b = ProgramBuilder(_geometry(VEC4))
    rng = np.random.default_rng(0)
    for i in range(layers):
        src, other = (b.image.place(f"{name}{i}", (rows, 8), 4) for name in ("x", "z"))
        for region in (src, other):
            b.image.write(region.name, rng.integers(-1000, 1000, (rows, 8)))
        out = View.of(b.image.place(f"y{i}", (rows, 8), 1))
        if kind == "requant":
            table = np.concatenate([np.full((2, LANES), 1 << 21), np.full((2, LANES), 20)])
            vector_layer(b, f"l{i}", rows, [Slot(Space.ACC, 8), Slot(Space.SP, 8)], [(View.of(src), 0)],
                         [VecStep(VecFn.REQUANT, 0, 1, 8, const_row=0)], [(1, out)], table)
        else:
            configs = [(ConfigReg.REQUANT_M, 1 << 20), (ConfigReg.REQUANT_E, 20), (ConfigReg.RESIDUAL_M, 1 << 20),
                       (ConfigReg.RESIDUAL_E, 20)]
            vector_layer(b, f"l{i}", rows, [Slot(Space.ACC, 8)] * 3, [(View.of(src), 0), (View.of(other), 1)],
                         [VecStep(VecFn.REQUANT_ADD, 0, 2, 8, aux=1)], [(2, out)], None, configs)
        b.end_layer(f"l{i}")
    return b.finish(), bytes(b.image.buffer())


@pytest.mark.rtl
@pytest.mark.slow
@pytest.mark.parametrize(("kind", "rows"), [("requant", 16), ("requant", 32), ("add", 4), ("add", 32)])
def test_a_vector_layer_takes_about_the_cycles_the_model_prices(kind: str, rows: int) -> None:
    """A backend vector layer (what a second one adds to a program) against hw.perf.vec_queue.layer_cycles: its
    row blocks through the three queues, each VEC, DMA row and transfer as priced; what the model leaves out (the
    queues' token hand-overs, the barrier) and what it counts twice (the add's two loads of a block, priced with
    a transfer's cycles each, measured 9-13 cycles a layer less) is under 25 cycles a layer (docs/RTL.md)."""
    from hw.perf import vec_queue

    runs = [run_system(VEC4, to_bytes(program), image, {"dram": (0, 16)}, "verilator").cycles
            for program, image in (_vector_layers(kind, rows, n) for n in (1, 2))]
    mach = vec_queue.Machine(lanes=LANES, width=LANES, acc_rows=VEC4.acc_rows, sp_rows=VEC4.sp_rows)
    model = vec_queue.layer_cycles(kind, rows, 8, 32, 8, mach)
    assert model is not None and abs(runs[1] - runs[0] - model) < 25


@pytest.mark.rtl
@pytest.mark.slow
@pytest.mark.parametrize("fn", [VecFn.SHIFTMAX, VecFn.ILAYERNORM])
def test_a_row_longer_than_the_built_row_raises_fault(fn: VecFn) -> None:
    """VEC4's row kernels are built for 16-element rows: a 17-element row is refused statically and in the RTL."""
    vec = _vec(fn, (Space.ACC, 0), (Space.SP, 0), 1, VEC4.max_row + 1, aux=(Space.CONST, 0))
    assert rtl_lacks(vec, VEC4) == f"VEC {fn.name.lower()} of 17-element rows (the top level is built for at most 16)"
    assert rtl_lacks(dataclasses.replace(vec, n=VEC4.max_row), VEC4) is None
    with pytest.raises(RuntimeError, match="does not build yet"):
        run_system(VEC4, to_bytes(Program((vec, Halt()), 64)), bytes(64), {}, "verilator")


# --- a whole compiled model --------------------------------------------------------------------------------------


# bert_tiny 8x8 as tests/test_cli_rtl_system.py's whole-model test builds it, so the two share one Verilator build.
BERT_8X8 = ["--quant", "int8", "--softmax", "shiftmax", "--gelu", "shiftgelu", "--layernorm", "ilayernorm", "--set",
            "gemm.rows=8", "--set", "gemm.cols=8", "--set", "buffers.act_kb=16", "--set", "buffers.weight_kb=16",
            "--set", "buffers.out_kb=16"]


@pytest.mark.rtl
@pytest.mark.slow
@pytest.mark.timeout(3600)
def test_a_whole_compiled_model_runs_bit_exact_on_the_top_level(tmp_path) -> None:
    """bert_tiny (int8; shiftmax, shiftgelu, ilayernorm) on an 8x8 array as ONE program, designed as `codesign rtl
    --system` designs it (codesign/rtl_system.py): every device value in DRAM after ``done``, intermediates included,
    equals the functional simulator's on the synthetic sample, and the whole image equals the machine model's."""
    import time

    from conftest import model_path

    from codesign.cli import build_parser
    from codesign.rtl_system import build_design, first_feeds, host_values, sample_image

    args = build_parser().parse_args(["rtl", str(model_path("bert_tiny.onnx")), *BERT_8X8, "--out",
                                      str(tmp_path / "sys"), "--system"])
    design = build_design(args)
    mp, config = design.mp, design.config
    program = mp.program
    assert program is not None and design.lacks == []
    assert config.max_row == 128  # the longest ilayernorm row (bert_tiny's hidden size), not 4,096
    values = host_values(design, first_feeds(design)[0])
    image = sample_image(design, values)
    dram = bytearray(image)
    run_program(program, Machine(design.geometry, dram))
    start = time.perf_counter()
    run = run_system(config, to_bytes(program), image, {"dram": (0, len(image))}, "verilator")
    wall = time.perf_counter() - start
    print(f"\nbert_tiny 8x8 whole program: {len(program.instructions)} instructions, {run.cycles} cycles, "
          f"build {run.build_s:.1f} s, run {run.run_s:.1f} s, wall {wall:.1f} s")
    got = run.reads["dram"]
    buffer = mp.builder.image.buffer()
    pristine = bytes(buffer)
    buffer[:] = got
    try:
        for value, region in mp.regions.items():
            if value not in mp.inputs:
                np.testing.assert_array_equal(mp.builder.image.read(region.name).reshape(np.shape(values[value])),
                                              values[value], err_msg=region.name)
    finally:
        buffer[:] = pristine
    assert got == bytes(dram)


@pytest.mark.rtl
@pytest.mark.slow
def test_a_short_norm_takes_the_longest_rows_newton_steps() -> None:
    """I-LayerNorm's dividers are sized for the top level's ``max_row`` (the program's longest row), so a per-head
    norm of 16 values on a top level built for 64 takes the 64-value kernel's Newton steps
    (``hw.perf.vec_queue.ilayernorm_cycles``'s ``max_row``; Persimmon's query and key norms were priced 2.9% under
    Verilator without it)."""
    from hw.perf import vec_queue

    wide = dataclasses.replace(VEC4, max_row=64)
    runs = []
    for copies in (1, 2):
        program = _repeated("ilayernorm", copies)
        runs.append(run_system(wide, to_bytes(program.program()), bytes(program.image), {"dram": (0, 16)},
                               "verilator").cycles)
    assert runs[1] - runs[0] == vec_queue.ilayernorm_cycles(4, 16, LANES, 64) > vec_queue.ilayernorm_cycles(4, 16,
                                                                                                             LANES)
