"""``dataflow`` ops the vector lanes compute: softmax, layernorm (and RMSNorm), GELU, element-wise ops and
reductions. Their choice properties (``approx``, ``kind``) come back from typed accessors as their
``compiler.dialect.choices`` enum where one exists."""

from __future__ import annotations

from xdsl.dialects.builtin import ArrayAttr, BoolAttr, DictionaryAttr, FloatAttr, IntegerAttr, StringAttr, TensorType
from xdsl.irdl import (
    AttrSizedOperandSegments,
    operand_def,
    opt_operand_def,
    opt_prop_def,
    prop_def,
    result_def,
    var_operand_def,
)
from xdsl.utils.exceptions import VerifyException

from compiler.dialect.choices import (
    APPROX_ATTR,
    ELEMENTWISE_KINDS,
    GELU_APPROX,
    KIND_ATTR,
    LAYERNORM_APPROX,
    LAYERNORM_KINDS,
    REDUCE_KINDS,
    SOFTMAX_APPROX,
    GeluApprox,
    LayerNormApprox,
    LayerNormKind,
    SoftmaxApprox,
)
from compiler.dialect.op_base import DataflowOp, check_choice, dataflow_op, shape_of

__all__ = ["SoftmaxOp", "LayerNormOp", "GeluOp", "ElementwiseOp", "ReduceOp"]


@dataflow_op
class SoftmaxOp(DataflowOp):
    """Softmax along ``axis`` with the chosen hardware ``approx`` (a standalone softmax outside attention)."""

    name = "dataflow.softmax"
    input = operand_def(TensorType)
    result = result_def(TensorType)
    axis = prop_def(IntegerAttr)
    approx = prop_def(StringAttr)
    assembly_format = "$layer $input attr-dict `:` functional-type(operands, results)"

    def verify_(self) -> None:
        shape = shape_of(self.input)
        if shape_of(self.result) != shape:
            raise VerifyException(f"dataflow.softmax '{self.layer_name()}': shape changes")
        if not -len(shape) <= self.axis_value() < len(shape):
            raise VerifyException(f"dataflow.softmax '{self.layer_name()}': axis out of range for {shape}")
        check_choice(self, APPROX_ATTR, SOFTMAX_APPROX)

    def axis_value(self) -> int:
        """The axis the softmax normalises (negative counts from the last)."""
        return self.axis.value.data

    def approx_choice(self) -> SoftmaxApprox:
        return SoftmaxApprox(self.approx.data)


@dataflow_op
class LayerNormOp(DataflowOp):
    """LayerNorm (``kind = layernorm``) or RMSNorm (``kind = rmsnorm``) over the last dimension."""

    name = "dataflow.layernorm"
    input = operand_def(TensorType)
    weight = operand_def(TensorType)
    bias = opt_operand_def(TensorType)
    result = result_def(TensorType)
    epsilon = prop_def(FloatAttr)
    kind = prop_def(StringAttr)
    approx = prop_def(StringAttr)
    irdl_options = (AttrSizedOperandSegments(as_property=True),)
    assembly_format = ("$layer $input `,` $weight (`bias` $bias^)? attr-dict `:` type($input) `,` type($weight) "
                       "(`,` type($bias)^)? `->` type($result)")

    def verify_(self) -> None:
        tag = f"dataflow.layernorm '{self.layer_name()}'"
        shape = shape_of(self.input)
        if shape_of(self.result) != shape:
            raise VerifyException(f"{tag}: shape changes")
        if shape_of(self.weight) != (shape[-1],):
            raise VerifyException(f"{tag}: weight shape {shape_of(self.weight)} should be ({shape[-1]},)")
        if self.bias is not None and shape_of(self.bias) != (shape[-1],):
            raise VerifyException(f"{tag}: bias shape {shape_of(self.bias)} should be ({shape[-1]},)")
        check_choice(self, KIND_ATTR, LAYERNORM_KINDS)
        check_choice(self, APPROX_ATTR, LAYERNORM_APPROX)

    def epsilon_value(self) -> float:
        """The variance's epsilon."""
        return self.epsilon.value.data

    def approx_choice(self) -> LayerNormApprox:
        return LayerNormApprox(self.approx.data)

    def norm_kind(self) -> LayerNormKind:
        return LayerNormKind(self.kind.data)


@dataflow_op
class GeluOp(DataflowOp):
    """GELU; ``approx`` is how hardware computes it (``exact`` erf, the export's ``tanh`` form, or integer ones)."""

    name = "dataflow.gelu"
    input = operand_def(TensorType)
    result = result_def(TensorType)
    approx = prop_def(StringAttr)
    assembly_format = "$layer $input attr-dict `:` functional-type(operands, results)"

    def verify_(self) -> None:
        if shape_of(self.result) != shape_of(self.input):
            raise VerifyException(f"dataflow.gelu '{self.layer_name()}': shape changes")
        check_choice(self, APPROX_ATTR, GELU_APPROX)

    def approx_choice(self) -> GeluApprox:
        return GeluApprox(self.approx.data)


@dataflow_op
class ElementwiseOp(DataflowOp):
    """An element-wise op with numpy broadcasting (``kind`` from ELEMENTWISE_KINDS, ONNX attributes in ``attrs``)."""

    name = "dataflow.elementwise"
    inputs = var_operand_def(TensorType)
    result = result_def(TensorType)
    kind = prop_def(StringAttr)
    attrs = opt_prop_def(DictionaryAttr)
    assembly_format = "$layer $inputs attr-dict `:` `(` type($inputs) `)` `->` type($result)"

    def verify_(self) -> None:
        check_choice(self, KIND_ATTR, ELEMENTWISE_KINDS)
        if not self.inputs:
            raise VerifyException(f"dataflow.elementwise '{self.layer_name()}': needs at least one input")

    def kind_value(self) -> str:
        """The operation (one of ELEMENTWISE_KINDS)."""
        return self.kind.data


@dataflow_op
class ReduceOp(DataflowOp):
    """A reduction (``kind`` from REDUCE_KINDS) over ``axes``."""

    name = "dataflow.reduce"
    input = operand_def(TensorType)
    result = result_def(TensorType)
    kind = prop_def(StringAttr)
    axes = prop_def(ArrayAttr[IntegerAttr])
    keepdims = prop_def(BoolAttr)
    assembly_format = "$layer $input attr-dict `:` functional-type(operands, results)"

    def verify_(self) -> None:
        check_choice(self, KIND_ATTR, REDUCE_KINDS)
        rank = len(shape_of(self.input))
        for axis in self.axes.data:
            if not -rank <= axis.value.data < rank:
                raise VerifyException(f"dataflow.reduce '{self.layer_name()}': axis {axis.value.data} out of range")

    def kind_value(self) -> str:
        """The reduction (one of REDUCE_KINDS)."""
        return self.kind.data

    def axes_value(self) -> tuple[int, ...]:
        """The reduced axes (negative count from the last)."""
        return tuple(int(a.value.data) for a in self.axes.data)

    def keepdims_value(self) -> bool:
        """Whether the reduced axes stay as size-1 dims."""
        return bool(self.keepdims.value.data)
