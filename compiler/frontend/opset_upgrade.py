"""Models of ONNX opsets before 13, upgraded at load by onnx's own version converter.

The frontend reads opset 13 and later: Softmax / LogSoftmax / Hardmax over one axis (before 13 they coerced the
input to 2-D at ``axis``), ReduceSum / Squeeze / Unsqueeze / Split with their axes as inputs, and so on. Older
exports are common (torch's legacy exporter still writes opsets 9 to 12 when asked, and so do tf2onnx and older
model zoos), so instead of refusing them the loader upgrades them with ``onnx.version_converter.convert_version``
(onnx/onnx ``onnx/version_converter``, one adapter per op and opset step), which keeps what each node computes:
a coerced Softmax becomes ``Flatten -> Softmax -> Reshape`` (compiler/frontend/normalize.py folds that back into one
Softmax over the last axis when the flattened axis is the last one). A model the converter cannot upgrade is refused
in one line with its reason.
"""

from __future__ import annotations

import onnx
from onnx import version_converter

from hw.errors import InputError, first_line

__all__ = ["MIN_OPSET", "default_opset", "upgrade_opset"]

MIN_OPSET = 13
"""The oldest default-domain opset the frontend reads; older models are converted to it."""


def default_opset(model: onnx.ModelProto) -> int:
    """The model's default-domain (``ai.onnx``) opset version; 0 when it imports none."""
    return next((o.version for o in model.opset_import if o.domain in ("", "ai.onnx")), 0)


def upgrade_opset(model: onnx.ModelProto, source: str) -> onnx.ModelProto:
    """``model`` itself at opset ``MIN_OPSET`` or later; an older one converted to ``MIN_OPSET``. External data is
    left where it is: the converter copies initializers through, their locations with them."""
    version = default_opset(model)
    if version >= MIN_OPSET:
        return model
    if version == 0:
        raise InputError(f"{source}: the model imports no ai.onnx opset (opset_import), so its ops have no "
                         "defined semantics")
    try:
        upgraded = version_converter.convert_version(model, MIN_OPSET)
    except Exception as err:  # noqa: BLE001 - the converter raises bare RuntimeErrors (and others) from C++
        raise InputError(f"{source}: opset {version} could not be upgraded to {MIN_OPSET} by onnx's version "
                         f"converter ({first_line(err)}); re-export with opset_version >= {MIN_OPSET}") from None
    return upgraded
