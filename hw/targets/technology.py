"""CMOS technology scaling: area and energy factors between nodes, from Stillmaker & Baas (2017).

A. Stillmaker, B. Baas, "Scaling equations for the accurate prediction of CMOS device performance from 180 nm to
7 nm", Integration, the VLSI Journal 58 (2017) 74-81, doi:10.1016/j.vlsi.2017.02.002. The tables below are the
paper's area factors and energy polynomials as Accelergy transcribes them (Accelergy-Project/hwcomponents,
``hwcomponents/scaling/techscaling.py``, commit e67d7f1): ``AREA_SCALING[x][y]`` multiplies an area at node x into
one at node y; the energy of one operation at node n and supply ``vdd`` is proportional to
``a vdd^2 + b vdd + c`` with that node's ``(a, b, c)``. Leakage power per device scales like energy (as Accelergy
does). 28 nm is not a node of the paper: it is interpolated between 32 nm and 20 nm the way Accelergy interpolates
(linearly in table position, 28 nm sits a third of the way), and is marked so in docs/ASIC.md.

Why these and not classical (Dennard) scaling: the paper shows classical factors are off by up to 83x below 45 nm;
these are fits to HSPICE (PTM) and ITRS data with R^2 > 0.95.
"""

from __future__ import annotations

from collections.abc import Callable

__all__ = ["TECH_NODES_NM", "REFERENCE_NODE_NM", "REFERENCE_VDD", "area_factor", "energy_factor", "known_node"]

_TABLE_NODES_NM: tuple[int, ...] = (130, 90, 65, 45, 32, 20, 16, 14, 10, 7)
_AREA_SCALING: tuple[tuple[float, ...], ...] = (
    (1, 0.44, 0.23, 0.16, 0.072, 0.033, 0.03, 0.027, 0.016, 0.0092),
    (2.3, 1, 0.53, 0.35, 0.16, 0.075, 0.067, 0.061, 0.036, 0.021),
    (4.3, 1.9, 1, 0.66, 0.31, 0.14, 0.13, 0.12, 0.068, 0.039),
    (6.4, 2.8, 1.5, 1, 0.46, 0.21, 0.19, 0.17, 0.1, 0.059),
    (14, 6.1, 3.3, 2.2, 1, 0.46, 0.41, 0.38, 0.22, 0.13),
    (30, 13, 7.1, 4.7, 2.2, 1, 0.89, 0.82, 0.48, 0.28),
    (34, 15, 7.9, 5.3, 2.4, 1.1, 1, 0.91, 0.54, 0.31),
    (37, 16, 8.7, 5.8, 2.7, 1.2, 1.1, 1, 0.59, 0.34),
    (63, 28, 15, 9.8, 4.5, 2.1, 1.9, 1.7, 1, 0.58),
    (110, 48, 25, 17, 7.8, 3.6, 3.2, 2.9, 1.7, 1),
)
_ENERGY_POLY: tuple[tuple[float, float, float], ...] = (
    (7.171, -6.709, 2.904),
    (4.762, -4.781, 2.092),
    (3.755, -4.398, 1.975),
    (1.103, -0.362, 0.2767),
    (0.9559, -0.7823, 0.471),
    (0.373, -0.1582, 0.04104),
    (0.2958, -0.1241, 0.03024),
    (0.2363, -0.09675, 0.02239),
    (0.2068, -0.09311, 0.02375),
    (0.1776, -0.09097, 0.02447),
)
_INTERPOLATED = {28: 4 + (32 - 28) / (32 - 20)}  # table position between 32 nm (4) and 20 nm (5)

TECH_NODES_NM: tuple[int, ...] = tuple(sorted(set(_TABLE_NODES_NM) | set(_INTERPOLATED), reverse=True))
"""Nodes a target may name (nm): the paper's, plus 28 nm interpolated."""

REFERENCE_NODE_NM = 45
"""The node of the component figures an ``asic`` target starts from (Horowitz ISSCC 2014's SRAM table is 45 nm; the
Accelergy Aladdin plug-in serves its logic table for 40 and 45 nm alike)."""
REFERENCE_VDD = 0.9
"""The supply the reference figures are taken at (Horowitz's 0.9 V)."""


def known_node(node_nm: int) -> bool:
    """Whether ``node_nm`` has scaling figures here."""
    return node_nm in TECH_NODES_NM


def _position(node_nm: int) -> float:
    if node_nm in _INTERPOLATED:
        return _INTERPOLATED[node_nm]
    if node_nm not in _TABLE_NODES_NM:
        raise ValueError(f"{node_nm} nm is not a node with scaling figures (known: {_known()})")
    return float(_TABLE_NODES_NM.index(node_nm))


def _known() -> str:
    return ", ".join(str(n) for n in TECH_NODES_NM)


def _lerp_rows(pos: float, pick: Callable[[int], float]) -> float:
    lo = int(pos)
    hi = min(lo + 1, len(_TABLE_NODES_NM) - 1)
    frac = pos - lo
    return pick(lo) * (1 - frac) + pick(hi) * frac


def area_factor(to_nm: int, from_nm: int = REFERENCE_NODE_NM) -> float:
    """Multiply an area at ``from_nm`` by this to get it at ``to_nm`` (bilinear between table entries)."""
    x, y = _position(from_nm), _position(to_nm)
    return _lerp_rows(x, lambda i: _lerp_rows(y, lambda j: _AREA_SCALING[i][j]))


def _energy_poly(node_nm: int, vdd: float) -> float:
    return _lerp_rows(_position(node_nm), lambda i: sum(c * vdd ** (2 - p) for p, c in enumerate(_ENERGY_POLY[i])))


def energy_factor(to_nm: int, vdd: float, from_nm: int = REFERENCE_NODE_NM, from_vdd: float = REFERENCE_VDD) -> float:
    """Multiply an energy per operation (or a leakage power per device) at (``from_nm``, ``from_vdd``) by this to
    get it at (``to_nm``, ``vdd``)."""
    return _energy_poly(to_nm, vdd) / _energy_poly(from_nm, from_vdd)
