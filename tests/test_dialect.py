"""The dataflow dialect on the xDSL side: each op's verifier rejects bad shapes and choices with its exact message,
and custom and generic form (properties printed as attributes, as ``--mlir-generic`` writes) round-trip.

Upstream MLIR's view of the same ops is tests/test_dialect_irdl.py.
"""

from __future__ import annotations

import inspect
import io
from enum import StrEnum
from pathlib import Path

import pytest
from xdsl.dialects.builtin import (
    ArrayAttr,
    BoolAttr,
    DenseArrayBase,
    DictionaryAttr,
    FloatAttr,
    IntegerAttr,
    IntegerType,
    ModuleOp,
    StringAttr,
    TensorType,
    f32,
    f64,
    i32,
    i64,
)
from xdsl.dialects.func import FuncOp, ReturnOp
from xdsl.ir import Attribute, Block, Region
from xdsl.irdl import IRDLOperation, ParsePropInAttrDict
from xdsl.parser import Parser
from xdsl.printer import Printer
from xdsl.traits import Pure
from xdsl.utils.exceptions import VerifyException

from codesign.cli import main as codesign_main
from compiler.context import make_context
from compiler.dialect import dataflow as df

ROOT = Path(__file__).resolve().parents[1]
i8 = IntegerType(8)


def _t(*shape: int, el: Attribute = f32) -> TensorType:
    return TensorType(el, shape)


def _prop(value) -> Attribute:
    if isinstance(value, Attribute):
        return value
    if isinstance(value, bool):
        return BoolAttr.from_bool(value)
    if isinstance(value, int):
        return df.int_prop(value)
    if isinstance(value, float):
        return df.float_prop(value)
    if isinstance(value, str):
        return StringAttr(value)
    if isinstance(value, tuple):
        return ArrayAttr([df.int_prop(v) for v in value])
    if isinstance(value, dict):
        return DictionaryAttr({k: _prop(v) for k, v in value.items()})
    raise TypeError(value)


#: A valid instance of every op: (operand types, result types, properties). `segments` become operandSegmentSizes.
GOOD: dict[type, tuple[list, list, dict]] = {
    df.WeightOp: ([], [_t(8, 16)], {"layer": "w"}),
    df.GemmOp: ([_t(2, 4, 8), _t(8, 16), _t(16)], [_t(2, 4, 16)],
                {"layer": "g", "acc_type": f32, "segments": (1, 1, 1)}),
    df.RequantOp: ([_t(2, 4, 8, el=i32)], [_t(2, 4, 8, el=i8)], {"layer": "rq", "out_bits": 8}),
    df.AttentionOp: ([_t(2, 4, 8), _t(2, 6, 8), _t(2, 6, 8)], [_t(2, 4, 8)],
                     {"layer": "att", "num_heads": 2, "head_dim": 4, "scale": 0.5, "causal": False,
                      "softmax": "exact", "algorithm": "standard", "segments": (1, 1, 1, 0)}),
    df.SoftmaxOp: ([_t(2, 4, 8)], [_t(2, 4, 8)], {"layer": "sm", "axis": -1, "approx": "exact"}),
    df.LayerNormOp: ([_t(2, 4, 8), _t(8), _t(8)], [_t(2, 4, 8)],
                     {"layer": "ln", "epsilon": 1e-5, "kind": "layernorm", "approx": "exact", "segments": (1, 1, 1)}),
    df.GeluOp: ([_t(2, 4, 8)], [_t(2, 4, 8)], {"layer": "act", "approx": "exact"}),
    df.ElementwiseOp: ([_t(2, 4, 8), _t(8)], [_t(2, 4, 8)], {"layer": "add", "kind": "add", "attrs": {"nin": 2}}),
    df.ReduceOp: ([_t(2, 4, 8)], [_t(2, 4, 1)], {"layer": "mean", "kind": "mean", "axes": (-1,), "keepdims": True}),
    df.MoveOp: ([_t(2, 4, 8)], [_t(8, 8)], {"layer": "mv", "kind": "reshape"}),
    df.EmbeddingOp: ([_t(10, 8), _t(2, 4, el=i64)], [_t(2, 4, 8)], {"layer": "emb"}),
    df.RopeOp: ([_t(1, 4, 8), _t(4, 2), _t(4, 2)], [_t(1, 4, 8)],
                {"layer": "rope", "style": "interleaved", "head_dim": 4, "rotary_dim": 2}),
    df.MoeOp: ([_t(2, 4, 8), _t(8, 4), _t(4, 8, 16), _t(4, 16, 8)], [_t(2, 4, 8)],
               {"layer": "moe", "num_experts": 4, "top_k": 2, "mode": "token", "capacity_factor": 1.25,
                "renormalize": True, "activation": "gelu", "segments": (1, 1, 1, 1, 0, 0, 0)}),
}


