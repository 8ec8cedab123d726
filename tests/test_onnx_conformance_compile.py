"""Whole compiles of the ONNX specification's conformance models for the ops the frontend lowers or recognises.

The onnx package generates, for every operator, small models with inputs and expected outputs
(``onnx.backend.test.case.node``), many twice: the op itself and its function body expanded into primitive ops
(``*_expanded``: the LayerNormalization, Softmax, GELU, Attention or pooling an older exporter writes out). Each
case of the families below is compiled with its inputs as the one sample; the compile's simulation must equal
onnxruntime on every output (cosine 0.99999, max error 1e-4 of the output's range or two half-precision
units, masked scores masked on both sides), unless onnxruntime itself cannot run the model, or the case is a named
refusal (a one-line `InputError`).
Convolution-like ops take their weights (and shape-like ops their shapes, axes or pads) as inputs in these models;
exports hold them as constants, so every input after the first becomes an initializer there (``WEIGHTED``).

Found by it: SpaceToDepth's CRD order was computed as DCR; a two-input ``Sum`` was refused; ``auto_pad`` SAME pools
and integer MaxPools were refused (the latter with a traceback); ``LpNormalization``, ``ConvTranspose`` and
``ArgMin`` were not lowered and ArgMax's ``select_last_index`` was ignored; a scalar model input failed
onnxruntime's feed; masked scores as an output gave a NaN cosine; a Reduce* given an empty axes tensor reduced
nothing (ONNX: every axis); Dropout with its mask output and MatMul with a vector operand stopped in the IR
verifier; Gemm's transA, scalar / single-value / matrix C and MatMul's broadcast batch axes were refused
(compiler/frontend/gemm_forms.py).
"""

from __future__ import annotations

import re
import warnings
from collections import defaultdict
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import pytest
from onnx import numpy_helper

from codesign.api import compile
from hw.errors import InputError

#: Case-name families (``test_<family>`` then ``_`` or the end): the ops the frontend lowers or recognises.
FAMILIES = ("averagepool", "maxpool", "globalaveragepool", "globalmaxpool", "spacetodepth", "depthtospace", "sum",
            "mean", "max", "min", "logsoftmax", "softmax", "layer_normalization", "rms_normalization",
            "group_normalization", "gelu", "l1normalization", "l2normalization", "lpnormalization", "convtranspose",
            "attention", "clip", "hardswish", "hardsigmoid", "mish", "swish", "elu", "selu", "celu", "leakyrelu",
            "prelu", "softplus", "softsign", "thresholdedrelu", "shrink", "relu", "mvn", "resize", "einsum", "argmax",
            "argmin", "conv", "gemm", "matmul", "batchnorm", "instancenorm", "cumsum", "where", "gather",
            "gather_elements", "scatter_elements", "scatternd", "pad", "slice", "expand", "tile", "top_k", "trilu",
            "reduce_sum", "reduce_mean", "reduce_max", "reduce_min", "reduce_prod", "reduce_l1",
            "reduce_l2", "reduce_log_sum_exp", "transpose", "reshape", "squeeze", "unsqueeze", "flatten", "concat",
            "split", "cast", "erf", "exp", "log", "sqrt", "pow", "tanh", "sigmoid", "mod", "div", "mul", "add", "sub",
            "neg", "abs", "ceil", "floor", "round", "sign", "sin", "cos", "equal", "greater", "less", "not", "and", "or",
            "xor", "isnan", "isinf", "identity", "dropout", "depthtospace", "globalaveragepool")
#: Families whose models pass weights, shapes, axes or pads as inputs: made initializers, as in an export.
WEIGHTED = frozenset({"convtranspose", "prelu", "layer_normalization", "rms_normalization", "group_normalization",
                      "resize", "conv", "gemm", "batchnorm", "instancenorm", "expand", "reshape", "slice",
                      "tile", "pad", "top_k", "split", "squeeze", "unsqueeze", "cumsum", "reduce_sum", "reduce_mean",
                      "reduce_max", "reduce_min", "reduce_prod", "reduce_l1", "reduce_l2", "reduce_log_sum_exp"})
