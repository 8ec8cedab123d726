"""Upstream MLIR reads what we emit: compiler/dialect/dataflow.irdl.mlir loaded into MLIR's own parser and verifier.

The upstream side is the torch-mlir wheel's real MLIR Python bindings (pinned in pyproject's `test` extra):
``irdl.load_dialects`` registers the dataflow dialect from the IRDL file, then ``ir.Module.parse`` parses and
verifies each module that ``codesign compile --mlir-generic`` wrote, wrappers (``builtin.module``, ``func.func``,
``func.return``) included. A second group keeps the IRDL file in step with compiler/dialect/dataflow.py.
"""

from __future__ import annotations

import contextlib
import io
import re
from pathlib import Path

import pytest
from xdsl.dialects.builtin import (
    ArrayAttr,
    BoolAttr,
    DenseArrayBase,
    DictionaryAttr,
    IntegerType,
    ModuleOp,
    StringAttr,
    TensorType,
    f32,
    i32,
    i64,
)
from xdsl.dialects.func import FuncOp, ReturnOp
from xdsl.ir import Attribute, Block, Region
from xdsl.irdl import OptOperandDef, OptPropertyDef, OptResultDef, VarOperandDef, VarResultDef
from xdsl.printer import Printer

from codesign.cli import main as codesign_main
from compiler.dialect import dataflow as df

ROOT = Path(__file__).resolve().parents[1]
IRDL_FILE = ROOT / "compiler" / "dialect" / "dataflow.irdl.mlir"
MODELS = ("vit_tiny", "bert_tiny", "gpt2_tiny", "minilm")
STEPS = ("import", "canonicalize", "fuse", "tile", "schedule")

#: (op, property) -> the choice list its xDSL verifier enforces; the IRDL file must list exactly these.
CHOICES = {
    ("attention", "softmax"): df.SOFTMAX_APPROX,
    ("attention", "algorithm"): df.ATTENTION_ALGORITHMS,
    ("softmax", "approx"): df.SOFTMAX_APPROX,
    ("layernorm", "kind"): ("layernorm", "rmsnorm"),
    ("layernorm", "approx"): df.LAYERNORM_APPROX,
    ("gelu", "approx"): df.GELU_APPROX,
    ("rope", "style"): df.ROPE_STYLES,
    ("elementwise", "kind"): df.ELEMENTWISE_KINDS,
    ("reduce", "kind"): df.REDUCE_KINDS,
    ("move", "kind"): df.MOVE_KINDS,
    ("moe", "mode"): df.MOE_MODES,
    ("moe", "activation"): df.MOE_ACTIVATIONS,
}


# ----- upstream MLIR ---------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def mlir():
    """The upstream bindings' ``ir`` module, or a failure that says how to install them (never a skip)."""
    try:
        from torch_mlir import ir
        from torch_mlir.dialects import irdl  # noqa: F401
    except ImportError as err:
        pytest.fail(f"upstream MLIR bindings missing ({err}); run `pip install -e '.[test]'` (torch-mlir wheel)")
    return ir


@pytest.fixture(scope="module")
def upstream(mlir):
    """An upstream MLIR context with the dataflow dialect loaded from the IRDL file."""
    from torch_mlir.dialects import irdl

    ctx = mlir.Context()
    with ctx:
        irdl.load_dialects(mlir.Module.parse(IRDL_FILE.read_text()))  # pyright: ignore[reportAttributeAccessIssue]  (star-imported from the native _mlirDialectsIRDL, which ships no stub)
    return ctx


def _parse_upstream(mlir, ctx, text: str, name: str):
    """Parse (which verifies) ``text`` upstream; on failure, the assertion shows MLIR's diagnostics."""
    try:
        module = mlir.Module.parse(text, context=ctx)
    except mlir.MLIRError as err:
        pytest.fail(f"upstream MLIR rejects {name}:\n{err}")
    assert module.operation.verify()
    return module


def _expect_rejected(mlir, ctx, text: str, message: str) -> None:
    with pytest.raises(mlir.MLIRError) as info:
        mlir.Module.parse(text, context=ctx)
    assert message in str(info.value), str(info.value)


# ----- every emitted module parses and verifies upstream ---------------------------------------------------------