def _make(cls, operands=None, results=None, block: Block | None = None, **overrides):
    """An instance of ``cls``: GOOD[cls] with some operand types, result types or properties replaced
    (a property set to None is dropped). Operands are arguments of ``block`` (a fresh one by default)."""
    good_operands, good_results, good_props = GOOD[cls]
    operand_types = good_operands if operands is None else operands
    props = {k: v for k, v in (good_props | overrides).items() if v is not None}
    if block is None:
        block = Block(arg_types=operand_types)
        values = list(block.args)
    else:
        values = [block.insert_arg(t, len(block.args)) for t in operand_types]
    segments = props.pop("segments", None)
    properties = {k: _prop(v) for k, v in props.items()}
    if segments is not None:
        properties["operandSegmentSizes"] = DenseArrayBase.from_list(i32, list(segments))
    return cls.create(operands=values, result_types=good_results if results is None else results,
                      properties=properties)


@pytest.mark.parametrize("cls", GOOD, ids=lambda c: c.name)
def test_good_instance_verifies(cls):
    _make(cls).verify()


def test_every_dataflow_op_is_covered():
    assert set(GOOD) == set(df.Dataflow.operations)


def test_layer_is_every_ops_first_property():
    """``dataflow_op`` puts the shared ``layer`` in front of each op's own properties: the generic parser moves
    attributes into properties in definition order, so that order is the printed IR's."""
    for cls in df.Dataflow.operations:
        assert issubclass(cls, IRDLOperation), cls
        definition = cls.get_irdl_definition()
        assert next(iter(definition.properties)) == "layer", cls.name
        assert isinstance(definition.options[-1], ParsePropInAttrDict) and cls.has_trait(Pure)


#: What an accessor of an optional property absent from GOOD returns.
ABSENT = {"kv_heads": GOOD[df.AttentionOp][2]["num_heads"], "lanes": 7, "mask_kind": None,
          "masked_rows_zero": False, "causal_first": False}


@pytest.mark.parametrize("cls", GOOD, ids=lambda c: c.name)
def test_typed_accessors_read_their_property(cls):
    """Each ``<prop>_value()`` / ``<prop>_choice()`` returns property ``<prop>`` as a Python value, a choice as its
    enum (``StrEnum``, equal to the string in the IR)."""
    op, props = _make(cls), GOOD[cls][2]
    names = [n for n in dir(cls) if n.endswith(("_value", "_choice")) and callable(getattr(cls, n))]
    for name in names:
        prop = name.rsplit("_", 1)[0]
        value = getattr(op, name)(ABSENT["lanes"]) if prop == "lanes" else getattr(op, name)()
        expect = props.get(prop, ABSENT.get(prop))
        assert value == expect, name
        assert isinstance(value, StrEnum) if name.endswith("_choice") and expect is not None else \
            type(value) is type(expect), name
    assert op.layer_name() == props["layer"] == df.layer_of(op)
    if isinstance(op, df.LayerNormOp):
        assert op.norm_kind() is df.LayerNormKind.LAYERNORM


def _choices(op: str, key: str, value: str, choices) -> str:
    return f"{op}: {key} '{value}' is not one of {', '.join(choices)}"


