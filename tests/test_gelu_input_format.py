"""The integer GELU unit's input grid (compiler.simulate.approx.gelu_input_format)."""

from __future__ import annotations

import math

import pytest

from compiler.simulate.approx import SHIFTGELU_X0, gelu_input_format


def _x0(scale: float) -> int:
    return math.floor(-1.0 / (1.702 * scale))


def test_shiftgelu_keeps_ivit_int8_grid_when_it_is_fine_enough() -> None:
    bits, scale = gelu_input_format("shiftgelu", 6.0)  # ViT-like range: x0 = -12 at 8 bits
    assert (bits, scale) == (8, 6.0 / 127)
    assert _x0(scale) <= -SHIFTGELU_X0


@pytest.mark.parametrize("name", ["shiftgelu", "shiftgelu-row"])
@pytest.mark.parametrize("amax", [8.0, 25.0, 300.0])
def test_shiftgelu_refines_a_coarse_grid_to_x0(name: str, amax: float) -> None:
    bits, scale = gelu_input_format(name, amax)
    assert bits == 16
    assert _x0(scale) == -SHIFTGELU_X0
    assert amax / scale <= 32767


def test_shiftgelu_huge_range_fills_int16() -> None:
    bits, scale = gelu_input_format("shiftgelu", 1e4)
    assert bits == 16 and scale == pytest.approx(1e4 / 32767)


@pytest.mark.parametrize("name", ["ibert", "lut"])
def test_other_gelus_take_16_bits(name: str) -> None:
    assert gelu_input_format(name, 4.0) == (16, 4.0 / 32767)
