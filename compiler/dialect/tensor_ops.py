"""``dataflow`` ops that hold, multiply, requantize, look up and move tensors: weight, gemm, requant, embedding and
move (the ops with no vector-unit arithmetic of their own)."""

from __future__ import annotations

from xdsl.dialects.builtin import DictionaryAttr, IntegerAttr, IntegerType, StringAttr, TensorType
from xdsl.ir import Attribute, SSAValue, TypeAttribute
from xdsl.irdl import (
    AttrSizedOperandSegments,
    operand_def,
    opt_operand_def,
    opt_prop_def,
    prop_def,
    result_def,
    var_operand_def,
    var_result_def,
)
from xdsl.utils.exceptions import VerifyException

from compiler.dialect.choices import KIND_ATTR, MOVE_KINDS
from compiler.dialect.op_base import DataflowOp, check_choice, dataflow_op, numel, shape_of

__all__ = ["WeightOp", "GemmOp", "RequantOp", "EmbeddingOp", "MoveOp"]


@dataflow_op
class WeightOp(DataflowOp):
    """A model constant held in the compile's WeightStore under ``layer`` (the IR carries no data)."""

    name = "dataflow.weight"
    result = result_def(TensorType)
    assembly_format = "$layer attr-dict `:` type($result)"

    def __init__(self, weight_name: str, result_type: Attribute):
        super().__init__(result_types=[result_type], properties={"layer": StringAttr(weight_name)})


@dataflow_op
class GemmOp(DataflowOp):
    """``result[..., m, n] = sum_k lhs[..., m, k] * rhs[..., k, n] (+ bias[n])``.

    ``rhs`` is a weight (rank 2, already in K x N layout; the frontend folds Gemm's transB) or an activation with
    the same batch dims as ``lhs`` (QK^T-style products outside attention). ``acc_type`` is the accumulator element
    type the hardware uses: f32 before quantization, i32 after. For integer operands the result element type must
    equal ``acc_type``.
    """

    name = "dataflow.gemm"
    lhs = operand_def(TensorType)
    rhs = operand_def(TensorType)
    bias = opt_operand_def(TensorType)
    result = result_def(TensorType)
    acc_type = prop_def(TypeAttribute)
    irdl_options = (AttrSizedOperandSegments(as_property=True),)
    assembly_format = ("$layer $lhs `,` $rhs (`bias` $bias^)? attr-dict `:` type($lhs) `,` type($rhs) "
                       "(`,` type($bias)^)? `->` type($result)")

    def __init__(self, layer: str, lhs: SSAValue, rhs: SSAValue, bias: SSAValue | None, result_type: Attribute,
                 acc_type: Attribute):
        super().__init__(
            operands=[lhs, rhs, bias], result_types=[result_type],
            properties={"layer": StringAttr(layer), "acc_type": acc_type},
        )

    def mnk(self) -> tuple[int, int, int, int]:
        """(batch, m, n, k) of the product as the hardware runs it.

        A rank-2 ``rhs`` (a weight shared by every leading index of ``lhs``) makes one product whose rows are all of
        ``lhs``'s leading dims: m = prod(lhs[:-1]), batch 1. So a sequence-first (L, 1, D) activation, a batch of
        sequences or a batch-1 dimension in any position give the same GEMM, and the weight is streamed once for
        all rows instead of once per leading index. Products of two activations (rank-3+ ``rhs``, QK^T-style) keep
        their leading dims as independent ``batch`` products.
        """
        lhs, rhs = shape_of(self.lhs), shape_of(self.rhs)
        if len(rhs) == 2:
            m = 1
            for d in lhs[:-1]:
                m *= d
            return 1, m, rhs[-1], lhs[-1]
        batch = 1
        for d in lhs[:-2]:
            batch *= d
        return batch, lhs[-2], rhs[-1], lhs[-1]

    def verify_(self) -> None:
        lhs, rhs, out = shape_of(self.lhs), shape_of(self.rhs), shape_of(self.result)
        tag = f"dataflow.gemm '{self.layer_name()}'"
        if len(lhs) < 2 or len(rhs) < 2:
            raise VerifyException(f"{tag}: operands must have rank >= 2, got {lhs} and {rhs}")
        if lhs[-1] != rhs[-2]:
            raise VerifyException(f"{tag}: contraction dims differ: lhs {lhs} vs rhs {rhs}")
        if len(rhs) > 2 and rhs[:-2] != lhs[:-2]:
            raise VerifyException(f"{tag}: batch dims differ: lhs {lhs} vs rhs {rhs}")
        expect = lhs[:-1] + (rhs[-1],)
        if out != expect:
            raise VerifyException(f"{tag}: result shape {out} should be {expect}")
        if self.bias is not None and shape_of(self.bias) != (rhs[-1],):
            raise VerifyException(f"{tag}: bias shape {shape_of(self.bias)} should be ({rhs[-1]},)")
        lhs_el = self.lhs.type.get_element_type()  # type: ignore[attr-defined]
        out_el = self.result.type.get_element_type()  # type: ignore[attr-defined]
        if isinstance(lhs_el, IntegerType) and out_el != self.acc_type:
            raise VerifyException(f"{tag}: integer gemm must produce its accumulator type {self.acc_type}, "
                                  f"got {out_el}")


