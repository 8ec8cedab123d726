"""``dataflow.rope``: rotary embeddings recognised on Q/K become one op, costed, simulated exactly, quantized.

The kernel checks compare the float kernel with the exporters' own spelling (``q * cos + rotate_half(q) * sin``,
GPT-J's interleaved pairs) bit for bit, and the integer kernel with a plain Python-integer evaluation of the
arithmetic compiler/simulate/rope.py documents. The model checks use tiny transformers decoders (one layer) from
configs: LLaMA (rotate-half over the whole head), Phi (rotate-half over half of it) and GPT-J (interleaved).
"""

from __future__ import annotations

from fractions import Fraction
from pathlib import Path

import numpy as np
import pytest
import torch
from xdsl.dialects.builtin import IntegerAttr, StringAttr, TensorType, f32, i64
from xdsl.utils.exceptions import VerifyException

from codesign.api import compile
from codesign.cli import main
from compiler.dialect import dataflow as df
from compiler.simulate.rope import rope_float, rope_int, rope_partner, rope_tables_q
from hw.perf.workload import VectorWork

B, S, HEADS, DH = 1, 6, 3, 8


def _tables(r: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    angle = np.random.default_rng(seed).uniform(-np.pi, np.pi, size=(S, r))
    return np.cos(angle).astype(np.float32), np.sin(angle).astype(np.float32)


def _rotate_half(x: np.ndarray) -> np.ndarray:
    half = x.shape[-1] // 2
    return np.concatenate([-x[..., half:], x[..., :half]], axis=-1)


@pytest.mark.parametrize("r", [DH, DH // 2])
def test_float_rotate_half_is_bit_identical_to_the_exported_spelling(r: int) -> None:
    x = np.random.default_rng(1).normal(size=(B, S, HEADS * DH)).astype(np.float32)
    cos, sin = _tables(r)
    # LLaMA / Phi: the tables hold unsigned sin, rotate_half carries the sign; the op's table carries it instead.
    signed = np.concatenate([-sin[:, : r // 2], sin[:, r // 2:]], axis=-1)
    got = rope_float(x, cos, signed, "rotate_half", DH)
    x4 = x.reshape(B, S, HEADS, DH)
    rot = x4[..., :r] * cos[None, :, None, :] + _rotate_half(x4[..., :r]) * sin[None, :, None, :]
    want = np.concatenate([rot, x4[..., r:]], axis=-1).reshape(x.shape)
    assert got.dtype == np.float32 and np.array_equal(got, want)


def test_float_interleaved_is_bit_identical_to_gptj() -> None:
    x = np.random.default_rng(2).normal(size=(B, S, HEADS * DH)).astype(np.float32)
    cos, sin = _tables(DH)
    signed = sin * np.where(np.arange(DH) % 2 == 0, -1, 1).astype(np.float32)
    x4 = x.reshape(B, S, HEADS, DH)
    pairs = np.stack([-x4[..., 1::2], x4[..., ::2]], axis=-1).reshape(x4.shape)  # GPT-J's rotate_every_two
    want = (x4 * cos[None, :, None, :] + pairs * sin[None, :, None, :]).reshape(x.shape)
    assert np.array_equal(rope_float(x, cos, signed, "interleaved", DH), want)


def _round_half_even(v: Fraction) -> int:
    floor = v.numerator // v.denominator
    rest = v - floor
    return floor + (1 if rest > Fraction(1, 2) or (rest == Fraction(1, 2) and floor % 2) else 0)


@pytest.mark.parametrize("style, r", [("rotate_half", DH), ("interleaved", DH), ("rotate_half", DH // 2)])
def test_integer_kernel_is_the_documented_arithmetic(style: str, r: int) -> None:
    rng = np.random.default_rng(3)
    x = rng.integers(-128, 128, size=(B, S, HEADS * DH))
    cos_q, sin_q = rope_tables_q(*_tables(r, seed=4))
    m, e = 1518500250, 45  # about 2^-14 / 1.4: the output step 1.4x the input's
    got = rope_int(x, cos_q, sin_q, style, DH, m, e)
    partner = rope_partner(style, r)
    x4 = x.reshape(B, S, HEADS, DH)
    want = np.zeros_like(x4)
    for b in range(B):
        for s in range(S):
            for h in range(HEADS):
                for i in range(DH):
                    xi = int(x4[b, s, h, i])
                    acc = xi * int(cos_q[s, i]) + int(x4[b, s, h, partner[i]]) * int(sin_q[s, i]) if i < r \
                        else xi << 14
                    want[b, s, h, i] = min(127, max(-128, _round_half_even(Fraction(acc * m, 2**e))))
    assert np.array_equal(got, want.reshape(x.shape))
    # and it is the rotation: dequantized, within a step (plus the Q1.14 tables' error) of the float result
    scale_x, scale_y = 0.05, 0.05 * 2.0**-14 / (m / 2**e)
    cos, sin = cos_q / 2**14, sin_q / 2**14
    ref = rope_float(x.astype(np.float64) * scale_x, cos, sin, style, DH)
    assert np.abs(got * scale_y - ref).max() <= scale_y


def test_verifier_refuses_a_rotary_dim_that_does_not_fit() -> None:
    x = TensorType(f32, [1, S, HEADS * DH])
    table = df.WeightOp("t", TensorType(f32, [S, DH + 2]))
    src = df.WeightOp("x", x)
    op = df.RopeOp.create(operands=[src.result, table.result, table.result], result_types=[x], properties={
        "layer": StringAttr("r"), "style": StringAttr("rotate_half"), "head_dim": IntegerAttr(DH, i64),
        "rotary_dim": IntegerAttr(DH + 2, i64)})
    with pytest.raises(VerifyException, match="rotary_dim 10 do not fit"):
        op.verify()


# ----- models ----------------------------------------------------------------------------------------------------

HIDDEN, VOCAB, SEQ = 32, 64, 8


def _decoder(family: str) -> torch.nn.Module:
    import transformers as tf

    from examples._common import reinit_, seed_all

    common = {"vocab_size": VOCAB, "hidden_size": HIDDEN, "num_hidden_layers": 1, "num_attention_heads": 4,
              "intermediate_size": 2 * HIDDEN, "max_position_embeddings": 32, "attn_implementation": "sdpa"}
    config, cls = {
        "llama": (lambda: tf.LlamaConfig(num_key_value_heads=2, **common), tf.LlamaModel),
        "phi": (lambda: tf.PhiConfig(partial_rotary_factor=0.5, **common), tf.PhiModel),  # pyright: ignore[reportCallIssue]  (a PretrainedConfig kwarg the config's typed __init__ omits)
        "gptj": (lambda: tf.GPTJConfig(vocab_size=VOCAB, n_embd=HIDDEN, n_layer=1, n_head=4, rotary_dim=4,
                                       n_positions=32, attn_implementation="eager"), tf.GPTJModel),  # pyright: ignore[reportCallIssue]  (a PretrainedConfig kwarg the config's typed __init__ omits)
    }[family]
    seed_all(0)
    model = cls(config()).eval()
    reinit_(model, 0)

    class Wrap(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.model = model

        def forward(self, input_ids: torch.Tensor) -> torch.Tensor:
            mask = torch.ones_like(input_ids)
            return self.model(input_ids=input_ids, attention_mask=mask, use_cache=False).last_hidden_state

    return Wrap().eval()


def _ids() -> np.ndarray:
    return np.random.default_rng(5).integers(0, VOCAB, size=(1, 1, SEQ))


@pytest.fixture(scope="module")
def exported(tmp_path_factory: pytest.TempPathFactory):
    from examples._common import export_onnx

    folder = tmp_path_factory.mktemp("rope")
    cache: dict[str, Path] = {}

    def get(family: str) -> Path:
        if family not in cache:
            path = folder / f"{family}.onnx"
            export_onnx(_decoder(family), [torch.from_numpy(_ids()[0])], path, input_names=["input_ids"],
                        output_names=["last_hidden_state"], exporter="legacy")
            cache[family] = path
        return cache[family]

    return get


def _ropes(result) -> list[df.RopeOp]:
    return [op for op in result.module.walk() if isinstance(op, df.RopeOp)]


@pytest.mark.slow
@pytest.mark.parametrize("family, style, rotary", [("llama", "rotate_half", 8), ("phi", "rotate_half", 4),
                                                   ("gptj", "interleaved", 4)])
def test_models_get_one_rope_op_per_q_and_k_and_simulate_exactly(exported, family, style, rotary) -> None:
    result = compile(exported(family), inputs={"input_ids": _ids()})
    ropes = _ropes(result)
    assert len(ropes) == 2 and result.imported.patterns["attention"] == 1
    assert {(df.str_attr(op, "style"), df.int_attr(op, "rotary_dim"), df.int_attr(op, "head_dim")) for op in ropes} \
        == {(style, rotary, HIDDEN // 4)}
    assert not [op for op in result.module.walk() if isinstance(op, df.ElementwiseOp)
                and df.str_attr(op, "layer").split("/")[-1].startswith("rope")]
    assert result.report["accuracy"]["outputs"]["last_hidden_state"]["cosine_min"] >= 0.9999


@pytest.mark.slow
@pytest.mark.parametrize("target", ["fpga-u280", "npu-xdna", "asic-systolic", "gpu-a100", "optical-4f"])
def test_rope_is_costed_on_every_target_kind(exported, target: str) -> None:
    result = compile(exported("llama"), target)
    layers = {layer["name"]: layer for layer in result.report["layers"]}
    for op in _ropes(result):
        layer = layers[op.layer_name()]
        shape = op.input.type.get_shape()  # type: ignore[attr-defined]
        rotated = shape[0] * shape[1] * shape[2]  # the whole head rotates
        assert layer["op"] == "rope" and layer["cycles"] > 0
        assert layer["weight_bytes"] == 2 * 4 * SEQ * 8  # the cos and sin tables, float32 [S, R]
        plan = next(p for p in result.env.plans if p.name == op.layer_name())
        assert all(isinstance(w, VectorWork) for w in plan.works)
        assert [(w.kind, w.elements) for w in plan.works if isinstance(w, VectorWork)] == [("mul", 2 * rotated),
                                                                                          ("add", rotated)]


@pytest.mark.slow
def test_int8_rope_runs_in_integers(exported) -> None:
    result = compile(exported("llama"), inputs={"input_ids": _ids()}, quant="int8", softmax="shiftmax",
                     gelu="shiftgelu", layernorm="ilayernorm")
    ropes = _ropes(result)
    assert len(ropes) == 2
    for op in ropes:
        assert [v.type.get_element_type().width.data for v in op.operands] == [8, 16, 16]  # type: ignore[attr-defined]
        assert op.result.type.get_element_type().width.data == 8  # type: ignore[attr-defined]
        m, e = result.env.weights[op.layer_name()]
        assert 2**30 <= m < 2**31 and float(op.attributes["scale"].value.data) > 0  # type: ignore[attr-defined]
    assert result.report["accuracy"]["outputs"]["last_hidden_state"]["cosine_mean"] >= 0.95


@pytest.mark.slow
def test_per_kernel_rtl_refuses_rope_in_one_line(exported, tmp_path: Path, capsys) -> None:
    code = main(["rtl", str(exported("llama")), "--quant", "int8", "--softmax", "shiftmax", "--set", "gemm.rows=4",
                 "--set", "gemm.cols=4", "--out", str(tmp_path / "rtl")])
    err = capsys.readouterr().err.strip()
    assert code == 2 and len(err.splitlines()) == 1, err
    assert "dataflow.rope" in err and "rope_q" in err and "no standalone RTL kernel" in err and "--system" in err
