"""Cited default figures that a target YAML may leave out. Every number here is a default, not a measurement.

Two tables live here because several target kinds share them and the schema fills them in:

* ``VECTOR_COSTS``: cycles per element (per lane) and per row for each (vector kind, approximation).
* ``PJ_PER_MAC``, ``PJ_PER_BYTE_*``: energy figures from Horowitz, "Computing's energy problem (and what we can do
  about it)", ISSCC 2014, 45 nm, 0.9 V (docs/SOURCES.md [33]). ⚠ They are 45 nm ASIC figures; YAMLs scale or
  replace them.
"""

from __future__ import annotations

from types import MappingProxyType

__all__ = ["VECTOR_COSTS", "PJ_PER_MAC", "PJ_PER_BYTE_ONCHIP", "PJ_PER_BYTE_OFFCHIP"]

# --- Vector / special-function unit costs ---------------------------------------------------------------------------
# On an FPGA target the pairs that have an RTL unit (softmax shiftmax / online, gelu shiftgelu / shiftgelu-row,
# layernorm ilayernorm, router, requant) are not priced from this table but with that unit's exact predicted_cycles
# (hw/models/fpga.py, RTL_VECTOR_UNITS; e.g. Shiftmax is 3n + 16 cycles per row of n on one lane); the entries below
# stay for the other pairs and for targets without our RTL (NPU ...).
# Machine assumed by every number (⚠ defaults, not measured): a lane issues one operation per cycle, either a
# <=18x27-bit multiply (one DSP48E2) or an add / shift / compare / LUT read; passes over a row run one after another.
# ``per_element`` counts the operations one element needs on its lane (so a layer takes
# ceil(elements / lanes) * per_element cycles); ``per_row`` is the serial work done once per row (a reciprocal or a
# division, plus draining the cross-lane reduction tree), which lanes cannot share.
# Values are (per_element, per_row).
_COSTS: dict[str, dict[str, tuple[float, float]]] = {
    "softmax": {
        # 3 passes: max (1 compare), exp + sum (range reduction 1 mul, degree-3 Horner 3 mul-adds, 2^n shift 1,
        # accumulate fused = 5), normalise (1 mul by the row reciprocal, 1 requantising shift = 2): 1 + 5 + 2 = 8.
        # per row: Newton-Raphson reciprocal, 3 iterations x 2 dependent multiplies x 4-stage DSP latency = 24.
        "exact": (8, 24),
        # Online softmax (Milakov & Gimelshein 2018; Edge-MoE's "single pass"): pass 1 fuses max and sum but rescales
        # (compare 1, exp 5, rescale mul 1 = 7); pass 2 recomputes exp(x - m) and scales by 1/s (exp 5, mul 1 = 6).
        # It saves a pass over memory, not arithmetic: 13. Same reciprocal per row: 24.
        "online": (13, 24),
        # I-ViT Shiftmax: max 1; x + x>>1 - x>>4 on a 3-input adder 1; q = x/x0 by a constant multiply 1;
        # r = x - x0*q 1; e = (r>>1 - x0) << (n - q) 1 (sum fused); normalise e*f >> (32-b) 1: 6 shift/add-heavy ops.
        # per row: one 32-bit integer division floor((2^31-1)/sum) on a radix-2 divider, 1 bit per cycle = 32.
        "shiftmax": (6, 32),
        # Softermax (Stevens et al. DAC 2021): base-2 exponent with an integer running max, so no range-reduction
        # multiply: max 1, 2^x by shift + fraction LUT 1, normalise mul 1 + shift 1 = 4. Reciprocal per row: 24.
        "softermax": (4, 24),
        # I-BERT i-exp: range reduction (1 mul, 1 shift) + 2nd-order polynomial (2 mul-adds), max 1, normalise 1 = 6.
        # per row: integer division as Shiftmax = 32.
        "ibert": (6, 32),
    },
    "gelu": {
        # x * Phi(x) with erf as a degree-5 odd polynomial: x^2 1, Horner 3, (1 + erf) * x/2 2 = 6.
        "exact": (6, 0),
        # ShiftGELU with the per-element offset m = max(x, 0) (--gelu shiftgelu): m is x's sign (free), two
        # shift-exps (2 x 2), their sum 1, a pipelined integer divider 1, x * sigma 1 = 7.
        "shiftgelu": (7, 0),
        # I-ViT ShiftGELU as published (m = the row max, --gelu shiftgelu-row): a max pass over the row 1 (a compare
        # per element, as softmax's), then the same 7 = 8.
        "shiftgelu-row": (8, 0),
        # Edge-MoE: ReLU(x) - delta(|x|) with a 177-entry LUT + linear interpolation: abs 1, LUT 1, interp mul 1,
        # subtract 1 = 4.
        "lut": (4, 0),
        # I-BERT i-GELU: clip/sign 1, 2nd-order erf polynomial 2, x * (1 + erf) 1 = 4.
        "ibert": (4, 0),
        # Replacing GELU by ReLU (a compare per element) = 1.
        "relu": (1, 0),
    },
    "layernorm": {
        # Single pass E[x], E[x^2] (mul 1, 2 adds 2), normalise (sub 1, mul by 1/sigma 1, affine mul-add 1) = 6.
        # per row: rsqrt by Newton-Raphson, 3 iterations x 3 dependent multiplies x 4-stage latency = 36.
        "exact": (6, 36),
        # I-ViT I-LayerNorm: same per-element work; per row the integer sqrt runs 10 Newton steps, each a 32-bit
        # division (32 cycles) and an add/shift (2) = 340, plus the 32-bit division floor((2^31-1)/k) = 32: 372.
        "ilayernorm": (6, 372),
    },
    "rmsnorm": {
        # As layernorm without the mean: square-accumulate 2, scale mul 1, affine mul 1 = 4; rsqrt per row 36.
        "exact": (4, 36),
    },
    # Element-wise integer ops: one pipelined operation per element.
    "add": {"exact": (1, 0)},
    "mul": {"exact": (1, 0)},
    "relu": {"exact": (1, 0)},
    # Dyadic requantisation: multiply by m_int, rounding shift, clamp -> 3 ops (I-ViT requant).
    "requant": {"exact": (3, 0)},
    # Per-token int8 quantization of a GEMM input row (--act-granularity per-token): max |x| pass 1 (a compare per
    # element), then multiply by the row's reciprocal step 1, rounding shift 1, clamp 1 = 4; per row the step
    # t = ceil(max / 127) and its reciprocal, one integer division on a radix-2 divider as Shiftmax's = 32. The
    # per-row rescale after the GEMM is a ``requant``.
    "rowquant": {"exact": (4, 32)},
    # MoE gate: online softmax over the expert logits (13) plus a top-2 insertion compare (1); reciprocal per row.
    "router": {"exact": (14, 24)},
    # Top-k selection with a k-deep insertion network, k = 2 (Switch / Edge-MoE top-2): 2 compares per element.
    "topk": {"exact": (2, 0)},
}

