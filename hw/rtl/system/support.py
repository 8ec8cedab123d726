"""Which ``cds1`` instructions the system top level builds: the static twin of ``execute.py``'s ``fault``.

``codesign rtl --system --simulate`` asks this before it runs a program, so a program the RTL cannot run is refused
with one line naming the layer instead of a simulation that raises ``fault`` (docs/RTL.md, System top level). A unit
added to ``execute.py`` is added here in the same change.
"""

from __future__ import annotations

from hw.isa import Gemm, Instruction, Space, Vec, VecFn
from hw.rtl.system.top import SystemConfig

__all__ = ["BUILT", "rtl_lacks"]

BUILT = ("LOAD, STORE, output-stationary GEMM, weight-stationary GEMM (with ws_array), "
         "VEC requant / requant_add / copy / digit / mul / shiftgelu, threshold, "
         "shiftmax and online_softmax to at most 16 bits, ilayernorm (24-bit inputs), topk (at most 8 experts), "
         "CONFIG, NOP, HALT")
"""What the top level runs today, in words (for messages)."""

_LANE_PARALLEL = (VecFn.REQUANT, VecFn.REQUANT_ADD, VecFn.COPY, VecFn.DIGIT, VecFn.SHIFTGELU, VecFn.MUL)


def rtl_lacks(instr: Instruction, config: SystemConfig) -> str | None:
    """Why the top level cannot run ``instr`` (a short phrase), or None when it can (``vec.py``'s ``built`` and
    ``spaces_ok``, ``config.max_row`` among them; an I-LayerNorm input wider than 24 bits or an epsilon outside its
    port (``layernorm_eps``), and online softmax
    registers outside the kernel's ``(m_c, e_c)`` range are data, found only when it runs; so is ``VEC topk``'s
    ``topk_k``, which the top level takes in ``[1, min(n, 8)]``)."""
    if isinstance(instr, Gemm):
        if instr.dataflow != 0:
            if not config.ws_array:
                return "weight-stationary GEMM (a top level built without ws_array)"
            if instr.k > config.rows or instr.n > config.cols:
                return (f"weight-stationary GEMM of k={instr.k} x n={instr.n} (one fold holds at most "
                        f"{config.rows} x {config.cols} weights)")
        elif instr.m > config.rows or instr.n > config.cols:
            return f"GEMM of {instr.m} x {instr.n} (one fold is at most {config.rows} x {config.cols})"
    elif isinstance(instr, Vec):
        fn = VecFn(instr.fn)
        name = f"VEC {fn.name.lower()}"
        if fn in (VecFn.THRESHOLD, VecFn.SHIFTMAX, VecFn.ONLINE_SOFTMAX) and instr.out_log2 > 4:
            return f"{name} to {1 << instr.out_log2} bits (at most 16)"
        if fn in (VecFn.SHIFTMAX, VecFn.ILAYERNORM) and instr.n > config.max_row:
            return f"{name} of {instr.n}-element rows (the top level is built for at most {config.max_row})"
        if fn not in (*_LANE_PARALLEL, VecFn.THRESHOLD, VecFn.SHIFTMAX, VecFn.ILAYERNORM, VecFn.ONLINE_SOFTMAX,
                      VecFn.TOPK):
            return name
        aux_data = fn in (VecFn.REQUANT_ADD, VecFn.TOPK, VecFn.MUL)  # aux holds data: a residual, logits, a factor
        if Space.CONST in (instr.src_space, instr.dst_space) or (aux_data and instr.aux_space == Space.CONST):
            return f"{name} reading or writing the constant memory as data"
        touches_sp = Space.SP in (instr.src_space, instr.dst_space) or (aux_data and instr.aux_space == Space.SP)
        if touches_sp and config.width != config.cols:
            return f"{name} on the scratchpad of a {config.rows} x {config.cols} array (rows > cols)"
    return None
