"""Functional simulator: run a compiled ``dataflow`` module on real inputs, bit-exact for its integer parts.

::

    from compiler.simulate import Simulator
    sim = Simulator(result.module, result.env.weights, result.imported.input_names, result.imported.output_names)
    outputs = sim.run({"input_ids": ids, ...})                    # one sample, real-valued outputs
    stacked = sim.run_samples(np.load("data.npz"))                # leading sample axis in and out

Integer ops (after ``quantize``) are exact int64 NumPy arithmetic equal to the :mod:`compiler.numerics` oracle
(tests/test_simulate_kernels.py); float ops are float32 like ONNX Runtime; generic ops run the ONNX semantics of
:mod:`compiler.frontend.onnx_ops`. Values carry their quantization scale (:class:`Tensor`).

Registering kernels (for ops or algorithms other areas add)
-----------------------------------------------------------
A kernel is ``fn(op, inputs: list[Tensor], ctx: SimContext) -> list[Tensor]``, one output per op result.
``register_kernel("dataflow.moe", fn)`` (or ``@register_kernel("dataflow.moe")``) makes the simulator use it for
every op of that name; registering a taken name raises unless ``replace=True``. The built-in kernels (kernels.py,
attention.py for ``edge-moe`` / ``flash``, moe.py) are registered by this package when it loads; a kernel of
another area's module is registered by importing that module before building a ``Simulator``. Kernel modules import
:mod:`compiler.simulate.registry` (values and the registry), not the interpreter.
``ctx.memo(op)`` is a per-op dict for anything parsed once; ``ctx.weights`` the WeightStore; ``ctx.exact`` asks
for the float reference (ignore approximation choices). A quantized input has ``t.scale`` set (``t.real()`` gives
float64 values); return integers with their scale, or floats with ``scale=None``.

Attention algorithms: ``dataflow.attention`` with ``algorithm`` other than ``standard`` is computed by
``ATTENTION_ALGORITHMS[algorithm]`` when one is registered there (``register_attention("flash", fn)``, same kernel
signature), else by the standard kernel — orders of evaluation that are exact rearrangements give the same numbers.
A registered kernel honours the op's properties as the standard one does; ``masked_rows(op, mask, causal, shape)``
gives the rows it must zero for ``masked_rows_zero`` (a row with every key masked gives 0, not NaN).

Observing values
----------------
``sim.run(feeds, observer=fn)`` calls ``fn(op, outputs)`` after every op (per-layer SQNR, MoE routing traces).
"""

# The built-in kernels register themselves as they load: loading them with the package means that every use of the
# simulator finds them (kernels.py, through the imports below; attention.py: edge-moe and flash; moe.py).
from compiler.simulate import attention, moe, rope  # noqa: F401
from compiler.simulate.engine import (
    KERNELS,
    Kernel,
    Observer,
    SimContext,
    Simulator,
    Tensor,
    register_kernel,
)
from compiler.simulate.kernels import ATTENTION_ALGORITHMS, register_attention

__all__ = [
    "ATTENTION_ALGORITHMS",
    "KERNELS",
    "Kernel",
    "Observer",
    "SimContext",
    "Simulator",
    "Tensor",
    "register_attention",
    "register_kernel",
]
