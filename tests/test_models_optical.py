"""hw.models.optical: ConvShareViT frame arithmetic on a hand-computed layer, host channel sums, energy."""

from __future__ import annotations

import pytest

from hw.errors import InputError
from hw.models import OpticalModel, build_model
from hw.perf.workload import GemmWork, VectorWork
from hw.targets import load_target

# DeiT-tiny QKV: 197 tokens, C_in 192, C_out 576.
QKV = GemmWork(197, 576, 192)


def model(**overrides: str) -> OpticalModel:
    m = build_model(load_target("optical-4f", {k.replace("__", "."): v for k, v in overrides.items()}))
    assert isinstance(m, OpticalModel)
    return m


def test_frame_arithmetic_by_hand() -> None:
    m = model()
    # 197 tokens -> a 15x15 plane (14^2 = 196 < 197); 1920x1080 holds 128 x 72 = 9,216 tiles.
    assert m.tiles_per_frame(197) == 9216
    # frame: max(1/10 kHz SLM, 1/10 kHz filter, 1/10 kfps camera, link 3 x 2,073,600 B / 64 GB/s = 97.2 us) + 10 us.
    assert m.frame_s == pytest.approx(110e-6)
    cost = m.cost(QKV)
    # 192 x 576 = 110,592 pairs = 12 frames of 9,216, x2 for ReLU(k) and ReLU(-k) = 24 frames = 2.64 ms.
    assert cost.unit == "optical"
    assert cost.detail["frames"] == 24 and cost.detail["bound"] == "slm"
    assert cost.detail["optical_s"] == pytest.approx(24 * 110e-6)
    assert cost.detail["adc_s"] == pytest.approx(24 * 10e-6)
    assert cost.detail["camera_s"] == pytest.approx(24 * 100e-6)
    assert cost.detail["link_s"] == pytest.approx(24 * 3 * 1920 * 1080 / 64e9)
    # Host sums 2 x 192 partial planes per output: 197 x 576 x 383 adds on 64 lanes = 679,059 cycles < optics.
    assert cost.detail["host_cycles"] == 197 * 576 * 383 // 64
    assert cost.compute_cycles == 2_640_000  # 2.64 ms at the 1 GHz host clock
    assert cost.tiles == 24


def test_frame_options() -> None:
    assert model(optics__pseudo_negative="false").cost(QKV).detail["frames"] == 12
    # A 1-pixel guard: (1920 + 1) // 16 = 120 by (1080 + 1) // 16 = 67 -> 8,040 tiles -> 14 frames, x2.
    guarded = model(optics__tile_guard_px="1")
    assert guarded.tiles_per_frame(197) == 8040 and guarded.cost(QKV).detail["frames"] == 28
    # A slower camera sets the pace: 1 / 2 kfps = 500 us + 10 us ADC.
    slow = model(camera__fps="2000")
    assert slow.frame_s == pytest.approx(510e-6) and slow.cost(QKV).detail["bound"] == "camera"
    # The smallest device bounds the tile grid: a 960x540 camera holds 64 x 36 tiles.
    assert model(camera__width="960", camera__height="540").tiles_per_frame(197) == 64 * 36


def test_host_bound_layer() -> None:
    cost = model(host__vector__lanes="1").cost(QKV)
    assert cost.compute_cycles == cost.detail["host_cycles"] == 197 * 576 * 383


def test_plane_too_large() -> None:
    with pytest.raises(InputError) as info:
        model().cost(GemmWork(1100 * 1100, 4, 4))
    assert str(info.value) == (
        "optical-4f: a 1100x1100-pixel plane of 1210000 tokens does not fit the 1920x1080 optical field; "
        "raise slm/filter/camera width and height"
    )


def test_host_vector_and_peak() -> None:
    m = model()
    assert m.units() == {"optical": 1, "vector": 1}
    assert m.cost(VectorWork("gelu", 640, approx="shiftgelu")).compute_cycles == 10 * 7
    # One MAC per pixel per frame, halved: 1920 x 1080 / 2 per 110,000 host cycles.
    assert m.peak_macs_per_cycle() == pytest.approx(1920 * 1080 / 2 / 110_000)
    assert m.offchip_bytes_per_cycle() == pytest.approx(25.6)


def test_energy_breakdown() -> None:
    e = model().energy({8: 10**9}, 10**6, 10**6, 1_000_000)  # 1 ms at 1 GHz
    # Optical MACs are paid by the optics' 15 W; the host pays memory traffic and 5 W static.
    assert e == pytest.approx({"mac": 0.0, "onchip": 0.0025, "offchip": 0.1625, "static": 5.0, "optical": 15.0})
    assert sum(e.values()) == pytest.approx(20.165)
