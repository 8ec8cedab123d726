"""Load a target YAML: parse with line numbers, apply ``--set`` overrides, validate once, explain errors in one line.

Every failure is an ``InputError`` whose message starts with where the culprit is, ``file:line`` for a YAML key and
``--set key=value`` for an override, then names the dotted key path:

    my.yaml:12: gemm.dataflow: 'xs' is not one of os, ws, is
    --set gemm.rowz=16: unknown key 'gemm.rowz' (did you mean gemm.rows?)

The YAML is read with PyYAML's node API (``yaml.compose``), which keeps the line of every key; the plain data is
validated by the schema class of its ``kind`` (``schema.TARGET_KINDS``), and pydantic's error locations (key paths)
are mapped back to lines.

Every YAML codesign reads (targets, ``--set`` values, sweep files) goes through :func:`compose_yaml` /
:func:`load_yaml`: PyYAML's safe loader with limits a hostile or broken file cannot get past - no tags beyond plain
YAML's (``!!python/...`` is refused, not constructed), nesting at most :data:`MAX_YAML_DEPTH` deep, at most
:data:`MAX_YAML_NODES` nodes once aliases are expanded (a "billion laughs" alias bomb is refused while it is still
a few lines of text), and no alias inside the node it names. Each refusal is one ``InputError`` naming file and line.
"""

from __future__ import annotations

import difflib
import re
import typing
from collections.abc import Mapping
from functools import lru_cache
from importlib import resources
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, ValidationError

from hw.errors import InputError
from hw.targets.schema import TARGET_KINDS, Target

__all__ = ["load_target", "bundled_targets", "compose_yaml", "load_yaml", "MAX_YAML_DEPTH", "MAX_YAML_NODES"]

KeyPath = tuple[Any, ...]

_MERGE_TAG = "tag:yaml.org,2002:merge"

MAX_YAML_DEPTH = 32
"""Deepest nesting of mappings and sequences accepted (aliases expanded); targets nest 4 deep, sweep files 5. PyYAML's
composer and our tree walks recurse per level, so without a bound a deep file is a RecursionError."""

MAX_YAML_NODES = 100_000
"""Most nodes a document may have with every alias expanded; the bundled targets have about 100. Bounds the work of
everything that walks the data (validation, overrides), whatever the aliases multiply."""

_SAFE_TAGS = frozenset(tag for tag in yaml.SafeLoader.yaml_constructors if tag is not None) | {_MERGE_TAG}


class _LimitedLoader(yaml.SafeLoader):
    """PyYAML's ``SafeLoader`` that refuses, while composing, tags it would not construct, nesting deeper than
    :data:`MAX_YAML_DEPTH`, more than :data:`MAX_YAML_NODES` expanded nodes and recursive aliases.

    Composition is depth-first, so the expanded size of a node is how far the running count rose while it was
    composed; an alias adds the expanded size of the node it names, in O(1), so a bomb is refused without expanding.
    """

    def __init__(self, text: str, display: str) -> None:
        super().__init__(text)
        self.display = display
        self._depth = 0  # levels of the node being composed (1 = the root)
        self._deepest = 0  # deepest level reached, aliases expanded, inside the node being composed
        self._expanded = 0  # nodes so far, aliases expanded
        self._anchored: dict[str, tuple[int, int]] = {}  # anchor -> (expanded size, height) of its finished node

    def _refuse(self, mark: Any, problem: str) -> InputError:
        return InputError(f"{self.display}:{mark.line + 1}: {problem}")

    def compose_document(self) -> Any:
        self._anchored = {}
        return super().compose_document()

    def compose_node(self, parent: Any, index: Any) -> Any:
        event = self.peek_event()
        if isinstance(event, yaml.AliasEvent):
            anchor = event.anchor
            if anchor in self.anchors and anchor not in self._anchored:
                raise self._refuse(event.start_mark, f"alias *{anchor} is inside the node &{anchor} it names "
                                                     "(a recursive alias)")
            size, height = self._anchored.get(anchor, (1, 1))  # an undefined alias: PyYAML names it next
            self._grow(size, self._depth + height, event.start_mark)
            return super().compose_node(parent, index)
        before, outer_deepest = self._expanded, self._deepest
        self._depth += 1
        self._deepest = self._depth
        self._grow(1, self._depth, event.start_mark)
        node = super().compose_node(parent, index)
        height = self._deepest - self._depth + 1
        self._depth -= 1
        self._deepest = max(outer_deepest, self._deepest)
        assert node is not None, "compose_node is called on a node event, so it composes a node"
        if node.tag not in _SAFE_TAGS:
            tag = node.tag.replace("tag:yaml.org,2002:", "!!")
            raise self._refuse(node.start_mark, f"YAML tag {tag} is not allowed (plain YAML values only)")
        anchor = getattr(event, "anchor", None)
        if anchor is not None:
            self._anchored[anchor] = (self._expanded - before, height)
        return node

    def _grow(self, nodes: int, level: int, mark: Any) -> None:
        """Count ``nodes`` more expanded nodes reaching ``level``; refuse past the limits."""
        self._expanded += nodes
        if self._expanded > MAX_YAML_NODES:
            raise self._refuse(mark, f"more than {MAX_YAML_NODES} YAML nodes with aliases expanded (an alias bomb?)")
        if level > MAX_YAML_DEPTH:
            raise self._refuse(mark, f"YAML nested more than {MAX_YAML_DEPTH} levels deep")
        self._deepest = max(self._deepest, level)


