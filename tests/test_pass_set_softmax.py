"""set-softmax / set-gelu / set-layernorm: the attribute they set, on IR from `codesign opt`."""

from __future__ import annotations

from pathlib import Path

import pytest

from codesign.cli import main
from tests.conftest import model_path


@pytest.fixture(scope="module")
def bert_mlir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("ir") / "bert.mlir"
    assert main(["compile", str(model_path("bert_tiny.onnx")), "--stop-after", "canonicalize",
                 "--emit-mlir", str(out)]) == 0
    return out


def _opt(path: Path, passes: str, capsys: pytest.CaptureFixture[str]) -> str:
    capsys.readouterr()
    assert main(["opt", str(path), "--passes", passes]) == 0
    return capsys.readouterr().out


def test_set_softmax_marks_every_attention(bert_mlir: Path, capsys: pytest.CaptureFixture[str]) -> None:
    ir = _opt(bert_mlir, "set-softmax{approx=shiftmax bits=8}", capsys)
    attention = [ln for ln in ir.splitlines() if "dataflow.attention" in ln]
    assert len(attention) == 2
    assert all('softmax = "shiftmax"' in ln and "softmax_bits = 8 : i64" in ln for ln in attention)


def test_set_softmax_rejects_unknown_names(bert_mlir: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["opt", str(bert_mlir), "--passes", "set-softmax{approx=fast}"]) == 2
    assert capsys.readouterr().err.strip().endswith(
        "--softmax fast: unknown choice (valid: exact, shiftmax, online, base2, ibert, log2q, softmax-free)")


def test_set_gelu_and_layernorm(bert_mlir: Path, capsys: pytest.CaptureFixture[str]) -> None:
    ir = _opt(bert_mlir, "set-gelu{approx=lut},set-layernorm{approx=ilayernorm}", capsys)
    assert ir.count('approx = "lut"') == 2
    assert ir.count('approx = "ilayernorm"') == 5
    assert 'approx = "exact"' not in ir