@pytest.fixture(scope="module")
def emitted(tmp_path_factory) -> dict[tuple[str, str], str]:
    """(model, step) -> generic MLIR text, for every step of the default pipeline (one compile per model)."""
    out_dir = tmp_path_factory.mktemp("irdl")
    texts: dict[tuple[str, str], str] = {}
    for model in MODELS:
        final = out_dir / f"{model}.mlir"
        argv = ["compile", str(ROOT / "examples" / "models" / f"{model}.onnx"), "--emit-mlir", str(final),
                "--mlir-generic", "-q"]
        for step in STEPS:
            argv += ["--print-ir-after", step]
        stdout = io.StringIO()
        with contextlib.redirect_stdout(stdout):
            assert codesign_main(argv) == 0, model
        # stdout holds one module per step, each after a "// ----- IR after STEP -----" line.
        parts = re.split(r"^// ----- IR after (\S+) -----\n", stdout.getvalue(), flags=re.M)
        printed = dict(zip(parts[1::2], parts[2::2]))
        assert sorted(printed) == sorted(STEPS), (model, sorted(printed))
        for step in STEPS:
            texts[(model, step)] = printed[step]
        texts[(model, "final")] = final.read_text()
    return texts


@pytest.mark.slow
@pytest.mark.parametrize("model", MODELS)
def test_emitted_modules_verify_upstream(mlir, upstream, emitted, model):
    for step in STEPS + ("final",):
        module = _parse_upstream(mlir, upstream, emitted[(model, step)], f"{model} after {step}")
        ops = {op.name for op in _walk(module.operation)}
        assert "dataflow.gemm" in ops and "func.func" in ops, (model, step, sorted(ops))


def _walk(op):
    for region in op.regions:
        for block in region.blocks:
            for inner in block.operations:
                yield inner.operation
                yield from _walk(inner.operation)


def _generic(module: ModuleOp) -> str:
    out = io.StringIO()
    Printer(stream=out, print_generic_format=True, print_properties_as_attributes=True).print_op(module)
    return out.getvalue()


def _t(*shape: int, el: Attribute = f32) -> TensorType:
    return TensorType(el, shape)