#: Cases refused on purpose (regex on the case name) and a fragment of the one-line reason.
REFUSED = {r"test_maxpool_with_argmax_.*": "only pools without indices",
           r"test_resize_.*tf_crop_and_resize.*": "",
           r"test_resize_.*nearest.*antialias.*": "nearest and antialias",
           r"test_einsum_.*": "",
           r"test_layer_normalization_(?!.*expanded).*": "Mean / InvStdDev outputs",
           r"test_\w+_u?int(2|4)": "unsupported tensor element type",
           r"test_\w+_uint(16|32|64)\w*": "unsupported tensor element type",
           r"test_cast\w*_(FLOAT8|FLOAT4|U?INT4|U?INT2)\w*": "",
           r"test_batchnorm_\w*training_mode": "only inference form",
           r"test_\w+_empty_set\w*|test_reshape_allowzero_reordered|test_split_zero_size_splits\w*": "symbolic shape",
           r"test_slice_start_out_of_bounds": "zero-size tensor",
           r"test_split_to_sequence\w*": "unsupported op SplitToSequence",
           r"test_identity_(sequence|opt)": "element type UNDEFINED"}


#: Max error allowed, relative to the output's range, by output element type: float32 1e-4; a half-precision output
#: one or two units of its last place (the runtimes round intermediate values differently).
_ULPS = {onnx.TensorProto.FLOAT16: 2.0**-9, onnx.TensorProto.BFLOAT16: 2.0**-6}


def _family(name: str) -> str | None:
    return next((f for f in FAMILIES if re.match(rf"test_{f}(_|$)", name)), None)


def _cases() -> dict[str, list[Any]]:
    from onnx.backend.test.case.node import collect_testcases

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        cases = collect_testcases(None)
    by_family: dict[str, list[Any]] = defaultdict(list)
    for case in cases:
        family = _family(case.name)
        if family is not None and all(n.domain in ("", "ai.onnx") for n in case.model.graph.node):
            by_family[family].append(case)
    return dict(sorted(by_family.items()))


CASES = _cases()


def _array(value: Any) -> np.ndarray:
    return numpy_helper.to_array(value) if isinstance(value, onnx.TensorProto) else np.asarray(value)


def _prepared(case: Any, family: str, folder: Path) -> tuple[Path, dict[str, np.ndarray]] | None:
    """The case's model saved (weights as initializers for WEIGHTED families) and its inputs as one sample; None
    when an input is no tensor (sequences, optionals) or of a type the compiler does not take (strings)."""
    model = onnx.ModelProto()
    model.CopyFrom(case.model)
    inputs, _ = case.data_sets[0]
    try:
        values = [_array(v) for v in inputs]
    except (ValueError, TypeError):
        return None
    if any(v.dtype.kind not in "fiub" for v in values):
        return None
    graph, feeds, kept = model.graph, {}, []
    for k, (info, value) in enumerate(zip(list(graph.input), values)):
        if family in WEIGHTED and k > 0:
            graph.initializer.append(numpy_helper.from_array(value, info.name))
        else:
            kept.append(info)
            feeds[info.name] = value[None]
    del graph.input[:]
    graph.input.extend(kept)
    path = folder / f"{case.name}.onnx"
    onnx.save(model, path)
    return path, feeds


@pytest.mark.parametrize("family", list(CASES))
def test_spec_models_compile_and_simulate_like_onnxruntime(tmp_path: Path, family: str) -> None:
    failures, ran = [], 0
    for case in CASES[family]:
        prepared = _prepared(case, family, tmp_path)
        if prepared is None:
            continue
        path, feeds = prepared
        refused = next((why for pattern, why in REFUSED.items() if re.fullmatch(pattern, case.name)), None)
        try:
            with warnings.catch_warnings(), np.errstate(all="ignore"):
                warnings.simplefilter("ignore")
                result = compile(path, inputs=feeds)
        except InputError as err:
            text = str(err)
            if "onnxruntime" in text and "reference model" in text:
                continue  # onnxruntime cannot run the model: nothing to compare with
            if refused is None or refused not in text or "\n" in text.strip():
                failures.append(f"{case.name}: refused: {text.replace(str(path), '')}")
            continue
        ran += 1
        if refused is not None and refused:
            failures.append(f"{case.name}: compiled, but REFUSED expects '{refused}'")
        types = {o.name: o.type.tensor_type.elem_type for o in case.model.graph.output}
        for name, out in result.report["accuracy"]["outputs"].items():
            if out.get("elements") == 0:
                continue
            ulps = _ULPS.get(types.get(name, onnx.TensorProto.FLOAT), 1e-4)
            if out["cosine_min"] < 0.99999 or out.get("masked_mismatch", 0) \
                    or out["max_abs_error"] > ulps * max(out["max_abs_value"], 1.0):
                failures.append(f"{case.name} output {name}: {out}")
    assert ran, f"no case of {family} compiled"
    assert not failures, "\n".join(failures)
