"""codesign: a hardware co-design compiler and simulator for transformer accelerators.

``codesign.compile(model, target="fpga-u280")`` compiles an ONNX model (path or proto) or a ``torch.nn.Module`` onto a
target and returns a ``CompileResult`` whose ``report`` holds cycles, latency, energy, resources and per-layer
numbers. The same is ``codesign compile`` on the command line.
"""

from codesign.api import compile
from compiler.pipeline import CompileOptions, CompileResult
from hw.errors import InputError

__all__ = ["compile", "CompileOptions", "CompileResult", "InputError"]