def _every_op_module() -> ModuleOp:
    """One instance of every dataflow op (optional operands and properties both ways), built with xDSL."""
    seg = lambda *sizes: DenseArrayBase.from_list(i32, list(sizes))  # noqa: E731
    p = {"layer": StringAttr("l")}
    attention = p | {"num_heads": df.int_prop(2), "head_dim": df.int_prop(4), "scale": df.float_prop(0.5)}
    args = [_t(2, 4, 8), _t(8, 8), _t(8), _t(4, 2), _t(2, 4, 8, el=IntegerType(8)), _t(2, 4, el=i64)]
    block = Block(arg_types=args)
    x, w, b, table, xq, idx = block.args
    weights = [df.WeightOp(name, typ) for name, typ in (
        ("w", _t(8, 8)), ("gate", _t(8, 4)), ("w1", _t(4, 8, 16)), ("w2", _t(4, 16, 8)), ("b2", _t(4, 8)), ("w3", _t(4, 8, 16)))]
    block.add_ops(weights)
    block.add_ops([
        df.GemmOp("g", x, w, None, _t(2, 4, 8), f32),
        df.GemmOp("gb", x, weights[0].result, b, _t(2, 4, 8), f32),
        df.GemmOp.create(operands=[xq, w], result_types=[_t(2, 4, 8, el=i32)],
                         properties=p | {"acc_type": i32, "operandSegmentSizes": seg(1, 1, 0)}),
        df.RequantOp.create(operands=[x], result_types=[_t(2, 4, 8, el=IntegerType(8))],
                            properties=p | {"out_bits": df.int_prop(8)}),
        df.AttentionOp.create(operands=[x, x, x], result_types=[_t(2, 4, 8)], properties=attention | {
            "causal": BoolAttr.from_bool(True), "softmax": StringAttr("shiftmax"), "algorithm": StringAttr("flash"),
            "operandSegmentSizes": seg(1, 1, 1, 0)}),
        df.AttentionOp.create(operands=[x, x, x, x], result_types=[_t(2, 4, 8)], properties=attention | {
            "causal": BoolAttr.from_bool(False), "softmax": StringAttr("exact"), "algorithm": StringAttr("edge-moe"),
            "lanes": df.int_prop(4), "operandSegmentSizes": seg(1, 1, 1, 1)}),
        df.SoftmaxOp.create(operands=[x], result_types=[_t(2, 4, 8)],
                            properties=p | {"axis": df.int_prop(-1), "approx": StringAttr("base2")}),
        df.LayerNormOp.create(operands=[x, b], result_types=[_t(2, 4, 8)], properties=p | {
            "epsilon": df.float_prop(1e-5), "kind": StringAttr("rmsnorm"), "approx": StringAttr("ilayernorm"),
            "operandSegmentSizes": seg(1, 1, 0)}),
        df.GeluOp.create(operands=[x], result_types=[_t(2, 4, 8)], properties=p | {"approx": StringAttr("lut")}),
        df.ElementwiseOp.create(operands=[x, b], result_types=[_t(2, 4, 8)], properties=p | {
            "kind": StringAttr("add"), "attrs": DictionaryAttr({"nin": df.int_prop(2)})}),
        df.ElementwiseOp.create(operands=[x], result_types=[_t(2, 4, 8)], properties=p | {"kind": StringAttr("exp")}),
        df.ReduceOp.create(operands=[x], result_types=[_t(2, 4, 1)], properties=p | {
            "kind": StringAttr("mean"), "axes": ArrayAttr([df.int_prop(-1)]), "keepdims": BoolAttr.from_bool(True)}),
        df.MoveOp.create(operands=[x, idx], result_types=[_t(2, 2, 4, 8)],
                         properties=p | {"kind": StringAttr("gather")}),
        df.MoveOp.create(operands=[x], result_types=[_t(2, 4, 4), _t(2, 4, 4)], properties=p | {
            "kind": StringAttr("split"), "attrs": DictionaryAttr({"axis": df.int_prop(-1)})}),
        df.EmbeddingOp.create(operands=[table, idx], result_types=[_t(2, 4, 2)], properties=p),
        df.RopeOp.create(operands=[x, table, table], result_types=[_t(2, 4, 8)],
                         properties=p | {"style": StringAttr("rotate_half"), "head_dim": df.int_prop(4),
                                         "rotary_dim": df.int_prop(2)}),
        df.MoeOp.create(operands=[x] + [op.result for op in weights[1:4]], result_types=[_t(2, 4, 8)], properties=p | {
            "num_experts": df.int_prop(4), "top_k": df.int_prop(2), "mode": StringAttr("token"),
            "capacity_factor": df.float_prop(1.25), "renormalize": BoolAttr.from_bool(True),
            "activation": StringAttr("gelu"), "operandSegmentSizes": seg(1, 1, 1, 1, 0, 0, 0)}),
        df.MoeOp.create(operands=[x] + [op.result for op in weights[1:5]], result_types=[_t(2, 4, 8)], properties=p | {
            "num_experts": df.int_prop(4), "top_k": df.int_prop(1), "mode": StringAttr("task"),
            "capacity_factor": df.float_prop(0.0), "renormalize": BoolAttr.from_bool(False),
            "activation": StringAttr("silu"), "operandSegmentSizes": seg(1, 1, 1, 1, 0, 1, 0)}),
        df.MoeOp.create(operands=[x] + [op.result for op in weights[1:4]] + [weights[5].result],
                        result_types=[_t(2, 4, 8)], properties=p | {
            "num_experts": df.int_prop(4), "top_k": df.int_prop(2), "mode": StringAttr("token"),
            "capacity_factor": df.float_prop(0.0), "renormalize": BoolAttr.from_bool(True),
            "activation": StringAttr("silu"), "operandSegmentSizes": seg(1, 1, 1, 1, 0, 0, 1)}),
        ReturnOp(),
    ])
    module = ModuleOp([FuncOp("main", (args, []), Region(block))])
    module.verify()
    return module


def test_every_op_verifies_upstream(mlir, upstream):
    module = _every_op_module()
    names = {op.name for op in module.walk() if op.name.startswith("dataflow.")}
    assert names == {op.name for op in df.Dataflow.operations}
    _parse_upstream(mlir, upstream, _generic(module), "the every-op module")


# ----- upstream rejects broken modules ---------------------------------------------------------------------------

