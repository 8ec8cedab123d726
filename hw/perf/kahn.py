"""Kahn's topological order, stable: of the items ready at each step the one listed first goes first.

Two graphs are ordered this way: the scheduler's tasks (hw/perf/scheduler.py: ties by input order, so a schedule
does not depend on a set's iteration order) and an ONNX graph whose nodes are not in topological order
(compiler/frontend/onnx_loader.py: onnxruntime's float16 converter appends the input Casts after their readers;
an already sorted graph keeps its order).
"""

from __future__ import annotations

import heapq
from collections.abc import Iterable, Sequence

__all__ = ["kahn_order"]


def kahn_order(deps: Sequence[Iterable[int]]) -> tuple[list[int], list[int]]:
    """(order, unmet): the indices of ``deps`` (item i depends on the items ``deps[i]`` lists, each once) in
    dependency order, smallest ready index first; ``unmet[i]`` counts item i's dependencies never ordered, non-zero
    only for items on or behind a cycle, which the order leaves out."""
    unmet = [0] * len(deps)
    users: list[list[int]] = [[] for _ in deps]
    for i, ds in enumerate(deps):
        for d in ds:
            users[d].append(i)
            unmet[i] += 1
    ready = [i for i, n in enumerate(unmet) if n == 0]
    heapq.heapify(ready)
    order: list[int] = []
    while ready:
        i = heapq.heappop(ready)
        order.append(i)
        for u in users[i]:
            unmet[u] -= 1
            if unmet[u] == 0:
                heapq.heappush(ready, u)
    return order, unmet
