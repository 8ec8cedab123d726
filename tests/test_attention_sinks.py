"""Attention with sinks (gpt-oss; StreamingLLM-style sink logits): a per-head logit joins every softmax row and its
probability is dropped (compiler/frontend/sinks.py). Small torch modules exported by both exporters are compiled to
one ``dataflow.attention`` carrying the sinks, simulated like onnxruntime in float and tracking it in int8 (I-ViT),
their MACs exact and the extra softmax column priced, in every order; softmax-free and the RTL backends, which have
no sinks, refuse in one line."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

from codesign.api import compile
from codesign.cli import main as codesign_main
from compiler.dialect import dataflow as df
from compiler.simulate import approx as A
from examples._common import Exporter, export_onnx
from hw.errors import InputError
from hw.perf.workload import VectorWork

D, H, S = 32, 4, 16
DH = D // H
I_VIT: dict[str, Any] = {"quant": "int8", "softmax": "shiftmax", "gelu": "shiftgelu", "layernorm": "ilayernorm"}


class _SinkAttention(torch.nn.Module):
    """Attention whose softmax rows hold one learned sink logit per head, dropped after the softmax.

    ``gpt-oss`` spelling (transformers' GptOssAttention eager path): K/V heads repeated for grouped-query attention
    (repeat_kv), a causal mask, the sink column last, the row max subtracted before the softmax, ``[..., :-1]``.
    ``first``: the sink column first, no shift, all heads their own K/V, no mask, ``[..., 1:]``."""

    def __init__(self, style: str) -> None:
        super().__init__()
        self.style = style
        self.kv = 2 if style == "gpt-oss" else H
        self.q = torch.nn.Linear(D, D)
        self.k, self.v = (torch.nn.Linear(D, self.kv * DH) for _ in range(2))
        # large enough that a sink takes a good part of each row (a simulation without them is far off)
        self.sinks = torch.nn.Parameter(torch.tensor([2.5, -1.0, 0.5, 3.0]))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, s, _ = x.shape
        q = self.q(x).view(b, s, H, DH).transpose(1, 2)
        k, v = (f(x).view(b, s, self.kv, DH).transpose(1, 2) for f in (self.k, self.v))
        if self.kv != H:  # repeat_kv
            k, v = (t[:, :, None].expand(b, self.kv, H // self.kv, s, DH).reshape(b, H, s, DH) for t in (k, v))
        scores = q @ k.transpose(-1, -2) * DH**-0.5
        sinks = self.sinks.reshape(1, -1, 1, 1).expand(b, -1, s, -1)
        if self.style == "gpt-oss":
            scores = scores + torch.triu(torch.full((s, s), float("-inf")), 1)
            joined = torch.cat([scores, sinks], dim=-1)
            joined = joined - joined.max(dim=-1, keepdim=True).values
            probs = torch.softmax(joined, dim=-1)[..., :-1]
        else:
            probs = torch.softmax(torch.cat([sinks, scores], dim=-1), dim=-1)[..., 1:]
        return (probs @ v).transpose(1, 2).reshape(b, s, D)


CASES: list[tuple[str, Exporter]] = [(style, exporter) for style in ("gpt-oss", "first") for exporter in ("legacy", "dynamo")]


@pytest.fixture(scope="module")
def exported(tmp_path_factory: pytest.TempPathFactory) -> dict[tuple[str, Exporter], tuple[Path, dict, np.ndarray]]:
    """(path, sample, sinks) per case, each exported once."""
    out = {}
    for style, exporter in CASES:
        torch.manual_seed(0)
        module = _SinkAttention(style).eval()
        x = torch.randn(1, S, D) * 2
        path = tmp_path_factory.mktemp("sinks") / f"{style}_{exporter}.onnx"
        export_onnx(module, [x], path, input_names=["x"], output_names=["y"], exporter=exporter)
        out[(style, exporter)] = (path, {"x": x.numpy()[None]}, module.sinks.detach().numpy())
    return out


def _attention(result) -> df.AttentionOp:
    (op,) = [op for op in result.module.walk() if isinstance(op, df.AttentionOp)]
    return op


@pytest.mark.parametrize("style, exporter", CASES)
def test_sinks_are_part_of_one_attention_op_simulated_exactly(exported, style: str, exporter: Exporter) -> None:
    path, sample, sinks = exported[(style, exporter)]
    result = compile(path, inputs=sample)
    assert result.imported.patterns["attention"] == 1 and result.imported.patterns["softmax"] == 1
    op = _attention(result)
    np.testing.assert_allclose(np.asarray(op.sinks_value()), sinks, rtol=1e-7)
    assert op.causal_value() == (style == "gpt-oss") and op.kv_heads_value() == (2 if style == "gpt-oss" else H)
    kv = op.kv_heads_value()
    assert result.report["macs"] == S * D * (D + 2 * kv * DH) + H * S * S * 2 * DH
    assert result.report["accuracy"]["outputs"]["y"]["cosine_min"] >= 0.9999
    # the softmax is priced over Sk + 1 elements per row: the sink joins each row
    plan = next(p for p in result.env.plans if p.op == "attention")
    softmax = next(w for w in plan.works if isinstance(w, VectorWork) and w.kind == "softmax")
    assert softmax.elements == H * S * (S + 1) and softmax.rows == H * S


@pytest.mark.parametrize("style, exporter", CASES)
def test_int8_keeps_the_sinks_and_tracks_float(exported, style: str, exporter: Exporter) -> None:
    path, sample, sinks = exported[(style, exporter)]
    result = compile(path, inputs=sample, **I_VIT)
    assert result.imported.patterns["attention"] == 1
    op = _attention(result)
    assert op.softmax_choice() == df.SoftmaxApprox.SHIFTMAX and str(op.q.type.get_element_type()) == "i8"  # type: ignore[attr-defined]
    np.testing.assert_allclose(np.asarray(op.sinks_value()), sinks, rtol=1e-7)
    assert result.report["accuracy"]["outputs"]["y"]["cosine_min"] >= 0.9


class _GptOssBlock(torch.nn.Module):
    """transformers' own GptOssAttention (eager: rotary Q/K, repeat_kv, sinks, the row max subtracted, the
    softmax's Cast) over a sliding-window causal mask of 8, as gpt-oss's sliding layers run it."""

    def __init__(self) -> None:
        super().__init__()
        from transformers import GptOssConfig
        from transformers.models.gpt_oss.modeling_gpt_oss import GptOssAttention, GptOssRotaryEmbedding

        eager: dict[str, Any] = {"attn_implementation": "eager"}
        config = GptOssConfig(hidden_size=64, num_attention_heads=H, num_key_value_heads=2, head_dim=16,
                              num_hidden_layers=1, sliding_window=8, **eager)
        self.attn, self.rope = GptOssAttention(config, layer_idx=0), GptOssRotaryEmbedding(config)
        torch.nn.init.normal_(self.attn.sinks, 0.0, 1.5)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        i = torch.arange(x.shape[1])
        allowed = (i[None, :] <= i[:, None]) & (i[:, None] - i[None, :] < 8)
        mask = torch.where(allowed, 0.0, torch.finfo(torch.float32).min)[None, None]
        return self.attn(x, self.rope(x, i[None]), mask)[0]


@pytest.mark.parametrize("exporter", ["legacy", "dynamo"])
def test_transformers_gpt_oss_attention(tmp_path: Path, exporter: Exporter) -> None:
    torch.manual_seed(0)
    module = _GptOssBlock().eval()
    x = torch.randn(1, S, 64)
    path = tmp_path / f"gpt_oss_{exporter}.onnx"
    export_onnx(module, [x], path, input_names=["x"], output_names=["y"], exporter=exporter)
    sample = {"x": x.numpy()[None]}
    result = compile(path, inputs=sample)
    assert result.imported.patterns["attention"] == 1
    op = _attention(result)
    np.testing.assert_allclose(np.asarray(op.sinks_value()), module.attn.sinks.detach().numpy(), rtol=1e-7)
    assert op.mask_kind_choice() == df.MaskKind.BANDED and op.kv_heads_value() == 2
    # q, k, v, o projections and QK^T / A.V
    assert result.report["macs"] == S * 64 * (64 + 2 * 32 + 64) + H * S * S * 2 * 16
    assert result.report["accuracy"]["outputs"]["y"]["cosine_min"] >= 0.9999
    quant = compile(path, inputs=sample, **I_VIT)
    assert quant.imported.patterns["attention"] == 1 and _attention(quant).sinks_value() == op.sinks_value()
    assert quant.report["accuracy"]["outputs"]["y"]["cosine_min"] >= 0.9


class _ShiftedAttention(torch.nn.Module):
    """Attention without sinks whose scores have their row max subtracted before the softmax (a no-op for it)."""

    def __init__(self) -> None:
        super().__init__()
        self.q, self.k, self.v = (torch.nn.Linear(D, D) for _ in range(3))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, s, _ = x.shape
        q, k, v = (f(x).view(b, s, H, DH).transpose(1, 2) for f in (self.q, self.k, self.v))
        scores = q @ k.transpose(-1, -2) * DH**-0.5
        probs = torch.softmax(scores - scores.max(dim=-1, keepdim=True).values, dim=-1)
        return (probs @ v).transpose(1, 2).reshape(b, s, D)


@pytest.mark.parametrize("exporter", ["legacy", "dynamo"])
def test_row_max_subtracted_before_the_softmax_is_attention(tmp_path: Path, exporter: Exporter) -> None:
    torch.manual_seed(0)
    x = torch.randn(1, S, D)
    path = tmp_path / f"shifted_{exporter}.onnx"
    export_onnx(_ShiftedAttention().eval(), [x], path, input_names=["x"], output_names=["y"], exporter=exporter)
    result = compile(path, inputs={"x": x.numpy()[None]})
    assert result.imported.patterns["attention"] == 1 and _attention(result).sinks is None
    assert result.report["accuracy"]["outputs"]["y"]["cosine_min"] >= 0.9999


@pytest.mark.parametrize("algorithm", ["flash", "edge-moe"])
def test_reordered_orders_take_the_sinks(exported, algorithm: str) -> None:
    """An online softmax takes a head's sink as one more key whose value is 0 (its running max and sum meet it), so
    flash and Edge-MoE orders hold sinks: float equals onnxruntime, int8 with the online softmax tracks it, and the
    softmax is priced over Sk + 1 elements per row; they were refused before."""
    for style in ("gpt-oss", "first"):
        path, sample, _ = exported[(style, "legacy")]
        result = compile(path, inputs=sample, attention=algorithm)
        op = _attention(result)
        assert op.algorithm_choice().value == algorithm and op.sinks_value() is not None
        assert result.report["accuracy"]["outputs"]["y"]["cosine_min"] >= 0.9999
        quant = compile(path, inputs=sample, attention=algorithm, **{**I_VIT, "softmax": "online"})
        assert quant.report["accuracy"]["outputs"]["y"]["cosine_min"] >= 0.9
        if style == "first":  # no mask: every (query, key) pair is visited, plus one sink per row
            plan = next(p for p in result.env.plans if p.op == "attention")
            softmax = next(w for w in plan.works if isinstance(w, VectorWork) and w.kind == "softmax")
            assert softmax.elements == H * S * (S + 1)


def test_softmax_free_and_backends_without_sinks_refuse_in_one_line(exported, tmp_path: Path, capsys) -> None:
    path, _, _ = exported[("gpt-oss", "legacy")]
    name = _attention(compile(path)).layer_name()
    with pytest.raises(InputError) as info:
        compile(path, softmax="softmax-free")
    message = str(info.value)
    assert message.startswith("--softmax softmax-free: ") and f"'{name}'" in message and "sinks" in message
    assert "\n" not in message
    path, _, _ = exported[("first", "dynamo")]  # all heads their own K/V: the system backend takes the rest
    name = _attention(compile(path)).layer_name()
    for extra in ((), ("--system",)):
        code = codesign_main(["rtl", str(path), "--quant", "int8", "--softmax", "shiftmax", "--out",
                              str(tmp_path / "rtl"), "-q", *extra])
        err = capsys.readouterr().err
        assert code == 2 and err.count("\n") == 1 and "Traceback" not in err, err
        assert f"'{name}'" in err and "attention sinks" in err


def test_the_planner_refuses_softmax_free_with_sinks(exported) -> None:
    """IR written by hand (not through set-softmax) with sinks and no softmax is refused when planned."""
    from xdsl.dialects.builtin import StringAttr

    from compiler.schedule.attention import plan_attention

    op = _attention(compile(exported[("first", "legacy")][0]))
    assert plan_attention(op, ()).name == op.layer_name()
    op.softmax = StringAttr("softmax-free")
    with pytest.raises(InputError, match=f"attention '{op.layer_name()}': attention sinks need a softmax row"):
        plan_attention(op, ())


def test_softmax_with_sinks_adds_the_sink_to_each_row_denominator() -> None:
    rng = np.random.default_rng(0)
    scores = rng.normal(0, 2, size=(2, H, 5, 7))
    sinks = np.array([2.5, -1.0, 0.5, 3.0])
    e = np.exp(scores)
    want = e / (e.sum(-1, keepdims=True) + np.exp(sinks)[:, None, None])
    got = A.softmax_float("exact", scores, None, 16, sinks.reshape(-1, 1, 1))
    np.testing.assert_allclose(got, want, rtol=1e-12)
    masked = np.where(np.arange(7) > 3, -np.inf, 0.0)
    got = A.softmax_float("exact", scores, masked, 16, sinks.reshape(-1, 1, 1))
    e = np.exp(scores + masked)
    np.testing.assert_allclose(got, e / (e.sum(-1, keepdims=True) + np.exp(sinks)[:, None, None]), rtol=1e-12)
    # the integer units: the sink is one more column on the scores' grid, dropped after
    step = 2.0**-6
    for name in ("shiftmax", "ibert", "base2", "online"):
        p, ps = A.softmax_int(name, np.round(scores / step).astype(np.int64), step, 8, sinks.reshape(-1, 1, 1))
        assert p.shape == scores.shape
        np.testing.assert_allclose(p * ps, want, atol=0.05, err_msg=name)
