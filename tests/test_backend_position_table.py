"""A per-position table added to an integer activation (Whisper's, YOLOS's and BlenderBot-Small's position
embeddings; any constant that varies along more than the channel axis) is an integer add.

The quantizer turned ``x + T`` into an integer residual add only when both operands were activations, so a constant
table beside an integer ``x`` stayed a float add between integer ops: the system backend refused the model, and no
per-column threshold table can hold a per-position constant. The table now becomes an int16 weight on its own
per-tensor step, broadcast to ``x``'s shape (compiler/quant_rewrite.py, ``table``), and the add is the ordinary
16-bit integer add (``VEC requant_add``); the backend places the table in the DRAM image like any weight. A constant
that varies along the channel axis only (a bias) is left as it was.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from codesign.api import compile
from compiler.dialect import dataflow as df
from examples import zoo
from tests.test_backend import _check_model

S, D = 8, 32


class _Positions(torch.nn.Module):
    """``out(fc(x) + table)``: a learned table per position (``[S, D]``) or per channel (``[D]``)."""

    def __init__(self, per_position: bool) -> None:
        super().__init__()
        self.fc, self.out = torch.nn.Linear(D, D), torch.nn.Linear(D, D)
        self.table = torch.nn.Parameter(torch.randn(S, D) if per_position else torch.randn(D))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.out(torch.relu(self.fc(x) + self.table))


def _compile(tmp_path: Path, per_position: bool):
    torch.manual_seed(0)
    path = tmp_path / "positions.onnx"
    torch.onnx.export(_Positions(per_position).eval(), (torch.randn(1, S, D),), str(path), dynamo=False,
                      input_names=["x"])
    return str(path), compile(str(path), quant="int8")


def _integer_adds(module) -> list[df.ElementwiseOp]:
    return [op for op in module.walk() if isinstance(op, df.ElementwiseOp) and op.kind_value() == "add"
            and df.int_bits(op.results[0]) == 16]


def test_a_position_table_beside_an_integer_is_an_integer_add(tmp_path: Path) -> None:
    path, result = _compile(tmp_path, per_position=True)
    adds = _integer_adds(result.module)
    assert len(adds) == 1
    tables = [v.owner for v in adds[0].operands if isinstance(v.owner, df.WeightOp)]
    assert len(tables) == 1 and df.int_bits(tables[0].result) == 16
    stored = np.asarray(result.env.weights[df.layer_of(tables[0])])
    assert stored.shape == (1, S, D) and np.abs(stored).max() == 32767  # the table on its own full 16-bit step
    _check_model(path, 8, 8)


def test_a_per_channel_constant_is_not_a_table(tmp_path: Path) -> None:
    _, result = _compile(tmp_path, per_position=False)
    assert not _integer_adds(result.module)


@pytest.mark.parametrize("name", ["yolos", "blenderbot-small"])
def test_zoo_models_with_position_tables_between_integer_ops_run_bit_exact(tmp_path: Path, name: str) -> None:
    path = tmp_path / f"{name}.onnx"
    zoo.export(name, zoo.variants(name)[0], path)
    _check_model(str(path), 8, 8, orders=("loads_first",))


@pytest.mark.rtl
@pytest.mark.slow
@pytest.mark.timeout(1800)
def test_yolos_runs_on_the_top_level_and_the_model_prices_its_attention(tmp_path: Path, capsys) -> None:
    """YOLOS (a position table added in every layer, 21 tokens: 16 patches, the class token, 4 detection tokens)
    through `codesign rtl --system --simulate` on Verilator: the device's outputs equal the simulator's, the whole
    program within 1% of the RTL's cycles, each attention within 2% (measured 2026-12-05: 285,595 RTL cycles against
    284,089, -0.5%; each attention 31,858 / 31,936 against 31,776. Before the model split an element row of 21 keys
    on 8 lanes into the two transfers the backend emits, hw.perf.vec_queue.rows_load_cycles, each was 29,859, -6.5%)."""
    from tests.top_level import zoo_on_top_level

    r = zoo_on_top_level("yolos", tmp_path, capsys)
    assert abs(r["device_latency_cycles"] - r["rtl_cycles"]) <= 0.01 * r["rtl_cycles"]
    layers, checked = r["layers"], 0
    for i, layer in enumerate(layers):
        if not layer["name"].endswith("attention.attention"):
            continue
        rtl, j = layer["rtl_cycles"], i + 1
        while j < len(layers) and layers[j]["latency_cycles"] is None:  # RTL layers the model prices in this one
            rtl += layers[j]["rtl_cycles"]
            j += 1
        assert abs(layer["latency_cycles"] - rtl) <= 0.02 * rtl, (layer["name"], layer["latency_cycles"], rtl)
        checked += 1
    assert checked == 2