def compose_yaml(text: str, display: str) -> yaml.Node | None:
    """The node tree (lines kept) of the one YAML document in ``text``, or None when it is empty; read with the
    limits above. ``InputError`` naming ``display`` and the line for a syntax error or a refusal."""
    loader = _LimitedLoader(text, display)
    try:
        return loader.get_single_node()
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        line = mark.line + 1 if mark is not None else 1
        problem = str(exc.problem or exc.context or exc)
        if exc.problem == "second occurrence" and exc.context and exc.context_mark is not None:
            problem = f"{exc.context.split(';')[0]} (first at line {exc.context_mark.line + 1})"  # an anchor
        raise InputError(f"{display}:{line}: YAML syntax error: {' '.join(problem.split())}") from None
    except yaml.YAMLError as exc:
        raise InputError(f"{display}: YAML error: {' '.join(str(exc).split())}") from None
    finally:
        loader.dispose()


def load_yaml(text: str, display: str) -> Any:
    """The plain data (dicts, lists, scalars) of the YAML document in ``text``, read by :func:`compose_yaml`; keys
    must be scalars and unique, ``<<`` merges are applied (see :func:`_to_data`)."""
    node = compose_yaml(text, display)
    return None if node is None else _to_data(node, (), {}, display)


def _construct(node: yaml.Node, display: str) -> Any:
    """Plain data of a composed scalar; ``InputError`` for a value its explicit tag cannot hold (``!!int abc``)."""
    try:
        return yaml.constructor.SafeConstructor().construct_object(node, deep=True)
    except (yaml.YAMLError, ValueError, TypeError, KeyError, AttributeError, OverflowError):
        value = node.value if isinstance(node, yaml.ScalarNode) else "this value"
        tag = node.tag.replace("tag:yaml.org,2002:", "!!")
        raise InputError(f"{display}:{node.start_mark.line + 1}: cannot read {value!r} as {tag}") from None


def bundled_targets() -> dict[str, str]:
    """Bundled target names (``fpga-u280`` ...) mapped to their one-line descriptions, sorted by name."""
    return dict(_bundled())


@lru_cache(maxsize=1)
def _bundled() -> tuple[tuple[str, str], ...]:
    out = []
    for entry in sorted(resources.files("hw.targets").iterdir(), key=lambda e: e.name):
        if entry.name.endswith(".yaml"):
            data = load_yaml(entry.read_text(encoding="utf-8"), entry.name) or {}
            out.append((entry.name[: -len(".yaml")], str(data.get("description", "")).strip()))
    return tuple(out)


