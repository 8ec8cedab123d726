"""The DRAM image a program runs on: named regions (weights, constants, inputs, outputs) at fixed byte addresses.

The backend places every tensor a program reads or writes with :meth:`DramImage.place` (64-byte aligned, the AXI
data width of the largest bundled DMA port, so no burst starts mid-beat) and fills constant ones with
:meth:`DramImage.write`; the host writes inputs the same way and reads outputs with :meth:`DramImage.read`. The
layout travels with the program (``regions``), so nothing about it is implicit.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from hw.errors import InputError

__all__ = ["ALIGN_BYTES", "Region", "DramImage"]

ALIGN_BYTES = 64
"""Alignment of every region (bytes): a 512-bit AXI beat."""

_DTYPES = {1: np.int8, 2: np.int16, 4: np.int32, 8: np.int64}


@dataclass(frozen=True)
class Region:
    """A row-major tensor in DRAM: byte address, shape and element size (bytes, signed little-endian integers)."""

    name: str
    addr: int
    shape: tuple[int, ...]
    elem_bytes: int

    @property
    def nbytes(self) -> int:
        return int(np.prod(self.shape, dtype=np.int64)) * self.elem_bytes

    @property
    def row_bytes(self) -> int:
        """Bytes of one row (the last dimension): the DMA stride of a 2-D view."""
        return self.shape[-1] * self.elem_bytes if self.shape else self.elem_bytes

    @property
    def elem_log2(self) -> int:
        return self.elem_bytes.bit_length() - 1


class DramImage:
    """A growing byte image with named regions."""

    def __init__(self) -> None:
        self.regions: dict[str, Region] = {}
        self._data = bytearray()

    @property
    def nbytes(self) -> int:
        return len(self._data)

    def place(self, name: str, shape: tuple[int, ...], elem_bytes: int) -> Region:
        """Reserve a zeroed region for ``name`` (once per name)."""
        if name in self.regions:
            raise ValueError(f"DRAM region '{name}' is placed twice")
        if elem_bytes not in _DTYPES:
            raise InputError(f"DRAM region '{name}': elements of {elem_bytes} bytes are not supported (1, 2, 4, 8)")
        addr = -(-len(self._data) // ALIGN_BYTES) * ALIGN_BYTES
        region = Region(name, addr, tuple(int(d) for d in shape), elem_bytes)
        if addr + region.nbytes >= 1 << 32:
            raise InputError(f"DRAM region '{name}' ends beyond the 4 GiB the ISA's 32-bit addresses reach")
        self._data.extend(bytes(addr + region.nbytes - len(self._data)))
        self.regions[name] = region
        return region

    def alias(self, name: str, region: Region, shape: tuple[int, ...]) -> Region:
        """Name the bytes of ``region`` as a tensor of ``shape`` (same element count): a reshape costs nothing."""
        if name in self.regions:
            raise ValueError(f"DRAM region '{name}' is placed twice")
        alias = Region(name, region.addr, tuple(int(d) for d in shape), region.elem_bytes)
        if alias.nbytes != region.nbytes:
            raise ValueError(f"alias '{name}' of {shape} does not cover region '{region.name}' of {region.shape}")
        self.regions[name] = alias
        return alias

    def write(self, name: str, values: np.ndarray) -> None:
        """Store ``values`` (integers that fit the region's elements, in its shape) into region ``name``."""
        region = self.regions[name]
        dtype = _DTYPES[region.elem_bytes]
        arr = np.asarray(values)
        info = np.iinfo(dtype)
        if arr.size and (int(arr.min()) < info.min or int(arr.max()) > info.max):
            raise InputError(f"DRAM region '{name}': values in [{int(arr.min())}, {int(arr.max())}] do not fit "
                             f"{8 * region.elem_bytes}-bit elements")
        raw = np.ascontiguousarray(arr.reshape(region.shape)).astype(np.dtype(dtype).newbyteorder("<"))
        self._data[region.addr:region.addr + region.nbytes] = raw.tobytes()

    def read(self, name: str) -> np.ndarray:
        """The integers of region ``name`` in its shape."""
        region = self.regions[name]
        dtype = np.dtype(_DTYPES[region.elem_bytes]).newbyteorder("<")
        return np.frombuffer(bytes(self._data[region.addr:region.addr + region.nbytes]), dtype=dtype) \
            .astype(np.int64).reshape(region.shape)

    def buffer(self) -> bytearray:
        """The image's bytes (shared: the machine's DMA reads and writes them in place)."""
        return self._data
