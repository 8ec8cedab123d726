"""Target descriptions: bundled YAMLs (``hw/targets/*.yaml``), their schema, and the loader.

``load_target("fpga-u280", {"gemm.rows": "32"})`` returns a frozen, validated ``Target``; ``bundled_targets()`` lists
the bundled names with their one-line summaries. Every problem with a target is an ``hw.errors.InputError``.
"""

from hw.targets.loader import bundled_targets, load_target
from hw.targets.schema import (
    TARGET_KINDS,
    AsicTarget,
    FpgaTarget,
    GpuTarget,
    NpuTarget,
    OpticalTarget,
    Target,
    TargetBase,
    register_kind,
)

__all__ = [
    "load_target", "bundled_targets", "Target", "TargetBase", "TARGET_KINDS", "register_kind",
    "FpgaTarget", "NpuTarget", "OpticalTarget", "GpuTarget", "AsicTarget",
]
