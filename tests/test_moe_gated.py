"""Gated (SwiGLU / GeGLU) mixture-of-experts blocks: ``dataflow.moe`` with an up projection ``w3``.

A Mixtral-style block written in torch (top-2 of a softmax, renormalised; per expert ``act(x W_gate) * (x W_up)``
then ``W_down``, the three weights stacked apart and gathered by the routing) is exported, recognised as one gated
MoE op whichever of the gate and up projections the graph reads first, simulated equal to onnxruntime, costed at
three GEMMs per routed token, and quantized by the int8 compile (x, w1, w3, w2 int8; the product of the activation
and the up projection requantized to int8; tests/test_simulate_moe.py checks it bit-exactly). transformers' fused gate_up Mixtral is in the
zoo (tests/test_zoo_archs.py -k mixtral).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from xdsl.dialects.builtin import IntegerType, f32

from codesign.api import compile
from compiler.dialect import dataflow as df
from compiler.frontend.onnx_loader import load_graph
from compiler.frontend.to_dialect import build_module
from compiler.numerics.router import expert_ffn, moe_reference
from compiler.schedule.lower import lower_module
from hw.models import build_model
from hw.targets import load_target

T, D, H, E, K = 6, 16, 24, 4, 2


class _GatedMoe(torch.nn.Module):
    def __init__(self, act: str, up_first: bool) -> None:
        super().__init__()
        g = torch.Generator().manual_seed(0)
        self.gate = torch.nn.Parameter(torch.randn(D, E, generator=g))
        self.w_gate = torch.nn.Parameter(torch.randn(E, D, H, generator=g) / D**0.5)
        self.w_up = torch.nn.Parameter(torch.randn(E, D, H, generator=g) / D**0.5)
        self.w_down = torch.nn.Parameter(torch.randn(E, H, D, generator=g) / H**0.5)
        self.act = torch.nn.functional.silu if act == "silu" else torch.nn.functional.gelu
        self.up_first = up_first

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        flat = x.reshape(-1, D)
        probs = torch.softmax(flat @ self.gate, dim=-1)
        top_w, top_i = probs.topk(K, dim=-1)
        top_w = top_w / top_w.sum(dim=-1, keepdim=True)
        rows = x.reshape(-1, 1, 1, D)  # [T, 1, 1, D]: the experts read a view of x the router does not
        if self.up_first:
            up = rows @ self.w_up[top_i]
            gated = self.act(rows @ self.w_gate[top_i]) * up
        else:
            gated = self.act(rows @ self.w_gate[top_i]) * (rows @ self.w_up[top_i])
        out = (gated @ self.w_down[top_i]).squeeze(-2)  # [T, K, D]
        return (out * top_w[..., None]).sum(dim=1).reshape(x.shape)


def _export(tmp_path: Path, act: str, up_first: bool, wrap: bool = False) -> tuple[Path, _GatedMoe]:
    module = _GatedMoe(act, up_first).eval()
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(D, D), module, torch.nn.Linear(D, D)).eval() if wrap else module
    path = tmp_path / f"gated_{act}_{up_first}.onnx"
    torch.onnx.export(model, (torch.zeros(1, T, D),), str(path), input_names=["x"], output_names=["y"],
                      opset_version=17, dynamo=False)
    return path, module


def _x(seed: int = 1) -> np.ndarray:
    return np.random.default_rng(seed).standard_normal((1, T, D)).astype(np.float32)


def test_gated_expert_is_the_gate_activation_times_the_up_product():
    rng = np.random.default_rng(0)
    x, w1, w3, w2 = (rng.standard_normal(s) for s in ((5, D), (D, H), (D, H), (H, D)))
    want = (x @ w1 / (1 + np.exp(-(x @ w1))) * (x @ w3)) @ w2
    np.testing.assert_allclose(expert_ffn(x, w1, w2, activation="silu", w3=w3), want, rtol=1e-12)
    assert not np.allclose(expert_ffn(x, w1, w2, activation="silu"), want)


@pytest.mark.parametrize("act, up_first", [("silu", False), ("silu", True), ("gelu", False)])
def test_gated_block_is_one_gated_moe_op_with_the_gate_projection_as_w1(tmp_path, act, up_first):
    path, module = _export(tmp_path, act, up_first)
    imported = build_module(load_graph(path))
    assert imported.patterns["moe"] == 1 and imported.patterns["gemm"] == 0
    (op,) = [o for o in imported.module.walk() if isinstance(o, df.MoeOp)]
    assert op.gated() and op.activation_value() == act and op.top_k_value() == K
    assert op.renormalize_value() and op.input.type.get_shape() == (1, T, D)  # type: ignore[attr-defined]
    w = {k: np.asarray(imported.weights[df.layer_of(v.owner)]) for k, v in (("w1", op.w1), ("w3", op.w3))}  # type: ignore[arg-type]
    np.testing.assert_array_equal(w["w1"], module.w_gate.detach().numpy())
    np.testing.assert_array_equal(w["w3"], module.w_up.detach().numpy())
    y, _ = moe_reference(_x(), module.gate.detach().numpy(), module.w_gate.detach().numpy(),
                         module.w_down.detach().numpy(), top_k=K, renormalize=True, activation=act,
                         w3=module.w_up.detach().numpy())
    with torch.no_grad():
        np.testing.assert_allclose(y, module(torch.from_numpy(_x())).numpy(), atol=1e-5)


def test_gated_block_simulates_equal_to_onnxruntime_and_costs_three_gemms(tmp_path):
    path, _ = _export(tmp_path, "silu", True)
    result = compile(path, inputs={"x": _x()[None]})
    assert result.report is not None
    assert result.report["accuracy"]["outputs"]["y"]["cosine_min"] >= 0.99999
    imported = build_module(load_graph(path))
    plan = next(p for p in lower_module(imported.module, build_model(load_target("fpga-u280"))) if p.op == "moe")
    counts = [int(c) for c in plan.detail["tokens_per_expert"].split(",")]
    assert sum(counts) == T * K
    assert plan.macs == T * D * E + sum(counts) * 3 * D * H
    per_expert = 3 * D * H * 4  # float32 gate, up and down projections
    assert plan.detail["expert_weight_bytes_all"] == E * per_expert


def test_int8_compile_quantizes_a_gated_block_between_integer_gemms(tmp_path):
    path, _ = _export(tmp_path, "silu", False, wrap=True)
    samples = {"x": np.stack([_x(s) for s in range(4)])}
    result = compile(path, inputs=samples, quant="int8")
    (op,) = [o for o in result.module.walk() if isinstance(o, df.MoeOp)]
    assert op.gated()
    for v in (op.input, op.w1, op.w3, op.w2):  # x, gate, up and down projections all integer
        assert isinstance(v.type.get_element_type(), IntegerType)  # type: ignore[union-attr]
    assert op.w3.type.get_element_type().width.data == 8  # type: ignore[union-attr]
    gemms = [o for o in result.module.walk() if isinstance(o, df.GemmOp)]
    assert len(gemms) == 2 and all(isinstance(g.lhs.type.get_element_type(), IntegerType)  # type: ignore[attr-defined]
                                   for g in gemms)
    assert result.report is not None
    assert result.report["accuracy"]["outputs"]["y"]["cosine_min"] >= 0.99
    layer = next(entry for entry in result.report["layers"] if entry["op"] == "moe")
    assert f32 not in [v.type.get_element_type() for v in op.operands]  # type: ignore[attr-defined]
    assert layer["macs"] > 0


def test_a_block_left_float_is_named_in_one_report_line(tmp_path, monkeypatch):
    import compiler.passes.quantize as quantize_pass

    monkeypatch.setattr(quantize_pass, "moe_ranges", lambda *a, **k: {})  # no calibrated ranges for the block
    path, _ = _export(tmp_path, "silu", False, wrap=True)
    result = compile(path, inputs={"x": np.stack([_x(s) for s in range(2)])}, quant="int8")
    (op,) = [o for o in result.module.walk() if isinstance(o, df.MoeOp)]
    assert op.input.type.get_element_type() == f32  # type: ignore[attr-defined]
    assert result.report is not None
    line = result.report["numerics"]["float_blocks"]
    assert "\n" not in line and line.startswith("1 MoE block(s) stay float") and op.layer_name() in line


class _LoopMoe(torch.nn.Module):
    """transformers' pre-v5 Mixtral block: a loop over experts, each an nn.Linear gate, up and down projection
    applied to the tokens routed to it (torch.where on the one-hot routing), added back with index_add_."""

    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.gate = torch.nn.Linear(D, E, bias=False)
        self.w1 = torch.nn.ModuleList(torch.nn.Linear(D, H, bias=False) for _ in range(E))
        self.w3 = torch.nn.ModuleList(torch.nn.Linear(D, H, bias=False) for _ in range(E))
        self.w2 = torch.nn.ModuleList(torch.nn.Linear(H, D, bias=False) for _ in range(E))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        flat = x.reshape(-1, D)
        probs = torch.softmax(self.gate(flat), dim=-1)
        top_w, top_i = probs.topk(K, dim=-1)
        top_w = top_w / top_w.sum(dim=-1, keepdim=True)
        mask = torch.nn.functional.one_hot(top_i, E).permute(2, 1, 0)  # [E, K, T]
        out = torch.zeros_like(flat)
        for e in range(E):
            idx, tok = torch.where(mask[e])
            rows = flat[tok]
            y = self.w2[e](torch.nn.functional.silu(self.w1[e](rows)) * self.w3[e](rows)) * top_w[tok, idx, None]
            out.index_add_(0, tok, y)
        return out.reshape(x.shape)


def test_a_per_expert_loop_of_gated_experts_is_one_gated_moe_op(tmp_path):
    module = _LoopMoe().eval()
    path = tmp_path / "loop.onnx"
    x = torch.from_numpy(np.random.default_rng(5).standard_normal((1, 16, D)).astype(np.float32))
    torch.onnx.export(module, (x,), str(path), input_names=["x"], output_names=["y"], opset_version=17, dynamo=False)
    imported = build_module(load_graph(path))
    assert imported.patterns["moe"] == 1 and imported.patterns["gemm"] == 0
    (op,) = [o for o in imported.module.walk() if isinstance(o, df.MoeOp)]
    assert op.gated() and op.activation_value() == "silu" and op.renormalize_value()
    w1 = np.asarray(imported.weights[df.layer_of(op.w1.owner)])  # type: ignore[arg-type]
    gate_proj = module.w1[2]
    assert isinstance(gate_proj, torch.nn.Linear)
    np.testing.assert_array_equal(w1[2], gate_proj.weight.detach().numpy().T)
    result = compile(path, inputs={"x": x.numpy()[None]})
    assert result.report is not None
    assert result.report["accuracy"]["outputs"]["y"]["cosine_min"] >= 0.99999
    assert result.report["macs"] == 16 * D * E + 16 * K * 3 * D * H  # the gate, and three GEMMs per routed token
