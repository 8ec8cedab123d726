"""A free-space 4f optical correlator with an electronic host, in the ConvShareViT formulation.

A linear layer (``m`` tokens, ``k`` = C_in, ``n`` = C_out) becomes depthwise convolutions over the token plane
(the ``m`` tokens laid out as a ceil(sqrt(m))-pixel square) whose weights are shared across input channels
(ConvShareViT, arXiv 2504.11517). Each (input, output) channel pair is one tile on the SLM; a frame holds as many
tiles as fit on the smallest of SLM, Fourier filter and camera, so

    frames = batch * ceil(C_in * C_out / tiles_per_frame) * (2 if pseudo_negative else 1)

(pseudo-negativity: signed kernels run as two passes, ReLU(k) and ReLU(-k)), and every frame takes

    frame_s = max(1 / slm.refresh_hz, 1 / filter.refresh_hz, 1 / camera.fps, link_bytes / link rate) + adc_us.

The host sums the ``C_in`` partial planes (both passes) of every output channel on its vector lanes; that runs in
parallel with the optics, so a GEMM takes the longer of the two. Time is reported in host cycles (``clock_mhz``).
"""

from __future__ import annotations

import math
from collections.abc import Mapping

from hw.errors import InputError
from hw.models.base import Cost, ceil_div, move_on_vector, vector_cost
from hw.models.energy import event_energy_mj, power_energy_mj
from hw.perf.workload import GemmWork, MoveWork, VectorWork, Work
from hw.targets.schema import OpticalTarget

__all__ = ["OpticalModel"]


class OpticalModel:
    """Cost and energy model of an ``OpticalTarget``."""

    def __init__(self, target: OpticalTarget) -> None:
        self.target = target
        t = target
        self._width = min(t.slm.width, t.filter.width, t.camera.width)
        self._height = min(t.slm.height, t.filter.height, t.camera.height)
        self._passes = 2 if t.optics.pseudo_negative else 1
        link_bytes = (t.slm.width * t.slm.height * t.slm.bits + t.filter.width * t.filter.height * t.filter.bits
                      + t.camera.width * t.camera.height * t.camera.adc_bits) / 8
        self._link_bytes = link_bytes
        self._stage_s = {
            "slm": 1 / t.slm.refresh_hz,
            "filter": 1 / t.filter.refresh_hz,
            "camera": 1 / t.camera.fps,
            "link": link_bytes / (t.host.link_gbps * 1e9),
        }
        self._adc_s = t.camera.adc_us * 1e-6
        self._bound = max(self._stage_s, key=lambda s: self._stage_s[s])
        self.frame_s = self._stage_s[self._bound] + self._adc_s
        """Seconds per frame: the slowest device (or the link) plus the ADC readout."""

    def units(self) -> dict[str, int]:
        """The optical path and the host's vector units."""
        return {"optical": 1, "vector": self.target.host.vector.count}

    def offchip_bytes_per_cycle(self) -> float:
        """Host DRAM bandwidth, bytes per host cycle."""
        t = self.target
        return t.offchip.bandwidth_gbps * 1e9 / (t.clock_mhz * 1e6)

    def peak_macs_per_cycle(self) -> float:
        """One MAC per usable pixel per frame, halved by pseudo-negativity, per host cycle."""
        return self._width * self._height / self._passes / (self.frame_s * self.target.clock_mhz * 1e6)

    def tiles_per_frame(self, tokens: int) -> int:
        """(input, output) channel pairs per frame for a plane of ``tokens`` tokens."""
        side = math.isqrt(tokens - 1) + 1
        guard = self.target.optics.tile_guard_px
        per_row = (self._width + guard) // (side + guard)
        per_col = (self._height + guard) // (side + guard)
        return per_row * per_col

    def cost(self, work: Work) -> Cost:
        """GEMM -> ``optical`` (detail: frames, tiles_per_frame, seconds per stage); vector and moves -> ``vector``."""
        t = self.target
        if isinstance(work, GemmWork):
            return self._gemm(work)
        if isinstance(work, VectorWork):
            return vector_cost(t, t.host.vector, work)
        if isinstance(work, MoveWork):
            return move_on_vector(t.host.vector, work)
        raise TypeError(f"not a work item: {work!r}")

    def _gemm(self, work: GemmWork) -> Cost:
        t = self.target
        tpf = self.tiles_per_frame(work.m)
        if tpf == 0:
            side = math.isqrt(work.m - 1) + 1
            raise InputError(
                f"{t.name}: a {side}x{side}-pixel plane of {work.m} tokens does not fit the {self._width}x"
                f"{self._height} optical field; raise slm/filter/camera width and height"
            )
        frames = work.batch * ceil_div(work.k * work.n, tpf) * self._passes
        optical_s = frames * self.frame_s
        clock_hz = t.clock_mhz * 1e6
        optical_cycles = _cycles(optical_s * clock_hz)
        host = t.host.vector
        adds = work.batch * work.m * work.n * (self._passes * work.k - 1)
        host_cycles = ceil_div(adds, host.count * host.lanes)
        detail = {
            "frames": frames,
            "tiles_per_frame": tpf,
            "frame_s": self.frame_s,
            "bound": self._bound,
            "optical_s": optical_s,
            "host_cycles": host_cycles,
            **{f"{stage}_s": frames * s for stage, s in self._stage_s.items()},
            "adc_s": frames * self._adc_s,
        }
        return Cost(
            unit="optical",
            compute_cycles=max(optical_cycles, host_cycles),
            tiles=min(frames, 64),
            onchip_bytes=int(frames * self._link_bytes),
            detail=detail,
        )

    def resources(self) -> dict[str, tuple[float, float]]:
        """Nothing to budget."""
        return {}

    def check_fits(self) -> None:
        """Fixed hardware always fits (a plane too large for the SLM is reported by ``cost``)."""

    def energy(
        self, macs_by_bits: Mapping[int, int], onchip_bytes: int, offchip_bytes: int, cycles: int
    ) -> dict[str, float]:
        """mJ: ``optical`` (optics.power_w for the whole run; it includes the optical MACs, so ``mac`` is 0),
        ``onchip`` and ``offchip`` (host memory traffic), ``static`` (host static power)."""
        t = self.target
        out = event_energy_mj(t.energy, t.clock_mhz, {}, onchip_bytes, offchip_bytes, cycles)
        out["optical"] = power_energy_mj(t.optics.power_w, cycles, t.clock_mhz)
        return out


def _cycles(x: float) -> int:
    r = round(x)
    return int(r) if abs(x - r) < 1e-9 * max(1.0, abs(x)) else math.ceil(x)
