"""The compiler backend: compiled integer models -> ``cds1`` programs (hw/isa, docs/ISA.md) and DRAM images, and a
functional model of the machine that runs them.

``model.py`` turns a whole model into one program (the host runs the float prologue and epilogue, docs/ISA.md
"Host split"); ``gemm.py``, ``tiles.py``, ``attention.py`` and ``island.py`` generate its layers; ``constants.py``
holds the units' run-time constants (shared with ``codesign rtl``); ``machine.py`` runs a program with the
simulator's integer kernels.
"""

from __future__ import annotations

from compiler.backend.gemm import GemmLayer, ProgramBuilder
from compiler.backend.image import DramImage, Region
from compiler.backend.machine import Geometry, Machine, run_program
from compiler.backend.model import ModelProgram, build_model_program

__all__ = ["GemmLayer", "ProgramBuilder", "DramImage", "Region", "Geometry", "Machine", "run_program",
           "ModelProgram", "build_model_program"]
