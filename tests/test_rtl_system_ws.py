"""Weight-stationary ``GEMM`` (``dataflow`` 1) on the cds1 system top level, bit-exact against the machine model.

A hand-built program on a 4x4 array built with ``ws_array`` runs ws folds of ragged shapes (``k < rows``,
``n < cols``, ``m`` longer than the array), chains them with ``accumulate`` (a ``k`` longer than the array as two
folds whose partial sums add in the accumulator), adds a bias, and mixes in an output-stationary fold, on Verilator;
the whole DRAM image afterwards must equal ``compiler/backend/machine.py``'s, and each ws ``GEMM`` must take its
kernel's ``predicted_cycles`` plus the issue cycles (``hw.perf.execute_queue_ws``), read off the trace marks. The
backend's ws GEMM layers (``compiler/backend/gemm.py`` with ``Geometry.dataflow == "ws"``) run there too.
"""

from __future__ import annotations

import numpy as np
import pytest

from compiler.backend import GemmLayer, Geometry, Machine, ProgramBuilder, run_program
from hw.errors import InputError
from hw.isa import Deps, Gemm, Halt, Load, Nop, Program, Queue, Space, Store, to_bytes
from hw.perf.execute_queue_ws import ws_gemm_cycles
from hw.rtl.system import SystemConfig, run_system
from hw.rtl.system.support import rtl_lacks

WS4 = SystemConfig(4, 4, sp_rows=512, acc_rows=64, const_rows=64, max_row=16, ws_array=True)


def _geometry(config: SystemConfig, dataflow: str = "os") -> Geometry:
    return Geometry(config.rows, config.cols, config.in_bits, config.acc_bits, config.sp_rows, config.acc_rows,
                    config.const_rows, dataflow=dataflow)


def _hand_program(rng) -> tuple[Program, bytes, list[Gemm]]:
    """Loads A (two k-chunks) and B, a bias row; ws folds with accumulate and bias, an os fold, a tiny ws fold;
    stores; each GEMM followed by a trace mark (its cycles are the difference of consecutive marks)."""
    m, k0, k1, n = 11, 4, 3, 3
    a0, a1 = rng.integers(-128, 128, (m, k0)), rng.integers(-128, 128, (m, k1))
    b0, b1 = rng.integers(-128, 128, (k0, n)), rng.integers(-128, 128, (k1, 4))
    bias = rng.integers(-(1 << 20), 1 << 20, 4)
    image = bytearray(4096)
    addr = {"a0": 0, "a1": 64, "b0": 128, "b1": 160, "bias": 192, "y": 1024, "z": 2048, "o": 3072}
    image[0:a0.size] = a0.astype(np.int8).tobytes()
    image[64:64 + a1.size] = a1.astype(np.int8).tobytes()
    image[128:128 + b0.size] = b0.astype(np.int8).tobytes()
    image[160:160 + b1.size] = b1.astype(np.int8).tobytes()
    image[192:208] = bias.astype(np.int32).tobytes()
    loaded = Deps(push_next=True)
    loads = [Load(space=Space.CONST, row=0, rows=1, cols=4, elem_log2=2, dram=addr["bias"], stride=16),
             Load(space=Space.SP, row=0, rows=m, cols=k0, elem_log2=0, dram=addr["a0"], stride=k0),
             Load(space=Space.SP, row=16, rows=m, cols=k1, elem_log2=0, dram=addr["a1"], stride=k1),
             Load(space=Space.SP, row=32, rows=k0, cols=n, elem_log2=0, dram=addr["b0"], stride=n),
             Load(space=Space.SP, row=40, rows=k1, cols=4, elem_log2=0, dram=addr["b1"], stride=4, deps=loaded)]
    gemms = [Gemm(dataflow=1, accumulate=0, a_row=0, b_row=32, c_row=0, m=m, n=n, k=k0, bias=1, bias_row=0,
                  deps=Deps(pop_prev=True)),
             Gemm(dataflow=1, accumulate=1, a_row=16, b_row=40, c_row=0, m=m, n=n, k=k1, bias=0, bias_row=0),
             Gemm(dataflow=0, accumulate=0, a_row=0, b_row=40, c_row=16, m=3, n=4, k=3, bias=1, bias_row=0),
             Gemm(dataflow=1, accumulate=1, a_row=20, b_row=42, c_row=16, m=2, n=4, k=1, bias=0, bias_row=0),
             Gemm(dataflow=1, accumulate=0, a_row=3, b_row=33, c_row=24, m=1, n=1, k=2, bias=1, bias_row=0)]
    execs: list = []
    for index, gemm in enumerate(gemms):
        execs += [gemm, Nop(queue=Queue.EXECUTE, trace=1, mark=index,
                            deps=Deps(push_next=index == len(gemms) - 1))]
    stores = [Store(space=Space.ACC, row=0, rows=m, cols=n, elem_log2=2, dram=addr["y"], stride=4 * n,
                    deps=Deps(pop_prev=True)),
              Store(space=Space.ACC, row=16, rows=3, cols=4, elem_log2=2, dram=addr["z"], stride=16),
              Store(space=Space.ACC, row=24, rows=1, cols=1, elem_log2=2, dram=addr["o"], stride=4)]
    return Program((*loads, *execs, *stores, Halt()), len(image)), bytes(image), gemms