@dataflow_op
class RequantOp(DataflowOp):
    """Dyadic requantization ``clamp(round_half_even(x * m / 2^e))`` of an accumulator to ``out_bits``.

    Multipliers and shifts (per channel or per tensor) live in the WeightStore under ``layer``.
    """

    name = "dataflow.requant"
    input = operand_def(TensorType)
    result = result_def(TensorType)
    out_bits = prop_def(IntegerAttr)
    assembly_format = "$layer $input attr-dict `:` functional-type(operands, results)"

    def out_bits_value(self) -> int:
        """Bits of the requantized integers (4, 8, 16 or 32)."""
        return self.out_bits.value.data

    def verify_(self) -> None:
        if shape_of(self.input) != shape_of(self.result):
            raise VerifyException(f"dataflow.requant '{self.layer_name()}': shape changes")
        if self.out_bits_value() not in (4, 8, 16, 32):
            raise VerifyException(f"dataflow.requant '{self.layer_name()}': out_bits must be 4, 8, 16 or 32")


@dataflow_op
class MoveOp(DataflowOp):
    """Data movement without arithmetic (``kind`` from MOVE_KINDS; ONNX attributes kept in ``attrs``)."""

    name = "dataflow.move"
    inputs = var_operand_def(TensorType)
    outputs = var_result_def(TensorType)
    kind = prop_def(StringAttr)
    attrs = opt_prop_def(DictionaryAttr)
    assembly_format = "$layer $inputs attr-dict `:` `(` type($inputs) `)` `->` `(` type($outputs) `)`"

    def kind_value(self) -> str:
        """What the move does (one of MOVE_KINDS)."""
        return self.kind.data

    def verify_(self) -> None:
        check_choice(self, KIND_ATTR, MOVE_KINDS)
        kind = self.kind_value()
        if kind in ("reshape", "flatten", "squeeze", "unsqueeze"):
            size_in = numel(shape_of(self.inputs[0]))
            size_out = numel(shape_of(self.outputs[0]))
            if size_in != size_out:
                raise VerifyException(
                    f"dataflow.move '{self.layer_name()}': {kind} changes the element count {size_in} -> {size_out}"
                )


@dataflow_op
class EmbeddingOp(DataflowOp):
    """Row lookup ``table[indices]`` (token, position or segment embeddings)."""

    name = "dataflow.embedding"
    table = operand_def(TensorType)
    indices = operand_def(TensorType)
    result = result_def(TensorType)
    assembly_format = "$layer $table `,` $indices attr-dict `:` functional-type(operands, results)"

    def verify_(self) -> None:
        table, idx, out = shape_of(self.table), shape_of(self.indices), shape_of(self.result)
        if len(table) != 2 or out != idx + (table[1],):
            raise VerifyException(f"dataflow.embedding '{self.layer_name()}': result {out} should be {idx + table[1:]}")
