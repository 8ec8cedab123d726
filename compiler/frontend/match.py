"""The record every recogniser returns (attention_match.py, norm_gelu_match.py, recognize_moe.py) and the context
they match in.

It lives apart from them so that the matchers and recognize.py, which calls them, need not import each other back.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from compiler.frontend.graph import Graph, Node

__all__ = ["Match", "MatchContext"]


@dataclass
class Match:
    """A recognised op: ``kind`` in attention | layernorm | gelu | moe, replacing ``nodes``, producing ``output``."""

    kind: str
    nodes: list[Node]
    output: str
    operands: dict[str, str | None]
    props: dict[str, Any] = field(default_factory=dict)

    def operand(self, role: str) -> str:
        """The tensor bound to ``role``, one the pattern always binds (``operands`` holds None for an absent
        optional one, e.g. a mask)."""
        name = self.operands[role]
        if name is None:
            raise KeyError(f"{self.kind} match: no '{role}' operand")
        return name


@dataclass
class MatchContext:
    """What every matcher reads of the graph it matches in: ``producers`` and ``consumers`` by tensor name, each
    node's position in ``order`` (by ``id``), and ``taken``, the ids of nodes an earlier match already replaced (a
    node belongs to at most one match)."""

    graph: Graph
    producers: dict[str, Node]
    consumers: dict[str, list[Node]]
    order: dict[int, int]
    taken: set[int] = field(default_factory=set)
