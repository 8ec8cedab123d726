"""Whole-model programs of zoo architectures the system backend once refused, run on the cds1 machine model.

RoBERTa-style embeddings compute their position ids from the input ids (a cumulative sum of the non-padding mask,
in int32): that index arithmetic ran between integer ops as far as the backend could tell, and the model was
refused as "a float op between integer ops"; it now runs on the host before the device (compiler/backend/model.py,
``_index_ops``). ELECTRA and ALBERT add a GEMM's int32 accumulator into the residual on a finer output grid (a
per-channel multiplier above 1), refused as "could leave int32 before the add"; a branch that saturates there takes
the output to the same side as the exact sum as long as the other branch cannot, so such adds now run. Every device
value of each program equals the functional simulator's, bit for bit (tests/test_backend.py's check).
"""

from __future__ import annotations

from pathlib import Path

import pytest

from examples import zoo
from tests.test_backend import _check_model


@pytest.mark.parametrize("name", ["roberta", "electra", "albert", "opt", "t5-encoder", "gpt-bigcode", "persimmon"])
def test_zoo_model_program_equals_the_simulator(tmp_path: Path, name: str) -> None:
    path = tmp_path / f"{name}.onnx"
    zoo.export(name, zoo.variants(name)[0], path)
    _check_model(str(path), 8, 8, orders=("loads_first",))
