"""Float islands with pointwise steps between integer ops, run on the cds1 machine model (compiler/backend/island.py).

An int8 compile leaves ``dequantize -> f -> quantize`` between two integer ops wherever a float op sits there: a ReLU
between the two GEMMs of a feed-forward block (T5, OPT, FSMT, torch's ``nn.TransformerEncoderLayer``), a query
scaled by a constant after its projection (OPT, XGLM), a clamp, a per-channel scale and shift (LayerScale,
MobileBERT's NoNorm), a squared ReLU (a square or positive power of a never-negative step). Where ``f`` is
non-decreasing and its constants give each channel one value, the composed
map of the integer input is a step function per channel that a ``VEC threshold`` evaluates exactly; every device
value then equals the functional simulator's, bit for bit. A decreasing or non-monotone step (a negative scale on
any channel, ``1 - x``, ``|x|``) or a per-position table inside the island keeps the one-line refusal. A product of
two values is no island step: ``x * x`` and SiLU's ``x * sigmoid(x)`` are integer products (compiler/quant_rewrite.py,
``product``; the sigmoid an island of its own), so they run too, and a per-position table added to the integer
itself is an integer add (``table``; tests/test_backend_position_table.py).
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest
import torch

from examples._common import export_onnx, seed_all
from hw.errors import InputError
from tests.test_backend import _check_model


class _Block(torch.nn.Module):
    """LayerNorm (an integer op before the island, so the island is between device ops), Linear, f, Linear."""

    def __init__(self, act: Callable[[torch.Tensor], torch.Tensor]) -> None:
        super().__init__()
        self.norm, self.up, self.down = torch.nn.LayerNorm(16), torch.nn.Linear(16, 32), torch.nn.Linear(32, 16)
        self.act = act

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.down(self.act(self.up(self.norm(x))))


_GAMMA, _BETA = torch.linspace(0.5, 1.5, 32), torch.linspace(-1.0, 1.0, 32)
_TABLE = torch.linspace(-1.0, 1.0, 8 * 32).reshape(8, 32)

STEPS: dict[str, Callable[[torch.Tensor], torch.Tensor]] = {
    "relu": torch.relu,
    "per_channel_scale_shift": lambda h: torch.relu(h) * _GAMMA + _BETA,  # LayerScale, NoNorm, a bias
    "clamp_scale_shift": lambda h: torch.clamp(h, -1.0, 2.0) * 0.5 + 0.25,
    "leaky_relu": torch.nn.LeakyReLU(0.1),
    "sigmoid": torch.sigmoid,
    "squared_relu": lambda h: torch.square(torch.relu(h)),  # Primer, Persimmon, Nemotron, Arcee: x * x
    "relu_power": lambda h: torch.relu(h) ** 1.5,  # Pow with a positive constant exponent
    "square": torch.square,  # x * x of a value of either sign: an integer product, not an island step
    "silu": torch.nn.functional.silu,  # x * sigmoid(x): the sigmoid an island at 8 bits, then an integer product
    "per_position_table": lambda h: h + _TABLE,  # an integer add, the table an int16 operand (no island)
}
REFUSED: dict[str, Callable[[torch.Tensor], torch.Tensor]] = {
    "negative_scale": lambda h: torch.relu(h) * -0.5,
    "one_minus": lambda h: 1.0 - torch.relu(h),
    "abs": torch.abs,  # decreasing below 0
    "a_negative_channel": lambda h: h * _BETA,
    "table_after_a_step": lambda h: torch.relu(h) + _TABLE,  # a per-position constant inside an island
}


def _export(tmp_path: Path, act: Callable[[torch.Tensor], torch.Tensor]) -> str:
    seed_all(0)
    path = tmp_path / "block.onnx"
    export_onnx(_Block(act), [torch.randn(1, 8, 16)], path, input_names=["x"], output_names=["y"], exporter="legacy")
    return str(path)


@pytest.mark.parametrize("step", list(STEPS))
def test_monotone_island_runs_as_threshold_layers(tmp_path: Path, step: str) -> None:
    _check_model(_export(tmp_path, STEPS[step]), 4, 4, orders=("loads_first",))


@pytest.mark.parametrize("step", list(REFUSED))
def test_other_float_steps_between_integer_ops_are_one_line(tmp_path: Path, step: str) -> None:
    with pytest.raises(InputError) as err:
        _check_model(_export(tmp_path, REFUSED[step]), 4, 4, orders=("loads_first",))
    assert "a float op between integer ops" in str(err.value) and "\n" not in str(err.value)


#: zoo model -> (its FFN's first GEMM, the ReLU island after it): layer name suffixes in the `--json` report.
TOP_LEVEL = {"opt": ("fc1.Gemm", "activation_fn.Relu.quant8"),
             "t5-encoder": ("DenseReluDense.wi.MatMul", "DenseReluDense.act.Relu.quant8")}


@pytest.mark.rtl
@pytest.mark.slow
@pytest.mark.timeout(1800)
@pytest.mark.parametrize("name", list(TOP_LEVEL))
def test_relu_models_run_on_the_top_level_and_the_model_prices_their_islands(tmp_path: Path, capsys,
                                                                            name: str) -> None:
    """OPT (ReLU between its FFN GEMMs, the query scaled by a constant after its projection) and T5's encoder (ReLU
    FFN, RMSNorm on the I-LayerNorm unit with the mean taken as 0) through `codesign rtl --system --simulate` on
    Verilator: the device's outputs equal the simulator's, and the performance model prices each island's threshold
    layers (its ReLU and dequantize cost nothing, as the top level runs no instruction for them) and each RMSNorm as
    the I-LayerNorm it runs on: the whole program within 2% of the RTL's cycles, each FFN's first GEMM with its
    island and each norm within 2% (measured 2026-12-05: OPT 415,137 RTL cycles against 412,310, -0.7%, fc1 with its
    island -0.8%; T5's encoder 335,936 against 333,399, -0.8%, its norms -0.2%)."""
    from tests.top_level import zoo_on_top_level

    r = zoo_on_top_level(name, tmp_path, capsys)
    assert abs(r["device_latency_cycles"] - r["rtl_cycles"]) <= 0.02 * r["rtl_cycles"]
    layers = {layer["name"]: layer for layer in r["layers"]}
    gemm, relu = TOP_LEVEL[name]
    firsts = [n for n in layers if n.endswith(gemm)]
    assert firsts
    for first in firsts:
        island = layers[first.replace(gemm, relu)]
        rtl = layers[first]["rtl_cycles"] + island["rtl_cycles"]
        assert island["latency_cycles"] is None and abs(layers[first]["latency_cycles"] - rtl) <= 0.02 * rtl
    norms = [layer for layer in r["layers"] if layer["op"] == "dataflow.layernorm"]
    assert norms and all(abs(n["latency_cycles"] - n["rtl_cycles"]) <= 0.02 * n["rtl_cycles"] for n in norms)
