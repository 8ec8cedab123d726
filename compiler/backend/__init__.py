"""The compiler backend: scheduled integer layers -> ``cds1`` programs (hw/isa, docs/ISA.md) and DRAM images, and a
functional model of the machine that runs them.

Today it covers integer GEMM layers with a fused requant (``gemm.py``); the other units' instructions are specified
in docs/ISA.md and refused here with the layer's name until their code generation exists.
"""

from __future__ import annotations

from compiler.backend.gemm import GemmLayer, ProgramBuilder
from compiler.backend.image import DramImage, Region
from compiler.backend.machine import Geometry, Machine, run_program

__all__ = ["GemmLayer", "ProgramBuilder", "DramImage", "Region", "Geometry", "Machine", "run_program"]