def load_target(name_or_path: str, overrides: Mapping[str, str] | None = None) -> Target:
    """Load, override and validate a target.

    ``name_or_path`` is a bundled name (see ``bundled_targets()``) or a path to a YAML file (anything ending in
    ``.yaml`` / ``.yml`` or containing a path separator). ``overrides`` maps dotted key paths to values written as
    YAML scalars (``{"gemm.rows": "16", "clock_mhz": "250"}``); they are applied before validation, so the result is
    validated exactly once. Raises ``InputError`` (one line) for every problem with the name, file, YAML or values.
    """
    display, text = _read(str(name_or_path))
    root = compose_yaml(text, display)
    if root is None:
        raise InputError(f"{display}:1: empty target file")
    if not isinstance(root, yaml.MappingNode):
        raise InputError(f"{display}:{root.start_mark.line + 1}: expected a mapping of target keys at the top level")
    lines: dict[KeyPath, int] = {(): root.start_mark.line + 1}
    data = _to_data(root, (), lines, display)
    data.setdefault("name", Path(display).stem)

    origins: dict[KeyPath, str] = {}
    for key, value in (overrides or {}).items():
        where = f"--set {key}={value}"
        path = _split_key(key)
        if not path:
            raise InputError(f"{where}: empty key")
        try:
            parsed = load_yaml(value, where) if isinstance(value, str) else value
        except InputError:
            raise InputError(f"{where}: {key}: cannot parse {value!r} as a YAML value") from None
        _set(data, path, parsed, where)
        origins[path] = where

    kind = data.get("kind")
    cls = TARGET_KINDS.get(kind) if isinstance(kind, str) else None
    if cls is None:
        where = origins.get(("kind",)) or f"{display}:{lines.get(('kind',), 1)}"
        known = ", ".join(TARGET_KINDS)
        if "kind" not in data:
            raise InputError(f"{where}: missing required key 'kind' (one of {known})")
        raise InputError(f"{where}: kind: {_show(kind)} is not one of {known}")

    for path, where in origins.items():
        _check_path(cls, path, where)

    try:
        return cls.model_validate(data)
    except ValidationError as exc:
        raise InputError(_explain(exc, cls, display, lines, origins)) from None


# --- Reading ----------------------------------------------------------------------------------------------------------


def _read(name_or_path: str) -> tuple[str, str]:
    """(name to show in messages, file text) for a bundled name or a path."""
    is_path = name_or_path.endswith((".yaml", ".yml")) or "/" in name_or_path or "\\" in name_or_path
    if not is_path:
        names = [name for name, _ in _bundled()]
        if name_or_path not in names:
            close = difflib.get_close_matches(name_or_path, names, n=1, cutoff=0.5)
            hint = f" (did you mean {close[0]}?)" if close else ""
            raise InputError(
                f"unknown target {name_or_path!r}{hint}; bundled targets: {', '.join(names)}; or give a YAML path"
            )
        entry = resources.files("hw.targets").joinpath(f"{name_or_path}.yaml")
        return f"{name_or_path}.yaml", entry.read_text(encoding="utf-8")
    path = Path(name_or_path)
    if path.is_dir():
        raise InputError(f"{name_or_path}: is a directory, not a target file")
    if not path.is_file():
        raise InputError(f"{name_or_path}: target file not found")
    try:
        return name_or_path, path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise InputError(f"{name_or_path}: cannot read target file: {exc}") from None


