"""The accuracy reference for models newer than onnxruntime: the onnx package's own reference evaluator.

``--inputs`` compares the compiled model with the exported model run by onnxruntime (codesign/accuracy.py). A model
written by the onnx package we ship can be newer than the onnxruntime we ship: ``onnx.helper.make_model`` stamps
onnx 1.23's IR version 14 and opset 28, and onnxruntime 1.31 refuses both ("Unsupported model IR version: 14, max
supported IR version: 13"; "Opset 28 is under development ... official support for domain ai.onnx is till opset
26"). The compiler reads such a model, so its accuracy must be measurable too: for that refusal, and only for it,
the reference becomes ``onnx.reference.ReferenceEvaluator``, the ONNX project's executable specification of every
standard op (slower than onnxruntime, but exact to the standard). The report's ``accuracy.reference`` names it.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np
import onnx

from compiler.npz import sample_feeds
from hw.errors import InputError, first_line

__all__ = ["ENGINE", "is_version_refusal", "evaluator_outputs"]

#: How the report's ``accuracy.reference`` names this engine.
ENGINE = "onnx reference evaluator"

#: onnxruntime's words when it refuses a model's IR version or an opset it does not officially support.
_REFUSALS = ("Unsupported model IR version", "ValidateOpsetForDomain",
             "guarantees* support for models stamped with official released onnx opset")


def is_version_refusal(err: BaseException) -> bool:
    """Whether onnxruntime refused to load a model because of its IR version or opset (not its content)."""
    text = str(err)
    return any(words in text for words in _REFUSALS)


def evaluator_outputs(model: onnx.ModelProto, samples: Mapping[str, np.ndarray], label: str
                      ) -> list[dict[str, np.ndarray]]:
    """Every graph output of ``model`` (intermediate tensors appended as outputs included) for each sample of
    ``samples`` (arrays with a leading sample axis), run by the reference evaluator; ``label`` names the model's
    precision in errors."""
    from onnx.reference import ReferenceEvaluator

    try:
        ref = ReferenceEvaluator(model)
    except Exception as err:  # the evaluator raises what its op implementations raise
        raise InputError(f"the {ENGINE} cannot load the {label} reference model: {first_line(err)}") from None
    names: Sequence[str] = [o.name for o in model.graph.output]
    count = len(next(iter(samples.values())))
    outs = []
    for i in range(count):
        try:
            values = ref.run(None, sample_feeds(samples, i))
        except Exception as err:
            raise InputError(f"--inputs sample {i}: the {ENGINE} failed on the {label} reference model: "
                             f"{first_line(err)}") from None
        outs.append({name: np.asarray(value) for name, value in zip(names, values)})
    return outs
