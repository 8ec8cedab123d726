"""Runtime configuration of a compiled design's RTL units: re-exported from compiler/backend/constants.py.

The computation (one simulator run that learns every value's scale, and each unit's constants from it) lives in
``compiler.backend.constants`` because the compiler backend needs the same constants for its ``CONFIG``
instructions and DRAM image, and ``compiler/`` never imports ``codesign/``. ``codesign rtl`` keeps importing it
from here.
"""

from __future__ import annotations

from compiler.backend.constants import (
    DesignScales,
    attention_scores_scale,
    bias_bits,
    gemm_config,
    ilayernorm_config,
    learn_scales,
    online_softmax_config,
    per_tensor,
    requant_config,
    shiftgelu_config,
    shiftmax_config,
)

__all__ = ["DesignScales", "learn_scales", "shiftmax_config", "shiftgelu_config", "online_softmax_config",
           "ilayernorm_config", "bias_bits", "per_tensor", "requant_config", "gemm_config", "attention_scores_scale"]
