"""The concrete shape of every model input: the model's own dims, ``--shape INPUT=DIMS``, ``--shape NAME=N`` for a
symbolic dim's name (every input dim of that name, as onnxruntime's free-dimension overrides), ``--batch`` for a
symbolic leading dim; a 0 only as an empty KV cache's length. Used by compiler/frontend/onnx_loader.py, the CLI's
``--shape`` parser and the sweep file's ``shapes`` check.
"""

from __future__ import annotations

from collections.abc import Mapping

import onnx

from hw.errors import InputError

__all__ = ["dims_by_name", "input_shapes", "parse_shape_arg"]


def parse_shape_arg(text: str) -> tuple[str, tuple[int, ...]]:
    """Parse ``name=1x3x224x224`` (the CLI's ``--shape``); a 0 is parsed here and accepted only as an empty KV
    cache's length (``_input_shapes``)."""
    name, sep, dims = text.partition("=")
    try:
        if not sep or not name:
            raise ValueError
        shape = tuple(int(d) for d in dims.lower().split("x"))
        if any(d < 0 for d in shape):
            raise ValueError
    except ValueError:
        raise InputError(f"--shape {text}: expected NAME=DIMxDIM..., e.g. input_ids=1x128") from None
    return name, shape


def _fixed(dim: onnx.TensorShapeProto.Dimension) -> int | None:
    """A dim's size, or None for a symbolic (or unknown, or 0 as some exporters write it) one."""
    return dim.dim_value if dim.HasField("dim_value") and dim.dim_value > 0 else None


def dims_by_name(model: onnx.ModelProto, given: Mapping[str, tuple[int, ...]], source: str,
                  initializers: set[str]) -> dict[str, int]:
    """The ``given`` entries that name a symbolic dim (``NAME=N``), every other key checked to be an input."""
    real_inputs = [i for i in model.graph.input if i.name not in initializers]
    names = [i.name for i in real_inputs]
    symbolic = sorted({d.dim_param for i in real_inputs for d in i.type.tensor_type.shape.dim
                       if _fixed(d) is None and d.dim_param})
    bound: dict[str, int] = {}
    for name, value in given.items():
        if name in names:
            continue
        if name in symbolic and len(value) == 1:
            bound[name] = value[0]
            continue
        raise InputError(f"--shape {name}=...: {source} has no input '{name}' (inputs: {', '.join(names)})"
                         + (f"; its symbolic dims, each given as NAME=N: {', '.join(symbolic)}" if symbolic else ""))
    return bound


def input_shapes(model: onnx.ModelProto, given: Mapping[str, tuple[int, ...]], source: str,
                  initializers: set[str], batch: int | None = None) -> dict[str, tuple[int, ...]]:
    """Every real input's concrete shape: its own dims, ``--shape INPUT=DIMS``, ``--shape NAME=N`` for a symbolic
    dim's name (every input dim of that name: onnxruntime's free-dimension override, and how a decoder with one past
    input per layer is given its cache length once), ``--batch`` for a symbolic leading dim."""
    real_inputs = [i for i in model.graph.input if i.name not in initializers]
    bound = dims_by_name(model, given, source, initializers)
    shapes: dict[str, tuple[int, ...]] = {}
    for inp in real_inputs:
        dims = inp.type.tensor_type.shape.dim
        fixed = [_fixed(d) for d in dims]
        found = [f if f is not None else bound.get(d.dim_param) for f, d in zip(fixed, dims)]
        if batch is not None and inp.name not in given and found:
            lead = dims[0].dim_param
            if lead in bound and bound[lead] != batch:
                raise InputError(f"--batch {batch} contradicts --shape {lead}={bound[lead]} (input '{inp.name}')")
            if found[0] is None:
                found[0] = batch  # --batch fills the leading (batch) axis; other symbolic dims still need --shape
            elif found[0] != batch:
                raise InputError(f"--batch {batch}: {source}: input '{inp.name}' has a fixed leading dim of "
                                 f"{found[0]}; export it with a dynamic batch axis (torch.onnx dynamic_axes) or "
                                 f"give its shape with --shape")
        if inp.name in given:
            shape = given[inp.name]
            if len(shape) != len(fixed) or any(f is not None and f != s for f, s in zip(fixed, shape)):
                shown = "x".join(str(f) if f is not None else "?" for f in fixed)
                raise InputError(f"--shape {inp.name}={'x'.join(map(str, shape))}: does not fit the model's {shown}")
            flag = f"--shape {inp.name}={'x'.join(map(str, shape))}"
        elif any(f is None for f in found):
            shown = "x".join(str(f) if f is not None else (d.dim_param or "?") for f, d in zip(found, dims))
            example = "x".join(str(f) if f is not None else "1" for f in found)
            unnamed = sorted({d.dim_param for f, d in zip(found, dims) if f is None and d.dim_param})
            raise InputError(
                f"{source}: input '{inp.name}' has symbolic shape {shown}; "
                f"give it with --shape {inp.name}={example}"
                + (f" or name its dims: {' '.join(f'--shape {n}=N' for n in unnamed)}" if unnamed else "")
            )
        else:
            shape = tuple(int(f) for f in found)  # type: ignore[arg-type]
            flag = f"{source}: input '{inp.name}' ({'x'.join(map(str, shape))} from the dims given by name)"
        if 0 in shape and (len(shape) != 4 or 0 in shape[:2] or 0 in shape[3:]):
            raise InputError(f"{flag}: a dim of 0 is only meaningful as the length of an empty KV cache (axis 2 of "
                             "a [batch, heads, positions, head_size] past input: the prompt step)")
        shapes[inp.name] = shape
    return shapes
