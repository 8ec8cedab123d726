"""Structure choices: the attention evaluation order (``--attention``) and MoE routing, with the passes they select.

``--attention standard|edge-moe|flash`` -> ``set-attention{algorithm=...}``. Edge-MoE's lane count is a property of
the hardware, so it is a target key, ``--set attention.lanes=8`` (optional ``attention`` section of FPGA and NPU
targets, default 4 = Edge-MoE's ATTN_MATMUL_PARALLEL); flash tiles follow the target's buffers. ``route-moe`` always
runs: it prices MoE blocks from real routing when the compile has inputs, else from the stated uniform assumption.
"""

from __future__ import annotations

from xdsl.passes import ModulePass

from compiler.dialect.dataflow import ATTENTION_ALGORITHMS

__all__ = ["CHOICES", "passes_for"]

#: choice -> (valid values, default)
CHOICES: dict[str, tuple[tuple[str, ...], str]] = {
    "attention": (tuple(ATTENTION_ALGORITHMS), "standard"),
    # Per-GEMM mapping search (compiler/schedule/mapping.py) or the target's own mapping; read by the schedule pass.
    "mapping": (("search", "fixed"), "search"),
    # What the search minimises per GEMM; "target": the target's gemm.mapping_objective (ASIC edp, others latency).
    "mapping-objective": (("target", "latency", "energy", "edp"), "target"),
}


def passes_for(chosen: dict[str, str]) -> list[ModulePass]:
    """The structure passes for the user's choices, in order: set-attention, route-moe."""
    from compiler.passes.route_moe import RouteMoe
    from compiler.passes.set_attention import SetAttention

    return [SetAttention(algorithm=chosen.get("attention", CHOICES["attention"][1])), RouteMoe()]
