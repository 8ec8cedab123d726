"""The concrete shape of every model input: the model's own dims, ``--shape INPUT=DIMS``, ``--shape NAME=N`` for a
symbolic dim's name (every input dim of that name, as onnxruntime's free-dimension overrides), ``--batch`` for a
symbolic leading dim; a 0 only as an empty KV cache's length. Used by compiler/frontend/onnx_loader.py, the CLI's
``--shape`` parser and the sweep file's ``shapes`` check. Where samples are given (``--inputs`` / ``--calibrate``),
the symbolic dims no ``--shape`` names are read off them (``dims_from_samples``), as onnxruntime sizes a dynamic
model by its feeds.

A dim may be named by an expression of other dims' names: Hugging Face Optimum's decoder exports give the attention
mask ``[batch_size, past_sequence_length + sequence_length]``, torch's dynamo exporter writes ``s0 + s1`` or
``2*s0``. Such a dim is computed from the names it uses (integer ``+ - * // %``, ``floor`` / ``ceiling`` /
``Max`` / ``Min`` of them, as sympy prints them), so ``--shape past_sequence_length=4 --shape sequence_length=8``
sizes the mask 12 as well. A name without spaces, ``*``, ``/``, ``%`` or ``(`` stays a name (``seq-len``).
"""

from __future__ import annotations

import ast
import math
import operator
from collections.abc import Callable, Mapping, Sequence

import onnx

from hw.errors import InputError

__all__ = ["dim_names", "dim_value", "dims_by_name", "dims_from_samples", "input_shapes", "parse_shape_arg"]


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


_BINARY: dict[type, Callable[[int, int], int]] = {
    ast.Add: operator.add, ast.Sub: operator.sub, ast.Mult: operator.mul, ast.FloorDiv: operator.floordiv,
    ast.Mod: operator.mod}
_MAX_EXPRESSION = 200
"""Longer dim names are names: no exporter writes a longer expression, and a deep one would exhaust the recursion."""
_UNARY_CALLS = frozenset({"floor", "ceiling", "ceil"})
_CALLS: dict[str, Callable[..., int]] = {"floor": math.floor, "ceiling": math.ceil, "ceil": math.ceil, "Max": max,
                                         "Min": min, "max": max, "min": min}


def _expression(text: str) -> ast.expr | None:
    """``text`` parsed as a dim expression (names, integers, ``+ - * / // %``, the calls above), or None when it is a
    plain name or not such an expression."""
    if text.isidentifier() or not any(c in text for c in " */%(") or len(text) > _MAX_EXPRESSION:
        return None  # a plain name, or one with a hyphen ("seq-len"): exporters space their + and - (sympy, Optimum)
    try:
        tree = ast.parse(text, mode="eval").body
    except (SyntaxError, ValueError, RecursionError, MemoryError):
        return None
    for node in ast.walk(tree):
        if isinstance(node, ast.Call):
            if not isinstance(node.func, ast.Name) or node.func.id not in _CALLS or node.keywords:
                return None
            if len(node.args) != (1 if node.func.id in _UNARY_CALLS else 2):
                return None
        elif isinstance(node, ast.BinOp):
            if type(node.op) not in (*_BINARY, ast.Div):
                return None
        elif isinstance(node, ast.Constant):
            if not isinstance(node.value, int) or isinstance(node.value, bool):
                return None
        elif not isinstance(node, (ast.Name, ast.Load, ast.UnaryOp, ast.USub, ast.UAdd, *_BINARY, ast.Div)):
            return None
    return tree


def dim_names(text: str) -> list[str]:
    """The dim names a symbolic dim stands on: itself, or the names its expression uses (sorted)."""
    tree = _expression(text)
    if tree is None:
        return [text] if text else []
    return sorted({n.id for n in ast.walk(tree) if isinstance(n, ast.Name) and n.id not in _CALLS})


def _evaluate(node: ast.expr, bound: Mapping[str, int]) -> int | float | None:
    if isinstance(node, ast.Constant):
        return node.value if isinstance(node.value, int) else None
    if isinstance(node, ast.Name):
        return bound.get(node.id)
    if isinstance(node, ast.UnaryOp):
        v = _evaluate(node.operand, bound)
        return None if v is None else (-v if isinstance(node.op, ast.USub) else v)
    if isinstance(node, ast.BinOp):
        a, b = _evaluate(node.left, bound), _evaluate(node.right, bound)
        if a is None or b is None or (isinstance(node.op, (ast.Div, ast.FloorDiv, ast.Mod)) and b == 0):
            return None
        return a / b if isinstance(node.op, ast.Div) else _BINARY[type(node.op)](a, b)  # type: ignore[arg-type]
    if isinstance(node, ast.Call):
        args = [_evaluate(a, bound) for a in node.args]
        return None if any(a is None for a in args) else _CALLS[node.func.id](*args)  # type: ignore[union-attr]
    return None


