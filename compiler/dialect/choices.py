"""The ``dataflow`` dialect's contract beside its op definitions: the choices a property may take (as StrEnums, and
the value tuples the verifiers check) and the names under which ops keep their properties.

A choice property is a plain string in the IR, so the printed form and ``dataflow.irdl.mlir`` are unchanged; the ops'
accessors (``AttentionOp.softmax_choice()`` ...) return it as its enum.
"""

from __future__ import annotations

from enum import StrEnum

__all__ = [
    "SoftmaxApprox",
    "GeluApprox",
    "LayerNormApprox",
    "LayerNormKind",
    "AttentionAlgorithm",
    "MaskKind",
    "MoeMode",
    "SOFTMAX_APPROX",
    "GELU_APPROX",
    "LAYERNORM_APPROX",
    "LAYERNORM_KINDS",
    "ATTENTION_ALGORITHMS",
    "MASK_KINDS",
    "MOE_MODES",
    "LAYER_ATTR",
    "APPROX_ATTR",
    "KIND_ATTR",
    "SOFTMAX_ATTR",
    "ALGORITHM_ATTR",
    "LANES_ATTR",
    "NUM_HEADS_ATTR",
    "HEAD_DIM_ATTR",
    "KV_HEADS_ATTR",
    "SCALE_ATTR",
    "CAUSAL_ATTR",
    "MASK_KIND_ATTR",
    "AXIS_ATTR",
    "EPSILON_ATTR",
    "OUT_BITS_ATTR",
    "MODE_ATTR",
    "NUM_EXPERTS_ATTR",
    "TOP_K_ATTR",
    "TILE_Q_ATTR",
    "TILE_K_ATTR",
    "MOE_ACTIVATIONS",
    "ELEMENTWISE_KINDS",
    "PIECEWISE_LINEAR_KINDS",
    "MOVE_KINDS",
    "REDUCE_KINDS",
]


class SoftmaxApprox(StrEnum):
    """Softmax implementations a softmax or attention op may carry (issue: integer numerics)."""

    EXACT = "exact"
    SHIFTMAX = "shiftmax"
    ONLINE = "online"
    BASE2 = "base2"
    IBERT = "ibert"
    LOG2Q = "log2q"
    SOFTMAX_FREE = "softmax-free"


class GeluApprox(StrEnum):
    """GELU implementations; ``tanh`` is the exporter's own tanh approximation and ``sigmoid`` the model's own
    x * sigmoid(1.702 x) (OpenAI CLIP's ``quick_gelu``, the form I-ViT's ShiftGELU approximates), kept as found."""

    EXACT = "exact"
    TANH = "tanh"
    SIGMOID = "sigmoid"
    SHIFTGELU = "shiftgelu"
    SHIFTGELU_ROW = "shiftgelu-row"
    IBERT = "ibert"
    LUT = "lut"


class LayerNormApprox(StrEnum):
    EXACT = "exact"
    ILAYERNORM = "ilayernorm"


class LayerNormKind(StrEnum):
    """What ``dataflow.layernorm`` normalises: mean and variance, or the root mean square only."""

    LAYERNORM = "layernorm"
    RMSNORM = "rmsnorm"


class AttentionAlgorithm(StrEnum):
    """The evaluation order of ``dataflow.attention`` (``set-attention``)."""

    STANDARD = "standard"
    EDGE_MOE = "edge-moe"
    FLASH = "flash"


class MaskKind(StrEnum):
    """Structures of an attention mask the frontend tells apart (``dataflow.attention``'s ``mask_kind``)."""

    CAUSAL = "causal"
    BANDED = "banded"
    BLOCK = "block"
    PADDING = "padding"
    INPUT = "input"
    OTHER = "other"


class MoeMode(StrEnum):
    """What a ``dataflow.moe`` routes: each token, one choice per task, or one per image."""

    TOKEN = "token"
    TASK = "task"
    IMAGE = "image"


SOFTMAX_APPROX = tuple(e.value for e in SoftmaxApprox)
GELU_APPROX = tuple(e.value for e in GeluApprox)
LAYERNORM_APPROX = tuple(e.value for e in LayerNormApprox)
LAYERNORM_KINDS = tuple(e.value for e in LayerNormKind)
ATTENTION_ALGORITHMS = tuple(e.value for e in AttentionAlgorithm)
MASK_KINDS = tuple(e.value for e in MaskKind)
MOE_MODES = tuple(e.value for e in MoeMode)

# --- Property names ---------------------------------------------------------------------------------------------------
# The names under which ops keep their properties, for passes and the simulator that read them by name.

LAYER_ATTR = "layer"
APPROX_ATTR = "approx"
KIND_ATTR = "kind"
SOFTMAX_ATTR = "softmax"
ALGORITHM_ATTR = "algorithm"
LANES_ATTR = "lanes"
NUM_HEADS_ATTR = "num_heads"
HEAD_DIM_ATTR = "head_dim"
KV_HEADS_ATTR = "kv_heads"
SCALE_ATTR = "scale"
CAUSAL_ATTR = "causal"
MASK_KIND_ATTR = "mask_kind"
AXIS_ATTR = "axis"
EPSILON_ATTR = "epsilon"
OUT_BITS_ATTR = "out_bits"
MODE_ATTR = "mode"
NUM_EXPERTS_ATTR = "num_experts"
TOP_K_ATTR = "top_k"
#: Attributes ``set-attention`` puts on a ``flash`` attention op: its query and key tile sizes (the scheduler
#: prices them, the simulator walks them).
TILE_Q_ATTR = "tile_q"
TILE_K_ATTR = "tile_k"
#: Expert hidden activations (compiler/numerics/router.py ACTIVATIONS).
MOE_ACTIVATIONS = ("gelu", "gelu_tanh", "relu", "silu", "identity")
ELEMENTWISE_KINDS = (
    "add", "sub", "mul", "div", "pow", "sqrt", "reciprocal", "neg", "abs", "exp", "log", "erf", "tanh",
    "sigmoid", "relu", "min", "max", "where", "equal", "less", "greater", "not", "and", "or", "cast",
    "clip", "softplus", "identity", "mod", "isnan", "isinf", "less_equal", "greater_equal", "hardsigmoid",
    "hardswish", "floor", "ceil", "round", "sign", "cos", "sin", "xor",
    # activations and trigonometry (compiler/frontend/onnx_activations.py)
    "elu", "selu", "celu", "leaky_relu", "prelu", "thresholded_relu", "shrink", "mish", "swish", "softsign", "tan",
    "asin", "acos", "atan", "sinh", "cosh", "asinh", "acosh", "atanh",
)
#: Element-wise kinds a vector lane evaluates with a compare, a multiply (or add) and a select: no exponential or
#: polynomial, so the schedule prices them like a multiply (compiler/schedule/lower.py).
PIECEWISE_LINEAR_KINDS = frozenset({"mul", "hardsigmoid", "hardswish", "leaky_relu", "prelu", "thresholded_relu",
                                    "shrink"})
MOVE_KINDS = (
    "reshape", "transpose", "gather", "slice", "concat", "split", "expand", "squeeze", "unsqueeze",
    "flatten", "patchify", "tile", "trilu", "range", "shape", "constant_of_shape", "cumsum", "im2col", "pad",
    "scatter", "resize", "sort",
)
REDUCE_KINDS = ("mean", "sum", "max", "min", "prod", "argmax")
