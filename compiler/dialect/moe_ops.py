"""The ``dataflow.moe`` op: a mixture-of-experts block (router, dispatch, expert FFNs, combine) as one unit of
work, with typed accessors for its routing properties."""

from __future__ import annotations

from typing import TYPE_CHECKING

from xdsl.dialects.builtin import (
    ArrayAttr,
    BoolAttr,
    DictionaryAttr,
    FloatAttr,
    IntegerAttr,
    IntegerType,
    StringAttr,
    TensorType,
)
from xdsl.irdl import AttrSizedOperandSegments, operand_def, opt_operand_def, prop_def, result_def
from xdsl.utils.exceptions import VerifyException

from compiler.dialect.choices import MODE_ATTR, MOE_ACTIVATIONS, MOE_MODES, MoeMode
from compiler.dialect.op_base import DataflowOp, check_choice, dataflow_op, numel, shape_of

if TYPE_CHECKING:  # compiler.numerics's package imports torch, which a float compile must not pay for
    from compiler.numerics.router import Scoring

__all__ = ["MoeOp", "ROUTER_ATTR"]

ROUTER_ATTR = "router"
"""Discardable attribute of a ``dataflow.moe`` with a sigmoid router (compiler/numerics/router.py ``Scoring``)."""


@dataflow_op
class MoeOp(DataflowOp):
    """A mixture-of-experts block: router, dispatch, per-expert FFNs and weighted combine, as one unit of work.

    Operands: ``input`` [tokens..., D], ``gate`` [D, E], the experts' weights w1 [E, D, H], w2 [E, H, D] and optional
    biases b1 [E, H], b2 [E, D], and for gated (SwiGLU / GeGLU, Mixtral) experts an optional up projection w3
    [E, D, H]; ``result`` has the input's element count with last dim D (exports may flatten the tokens). Expert e
    computes ``activation(x @ w1[e] + b1[e]) @ w2[e] + b2[e]``, gated: ``(activation(x @ w1[e] + b1[e]) * (x @
    w3[e])) @ w2[e] + b2[e]`` (w1 the gate projection). ``mode`` is token | task | image
    routing (semantics: compiler/numerics/router.py), ``top_k`` experts per token, ``capacity_factor`` per-expert
    capacity ``ceil(cf * T * k / E)`` tokens (0 = no limit; overflow is dropped), ``renormalize`` divides the k
    weights by their sum; a ``router`` attribute marks a sigmoid router (``scoring``). After ``quantize`` the
    block is integer: input, gate, w1, w2 (w3) and result integers, biases i32 (the formats and their WeightStore
    entries: compiler/simulate/moe.py).
    """

    name = "dataflow.moe"
    input = operand_def(TensorType)
    gate = operand_def(TensorType)
    w1 = operand_def(TensorType)
    w2 = operand_def(TensorType)
    b1 = opt_operand_def(TensorType)
    b2 = opt_operand_def(TensorType)
    w3 = opt_operand_def(TensorType)
    result = result_def(TensorType)
    num_experts = prop_def(IntegerAttr)
    top_k = prop_def(IntegerAttr)
    mode = prop_def(StringAttr)
    capacity_factor = prop_def(FloatAttr)
    renormalize = prop_def(BoolAttr)
    activation = prop_def(StringAttr)
    irdl_options = (AttrSizedOperandSegments(as_property=True),)
    assembly_format = ("$layer $input `,` $gate `,` $w1 `,` $w2 (`b1` $b1^ `:` type($b1))? (`b2` $b2^ `:` type($b2))? "
                       "(`w3` $w3^ `:` type($w3))? attr-dict `:` type($input) `,` type($gate) `,` type($w1) `,` "
                       "type($w2) `->` type($result)")

    def verify_(self) -> None:
        tag = f"dataflow.moe '{self.layer_name()}'"
        x, gate, w1, w2 = shape_of(self.input), shape_of(self.gate), shape_of(self.w1), shape_of(self.w2)
        out = shape_of(self.result)
        experts = self.num_experts_value()
        if gate != (x[-1], experts):
            raise VerifyException(f"{tag}: gate shape {gate} should be {(x[-1], experts)}")
        if len(w1) != 3 or w1[0] != experts or w1[1] != x[-1]:
            raise VerifyException(f"{tag}: w1 shape {w1} should be [{experts}, {x[-1]}, hidden]")
        if w2 != (experts, w1[2], x[-1]):
            raise VerifyException(f"{tag}: w2 shape {w2} should be {(experts, w1[2], x[-1])}")
        if self.b1 is not None and shape_of(self.b1) != (experts, w1[2]):
            raise VerifyException(f"{tag}: b1 shape {shape_of(self.b1)} should be {(experts, w1[2])}")
        if self.b2 is not None and shape_of(self.b2) != (experts, x[-1]):
            raise VerifyException(f"{tag}: b2 shape {shape_of(self.b2)} should be {(experts, x[-1])}")
        if self.w3 is not None and shape_of(self.w3) != w1:
            raise VerifyException(f"{tag}: w3 (the gated experts' up projection) shape {shape_of(self.w3)} should be "
                                  f"w1's {w1}")
        if out[-1:] != x[-1:] or numel(out) != numel(x):
            raise VerifyException(f"{tag}: result shape {out} should hold the input's {x} elements, last dim {x[-1]}")
        if not 1 <= self.top_k_value() <= experts:
            raise VerifyException(f"{tag}: top_k must be in 1..{experts}")
        if self.capacity_factor_value() < 0:
            raise VerifyException(f"{tag}: capacity_factor must be >= 0 (0 = no limit)")
        check_choice(self, MODE_ATTR, MOE_MODES)
        check_choice(self, "activation", MOE_ACTIVATIONS)
        if self.mode.data == MoeMode.TASK and self.capacity_factor_value() > 0:
            raise VerifyException(f"{tag}: task routing has no capacity limit (capacity_factor must be 0)")
        if isinstance(self.input.type.get_element_type(), IntegerType):  # type: ignore[attr-defined]
            for key in ("gate", "w1", "w2", "result") + (("w3",) if self.w3 is not None else ()):
                if not isinstance(getattr(self, key).type.get_element_type(), IntegerType):
                    raise VerifyException(f"{tag}: an integer block needs an integer {key}")
            for key in ("b1", "b2"):
                bias = getattr(self, key)
                if bias is not None and bias.type.get_element_type() != IntegerType(32):
                    raise VerifyException(f"{tag}: an integer block needs an i32 {key}")

    def gated(self) -> bool:
        """Whether the experts are gated (SwiGLU / GeGLU: a third, up projection w3)."""
        return self.w3 is not None

    def num_experts_value(self) -> int:
        """Experts E."""
        return self.num_experts.value.data

    def top_k_value(self) -> int:
        """Experts each token (task, image) is routed to."""
        return self.top_k.value.data

    def mode_choice(self) -> MoeMode:
        """What is routed: each token, each task or each image."""
        return MoeMode(self.mode.data)

    def capacity_factor_value(self) -> float:
        """Per-expert capacity factor (0 = no limit)."""
        return self.capacity_factor.value.data

    def renormalize_value(self) -> bool:
        """Whether the k routing weights are divided by their sum."""
        return bool(self.renormalize.value.data)

    def activation_value(self) -> str:
        """The experts' hidden activation (one of MOE_ACTIVATIONS)."""
        return self.activation.data

    def scoring(self) -> Scoring | None:
        """The sigmoid router's parameters (DeepSeek-V3, GLM-4-MoE), from the discardable ``router`` attribute
        {bias: [E] selection bias, groups, topk_groups, scale}; None for the softmax router."""
        attr = self.attributes.get(ROUTER_ATTR)
        if not isinstance(attr, DictionaryAttr):
            return None
        from compiler.numerics.router import Scoring  # only a sigmoid-routed MoE pays for the numerics package
        d = attr.data
        bias = d.get("bias")
        number = lambda key, default: d[key].value.data if key in d else default  # type: ignore[attr-defined]  # noqa: E731
        return Scoring(bias=None if not isinstance(bias, ArrayAttr) else tuple(float(b.value.data) for b in bias),
                       groups=int(number("groups", 1)), topk_groups=int(number("topk_groups", 1)),
                       scale=float(number("scale", 1.0)))