def dim_value(text: str, bound: Mapping[str, int]) -> int | None:
    """The size of the symbolic dim ``text``: ``bound[text]``, or its expression evaluated on ``bound`` (None while a
    name it uses is not bound, or when it does not come out a whole number)."""
    if text in bound:
        return bound[text]
    tree = _expression(text)
    value = None if tree is None else _evaluate(tree, bound)
    if value is None or value != int(value):
        return None
    if value < 0:
        raise ValueError(f"comes out {int(value)}")
    return int(value)


def dims_by_name(model: onnx.ModelProto, given: Mapping[str, tuple[int, ...]], source: str,
                  initializers: set[str]) -> dict[str, int]:
    """The ``given`` entries that name a symbolic dim (``NAME=N``), every other key checked to be an input."""
    real_inputs = [i for i in model.graph.input if i.name not in initializers]
    names = [i.name for i in real_inputs]
    params = {d.dim_param for i in real_inputs for d in i.type.tensor_type.shape.dim
              if _fixed(d) is None and d.dim_param}
    symbolic = sorted({n for p in params for n in dim_names(p)})  # the names to give (an expression's atoms)
    accepted = params | set(symbolic)  # a dim's own name too, even one that reads as an expression ("seq-len")
    bound: dict[str, int] = {}
    for name, value in given.items():
        if name in names:
            continue
        if name in accepted and len(value) == 1:
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
        try:
            found = [f if f is not None else dim_value(d.dim_param, bound) for f, d in zip(fixed, dims)]
        except ValueError as err:
            raise InputError(f"{source}: input '{inp.name}': a dim named by an expression {err} from the dims given "
                             f"by name ({', '.join(f'{k}={v}' for k, v in bound.items())}); a size is not negative"
                             ) from None
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
            if batch is not None and shape and shape[0] != batch:  # else --batch would be reported, not computed
                raise InputError(f"--batch {batch} contradicts {flag} (its leading dim, the samples per inference, "
                                 f"is {shape[0]}); drop one or make them agree")
        elif any(f is None for f in found):
            shown = "x".join(str(f) if f is not None else (d.dim_param or "?") for f, d in zip(found, dims))
            example = "x".join(str(f) if f is not None else "1" for f in found)
            unnamed = sorted({n for f, d in zip(found, dims) if f is None for n in dim_names(d.dim_param)
                              if n not in bound})
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


def dims_from_samples(model: onnx.ModelProto, given: Mapping[str, tuple[int, ...]], source: str,
                      initializers: set[str], samples: Mapping[str, Sequence[int]], flag: str,
                      batch: int | None = None) -> dict[str, tuple[int, ...]]:
    """``--shape`` entries for the symbolic dims of the inputs that ``given`` leaves open, read off the samples:
    ``samples`` maps an input to its arrays' shape (a leading sample axis, then one sample's shape). A named dim
    (``batch``, ``sequence_length``, dynamo's ``s0``) becomes ``NAME=N``, so every input using the name gets it and
    dims named by expressions of it are computed; an input with an unnamed symbolic dim gets its whole shape. The
    leading dim stays ``--batch``'s when that is given. Samples that disagree on a name (with each other, or with a
    ``--shape NAME=N``) raise one `InputError` line naming the inputs, ``flag`` naming the option."""
    real_inputs = [i for i in model.graph.input if i.name not in initializers]
    bound = dims_by_name(model, given, source, initializers)
    names: dict[str, tuple[int, str]] = {}  # dim name -> (size, the input it was read from)
    whole: dict[str, tuple[int, ...]] = {}
    expressions: list[tuple[str, str, int]] = []
    for inp in real_inputs:
        dims = inp.type.tensor_type.shape.dim
        shape = tuple(samples.get(inp.name, ()))[1:]
        if inp.name in given or len(shape) != len(dims):
            continue
        for k, (dim, size) in enumerate(zip(dims, shape)):
            if _fixed(dim) is not None or (k == 0 and batch is not None):
                continue
            name = dim.dim_param
            if not name:
                if batch is None and 0 not in shape:  # an empty sample leaves it to --shape (or its refusal)
                    whole[inp.name] = tuple(int(d) for d in shape)
                continue
            if dim_names(name) != [name]:
                expressions.append((inp.name, name, int(size)))  # computed from its names, then checked
                continue
            if name in bound and bound[name] != size:
                raise InputError(f"{flag}: input '{inp.name}' has {name}={size}, but --shape {name}={bound[name]}")
            seen = names.setdefault(name, (int(size), inp.name))
            if seen[0] != size:
                raise InputError(f"{flag}: inputs disagree on the dim '{name}': '{seen[1]}' has {seen[0]}, "
                                 f"'{inp.name}' has {size}")
    known = {**{k: v for k, (v, _) in names.items()}, **bound}
    for inp_name, text, size in expressions:
        try:
            value = dim_value(text, known)
        except ValueError:
            continue  # input_shapes says what is wrong with it
        if value is not None and value != size:
            raise InputError(f"{flag}: input '{inp_name}' has a dim of {size} where its '{text}' is {value} "
                             f"({', '.join(f'{k}={v}' for k, v in sorted(known.items()))})")
    return {**{k: (v,) for k, (v, _) in names.items() if k not in bound}, **whole}