def _to_data(node: yaml.Node, path: KeyPath, lines: dict[KeyPath, int], display: str) -> Any:
    """Plain Python data from a composed node, recording the 1-based line of every mapping key in ``lines``."""
    if isinstance(node, yaml.MappingNode):
        out: dict[Any, Any] = {}
        merged: dict[Any, Any] = {}
        for key_node, value_node in node.value:
            if key_node.tag == _MERGE_TAG:  # ``<<: *anchor`` - explicit keys win over merged ones
                sources = value_node.value if isinstance(value_node, yaml.SequenceNode) else [value_node]
                for source in sources:
                    value = _to_data(source, path, lines, display)
                    if not isinstance(value, dict):
                        raise InputError(f"{display}:{key_node.start_mark.line + 1}: '<<' must merge a mapping")
                    merged = {**value, **merged}
                continue
            line = key_node.start_mark.line + 1
            if not isinstance(key_node, yaml.ScalarNode):
                raise InputError(f"{display}:{line}: {_dotted(path) or 'top level'}: keys must be plain scalars")
            key = _construct(key_node, display)
            if key in out:
                raise InputError(f"{display}:{line}: duplicate key '{_dotted(path + (key,))}'")
            lines[path + (key,)] = line
            out[key] = _to_data(value_node, path + (key,), lines, display)
        return {**merged, **out}
    if isinstance(node, yaml.SequenceNode):
        return [_to_data(item, path + (i,), lines, display) for i, item in enumerate(node.value)]
    return _construct(node, display)


# --- Overrides --------------------------------------------------------------------------------------------------------


def _split_key(key: str) -> KeyPath:
    parts = key.strip().split(".")
    if any(not p for p in parts):
        return ()
    return tuple(int(p) if re.fullmatch(r"\d+", p) else p for p in parts)


def _set(data: dict[Any, Any], path: KeyPath, value: Any, where: str) -> None:
    node = data
    for i, part in enumerate(path[:-1]):
        child = node.get(part)
        if child is None:
            child = node[part] = {}
        elif not isinstance(child, dict):
            raise InputError(f"{where}: {_dotted(path[: i + 1])} is a value, not a section; cannot set {_dotted(path)}")
        node = child
    node[path[-1]] = value


def _check_path(cls: type[BaseModel], path: KeyPath, where: str) -> None:
    """Raise unless ``path`` names a key the schema of ``cls`` has (free keys of dict fields are allowed)."""
    annotation: Any = cls
    for i, part in enumerate(path):
        model = _model_of(annotation)
        if model is not None:
            field = model.model_fields.get(part) if isinstance(part, str) else None
            if field is None:
                raise InputError(f"{where}: unknown key '{_dotted(path)}'{_suggest(cls, path[: i + 1])}")
            annotation = field.annotation
            continue
        value_type = _dict_value_type(annotation)
        if value_type is None:
            raise InputError(f"{where}: unknown key '{_dotted(path)}' ({_dotted(path[:i])} takes a value, not keys)")
        annotation = value_type


def _model_of(annotation: Any) -> type[BaseModel] | None:
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return annotation
    return None


def _dict_value_type(annotation: Any) -> Any:
    while typing.get_origin(annotation) is typing.Annotated:
        annotation = typing.get_args(annotation)[0]
    if typing.get_origin(annotation) is dict:
        return typing.get_args(annotation)[1]
    return None


def _all_paths(model: type[BaseModel], prefix: KeyPath = ()) -> list[str]:
    out = []
    for name, field in model.model_fields.items():
        path = prefix + (name,)
        out.append(_dotted(path))
        sub = _model_of(field.annotation)
        if sub is not None:
            out.extend(_all_paths(sub, path))
    return out


def _suggest(cls: type[BaseModel], path: KeyPath) -> str:
    """`` (did you mean x.y?)`` for the closest key beside ``path`` (same section first, then anywhere), or ``""``."""
    model = _model_at(cls, path[:-1])
    if model is not None:
        near = difflib.get_close_matches(str(path[-1]), list(model.model_fields), n=1, cutoff=0.6)
        if near:
            return f" (did you mean {_dotted(path[:-1] + (near[0],))}?)"
    close = difflib.get_close_matches(_dotted(path), _all_paths(cls), n=1, cutoff=0.6)
    return f" (did you mean {close[0]}?)" if close else ""


