"""Integer reference kernels: the bit-exact oracle for the RTL and the functional simulator.

Every kernel takes integer tensors (any integer dtype, computed in ``torch.int64``) and is exact integer
arithmetic; floats appear only in constants derived from a scale, computed in float64. Where a published
kernel emulates integers in float32 (I-ViT, I-BERT), our semantics are that code evaluated in float64,
i.e. exact integers. Each module's docstring cites its source and writes the arithmetic down.

===================  =========================================================================
module               kernels
===================  =========================================================================
``quant``            symmetric_scale, quantize, dequantize, dyadic, requantize (+ per channel, add)
``pertoken``         quantize_rows, per_token_gemm (per-token dynamic int8 GEMM input, per-row rescale)
``shiftmax``         shiftmax (I-ViT), shift_exp
``shiftgelu``        shiftgelu (I-ViT; row-max or per-element stabilizer)
``ilayernorm``       ilayernorm (I-ViT), isqrt_newton
``ibert``            ibert_softmax, ibert_gelu, ibert_exp (I-BERT)
``base2``            base2_softmax (Softermax-style)
``online_softmax``   online_softmax (integer), online_softmax_float (Edge-MoE, float64)
``log2q``            log2q_quantize, log2q_dequantize, log2q_softmax (RepQ-ViT)
``lut_gelu``         lut_gelu (Edge-MoE table GELU, Q10.22)
``softmax_free``     softmax_free_attention (SOFT, float64), newton_schulz_pinv
``group_gemm``       group_gemm (per-group int weight scales, --weight-group)
``exact``            softmax_exact, gelu_exact, layernorm_exact (float64 on the integer grids)
``registry``         SOFTMAX_APPROX, GELU_APPROX, LAYERNORM_APPROX, get_approx
===================  =========================================================================
"""

from compiler.numerics.base2 import EXP2_LUT, base2_softmax
from compiler.numerics.exact import gelu_exact, layernorm_exact, softmax_exact
from compiler.numerics.group_gemm import group_gemm
from compiler.numerics.ibert import ibert_exp, ibert_gelu, ibert_softmax
from compiler.numerics.ilayernorm import ilayernorm, isqrt_newton
from compiler.numerics.log2q import log2q_dequantize, log2q_quantize, log2q_softmax
from compiler.numerics.lut_gelu import GELU_DELTA_LUT, lut_gelu
from compiler.numerics.online_softmax import online_softmax, online_softmax_float, online_softmax_stats
from compiler.numerics.pertoken import per_token_gemm, quantize_rows
from compiler.numerics.quant import (
    dequantize,
    dyadic,
    dyadic_per_channel,
    quantize,
    requantize,
    requantize_add,
    requantize_per_channel,
    symmetric_scale,
)
from compiler.numerics.registry import GELU_APPROX, LAYERNORM_APPROX, SOFTMAX_APPROX, Approx, get_approx
from compiler.numerics.shiftgelu import shiftgelu
from compiler.numerics.shiftmax import shift_exp, shiftmax
from compiler.numerics.softmax_free import gaussian_kernel, newton_schulz_pinv, softmax_free_attention

__all__ = [
    "EXP2_LUT",
    "GELU_APPROX",
    "GELU_DELTA_LUT",
    "LAYERNORM_APPROX",
    "SOFTMAX_APPROX",
    "Approx",
    "base2_softmax",
    "dequantize",
    "dyadic",
    "dyadic_per_channel",
    "gaussian_kernel",
    "gelu_exact",
    "group_gemm",
    "get_approx",
    "ibert_exp",
    "ibert_gelu",
    "ibert_softmax",
    "ilayernorm",
    "isqrt_newton",
    "layernorm_exact",
    "log2q_dequantize",
    "log2q_quantize",
    "log2q_softmax",
    "lut_gelu",
    "newton_schulz_pinv",
    "online_softmax",
    "online_softmax_float",
    "online_softmax_stats",
    "per_token_gemm",
    "quantize",
    "quantize_rows",
    "requantize",
    "requantize_add",
    "requantize_per_channel",
    "shift_exp",
    "shiftgelu",
    "shiftmax",
    "softmax_exact",
    "softmax_free_attention",
    "symmetric_scale",
]
