"""Transposes of integer activations on the system backend: an NLC value read as NCHW and back (MLP-Mixer's token
mixing, a per-channel bias added in channels-first layout as a depthwise convolution adds its bias).

A device move whose element order turns the source around (result column ``c`` is source row ``c``) is no 2-D DMA
window, and the backend refused it ("its element order is no 2-D DMA window of its input"). It now runs as copy
layers, one per block of ``lanes`` result columns, each loading the block's source rows with a transposing ``LOAD``
(compiler/backend/model.py, ``_move``). A float island may turn around the same way: its threshold layers then read
their columns through a transposing ``LOAD``, and a constant that varies along the source's rows (a bias of shape
``[C, 1]`` on a ``[C, S]`` value) is one value per column of the island's window (compiler/backend/island.py,
``island_window`` and ``per_column_island``). A constant that stays along the rows of the window is still no
per-column threshold function: that float op is refused in one line.

The execute-queue model prices the transposed copies (``hw.perf.vec_queue.transposed_copy_cycles``) and a GEMM whose
stores outlast its folds before the vector layer queued behind it (``compiler/schedule/lower.py``,
``_store_barrier``); the Verilator test pins both against the RTL.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from compiler.dialect import dataflow as df
from compiler.schedule.lower import _move_work
from hw.errors import InputError
from hw.isa import Load, Space
from tests.test_backend import _check_model, _whole_model

S, C, IN = 16, 32, 24


class _MixerBlock(torch.nn.Module):
    """MLP-Mixer's block (Tolstikhin et al., 2021): a token-mixing MLP over the transposed tokens, then a channel MLP."""

    def __init__(self) -> None:
        super().__init__()
        self.n1, self.n2 = torch.nn.LayerNorm(C), torch.nn.LayerNorm(C)
        self.t1, self.t2 = torch.nn.Linear(S, 2 * S), torch.nn.Linear(2 * S, S)
        self.c1, self.c2 = torch.nn.Linear(C, 2 * C), torch.nn.Linear(2 * C, C)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.t2(F.gelu(self.t1(self.n1(x).transpose(1, 2)))).transpose(1, 2)
        return x + self.c2(F.gelu(self.c1(self.n2(x))))


class _Mixer(torch.nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.embed, self.head = torch.nn.Linear(IN, C), torch.nn.Linear(C, 10)
        self.blocks, self.norm = torch.nn.Sequential(_MixerBlock(), _MixerBlock()), torch.nn.LayerNorm(C)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.norm(self.blocks(self.embed(x))))


class _ChannelsFirst(torch.nn.Module):
    """A per-channel constant applied in channels-first layout ``[B, C, S]``: ``add`` a bias, then back to tokens
    (as after a depthwise convolution); ``mul`` a gain, the channels staying rows (a token-mixing layer reads it)."""

    def __init__(self, op: str) -> None:
        super().__init__()
        self.op = op
        self.a, self.b, self.t = torch.nn.Linear(IN, C), torch.nn.Linear(C, C), torch.nn.Linear(S, S)
        self.bias = torch.nn.Parameter(torch.linspace(-0.5, 0.5, C)[:, None])
        self.gain = torch.nn.Parameter(torch.linspace(0.5, 1.5, C)[:, None])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.a(x).transpose(1, 2)
        if self.op == "add":
            return self.b((y + self.bias).transpose(1, 2))
        return self.t(y * self.gain)


def _export(module: torch.nn.Module, path: Path) -> str:
    torch.manual_seed(0)
    torch.onnx.export(module.eval(), (torch.randn(1, S, IN),), str(path), dynamo=False, input_names=["x"],
                      opset_version=17)
    return str(path)


def _mixer(tmp_path: Path) -> str:
    torch.manual_seed(0)
    return _export(_Mixer(), tmp_path / "mixer.onnx")


def test_token_mixing_transposes_run_as_transposing_loads(tmp_path: Path) -> None:
    """Every device value of MLP-Mixer's program equals the simulator's (both queue orders); its four integer
    transposes are copy layers that load through the transposing DMA."""
    path = _mixer(tmp_path)
    _check_model(path, 8, 8)
    result, mp, _, _ = _whole_model(path, 8, 8)
    transposes = [op for op in result.module.walk() if isinstance(op, df.MoveOp) and op.kind_value() == "transpose"]
    assert len(transposes) == 4 and all(op.results[0] in mp.regions for op in transposes)
    assert mp.program is not None
    turned = [i for i in mp.program.instructions if isinstance(i, Load) and i.transpose and i.space == Space.ACC]
    assert len(turned) >= 2 * len(transposes)  # each [16, 32] <-> [32, 16] turn: two or four column blocks of 8