BAD = [
    # gemm
    ("gemm-rank", df.GemmOp, dict(operands=[_t(8), _t(8, 16), _t(16)]),
     "dataflow.gemm 'g': operands must have rank >= 2, got (8,) and (8, 16)"),
    ("gemm-contraction", df.GemmOp, dict(operands=[_t(2, 4, 9), _t(8, 16), _t(16)]),
     "dataflow.gemm 'g': contraction dims differ: lhs (2, 4, 9) vs rhs (8, 16)"),
    ("gemm-batch", df.GemmOp, dict(operands=[_t(2, 4, 8), _t(3, 8, 16), _t(16)]),
     "dataflow.gemm 'g': batch dims differ: lhs (2, 4, 8) vs rhs (3, 8, 16)"),
    ("gemm-result", df.GemmOp, dict(results=[_t(2, 4, 8)]),
     "dataflow.gemm 'g': result shape (2, 4, 8) should be (2, 4, 16)"),
    ("gemm-bias", df.GemmOp, dict(operands=[_t(2, 4, 8), _t(8, 16), _t(8)]),
     "dataflow.gemm 'g': bias shape (8,) should be (16,)"),
    ("gemm-int-acc", df.GemmOp, dict(operands=[_t(2, 4, 8, el=i8), _t(8, 16, el=i8)], results=[_t(2, 4, 16, el=i8)],
                                     acc_type=i32, segments=(1, 1, 0)),
     "dataflow.gemm 'g': integer gemm must produce its accumulator type i32, got i8"),
    # requant
    ("requant-shape", df.RequantOp, dict(results=[_t(2, 4, 4, el=i8)]), "dataflow.requant 'rq': shape changes"),
    ("requant-bits", df.RequantOp, dict(out_bits=12), "dataflow.requant 'rq': out_bits must be 4, 8, 16 or 32"),
    # attention
    ("attention-rank", df.AttentionOp, dict(operands=[_t(4, 8), _t(2, 6, 8), _t(2, 6, 8)]),
     "dataflow.attention 'att': q, k, v must be [batch, seq, dim], got (4, 8), (2, 6, 8), (2, 6, 8)"),
    ("attention-heads", df.AttentionOp, dict(num_heads=0),
     "dataflow.attention 'att': num_heads and head_dim must be positive"),
    ("attention-dim", df.AttentionOp, dict(head_dim=3),
     "dataflow.attention 'att': q/k dim 8/8 != num_heads*head_dim = 6"),
    ("attention-seq", df.AttentionOp, dict(operands=[_t(2, 4, 8), _t(2, 6, 8), _t(2, 5, 8)]),
     "dataflow.attention 'att': batch/sequence of q (2, 4, 8), k (2, 6, 8), v (2, 5, 8) disagree"),
    ("attention-result", df.AttentionOp, dict(results=[_t(2, 6, 8)]),
     "dataflow.attention 'att': result shape (2, 6, 8) should be (2, 4, 8)"),
    ("attention-softmax", df.AttentionOp, dict(softmax="fast"),
     _choices("dataflow.attention 'att'", "softmax", "fast", df.SOFTMAX_APPROX)),
    ("attention-algorithm", df.AttentionOp, dict(algorithm="paged"),
     _choices("dataflow.attention 'att'", "algorithm", "paged", df.ATTENTION_ALGORITHMS)),
    ("attention-sinks-count", df.AttentionOp, dict(sinks=DenseArrayBase.from_list(f64, [0.5, 1.0, 2.0])),
     "dataflow.attention 'att': sinks must hold num_heads = 2 finite values, got 3"),
    ("attention-sinks-finite", df.AttentionOp, dict(sinks=DenseArrayBase.from_list(f64, [0.5, float("inf")])),
     "dataflow.attention 'att': sinks must hold num_heads = 2 finite values, got 2"),
    ("attention-sinks-type", df.AttentionOp, dict(sinks=DenseArrayBase.from_list(i32, [1, 2])),
     "dataflow.attention 'att': sinks must be an array<f64>, got i32"),
    # softmax
    ("softmax-shape", df.SoftmaxOp, dict(results=[_t(2, 8, 4)]), "dataflow.softmax 'sm': shape changes"),
    ("softmax-axis", df.SoftmaxOp, dict(axis=3), "dataflow.softmax 'sm': axis out of range for (2, 4, 8)"),
    ("softmax-approx", df.SoftmaxOp, dict(approx="taylor"),
     _choices("dataflow.softmax 'sm'", "approx", "taylor", df.SOFTMAX_APPROX)),
    # layernorm
    ("layernorm-shape", df.LayerNormOp, dict(results=[_t(2, 4, 4)]), "dataflow.layernorm 'ln': shape changes"),
    ("layernorm-weight", df.LayerNormOp, dict(operands=[_t(2, 4, 8), _t(4), _t(8)]),
     "dataflow.layernorm 'ln': weight shape (4,) should be (8,)"),
    ("layernorm-bias", df.LayerNormOp, dict(operands=[_t(2, 4, 8), _t(8), _t(1, 8)]),
     "dataflow.layernorm 'ln': bias shape (1, 8) should be (8,)"),
    ("layernorm-kind", df.LayerNormOp, dict(kind="groupnorm"),
     _choices("dataflow.layernorm 'ln'", "kind", "groupnorm", ("layernorm", "rmsnorm"))),
    ("layernorm-approx", df.LayerNormOp, dict(approx="lut"),
     _choices("dataflow.layernorm 'ln'", "approx", "lut", df.LAYERNORM_APPROX)),
    # gelu
    ("gelu-shape", df.GeluOp, dict(results=[_t(8, 8)]), "dataflow.gelu 'act': shape changes"),
    ("gelu-approx", df.GeluOp, dict(approx="relu"), _choices("dataflow.gelu 'act'", "approx", "relu", df.GELU_APPROX)),
    # rope
    ("rope-style", df.RopeOp, dict(style="neox"),
     _choices("dataflow.rope 'rope'", "style", "neox", df.ROPE_STYLES)),
    ("rope-rotary-dim", df.RopeOp, dict(rotary_dim=3),
     "dataflow.rope 'rope': head_dim 4 and rotary_dim 3 do not fit D = 8 (rotary_dim even, at most head_dim, "
     "head_dim dividing D)"),
    ("rope-table", df.RopeOp, dict(operands=[_t(1, 4, 8), _t(4, 4), _t(4, 2)]),
     "dataflow.rope 'rope': cos table (4, 4) should be (4, 2)"),
    # elementwise
    ("elementwise-kind", df.ElementwiseOp, dict(kind="matmul"),
     _choices("dataflow.elementwise 'add'", "kind", "matmul", df.ELEMENTWISE_KINDS)),
    ("elementwise-no-input", df.ElementwiseOp, dict(operands=[]),
     "dataflow.elementwise 'add': needs at least one input"),
    # reduce
    ("reduce-kind", df.ReduceOp, dict(kind="median"),
     _choices("dataflow.reduce 'mean'", "kind", "median", df.REDUCE_KINDS)),
    ("reduce-axis", df.ReduceOp, dict(axes=(0, 3)), "dataflow.reduce 'mean': axis 3 out of range"),
    # move
    ("move-kind", df.MoveOp, dict(kind="shuffle"), _choices("dataflow.move 'mv'", "kind", "shuffle", df.MOVE_KINDS)),
    ("move-reshape-count", df.MoveOp, dict(results=[_t(8, 4)]),
     "dataflow.move 'mv': reshape changes the element count 64 -> 32"),
    # embedding
    ("embedding-result", df.EmbeddingOp, dict(results=[_t(2, 4, 10)]),
     "dataflow.embedding 'emb': result (2, 4, 10) should be (2, 4, 8)"),
    ("embedding-table-rank", df.EmbeddingOp, dict(operands=[_t(10, 8, 1), _t(2, 4, el=i64)]),
     "dataflow.embedding 'emb': result (2, 4, 8) should be (2, 4, 8, 1)"),
    # moe
    ("moe-gate", df.MoeOp, dict(operands=[_t(2, 4, 8), _t(8, 3), _t(4, 8, 16), _t(4, 16, 8)]),
     "dataflow.moe 'moe': gate shape (8, 3) should be (8, 4)"),
    ("moe-w1", df.MoeOp, dict(operands=[_t(2, 4, 8), _t(8, 4), _t(4, 7, 16), _t(4, 16, 8)]),
     "dataflow.moe 'moe': w1 shape (4, 7, 16) should be [4, 8, hidden]"),
    ("moe-w2", df.MoeOp, dict(operands=[_t(2, 4, 8), _t(8, 4), _t(4, 8, 16), _t(4, 8, 16)]),
     "dataflow.moe 'moe': w2 shape (4, 8, 16) should be (4, 16, 8)"),
    ("moe-b1", df.MoeOp, dict(operands=[_t(2, 4, 8), _t(8, 4), _t(4, 8, 16), _t(4, 16, 8), _t(16)],
                              segments=(1, 1, 1, 1, 1, 0, 0)),
     "dataflow.moe 'moe': b1 shape (16,) should be (4, 16)"),
    ("moe-b2", df.MoeOp, dict(operands=[_t(2, 4, 8), _t(8, 4), _t(4, 8, 16), _t(4, 16, 8), _t(4, 16)],
                              segments=(1, 1, 1, 1, 0, 1, 0)),
     "dataflow.moe 'moe': b2 shape (4, 16) should be (4, 8)"),
    ("moe-result", df.MoeOp, dict(results=[_t(2, 4, 4)]),
     "dataflow.moe 'moe': result shape (2, 4, 4) should hold the input's (2, 4, 8) elements, last dim 8"),
    ("moe-top-k", df.MoeOp, dict(top_k=5), "dataflow.moe 'moe': top_k must be in 1..4"),
    ("moe-capacity", df.MoeOp, dict(capacity_factor=-1.0),
     "dataflow.moe 'moe': capacity_factor must be >= 0 (0 = no limit)"),
    ("moe-mode", df.MoeOp, dict(mode="expert"), _choices("dataflow.moe 'moe'", "mode", "expert", df.MOE_MODES)),
    ("moe-activation", df.MoeOp, dict(activation="swish"),
     _choices("dataflow.moe 'moe'", "activation", "swish", df.MOE_ACTIVATIONS)),
    ("moe-task-capacity", df.MoeOp, dict(mode="task"),
     "dataflow.moe 'moe': task routing has no capacity limit (capacity_factor must be 0)"),
]


