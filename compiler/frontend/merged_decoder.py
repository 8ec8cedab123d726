"""Hugging Face Optimum's merged decoder (``decoder_model_merged.onnx``): two models in one file, chosen per step.

Optimum merges a decoder's first step (no KV cache) and its cache step into one graph: a single ``If`` on the bool
input ``use_cache_branch`` runs one or the other. Its runtime sets that input from the cache it holds
(huggingface/optimum-onnx ``optimum/onnxruntime/modeling_decoder.py`` and ``modeling_seq2seq.py``:
``use_cache_branch = past_key_values is not None``, with 0-position caches fed on the first step), so once the input
shapes are fixed the branch is the one the self-attention caches' length implies: the cache step when every
``past_key_values.*`` input (an encoder-decoder's ``.decoder.`` ones; its ``.encoder.`` cross-attention caches are
sized by the encoder either way) holds positions, the first step when every one is empty. The switch is then a
constant and the ``If`` is its taken branch: inlined into the graph before onnxruntime's fused ops are expanded
(``inline_cache_switch``, so an ``--optimize``d file's com.microsoft ops inside the branches expand as anywhere
else), or by compiler/frontend/static_if.py once the constant is known. ``--inputs`` samples that set the switch
against their caches are refused (onnxruntime would run the other branch).
"""

from __future__ import annotations

import math
from collections.abc import Mapping

import numpy as np
import onnx

from hw.errors import InputError

__all__ = ["CACHE_SWITCH", "cache_switch", "check_switch_samples", "inline_cache_switch"]

CACHE_SWITCH = "use_cache_branch"
"""The bool input Optimum's merged decoders branch on."""


def _self_caches(shapes: Mapping[str, tuple[int, ...]]) -> dict[str, tuple[int, ...]]:
    return {n: s for n, s in shapes.items() if n.startswith("past_key_values") and ".encoder." not in n}


def _implied(shapes: Mapping[str, tuple[int, ...]], where: str) -> bool | None:
    """True when every self-attention cache holds positions, False when every one is empty, None without caches."""
    caches = _self_caches(shapes)
    if not caches:
        return None
    empty = sorted(n for n, s in caches.items() if math.prod(s) == 0)
    if empty and len(empty) < len(caches):
        full = next(n for n in sorted(caches) if n not in empty)
        raise InputError(f"{where}: '{CACHE_SWITCH}' runs the first step when every past_key_values input is empty "
                         f"and the cache step when every one holds positions, but '{empty[0]}' is empty and '{full}' "
                         "is not; give every cache the same length")
    return not empty


def cache_switch(model: onnx.ModelProto, input_shapes: Mapping[str, tuple[int, ...]], source: str
                 ) -> np.ndarray | None:
    """The value of ``use_cache_branch`` the fixed ``input_shapes`` imply for an Optimum merged decoder (a bool array
    of the input's shape), or None when ``model`` has no such switch."""
    if CACHE_SWITCH not in input_shapes:
        return None
    switch = next(i for i in model.graph.input if i.name == CACHE_SWITCH)
    if switch.type.tensor_type.elem_type != onnx.TensorProto.BOOL:
        return None
    value = _implied(input_shapes, source)
    if value is None:
        return None
    return np.full(input_shapes[CACHE_SWITCH], value, dtype=bool)


def check_switch_samples(samples: Mapping[str, np.ndarray], where: str) -> None:
    """Refuse ``--inputs`` samples (leading sample axis) whose ``use_cache_branch`` contradicts their caches."""
    given = samples.get(CACHE_SWITCH)
    if given is None:
        return
    value = _implied({n: tuple(a.shape[1:]) for n, a in samples.items()}, where)
    if value is not None and bool(np.any(np.asarray(given) != value)):
        raise InputError(f"{where}: '{CACHE_SWITCH}' is {not value} in a sample whose past_key_values inputs are "
                         f"{'empty' if not value else 'filled'}; Optimum's runtime sets it to {value} there (the "
                         "compiled branch), so onnxruntime would run the other one")


def inline_cache_switch(model: onnx.ModelProto, input_shapes: Mapping[str, tuple[int, ...]] | None, source: str
                        ) -> onnx.ModelProto:
    """``model`` with every ``If`` on ``use_cache_branch`` replaced by the nodes of the branch the fixed
    ``input_shapes`` imply (its initializers moved to the graph, its outputs renamed by Identity nodes); ``model``
    itself when there is no such switch or the shapes are not all given (None)."""
    switch = cache_switch(model, input_shapes, source) if input_shapes is not None else None
    if switch is None or switch.size != 1:
        return model
    taken = "then_branch" if bool(switch.reshape(-1)[0]) else "else_branch"
    if not any(n.op_type == "If" and n.input and n.input[0] == CACHE_SWITCH for n in model.graph.node):
        return model
    out = onnx.ModelProto()
    out.CopyFrom(model)
    nodes: list[onnx.NodeProto] = []
    for node in out.graph.node:
        if not (node.op_type == "If" and node.input and node.input[0] == CACHE_SWITCH):
            nodes.append(node)
            continue
        branch = next(a.g for a in node.attribute if a.name == taken)
        nodes += branch.node
        out.graph.initializer.extend(branch.initializer)
        nodes += [onnx.helper.make_node("Identity", [formal.name], [actual], name=f"{node.name}/{actual}")
                  for formal, actual in zip(branch.output, node.output) if actual and actual != formal.name]
    del out.graph.node[:]
    out.graph.node.extend(nodes)
    return out