def test_a_channels_first_bias_is_a_per_column_island(tmp_path: Path) -> None:
    """``(y + bias[:, None])^T``: the island turns the bias's rows into its window's columns and runs bit-exact."""
    _check_model(_export(_ChannelsFirst("add"), tmp_path / "add.onnx"), 8, 8)


def test_a_constant_along_the_window_rows_is_refused_in_one_line(tmp_path: Path) -> None:
    """``y * gain[:, None]`` read as ``[C, S]``: the gain differs along the window's rows, which no per-column
    threshold table evaluates; the float multiply is named."""
    with pytest.raises(InputError, match=r"dataflow.elementwise 'Mul': a float op between integer ops"):
        _check_model(_export(_ChannelsFirst("mul"), tmp_path / "mul.onnx"), 8, 8)


def test_the_plan_marks_only_transposes_of_integers_that_move_the_last_axis(tmp_path: Path) -> None:
    """The planner's move work (what the execute-queue model prices as transposed copies): MLP-Mixer's four
    transposes of 16-bit values, ``[S, C]`` to ``[C, S]`` and back; no other move."""
    result, _, _, _ = _whole_model(_mixer(tmp_path), 8, 8)
    marked = {df.layer_of(op): _move_work(op) for op in result.module.walk() if isinstance(op, df.MoveOp)}
    transposed = {name: w for name, w in marked.items() if w.quant == "transposed"}
    assert len(transposed) == 4
    assert all(name.endswith(("Transpose", "Transpose_1")) for name in transposed)
    assert sorted((w.rows, w.row_length, w.bits) for w in transposed.values()) == [(S, C, 16)] * 2 + [(C, S, 16)] * 2


@pytest.mark.rtl
@pytest.mark.slow
@pytest.mark.timeout(1800)
def test_mlp_mixer_on_the_top_level_and_the_model_prices_its_transposes(tmp_path: Path, capsys) -> None:
    """`codesign rtl --system --simulate` on Verilator: the device's outputs equal the simulator's, the whole program
    within 1% of the RTL's cycles, each transpose and each GEMM group (the GEMM and the vector layers queued behind it)
    within 3% (measured 2026-12-05: 123,632 RTL cycles against the model's 123,414, -0.2%; transposes 1,269 / 1,313
    against 1,256 / 1,296; the token-mixing GEMM with its ShiftGELU and requant 7,982 against 8,019. Before the store
    barrier that group was 7,331, -8%: the GEMM's K = 16 folds are store-bound)."""
    from tests.top_level import onnx_on_top_level

    path = _mixer(tmp_path)
    rng = np.random.default_rng(0)
    r = onnx_on_top_level(Path(path), {"x": rng.standard_normal((1, S, IN)).astype(np.float32)}, tmp_path, capsys)
    assert abs(r["device_latency_cycles"] - r["rtl_cycles"]) <= 0.01 * r["rtl_cycles"]
    layers = r["layers"]
    groups = 0
    for i, layer in enumerate(layers):
        if layer["latency_cycles"] is None or not layer["name"].endswith(("Transpose", "Transpose_1", "MatMul")):
            continue
        rtl, j = layer["rtl_cycles"], i + 1
        while j < len(layers) and layers[j]["latency_cycles"] is None:  # the vector layers priced in this group
            rtl += layers[j]["rtl_cycles"]
            j += 1
        assert abs(layer["latency_cycles"] - rtl) <= 0.03 * rtl, (layer["name"], layer["latency_cycles"], rtl)
        groups += 1
    assert groups == 4 + 2 * 4 + 2


def test_windows_from_traced_indices() -> None:
    """``island_window`` over traced source indices: a window, its transpose, and nothing with an element that comes
    from no source element (-1: padding, a concatenated constant), which once traced as element 0."""
    from compiler.backend.island import Window, as_view_pattern, island_window

    src = np.arange(12).reshape(4, 3)  # a [4, 3] source, row pitch 3
    assert island_window(src[1:3], 3) == Window(3, 2, 3, 3)
    assert island_window(np.ascontiguousarray(src.T), 3) == Window(0, 3, 4, 3, transposed=True)
    assert island_window(np.array([[-1, 0, 1, 2]]), 3) is None  # a left pad of one row
    assert as_view_pattern(np.array([[-1]]), 3) is None
