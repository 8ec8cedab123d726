"""The record every recogniser returns (recognize.py for attention / GELU / LayerNorm, recognize_moe.py for MoE).

It lives apart from both so that the MoE recogniser, which recognize.py calls, need not import recognize.py back.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from compiler.frontend.graph import Node

__all__ = ["Match"]


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
