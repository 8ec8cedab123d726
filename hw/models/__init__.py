"""Accelerator models: a target's cycles, resources and energy for the scheduler and the report.

``build_model(target)`` picks the model of the target's kind (``MODEL_KINDS``); every model follows the
``AcceleratorModel`` protocol in ``hw.models.base``.
"""

from __future__ import annotations

from collections.abc import Callable

from hw.errors import InputError
from hw.models.asic import AsicModel, SiliconModel
from hw.models.base import AcceleratorModel, Cost
from hw.models.fpga import FpgaModel
from hw.models.gpu import GpuModel
from hw.models.npu import NpuModel
from hw.models.optical import OpticalModel
from hw.targets.schema import Target

__all__ = ["build_model", "AcceleratorModel", "Cost", "MODEL_KINDS", "FpgaModel", "NpuModel", "OpticalModel",
           "GpuModel",
           "AsicModel", "SiliconModel"]

MODEL_KINDS: dict[str, Callable[..., AcceleratorModel]] = {
    "fpga": FpgaModel,
    "npu": NpuModel,
    "optical": OpticalModel,
    "gpu": GpuModel,
    "asic": AsicModel,
}
"""target kind -> model class; a new kind adds one entry here and one schema class in ``hw.targets.schema``."""


def build_model(target: Target) -> AcceleratorModel:
    """The model for ``target`` (any kind in ``MODEL_KINDS``)."""
    factory = MODEL_KINDS.get(target.kind)
    if factory is None:
        raise InputError(f"{target.name}: no model for target kind '{target.kind}' (known: {', '.join(MODEL_KINDS)})")
    return factory(target)