_GOOD = """"builtin.module"() ({
  "func.func"() ({
  ^bb0(%x: tensor<2x8xf32>, %i: tensor<2xi64>):
    %w = "dataflow.weight"() {layer = "w"} : () -> tensor<8x4xf32>
    %y = "dataflow.gemm"(%x, %w) {layer = "g", acc_type = f32, operandSegmentSizes = array<i32: 1, 1, 0>} : (tensor<2x8xf32>, tensor<8x4xf32>) -> tensor<2x4xf32>
    %z = "dataflow.gelu"(%y) {layer = "act", approx = "exact"} : (tensor<2x4xf32>) -> tensor<2x4xf32>
    %g = "dataflow.move"(%z, %i) {layer = "take", kind = "gather"} : (tensor<2x4xf32>, tensor<2xi64>) -> tensor<2x4xf32>
    "func.return"(%g) : (tensor<2x4xf32>) -> ()
  }) {sym_name = "main", function_type = (tensor<2x8xf32>, tensor<2xi64>) -> tensor<2x4xf32>} : () -> ()
}) : () -> ()
"""

_GEMM = ('"dataflow.gemm"(%x, %w) {layer = "g", acc_type = f32, operandSegmentSizes = array<i32: 1, 1, 0>} : '
         "(tensor<2x8xf32>, tensor<8x4xf32>)")


def test_hand_written_module_verifies_upstream(mlir, upstream):
    _parse_upstream(mlir, upstream, _GOOD, "the hand-written module")


@pytest.mark.parametrize("old, new, message", [
    pytest.param(_GEMM, _GEMM.replace("(%x, %w)", "(%x)").replace(", tensor<8x4xf32>)", ")"),
                 "op expects at least 2 operands, but got 1", id="gemm-one-operand"),
    pytest.param(_GEMM, _GEMM.replace("(%x, %w)", "(%x, %w, %x, %w)").replace(
        "(tensor<2x8xf32>, tensor<8x4xf32>)", "(tensor<2x8xf32>, tensor<8x4xf32>, tensor<2x8xf32>, tensor<8x4xf32>)"),
                 "op expects at most 3 operands, but got 4", id="gemm-four-operands"),
    pytest.param('{layer = "w"}', "{}", "'dataflow.weight' op attribute \"layer\" is expected but not provided",
                 id="weight-without-layer"),
    pytest.param("acc_type = f32, ", "", "attribute \"acc_type\" is expected but not provided", id="gemm-without-acc"),
    pytest.param("acc_type = f32", "acc_type = \"f32\"", "does not satisfy the constraint", id="acc-type-string"),
    pytest.param("array<i32: 1, 1, 0>", "array<i32: 1, 0, 1>", "does not satisfy the constraint", id="bad-segments"),
    pytest.param('approx = "exact"', 'approx = "fast"', "does not satisfy the constraint", id="unknown-gelu-approx"),
    pytest.param('layer = "act"', "layer = 3 : i64", "expected base attribute 'builtin.string'", id="layer-not-string"),
    pytest.param('    "func.return"',
                 '    %u = "dataflow.weight"() {layer = "u"} : () -> tensor<*xf32>\n    "func.return"',
                 "expected base type 'builtin.tensor' but got 'builtin.unranked_tensor'", id="unranked-result"),
    pytest.param("tensor<2xi64>", "memref<2xi64>", "expected base type 'builtin.tensor' but got 'builtin.memref'",
                 id="memref-operand"),
    pytest.param('"dataflow.gelu"', '"dataflow.conv"', "unregistered operation 'dataflow.conv'", id="unknown-op"),
])
def test_broken_module_rejected_upstream(mlir, upstream, old, new, message):
    assert old in _GOOD
    _expect_rejected(mlir, upstream, _GOOD.replace(old, new), message)


def test_heterogeneous_variadic_rest_is_an_irdl_limit(mlir, upstream):
    """Pins the one place upstream is stricter than dataflow.py (see the IRDL file's header): IRDL binds a variadic
    group to one type, so a concat whose 2nd and 3rd inputs differ is legal for xDSL but rejected upstream."""
    gather = ('"dataflow.move"(%z, %i) {layer = "take", kind = "gather"} : '
              "(tensor<2x4xf32>, tensor<2xi64>) -> tensor<2x4xf32>")
    concat = ('"dataflow.move"(%z, %z, %y) {layer = "take", kind = "concat"} : '
              "(tensor<2x4xf32>, tensor<2x4xf32>, tensor<2x4xf32>) -> tensor<2x4xf32>")
    assert gather in _GOOD
    text = _GOOD.replace(gather, concat)
    _parse_upstream(mlir, upstream, text, "a concat with a uniform rest")
    ragged = text.replace("(%z, %z, %y)", "(%z, %z, %x)").replace(
        "tensor<2x4xf32>, tensor<2x4xf32>, tensor<2x4xf32>)", "tensor<2x4xf32>, tensor<2x4xf32>, tensor<2x8xf32>)")
    _expect_rejected(mlir, upstream, ragged, "expected 'tensor<2x4xf32>' but got 'tensor<2x8xf32>'")