@pytest.mark.parametrize("cls, overrides, message", [case[1:] for case in BAD], ids=[case[0] for case in BAD])
def test_verifier_rejects_with_exact_message(cls, overrides, message):
    op = _make(cls, **overrides)
    with pytest.raises(VerifyException) as info:
        op.verify_()
    assert str(info.value) == message


def test_every_op_with_a_verifier_has_a_bad_case():
    # irdl_op_definition wraps every class's verify_, so look at the source for a hand-written one.
    with_verifier = {cls for cls in df.Dataflow.operations if "def verify_" in inspect.getsource(cls)}
    assert with_verifier - {case[1] for case in BAD} == set()


# ----- custom <-> generic round trip -----------------------------------------------------------------------------


def _print(op, generic: bool) -> str:
    out = io.StringIO()
    Printer(stream=out, print_generic_format=generic, print_properties_as_attributes=generic).print_op(op)
    return out.getvalue()


def _parse(text: str) -> ModuleOp:
    module = Parser(make_context(None), text).parse_module()
    module.verify()
    return module


#: Attention sinks of the round-trip module's attention with sinks: one not exact in few decimal digits.
SINKS = (0.25, -1.2345678901234567)


def _every_op_module() -> ModuleOp:
    """Every GOOD op, plus the optional operands/properties the defaults leave out, in one function."""
    block = Block()
    ops = [_make(cls, block=block) for cls in GOOD]
    ops += [
        _make(df.GemmOp, operands=[_t(2, 4, 8), _t(8, 16)], segments=(1, 1, 0), block=block),
        _make(df.AttentionOp, operands=[_t(2, 4, 8), _t(2, 6, 8), _t(2, 6, 8), _t(2, 1, 4, 6)], causal=True,
              algorithm="edge-moe", lanes=4, segments=(1, 1, 1, 1), block=block),
        _make(df.AttentionOp, sinks=DenseArrayBase.from_list(f64, list(SINKS)), block=block),
        _make(df.LayerNormOp, operands=[_t(2, 4, 8), _t(8)], kind="rmsnorm", segments=(1, 1, 0), block=block),
        _make(df.MoeOp, operands=GOOD[df.MoeOp][0] + [_t(4, 16), _t(4, 8)], segments=(1, 1, 1, 1, 1, 1, 0),
              block=block),
        _make(df.MoveOp, operands=[_t(2, 4, 8)], results=[_t(2, 4, 4), _t(2, 4, 4)], kind="split",
              attrs={"axis": -1, "split": (4, 4)}, block=block),
    ]
    block.add_ops(ops + [ReturnOp()])
    module = ModuleOp([FuncOp("main", ([a.type for a in block.args], []), Region(block))])
    module.verify()
    return module


