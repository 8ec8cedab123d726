"""SOFT softmax-free attention's sizes (Lu et al., NeurIPS 2021; fudan-zvg/SOFT): the landmark count and the
Newton-Schulz iterations. The scheduler prices them and the float reference (compiler/numerics/softmax_free.py)
runs them; they live apart from that reference so that scheduling does not load torch."""

from __future__ import annotations

__all__ = ["NEWTON_ITERS", "soft_landmarks"]

#: Newton-Schulz iterations for the pseudo-inverse of the m x m landmark kernel (SOFT/kernel/inverse.py).
NEWTON_ITERS = 20


def soft_landmarks(n: int) -> int:
    """SOFT landmark count for ``n`` tokens: 49 (SOFT's 7x7 landmark grid for ViT), or n when n is smaller."""
    return min(n, 49)
