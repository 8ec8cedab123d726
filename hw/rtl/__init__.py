"""Amaranth RTL kernels, their Verilog emission, simulation runner and synthesis figures.

Each kernel is a ``lib.wiring.Component`` with valid/ready stream ports and, next to it, a
``predicted_cycles(...)`` that the cocotb tests check exactly:

* ``hw.rtl.systolic``: ``SystolicGemm``, output-stationary int8/int4 GEMM array;
* ``hw.rtl.requant``: ``Requant``, I-ViT dyadic requantization to int8/int4/int16.

``hw.rtl.kernel`` says what every kernel class declares about itself (parameters, timing, work, roles),
``hw.rtl.kernels`` is the registry of kernel classes, ``hw.rtl.emit`` the Verilog emission, ``hw.rtl.sim`` runs cocotb
testbenches on Icarus or Verilator, ``hw.rtl.synth`` reports Yosys ``synth_xilinx`` resources.
"""

from hw.rtl.emit import build_kernel, emit_kernel
from hw.rtl.kernels import KERNELS, kernel_names, register_kernel
from hw.rtl.requant import Requant
from hw.rtl.sim import SIMULATORS, SimResult, run_testbench
from hw.rtl.synth import SynthReport, synthesize
from hw.rtl.systolic import SystolicGemm

__all__ = [
    "KERNELS",
    "SIMULATORS",
    "Requant",
    "SimResult",
    "SynthReport",
    "SystolicGemm",
    "build_kernel",
    "emit_kernel",
    "kernel_names",
    "register_kernel",
    "run_testbench",
    "synthesize",
]
