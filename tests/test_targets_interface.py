"""What passes ask of any target (``TargetBase.systolic_array`` ...): each bundled kind answers from its own
sections, so no caller reads a target's sections by name."""

import pytest

from hw.targets import bundled_targets, load_target
from hw.targets.schema import AsicTarget, FpgaTarget, NpuTarget

NAMES = sorted(bundled_targets())


@pytest.mark.parametrize("name", NAMES)
def test_each_bundled_target_answers_from_its_sections(name):
    t = load_target(name)
    if isinstance(t, FpgaTarget | AsicTarget):
        half = 0.5 if t.buffers.double_buffered else 1.0
        assert t.systolic_array() is t.gemm
        assert t.double_buffered() is t.buffers.double_buffered
        assert t.attention_buffers() == (t.buffers.act_kb * 1024 * half, t.buffers.weight_kb * 1024 * half,
                                         t.buffers.out_kb * 1024 * half)
        assert t.attention_lanes() == t.attention.lanes
    elif isinstance(t, NpuTarget):
        assert t.systolic_array() is t.mac_arrays
        assert t.double_buffered() is True
        assert t.attention_buffers() == (t.sram_kb * 1024 / 3,) * 3
        assert t.attention_lanes() == t.attention.lanes
    else:  # GPU, optics: no array, no scratchpad for attention (the stated 64 KiB default)
        assert t.systolic_array() is None
        assert t.double_buffered() is True
        assert t.attention_buffers() == (65536.0,) * 3
        assert t.attention_lanes() is None


def test_overrides_reach_the_answers():
    t = load_target("fpga-u280", {"buffers.double_buffered": "false", "attention.lanes": "8"})
    assert isinstance(t, FpgaTarget)
    assert t.double_buffered() is False and t.attention_lanes() == 8
    assert t.attention_buffers()[0] == t.buffers.act_kb * 1024
