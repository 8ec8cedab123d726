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


@pytest.mark.parametrize("queries", [1, 8])
def test_softmax_free_refuses_other_length_keys_in_one_line(tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                                           queries: int) -> None:
    """SOFT takes the keys to be the queries: an attention over 8 keys from 1 learned query (attention pooling) or 8
    queries over a 16-key memory (PVT's spatial reduction, Funnel's pooled queries, cross-attention) is one line,
    exit 2; it was a torch shape error from inside the simulator's SOFT kernel."""
    import torch

    class Pool(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.q, self.k, self.v = (torch.nn.Linear(16, 16) for _ in range(3))
            self.query = torch.nn.Parameter(torch.randn(1, queries, 16))

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            def heads(t: torch.Tensor) -> torch.Tensor:
                return t.view(1, -1, 2, 8).transpose(1, 2)

            a = torch.nn.functional.scaled_dot_product_attention(heads(self.q(self.query)), heads(self.k(x)),
                                                                 heads(self.v(x)))
            return a.transpose(1, 2).reshape(1, queries, 16)

    path = tmp_path / "pool.onnx"
    torch.onnx.export(Pool().eval(), (torch.randn(1, 16, 16),), str(path), dynamo=False, input_names=["x"])
    capsys.readouterr()
    assert main(["compile", str(path), "--softmax", "softmax-free", "-q"]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and f"has {queries} queries and 16 keys" in err, err
    assert main(["compile", str(path), "--softmax", "exact", "-q"]) == 0  # the attention itself is recognised