VECTOR_COSTS = MappingProxyType({kind: MappingProxyType(dict(table)) for kind, table in _COSTS.items()})
"""kind -> approximation -> (cycles per element per lane, serial cycles per row). ⚠ defaults."""

# --- Energy (Horowitz ISSCC 2014, 45 nm) ----------------------------------------------------------------------------
# One MAC = one multiply + one accumulate-width add. 8-bit: 0.2 pJ mul + 0.03 pJ add (int8 add; the accumulator is
# wider, so take the 32-bit add 0.1 pJ) = 0.3 pJ. 16-bit: the multiply scales ~quadratically with width,
# 0.2 * 4 = 0.8 pJ, + 0.1 = 0.9 pJ. 32-bit: 3.1 pJ mul + 0.1 pJ add = 3.2 pJ. 4-bit: 0.2 / 4 + 0.1 = 0.15 pJ.
PJ_PER_MAC = MappingProxyType({4: 0.15, 8: 0.3, 16: 0.9, 32: 3.2})
# On-chip SRAM: Horowitz's 64-bit access to a 32 KB array costs 20 pJ -> 2.5 pJ per byte (typical buffer size).
PJ_PER_BYTE_ONCHIP = 2.5
# Off-chip DRAM: Horowitz 1.3-2.6 nJ per 64-bit access; take the low end, 1.3 nJ / 8 B = 162.5 pJ per byte.
PJ_PER_BYTE_OFFCHIP = 162.5