def _expected(geometry: Geometry, program: Program, image: bytes) -> bytes:
    dram = bytearray(image)
    run_program(program, Machine(geometry, dram))
    return bytes(dram)


def test_the_hand_program_means_something() -> None:
    """The machine model's result is the product it should be (so the RTL comparison cannot pass vacuously)."""
    program, image, _ = _hand_program(np.random.default_rng(3))
    out = _expected(_geometry(WS4), program, image)
    a = np.concatenate([np.frombuffer(image, np.int8, 44, 0).reshape(11, 4),
                        np.frombuffer(image, np.int8, 33, 64).reshape(11, 3)], axis=1).astype(np.int64)
    b = np.concatenate([np.frombuffer(image, np.int8, 12, 128).reshape(4, 3),
                        np.frombuffer(image, np.int8, 12, 160).reshape(3, 4)[:, :3]]).astype(np.int64)
    bias = np.frombuffer(image, np.int32, 4, 192).astype(np.int64)
    y = np.frombuffer(out, np.int32, 33, 1024).reshape(11, 3)
    assert (y == a @ b + bias[:3]).all()


def test_ws_folds_are_refused_without_the_ws_array_or_when_too_big() -> None:
    gemm = Gemm(dataflow=1, accumulate=0, a_row=0, b_row=0, c_row=0, m=100, n=4, k=4, bias=0, bias_row=0)
    assert rtl_lacks(gemm, WS4) is None
    assert "without ws_array" in str(rtl_lacks(gemm, SystemConfig(4, 4)))
    assert "k=5 x n=4" in str(rtl_lacks(Gemm(dataflow=1, accumulate=0, a_row=0, b_row=0, c_row=0, m=1, n=4, k=5,
                                             bias=0, bias_row=0), WS4))
    with pytest.raises(InputError, match=r"^system RTL: ws_array=1 must be true or false$"):
        SystemConfig(4, 4, ws_array=1).check()  # type: ignore[arg-type]


@pytest.mark.rtl
@pytest.mark.slow
def test_ws_gemms_run_bit_exact_and_in_their_cycles() -> None:
    program, image, gemms = _hand_program(np.random.default_rng(3))
    want = _expected(_geometry(WS4), program, image)
    run = run_system(WS4, to_bytes(program), image, {"dram": (0, len(image))}, "verilator", run_name="ws_hand",
                     trace=len(gemms))
    assert run.reads["dram"] == want
    # A GEMM's cycles: from the previous mark (the NOP's completion) to its own mark, less the mark NOP itself.
    for gemm, before, after in zip(gemms[1:], run.trace[:-1], run.trace[1:]):
        if gemm.dataflow == 1:
            assert after - before == ws_gemm_cycles(gemm.m, WS4.rows, WS4.cols) + 2, gemm


@pytest.mark.rtl
@pytest.mark.slow
def test_backend_ws_layers_run_bit_exact() -> None:
    """The backend's ws GEMM layers (ragged, k over several folds so the accumulator adds, every output kind)."""
    rng = np.random.default_rng(11)
    builder = ProgramBuilder(_geometry(WS4, "ws"))
    specs = [("plain", 9, 10, 7, None), ("tensor", 6, 5, 9, (np.array([1 << 29]), np.array([38]), 8)),
             ("channel", 13, 12, 6, (rng.integers(1 << 28, 1 << 31, 6), rng.integers(34, 40, 6), 8))]
    for name, m, k, n, rq in specs:
        layer = GemmLayer(name, m, rng.integers(-128, 128, (k, n)), rng.integers(-20000, 20000, n), rq)
        x, _ = builder.gemm(layer)
        builder.image.write(x.name, rng.integers(-128, 128, x.shape))
    program = builder.finish()
    assert any(isinstance(i, Gemm) and i.dataflow == 1 and i.accumulate for i in program.instructions)
    image = bytes(builder.image.buffer())
    run = run_system(WS4, to_bytes(program), image, {"dram": (0, len(image))}, "verilator", run_name="ws_backend")
    assert run.reads["dram"] == _expected(builder.geometry, program, image)

