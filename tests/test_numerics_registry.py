"""The approximation registry the CLI validates --softmax / --gelu / --layernorm against."""

from __future__ import annotations

import pytest
import torch

import compiler.numerics as numerics
from compiler.numerics import (
    GELU_APPROX,
    LAYERNORM_APPROX,
    SOFTMAX_APPROX,
    get_approx,
    log2q_dequantize,
)
from hw.errors import InputError


def test_names_are_the_cli_choices() -> None:
    assert list(SOFTMAX_APPROX) == ["exact", "shiftmax", "online", "base2", "ibert", "log2q", "softmax-free"]
    assert list(GELU_APPROX) == ["exact", "shiftgelu", "shiftgelu-row", "ibert", "lut"]
    assert list(LAYERNORM_APPROX) == ["exact", "ilayernorm"]


def test_unknown_name_lists_the_valid_ones() -> None:
    with pytest.raises(InputError) as info:
        get_approx("softmax", "fast")
    assert str(info.value) == (
        "unknown --softmax 'fast'; valid: exact, shiftmax, online, base2, ibert, log2q, softmax-free"
    )
    with pytest.raises(InputError, match=r"^unknown --gelu 'tanh'; valid: exact, shiftgelu, shiftgelu-row, ibert, lut$"):
        get_approx("gelu", "tanh")
    assert get_approx("layernorm", "ilayernorm").fn is numerics.ilayernorm


def test_registries_are_read_only() -> None:
    with pytest.raises(TypeError):
        SOFTMAX_APPROX["mine"] = SOFTMAX_APPROX["exact"]  # type: ignore[index]


def test_every_softmax_approx_is_callable_with_the_shared_signature() -> None:
    x = torch.randint(-400, 400, (4, 32), generator=torch.Generator().manual_seed(0))
    p = torch.softmax(x.double() * 0.01, dim=-1)
    for name, approx in SOFTMAX_APPROX.items():
        if approx.encoding == "attention":
            q = torch.randn(1, 32, 8, dtype=torch.float64)
            assert approx(q, q, num_landmarks=8).shape == (1, 32, 8)
            continue
        y, scale = approx(x, 0.01)
        assert y.dtype == torch.int64 and y.shape == x.shape, name
        real = log2q_dequantize(y, scale) if approx.encoding == "log2" else y.double() * scale
        assert float((real - p).abs().max()) < 0.2, name


def test_every_gelu_and_layernorm_approx_is_callable() -> None:
    x = torch.randint(-127, 128, (2, 16), generator=torch.Generator().manual_seed(1))
    for name, approx in GELU_APPROX.items():
        scale = 1e-4 if name == "ibert" else 3 / 127  # each at a scale it is meant for
        y, out_scale = approx(x * (300 if name == "ibert" else 1), scale)
        ref = torch.nn.functional.gelu(x.double() * (300 * scale if name == "ibert" else scale))
        assert float((y.double() * out_scale - ref).abs().max()) < 0.25, name
    w, b = torch.rand(16) + 0.5, torch.randn(16)
    xl = torch.randint(-3000, 3000, (2, 16), generator=torch.Generator().manual_seed(2))
    ref = torch.nn.functional.layer_norm(xl.double() * 0.01, (16,), w.double(), b.double(), eps=1e-6)
    for name, approx in LAYERNORM_APPROX.items():
        y, out_scale = approx(xl, 0.01, w, b)
        assert out_scale.shape == (16,)
        assert float((y.double() * out_scale - ref).abs().max()) < 1e-2, name


def test_public_api_is_explicit() -> None:
    assert set(numerics.__all__) <= set(dir(numerics))
    assert "shiftmax" in numerics.__all__ and "requantize" in numerics.__all__


def test_shiftgelu_names_pick_the_stabilizer() -> None:
    """``shiftgelu`` is the per-element form, ``shiftgelu-row`` I-ViT's published row-max form (the API default)."""
    import torch

    x = torch.tensor([[-40, -3, 0, 5, 400]])
    row = get_approx("gelu", "shiftgelu-row")(x, 0.05)
    element = get_approx("gelu", "shiftgelu")(x, 0.05)
    assert torch.equal(row[0], numerics.shiftgelu(x, 0.05)[0])
    assert torch.equal(element[0], numerics.shiftgelu(x, 0.05, stabilizer="element")[0])
    assert not torch.equal(row[0], element[0])
