"""Gated FFNs in integers: GeGLU's ``gelu(x W) * (x V)`` (Gemma, T5 v1.1 / mT5 / UMT5) and SwiGLU's
``silu(x W) * (x V)`` with ``silu(x) = x * sigmoid(x)`` (the LLaMA family).

The quantize pass turns a product of two activations into an integer one (compiler/quant_rewrite.py, ``product``):
integer operands at 16 bits, a float gate (sigmoid, tanh, hard sigmoid) beside an integer operand at 8 bits, their
exact product, one dyadic requant to a 16-bit step. The system backend runs it as one vector layer, ``VEC mul`` then
``VEC requant`` (compiler/backend/model.py, ``_product``), and a quantized sigmoid as a monotone island of threshold
layers; the execute-queue model prices the product layer (``hw.perf.vec_queue.layer_cycles("product", ...)``).
Before, both products stayed float ops between integer ops and the system backend refused every such model.

The fuse pass once let GeGLU's product join the gate GEMM's epilogue although its other operand, ``x V``, is computed
after that GEMM: the scheduler then ran the down projection before the up projection it reads. Every op now starts
no earlier than the ops whose results it reads (checked over whole models below).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from xdsl.dialects.builtin import IntegerAttr, StringAttr
from xdsl.ir import Operation

from codesign.api import compile
from compiler.dialect import dataflow as df
from compiler.schedule.lower import FUSED_ATTR
from examples import zoo
from tests.test_backend import _check_model

S, D, F_DIM = 8, 32, 64


class _GatedFfn(torch.nn.Module):
    """A pre-norm GeGLU block: ``x + down(gelu(gate(n)) * up(n))`` with ``n = norm(x)``."""

    def __init__(self) -> None:
        super().__init__()
        self.norm = torch.nn.LayerNorm(D)
        self.gate, self.up, self.down = torch.nn.Linear(D, F_DIM), torch.nn.Linear(D, F_DIM), torch.nn.Linear(F_DIM, D)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        n = self.norm(x)
        return x + self.down(F.gelu(self.gate(n), approximate="tanh") * self.up(n))


def _export(path: Path) -> str:
    torch.manual_seed(0)
    torch.onnx.export(_GatedFfn().eval(), (torch.randn(1, S, D),), str(path), dynamo=False, input_names=["x"])
    return str(path)


def _products(module: Operation) -> list[df.ElementwiseOp]:
    return [op for op in module.walk() if isinstance(op, df.ElementwiseOp) and op.kind_value() == "mul"]


def test_the_product_of_two_integer_activations_is_integer_and_within_a_step_of_the_float_one(tmp_path: Path) -> None:
    from compiler.simulate import Simulator

    model = _export(tmp_path / "geglu.onnx")
    result = compile(model, quant="int8", softmax="shiftmax", gelu="shiftgelu", layernorm="ilayernorm")
    (mul,) = _products(result.module)
    assert df.int_bits(mul.results[0]) == 16 and [df.int_bits(v) for v in mul.operands] == [16, 16]
    seen: dict[object, object] = {}

    def observe(op: Operation, outs: list) -> None:
        for value, tensor in zip(op.results, outs):
            seen[value] = tensor

    sim = Simulator(result.module, result.env.weights, result.imported.input_names, result.imported.output_names)
    sim.run({"x": np.random.default_rng(3).standard_normal((1, S, D)).astype(np.float32)}, observe)
    a, b, y = (seen[v] for v in (*mul.operands, mul.results[0]))
    exact = a.real() * b.real()  # type: ignore[attr-defined]
    step = float(y.step())  # type: ignore[attr-defined]
    assert np.abs(y.real() - exact).max() <= 0.5 * step * (1 + 1e-6)  # type: ignore[attr-defined]
    assert np.abs(exact).max() > 100 * step  # not a product that rounds to nothing


class _ExpGated(torch.nn.Module):
    """``x + down(gate(x) * exp(up(x)))``: an unbounded float factor, not a gate."""

    def __init__(self) -> None:
        super().__init__()
        self.gate, self.up, self.down = torch.nn.Linear(D, F_DIM), torch.nn.Linear(D, F_DIM), torch.nn.Linear(F_DIM, D)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.down(self.gate(x) * torch.exp(self.up(x)))


def test_swiglu_is_integer_and_only_a_bounded_float_gate_joins_a_product(tmp_path: Path) -> None:
    """LLaMA's ``x * sigmoid(x)`` takes the sigmoid at 8 bits and ``silu * up`` two 16-bit integers, and the model
    runs whole on the machine model; a product with an unbounded float factor (``exp``) stays float."""
    path = tmp_path / "llama.onnx"
    zoo.export("llama", zoo.variants("llama")[0], path)
    result = compile(str(path), quant="int8", softmax="shiftmax", gelu="shiftgelu", layernorm="ilayernorm")
    widths = sorted(tuple(df.int_bits(v) for v in op.operands) for op in _products(result.module))
    assert widths == [(16, 8)] * 2 + [(16, 16)] * 2  # two blocks: silu's x * sigmoid(x), then silu * up
    _check_model(str(path), 8, 8, orders=("loads_first",))
    _schedule_is_causal(result.module)
    other = tmp_path / "exp.onnx"
    torch.manual_seed(0)
    torch.onnx.export(_ExpGated().eval(), (torch.randn(1, S, D),), str(other), dynamo=False, input_names=["x"])
    result = compile(str(other), quant="int8", softmax="shiftmax", gelu="shiftgelu", layernorm="ilayernorm")
    assert [df.int_bits(op.results[0]) for op in _products(result.module)] == [None]


def test_a_geglu_block_runs_bit_exact_and_the_model_prices_its_product_layer(tmp_path: Path) -> None:
    from compiler.backend import Geometry
    from hw.models import build_model
    from hw.perf import vec_queue as vq
    from hw.perf.workload import VectorWork

    model = _export(tmp_path / "geglu.onnx")
    _check_model(model, 8, 8, orders=("loads_first",))
    _check_model(model, 4, 16, orders=("loads_first",))
    result = compile(model, target="fpga-u280", quant="int8", softmax="shiftmax", gelu="shiftgelu",
                     layernorm="ilayernorm", overrides={"gemm.rows": 8, "gemm.cols": 8, "gemm.partitions": 1,
                                                        "gemm.fold_overlap": "false", "gemm.execute_queue": "true"})
    geo = Geometry.from_target(result.env.target)
    mach = vq.Machine(lanes=geo.cols, width=geo.width, acc_rows=geo.acc_rows, sp_rows=geo.sp_rows)
    work = VectorWork(kind="mul", elements=S * F_DIM, rows=S, approx="exact", bits=16, row_length=F_DIM,
                      in_bits=16, out_bits=16, quant="mul")
    assert result.env.target is not None
    cost = build_model(result.env.target).cost(work)
    product, add = (vq.layer_cycles(kind, S, F_DIM, 16, 16, mach) for kind in ("product", "add"))
    assert cost.detail["vector_layer"] == "product"
    assert product is not None and add is not None and cost.compute_cycles == product > add


def _schedule_is_causal(module: Operation) -> None:
    """Every op's task starts no earlier, and ends no earlier, than the task of each op whose result it reads (a
    fused op's task is its GEMM's: ``fused_into``)."""
    times: dict[str, tuple[int, int]] = {}
    for op in module.walk():
        start, end = op.attributes.get("start"), op.attributes.get("end")
        if isinstance(start, IntegerAttr) and isinstance(end, IntegerAttr):
            times[df.layer_of(op)] = (start.value.data, end.value.data)

    def task(op: Operation) -> str | None:
        fused = op.attributes.get(FUSED_ATTR)
        name = fused.data if isinstance(fused, StringAttr) else df.layer_of(op) if "layer" in op.properties else None
        return name if name in times else None

    checked = 0
    for op in module.walk():
        mine = task(op)
        for v in op.operands:
            theirs = task(v.owner) if isinstance(v.owner, Operation) else None
            if mine is None or theirs is None or theirs == mine:
                continue
            assert times[mine][0] >= times[theirs][0] and times[mine][1] >= times[theirs][1], (mine, theirs)
            checked += 1
    assert checked


@pytest.mark.parametrize("name", ["gemma", "mt5", "phi3"])
def test_gated_zoo_models_run_bit_exact_and_their_schedules_are_causal(tmp_path: Path, name: str) -> None:
    """GeGLU (Gemma, mT5) and Phi-3's SwiGLU, whose gate and up halves are slices of one fused projection (a slice of
    an integer keeps its scale, as a reshape does)."""
    path = tmp_path / f"{name}.onnx"
    zoo.export(name, zoo.variants(name)[0], path)
    _check_model(str(path), 8, 8, orders=("loads_first",))
    result = compile(str(path), quant="int8", softmax="shiftmax", gelu="shiftgelu", layernorm="ilayernorm")
    assert all(df.int_bits(op.results[0]) == 16 for op in _products(result.module) if "mlp" in df.layer_of(op)
               or "DenseReluDense" in df.layer_of(op))
    _schedule_is_causal(result.module)


@pytest.mark.rtl
@pytest.mark.slow
@pytest.mark.timeout(1800)
def test_gemma_runs_on_the_top_level_and_the_model_prices_its_gated_ffn(tmp_path: Path, capsys) -> None:
    """`codesign rtl --system --simulate` on Verilator with Gemma (rotary, grouped K/V, RMSNorm, GeGLU): the device's
    outputs equal the simulator's, the whole program within 1% of the RTL's cycles and each gated FFN before its down
    projection (the gate and up groups: GEMMs, ShiftGELU, requants, the product) within 2% (measured 2026-12-05:
    243,303 RTL cycles against the model's 242,478, -0.3%; each block's gate and up groups 30,174 against 30,157)."""
    from tests.top_level import zoo_on_top_level

    r = zoo_on_top_level("gemma", tmp_path, capsys)
    assert abs(r["device_latency_cycles"] - r["rtl_cycles"]) <= 0.01 * r["rtl_cycles"]
    products = [layer for layer in r["layers"] if layer["name"].endswith("mlp.Mul")]
    assert len(products) == 2 and all(layer["op"] == "dataflow.elementwise" for layer in products)
    for block in (0, 1):
        ffn = [layer for layer in r["layers"] if f"layers.{block}.mlp." in layer["name"] and "down_proj" not in
               layer["name"]]
        rtl, model = sum(x["rtl_cycles"] for x in ffn), sum(x["latency_cycles"] or 0 for x in ffn)
        assert abs(model - rtl) <= 0.02 * rtl, (block, model, rtl)


@pytest.mark.rtl
@pytest.mark.slow
@pytest.mark.timeout(1800)
def test_llama_runs_on_the_top_level_and_the_model_prices_its_swiglu(tmp_path: Path, capsys) -> None:
    """LLaMA (rotary, grouped K/V, RMSNorm, SwiGLU) through `codesign rtl --system --simulate` on Verilator: the
    device's outputs equal the simulator's, the whole program within 1% of the RTL's cycles, each SwiGLU before its
    down projection within 2% (measured 2026-12-05: 405,395 RTL cycles against 404,204, -0.3%; each block's gate
    and up groups 108,661 against 108,452, of which the sigmoid's threshold layers 79,341 against 79,168)."""
    from tests.top_level import zoo_on_top_level

    r = zoo_on_top_level("llama", tmp_path, capsys)
    assert abs(r["device_latency_cycles"] - r["rtl_cycles"]) <= 0.01 * r["rtl_cycles"]
    for block in (0, 1):
        ffn = [layer for layer in r["layers"] if f"layers.{block}.mlp." in layer["name"] and "down_proj" not in
               layer["name"]]
        assert sum(layer["op"] == "dataflow.elementwise" and layer["name"].endswith("Mul") for layer in ffn) == 2
        rtl, model = sum(x["rtl_cycles"] for x in ffn), sum(x["latency_cycles"] or 0 for x in ffn)
        assert abs(model - rtl) <= 0.02 * rtl, (block, model, rtl)
