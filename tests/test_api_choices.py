"""The Python API names the CLI's options as keywords: ``weight_group="64"`` is ``--weight-group 64`` (Python
keywords cannot hold the hyphen; the hyphenated key in a dict works too)."""

from __future__ import annotations

import pytest
from conftest import model_path

from codesign.api import compile, compile_options
from hw.errors import InputError


def test_keywords_with_underscores_are_the_cli_options() -> None:
    spelled = compile_options(weight_group="64", act_granularity="per-token", quant="w4a8")
    hyphenated = {"weight-group": "64", "act-granularity": "per-token", "quant": "w4a8"}
    hyphens = compile_options("fpga-u280", (), None, None, None, (), None, None, **hyphenated)  # every other parameter
    assert spelled == hyphens
    assert dict(spelled.choices) == {"act-granularity": "per-token", "quant": "w4a8", "weight-group": "64"}
    result = compile(model_path("vit_tiny.onnx"), quant="w4a8", weight_group="64")
    assert result.report["numerics"]["weight_group"] == 64


def test_an_unknown_keyword_is_named_in_one_line() -> None:
    with pytest.raises(InputError, match=r"^unknown compile option 'weight-grup' \(known: ") as err:
        compile(model_path("vit_tiny.onnx"), weight_grup="64")
    assert "\n" not in str(err.value)