def test_round_trip_every_op():
    custom = _print(_every_op_module(), generic=False)
    generic = _print(_parse(custom), generic=True)
    assert '"dataflow.moe"' in generic and "operandSegmentSizes = array<i32: 1, 1, 1, 1, 1, 1, 0>" in generic
    # attention sinks survive both forms exactly (float64)
    for text in (custom, generic):
        assert [op.sinks_value() for op in _parse(text).walk() if isinstance(op, df.AttentionOp)
                and op.sinks is not None] == [SINKS]
    assert _print(_parse(generic), generic=False) == custom
    assert _print(_parse(generic), generic=True) == generic


def test_custom_form_reads_naturally():
    """The custom form is what `--print-ir-after` shows users: layer name first, no property dictionary."""
    custom = _print(_every_op_module(), generic=False)
    assert 'dataflow.weight "w" : tensor<8x16xf32>' in custom
    assert "<{" not in custom


@pytest.mark.slow
def test_round_trip_compiled_model(tmp_path):
    generic_path = tmp_path / "vit.mlir"
    assert codesign_main(["compile", str(ROOT / "examples" / "models" / "vit_tiny.onnx"), "--emit-mlir",
                          str(generic_path), "--mlir-generic", "-q"]) == 0
    generic = generic_path.read_text()
    custom = _print(_parse(generic), generic=False)
    assert _print(_parse(custom), generic=True) == generic.rstrip("\n")
    assert _print(_parse(custom), generic=False) == custom


def test_int_and_float_props_are_64_bit():
    """Upstream IRDL pins `requant.out_bits` to i64 values; the helpers the frontend uses must print i64/f64."""
    assert df.int_prop(8) == IntegerAttr(8, i64)
    assert df.float_prop(0.5) == FloatAttr(0.5, f64)