def _model_at(cls: type[BaseModel], path: KeyPath) -> type[BaseModel] | None:
    """The section model at ``path`` (walking through free dict keys), or None."""
    annotation: Any = cls
    for part in path:
        model = _model_of(annotation)
        if model is not None:
            field = model.model_fields.get(part) if isinstance(part, str) else None
            if field is None:
                return None
            annotation = field.annotation
        else:
            annotation = _dict_value_type(annotation)
            if annotation is None:
                return None
    return _model_of(annotation)


# --- Explaining validation errors -------------------------------------------------------------------------------------


def _explain(
    exc: ValidationError, cls: type[BaseModel], display: str, lines: dict[KeyPath, int], origins: dict[KeyPath, str]
) -> str:
    """One line for the first error in file order (overrides after the file), with a count of the others."""

    def locate(loc: KeyPath) -> tuple[int, str]:
        for n in range(len(loc), -1, -1):
            if loc[:n] in origins:
                return (1 << 30, origins[loc[:n]])
        for n in range(len(loc), -1, -1):
            if loc[:n] in lines:
                return (lines[loc[:n]], f"{display}:{lines[loc[:n]]}")
        return (1, f"{display}:1")

    raw = exc.errors(include_url=False)
    misspelt = {tuple(e["loc"][:-1]) for e in raw if e["type"] == "extra_forbidden"}
    errors = []
    for err in raw:
        loc = tuple(p for p in err["loc"] if p != "[key]")
        if err["type"] == "missing" and loc[:-1] in misspelt:
            continue  # the misspelt key beside it is the real problem
        if err["type"] == "missing":
            order, where = locate(loc[:-1])
        else:
            order, where = locate(loc)
        # Report wrong keys and values before absent ones.
        errors.append((err["type"] == "missing", order, where, _describe(err, loc, cls)))
    errors.sort(key=lambda e: e[:2])
    _, _, where, text = errors[0]
    more = f" (and {len(errors) - 1} more)" if len(errors) > 1 else ""
    return f"{where}: {text}{more}"


def _describe(err: Mapping[str, Any], loc: KeyPath, cls: type[BaseModel]) -> str:
    kind, value, ctx = err["type"], err.get("input"), err.get("ctx") or {}
    path = _dotted(loc)
    if kind == "missing":
        parent = f"{_dotted(loc[:-1])}: " if loc[1:] else ""
        return f"{parent}missing required key '{loc[-1]}'"
    if kind == "extra_forbidden":
        return f"unknown key '{path}'{_suggest(cls, loc)}"
    if kind == "literal_error":
        choices = ", ".join(re.findall(r"'([^']*)'", str(ctx.get("expected", ""))))
        return f"{path}: {_show(value)} is not one of {choices}"
    simple = {
        "int_type": "an integer", "float_type": "a number", "bool_type": "true or false", "string_type": "a string",
        "dict_type": "a mapping", "model_type": "a mapping", "model_attributes_type": "a mapping",
    }
    if kind in simple:
        return f"{path}: expected {simple[kind]}, got {_show(value)}"
    bounds = {"greater_than": ">", "greater_than_equal": ">=", "less_than": "<", "less_than_equal": "<="}
    if kind in bounds:
        limit = next(iter(ctx.values()))
        return f"{path}: must be {bounds[kind]} {_show(limit)}, got {_show(value)}"
    if kind == "finite_number":
        return f"{path}: must be a finite number, got {_show(value)}"
    if kind == "too_short":
        return f"{path}: must not be empty"
    if kind == "value_error":
        return f"{path}: {str(ctx.get('error', err['msg'])).removeprefix('Value error, ')}"
    return f"{path}: {err['msg']}"


def _show(value: Any) -> str:
    if isinstance(value, str):
        return f"'{value}'"
    if isinstance(value, bool):
        return "true" if value else "false"
    if value is None:
        return "null"
    if isinstance(value, (dict, list)):
        return "a mapping" if isinstance(value, dict) else "a list"
    if isinstance(value, float) and value.is_integer():
        return str(int(value)) if abs(value) < 1e15 else repr(value)
    return str(value)


def _dotted(path: KeyPath) -> str:
    return ".".join(str(p) for p in path)