# ----- the IRDL file and dataflow.py say the same thing ----------------------------------------------------------


@pytest.fixture(scope="module")
def irdl_module(mlir):
    """The IRDL file parsed upstream (no dialect loaded); kept alive for the op views irdl_ops hands out."""
    ctx = mlir.Context()
    return ctx, mlir.Module.parse(IRDL_FILE.read_text(), context=ctx)


@pytest.fixture(scope="module")
def irdl_ops(mlir, irdl_module) -> dict[str, dict]:
    """op name -> {"operands": [(name, variadicity)], "results": [...], "attributes": {name: constraint op}}."""
    _, module = irdl_module
    (dialect,) = module.body.operations
    assert mlir.StringAttr(dialect.attributes["sym_name"]).value == "dataflow"
    ops: dict[str, dict] = {}
    for op in dialect.regions[0].blocks[0].operations:
        name = mlir.StringAttr(op.attributes["sym_name"]).value
        entry: dict = {"operands": [], "results": [], "attributes": {}}
        for inner in op.regions[0].blocks[0].operations:
            kind = inner.operation.name
            if kind in ("irdl.operands", "irdl.results"):
                names = [mlir.StringAttr(a).value for a in mlir.ArrayAttr(inner.attributes["names"])]
                # printed as #irdl<variadicity_array[single, optional]>
                variadicity = re.findall(r"\w+", str(inner.attributes["variadicity"]).partition("[")[2])
                entry[kind.removeprefix("irdl.")] = list(zip(names, variadicity))
            elif kind == "irdl.attributes":
                names = [mlir.StringAttr(a).value for a in mlir.ArrayAttr(inner.attributes["attributeValueNames"])]
                entry["attributes"] = {n: v.owner for n, v in zip(names, inner.operands)}
        ops[f"dataflow.{name}"] = entry
    return ops


def _expected_arity(defs, optional_def, variadic_def) -> list[tuple[str, str]]:
    """dataflow.py's operand/result defs in IRDL terms; a variadic list is a first element plus a variadic rest."""
    out = []
    for name, d in defs:
        if isinstance(d, optional_def):
            out.append((name, "optional"))
        elif isinstance(d, variadic_def):
            out += [(name, "single"), (f"{name}_rest", "variadic")]
        else:
            out.append((name, "single"))
    return out


def test_irdl_declares_every_dataflow_op(irdl_ops):
    ours = {op.name for op in df.Dataflow.operations}
    declared = set(irdl_ops)
    missing = sorted(ours - declared)
    assert not missing, f"ops in dataflow.py but not in {IRDL_FILE.name}: {missing}"
    extra = sorted(declared - ours)
    assert not extra, f"ops in {IRDL_FILE.name} but not in dataflow.py: {extra}"


@pytest.mark.parametrize("op", list(df.Dataflow.operations), ids=lambda op: op.name)
def test_irdl_matches_dataflow_py(irdl_ops, op):
    definition = op.get_irdl_definition()
    irdl = irdl_ops[op.name]
    assert irdl["operands"] == _expected_arity(definition.operands, OptOperandDef, VarOperandDef), op.name
    assert irdl["results"] == _expected_arity(definition.results, OptResultDef, VarResultDef), op.name
    required = {name for name, prop in definition.properties.items() if not isinstance(prop, OptPropertyDef)}
    # IRDL has no optional attributes: optional properties stay unchecked upstream (see the file's header).
    assert set(irdl["attributes"]) == required, op.name


@pytest.mark.parametrize("op_prop", sorted(CHOICES), ids=lambda k: ".".join(k))
def test_irdl_choice_lists_match_dataflow_py(mlir, irdl_ops, op_prop):
    op, prop = op_prop
    constraint = irdl_ops[f"dataflow.{op}"]["attributes"][prop]
    assert constraint.name == "irdl.any_of", (op, prop)
    listed = tuple(mlir.StringAttr(o.owner.attributes["expected"]).value for o in constraint.operands)
    wanted = tuple(CHOICES[op_prop])
    assert listed == wanted, (f"{IRDL_FILE.name} @{op} \"{prop}\": add {sorted(set(wanted) - set(listed))}, "
                              f"remove {sorted(set(listed) - set(wanted))}, keep dataflow.py's order {wanted}")
