"""Generators of malformed text inputs for the CLI fuzz suite: target YAMLs, ``--set`` and other compile flags, MLIR
text for ``codesign opt``, ``--passes`` pipelines and sweep specs. Same shape as tests/fuzz_inputs.py: a strategy
draws a plan, the ``Case`` builds its files when it runs."""

from __future__ import annotations

import re
from importlib import resources
from typing import Any

import yaml
from hypothesis import strategies as st

from tests.fuzz_inputs import Case, npz_bytes, seed_bytes, tiny_samples

__all__ = ["mlir_cases", "passes_cases", "set_cases", "set_mlir_seeds", "sweep_cases", "target_yaml_cases"]

TARGETS = ("fpga-u280", "fpga-zcu102", "npu-xdna", "npu-hexagon", "optical-4f", "gpu-a100", "gpu-rtx2080ti")

# Scalars as YAML text: the override syntax and the values a target key may be given.
SCALARS = ("0", "-1", "1", "16", "0.5", "nan", ".nan", ".inf", "-.inf", "inf", "1e309", "-1e309", "1e-320",
           "99999999999999999999999999", str(2**63), str(2**64), "0x10", "0o17", "1_000", "true", "no", "null", "~",
           "", " ", "[1, 2]", "{a: 1}", "[]", "{}", "!!python/object/apply:os.system ['touch pwned']",
           "!!binary AAAA", "*a", "&a 1", "'unterminated", '"\\x', "\x00", "\u00e9", "x" * 5000, "1/0", "os",
           "ws", "is", "hbm2", "auto", "- 1", "? a", "%YAML 1.2", "\t16", "16 # c", "[" * 50, "{a: " * 50)

PY_VALUES: tuple[Any, ...] = (0, -1, 1, 2**64, 10**30, 1e308, -1e308, 1e-320, float("nan"), float("inf"),
                              float("-inf"), True, False, None, "", "x", "16", [], {}, [1, 2], {"a": 1}, [[[[1]]]],
                              "x" * 3000, list(range(200)))


def _bundled(name: str) -> str:
    return (resources.files("hw.targets") / f"{name}.yaml").read_text(encoding="utf-8")


def _paths(data: Any, prefix: tuple = ()) -> list[tuple]:
    """Every key path of nested dicts / lists, parents before children."""
    out = [prefix] if prefix else []
    if isinstance(data, dict):
        for k, v in data.items():
            out += _paths(v, prefix + (k,))
    elif isinstance(data, list):
        for i, v in enumerate(data):
            out += _paths(v, prefix + (i,))
    return out


def _mutate_data(data: Any, steps: tuple[tuple[str, int, int], ...]) -> Any:
    """Delete, replace, rename or add keys of a loaded YAML document (indices wrap)."""
    for kind, i, j in steps:
        paths = _paths(data)
        if not paths or not isinstance(data, dict):
            break
        path = paths[i % len(paths)]
        parent = data
        for part in path[:-1]:
            parent = parent[part]
        last = path[-1]
        if kind == "delete":
            del parent[last]
        elif kind == "value":
            parent[last] = PY_VALUES[j % len(PY_VALUES)]
        elif kind == "rename" and isinstance(parent, dict):
            parent[f"{last}{('x', '_', '.', ' ', '')[j % 5]}{'s' if j % 2 else ''}"] = parent.pop(last)
        elif kind == "add" and isinstance(parent, dict):
            parent[("unknown", "kind", "name", 7, "gemm.rows", "")[j % 6]] = PY_VALUES[j % len(PY_VALUES)]
        elif kind == "nest":
            parent[last] = {"a": parent[last]} if j % 2 else [parent[last]] * (1 + j % 3)
    return data


def _mutate_text(text: str, steps: tuple[tuple[str, int, int], ...]) -> bytes:
    """Line- and character-level damage of a YAML text; returns bytes (some steps make it non-UTF-8)."""
    lines = text.splitlines(keepends=True) or [""]
    raw = None
    for kind, i, j in steps:
        k = i % len(lines)
        if kind == "del_line":
            del lines[k]
            lines = lines or [""]
        elif kind == "dup_line":
            lines.insert(k, lines[k])  # a duplicate key
        elif kind == "indent":
            lines[k] = ("\t", " ", "   ", "")[j % 4] + lines[k]
        elif kind == "insert":
            snippets = ("x: !!python/object/apply:os.system ['touch pwned']\n", "a: &a [1, 2]\nb: *a\n",
                        "bomb: &b [" + ", ".join(["x"] * 9) + "]\n" + "".join(
                            f"l{n}: &l{n} [{', '.join([f'*{p}' for p in ['b' if n == 0 else f'l{n - 1}'] * 9])}]\n"
                            for n in range(8)),
                        "deep: " + "[" * 20000 + "]" * 20000 + "\n", "deep: " + "{a: " * 5000 + "1" + "}" * 5000 + "\n",
                        "<<: *nope\n", "---\nkind: fpga\n", "...\n", "%TAG ! tag:x,2000:\n---\n", "? [a, b]\n: 1\n",
                        "\ufeffkind: fpga\n", "key: \"unterminated\n", "!!set {a, b}\n", "gemm: {rows: 8, rows: 9}\n")
            lines.insert(k, snippets[j % len(snippets)])
        elif kind == "truncate":
            text_now = "".join(lines)
            lines = [text_now[: (j * 131) % max(len(text_now), 1)]]
        elif kind == "char":
            line = lines[k]
            pos = j % max(len(line), 1)
            lines[k] = line[:pos] + (":", "-", "\x00", "#", "'", '"', "{", "[", "&", "*", "!", "|", ">", "%")[
                (i + j) % 14] + line[pos + 1:]
        elif kind == "bytes":
            raw = (b"\xff\xfe", b"\x80", b"\xc3\x28", b"\xef\xbb\xbf")[j % 4]
    data = "".join(lines).encode("utf-8", "surrogatepass")
    if raw is not None:
        cut = (len(data) * 3) // 7
        data = data[:cut] + raw + data[cut:]
    return data


_DATA_KINDS = ("delete", "value", "rename", "add", "nest")
_TEXT_KINDS = ("del_line", "dup_line", "indent", "insert", "truncate", "char", "bytes")


def _yaml_steps(kinds: tuple[str, ...]) -> st.SearchStrategy:
    return st.lists(st.tuples(st.sampled_from(kinds), st.integers(0, 300), st.integers(0, 300)),
                    min_size=1, max_size=3).map(tuple)


def _yaml_file(base: str, data_steps: tuple, text_steps: tuple) -> bytes:
    if data_steps:
        data = _mutate_data(yaml.safe_load(base), data_steps)
        base = yaml.safe_dump(data, sort_keys=False, allow_unicode=True)
    return _mutate_text(base, text_steps) if text_steps else base.encode()


@st.composite
def target_yaml_cases(draw: st.DrawFn) -> Case:
    """A bundled target YAML with keys deleted, retyped, renamed, added or nested, and its text damaged: duplicate
    keys, tabs, python tags, anchors / alias bombs, 20,000-deep nesting, truncation, NUL, non-UTF-8."""
    name = draw(st.sampled_from(TARGETS))
    data_steps = draw(st.one_of(st.just(()), _yaml_steps(_DATA_KINDS)))
    text_steps = draw(st.one_of(st.just(()), _yaml_steps(_TEXT_KINDS))) if data_steps else \
        draw(_yaml_steps(_TEXT_KINDS))
    base = _bundled(name)
    argv = ("compile", "in/model.onnx", "-q", "--target", "in/t.yaml")
    if draw(st.booleans()):
        argv += ("--set", draw(st.sampled_from(("gemm.rows=16", "clock_mhz=nan", "name=x", "kind=gpu"))))
    return Case("target-yaml", argv, f"{name}.yaml with data {data_steps!r}, text {text_steps!r}",
                lambda: {"in/model.onnx": seed_bytes("tiny"), "in/t.yaml": _yaml_file(base, data_steps, text_steps)})


# --- --set and other compile flags -------------------------------------------------------------------------------------

_TARGET_KEYS = tuple(sorted({".".join(map(str, p)) for t in TARGETS for p in _paths(yaml.safe_load(_bundled(t)))}))
_KEY_SPELLINGS = ("", ".", "..", "gemm.", ".gemm", "gemm..rows", "gemm.rows.x", "GEMM.ROWS", "gemm.rowz",
                  "energy.pj_per_mac.99", "energy.pj_per_mac.-1", "offchip", "kind", "name", "__class__",
                  "gemm.__dict__", "0", "gemm.rows=1", " gemm.rows", "\u00e9", "a" * 500)
_TARGET_NAMES = TARGETS + ("", "nope", "fpga-U280", "../../etc/passwd", "/etc/passwd", "/dev/zero", "/dev/null",
                           "in", "in/model.onnx", "in/missing.yaml", "fpga-u280.yaml", "~", "-", "\u00e9")
_SHAPES = ("x=1x8x16", "x=0x8x16", "x=-1x8", "x=", "=1", "x", "x=1x8x16x", "y=1", "x=99999999999x8x16",
           "x=1e3", "x=1X8X16", "x=1x8x16=2", "x=" + "1x" * 3000 + "1")
# Flags a compile accepts (with values that should work or be refused) and flags that break the command line: the
# second kind is drawn less often, so most cases get past argparse and reach the compiler.
_FLAGS = (("--stop-after", "import"), ("--stop-after", "nope"), ("--stop-after", ""), ("--print-ir-after", "tile"),
          ("--max-layers", "-1"), ("--max-layers", "0"), ("--max-layers", str(2**70)), ("--softmax", "shiftmax"),
          ("--softmax", "nope"), ("--gelu", ""), ("--gelu", "shiftgelu"), ("--quant", "int8"), ("--quant", "w4a8"),
          ("--quant", "INT8"), ("--attention", "flash"), ("--attention", "edge-moe"), ("--layernorm", "ilayernorm"),
          ("--mlir-generic",), ("--json", "out/r.json"), ("--json", "out/missing/r.json"), ("--json", "out"),
          ("--json", "in/model.onnx"), ("--json", "./in/../in/model.onnx"), ("--json", "/dev/full"),
          ("--html", "out/r.html"), ("--trace", "out/t.json"), ("--emit-mlir", "out/m.mlir"), ("--emit-mlir", ""),
          ("--outputs", "out/o.npz"), ("--inputs", "in/missing.npz"), ("--calibrate", "in/model.onnx"),
          ("--inputs", "in"), ("--passes", "canonicalize,fuse,tile,schedule"), ("--passes", "schedule"))
_BAD_FLAGS = (("--help",), ("--bogus",), ("--set",), ("--max-layers", "x"), ("--", "x"), ("--shape",))


@st.composite
def set_cases(draw: st.DrawFn) -> Case:
    """``--set`` strings (real and misspelt key paths with scalars of every YAML kind, no '=', several '='),
    ``--target`` names and paths, ``--shape`` strings and the other compile flags, mixed."""
    argv: list[str] = ["compile", draw(st.sampled_from(("in/model.onnx",) * 6 + ("in/missing.onnx", "in", "")))]
    for _ in range(draw(st.integers(0, 3))):
        key = draw(st.sampled_from(_TARGET_KEYS) if draw(st.integers(0, 3)) else st.sampled_from(_KEY_SPELLINGS))
        value = draw(st.sampled_from(SCALARS) if draw(st.integers(0, 3)) else st.text(max_size=12))
        argv += ["--set", draw(st.sampled_from((f"{key}={value}",) * 6 + (key, f"{key}=={value}", f"={value}",
                                                                            f"{key} = {value}")))]
    if draw(st.booleans()):
        argv += ["--target", draw(st.sampled_from(TARGETS * 3 + _TARGET_NAMES))]
    if draw(st.integers(0, 3)) == 0:
        argv += ["--shape", draw(st.sampled_from(_SHAPES))]
    for flag in draw(st.lists(st.sampled_from(_FLAGS), max_size=3)):
        argv += list(flag)
    if draw(st.integers(0, 9)) == 0:
        argv += list(draw(st.sampled_from(_BAD_FLAGS)))
    if "--help" not in argv and "-q" not in argv:
        argv.append("-q")
    outputs = ("out",)
    return Case("set", tuple(argv), "flags as in argv", lambda: {"in/model.onnx": seed_bytes("tiny")}, outputs)


# --- MLIR text and pass pipelines ------------------------------------------------------------------------------------

MLIR_SEEDS: dict[str, str] = {}
"""Real IR to mutate: ``tiny`` / ``tiny-generic`` / ``vit_tiny`` from ``codesign compile --emit-mlir``, set by the
test module's fixture (set_mlir_seeds) before any case is generated."""


def set_mlir_seeds(seeds: dict[str, str]) -> None:
    MLIR_SEEDS.update(seeds)


_TOKENS = ("%999", "%0", "@x", '"unterminated', '"\\', "tensor<0x0xf32>", "tensor<99999999999999999999xf32>",
           "tensor<?x?xf32>", "tensor<1x8x16xi0>", "tensor<1x8x16xi99999999>", "-1", "0", "i0", "f16", "}", "{",
           "(", ")", ":", "->", ",", "=", "dataflow.gemm", "dataflow.nope", "dataflow.weight", "func.return",
           "builtin.module", "#map", "^bb0:", "\x00", "1" * 400, "0x" + "f" * 100, "dense<1.0>", "array<i64: -1>",
           "unit", "@main", "i64", "f64", "nan", "inf", "1e400", "\u00e9", "//", "/*", "!x", "<<", "loc(", "%")
_LINE_KINDS = ("truncate", "token", "delete", "dup_line", "swap_lines", "nest", "number", "insert_line", "bytes")


def _mlir_text(seed: str, steps: tuple[tuple[str, int, int], ...]) -> bytes:
    text = MLIR_SEEDS[seed]
    tail = b""
    for kind, i, j in steps:
        lines = text.splitlines(keepends=True) or [""]
        k = i % len(lines)
        if kind == "truncate":
            text = text[: (i * 97 + j) % max(len(text), 1)]
        elif kind == "token":
            spans = [m.span() for m in re.finditer(r"[%@#^]?[\w.\"<>?]+|[^\s\w]", text)]
            a, b = spans[(i * 31 + j) % len(spans)] if spans else (0, 0)
            text = text[:a] + _TOKENS[j % len(_TOKENS)] + text[b:]
        elif kind == "delete":
            spans = [m.span() for m in re.finditer(r"\S+", text)]
            a, b = spans[(i * 31 + j) % len(spans)] if spans else (0, 0)
            text = text[:a] + text[b:]
        elif kind == "dup_line":
            lines.insert(k, lines[k])
            text = "".join(lines)
        elif kind == "swap_lines":
            m = j % len(lines)
            lines[k], lines[m] = lines[m], lines[k]
            text = "".join(lines)
        elif kind == "nest":
            depth = (10, 1000, 20000)[j % 3]
            text = ("builtin.module {\n" * depth + text + "}\n" * depth) if i % 2 else \
                text.replace("tensor<1x8x16xf32>", "tensor<" + "tensor<" * depth + "f32" + ">" * depth + ">", 1)
        elif kind == "number":
            nums = [m.span() for m in re.finditer(r"-?\d+", text)]
            if nums:
                a, b = nums[(i * 7 + j) % len(nums)]
                text = text[:a] + str((0, -1, 2**64, 10**400, -(2**63), 99999999999)[j % 6]) + text[b:]
        elif kind == "insert_line":
            lines.insert(k, ('"x"() : () -> ()\n', "%99 = dataflow.weight \"w\" : tensor<4xf32>\n",
                             'func.func @f() {\n', '%1 = "dataflow.gemm"() : () -> ()\n', "}\n", "^bb1:\n",
                             "#attr = " + "[" * 5000 + "]" * 5000 + "\n")[j % 7])
            text = "".join(lines)
        elif kind == "bytes":
            tail = (b"\xff\xfe", b"\x80abc", b"\xc3\x28")[j % 3]
    data = text.encode("utf-8", "surrogatepass")
    return data[: len(data) // 2] + tail + data[len(data) // 2:] if tail else data


_PASS_NAMES = ("canonicalize", "fuse", "quantize", "route-moe", "schedule", "set-attention", "set-gelu",
               "set-layernorm", "set-softmax", "tile", "nope", "", "Canonicalize", "dce", "cse", "func.func")
_PASS_OPTS = ("target", "approx", "bits", "algorithm", "lanes", "tile_q", "tile_k", "mode", "percentile", "samples",
              "balance", "inputs", "nope", "")
_PASS_VALS = ("fpga-u280", "npu-xdna", "in/t.yaml", "/dev/zero", "nope", "shiftmax", "lut", "ilayernorm", "flash",
              "int8", "w4a8", "0", "-1", "1", str(2**64), "nan", "inf", "true", "x y", '"q"', "", "{", "in/s.npz")
_PUNCT = ("", "", "", "{", "}", ",", "{}", "{=}", "{a=", "\"", "'", "[", "(", " ", ",,", "{{}}")


@st.composite
def pipelines(draw: st.DrawFn) -> str:
    """A ``--passes`` string: registry names with options (real and not), broken by stray punctuation."""
    items = []
    for _ in range(draw(st.integers(0, 4))):
        name = draw(st.sampled_from(_PASS_NAMES))
        opts = draw(st.lists(st.tuples(st.sampled_from(_PASS_OPTS), st.sampled_from(_PASS_VALS)), max_size=3))
        body = " ".join(f"{k}={v}" for k, v in opts)
        items.append(name + (f"{{{body}}}" if opts or draw(st.booleans()) else "") + draw(st.sampled_from(_PUNCT)))
    return ",".join(items)


def _opt_files(seed: str, steps: tuple) -> dict[str, bytes | str]:
    return {"in/m.mlir": _mlir_text(seed, steps), "in/t.yaml": _bundled("fpga-zcu102").encode(),
            "in/s.npz": npz_bytes({"x": tiny_samples()})}


@st.composite
def mlir_cases(draw: st.DrawFn) -> Case:
    """Real ``--emit-mlir`` output truncated, with tokens replaced or deleted, lines duplicated or swapped, 20,000-deep
    nesting, huge integers, unterminated strings, non-UTF-8 bytes; run through ``codesign opt`` and some passes."""
    seed = draw(st.sampled_from(("tiny", "tiny", "tiny-generic", "vit_tiny")))
    steps = tuple(draw(st.lists(st.tuples(st.sampled_from(_LINE_KINDS), st.integers(0, 500), st.integers(0, 500)),
                                min_size=1, max_size=3)))
    argv = ["opt", "in/m.mlir"]
    passes = draw(st.sampled_from((None, "canonicalize", "fuse,tile{target=fpga-u280},schedule{target=fpga-u280}",
                                   "set-softmax{approx=shiftmax},set-gelu{approx=lut}")))
    if passes:
        argv += ["--passes", passes]
    argv += list(draw(st.sampled_from(((), ("--mlir-generic",), ("-o", "out/o.mlir"), ("-o", "in/m.mlir")))))
    return Case("mlir", tuple(argv), f"{seed} IR with {steps!r}", lambda: _opt_files(seed, steps))


@st.composite
def passes_cases(draw: st.DrawFn) -> Case:
    """Generated ``--passes`` pipelines, on ``codesign opt`` of the tiny IR and on ``codesign compile``."""
    spec = draw(pipelines())
    opt = draw(st.booleans())
    argv = ("opt", "in/m.mlir", "--passes", spec) if opt else ("compile", "in/model.onnx", "-q", "--passes", spec)

    def files() -> dict[str, bytes | str]:
        return _opt_files("tiny", ()) if opt else {**_opt_files("tiny", ()), "in/model.onnx": seed_bytes("tiny")}

    return Case("passes", argv, "pipeline as in argv", files)


# --- Sweep specs -------------------------------------------------------------------------------------------------------

SWEEP_BASE = {
    "models": ["in/model.onnx"],
    "target": "fpga-u280",
    "space": {"gemm.rows": [8, 16], "clock_mhz": {"min": 100, "max": 200, "step": 100}},
    "objectives": {"latency_ms": "min", "energy_mj": "min"},
    "constraints": ["fits"],
    "strategy": "grid",
}
_RANGE_VALUES = (100, 200, 0, -5, 1e-300, 1e-12, float("nan"), float("inf"), float("-inf"), 1e308, -1e308, 2**70,
                 "50", None, True, [], "a")
_SWEEP_EDITS = ("range", "strategy", "budget", "models", "space_value", "objective", "constraint", "unknown",
                "target_axis", "compile_axis", "inputs", "shapes", "set", "drop")


def _sweep_edit(spec: dict, kind: str, i: int, j: int) -> None:
    space = spec.setdefault("space", {}) if isinstance(spec.get("space"), dict) else spec
    if kind == "range":
        rng: dict[str, object] = {"min": 100, "max": 200, "step": 100}
        rng[("min", "max", "step", "log", "extra")[i % 5]] = _RANGE_VALUES[j % len(_RANGE_VALUES)]
        space[("clock_mhz", "gemm.rows", "buffers.act_kb")[i % 3]] = rng
    elif kind == "strategy":
        spec["strategy"] = ("random", "tpe", "nsga2", "grid", "GRID", "", 1)[i % 7]
        spec["budget"] = (1, 2, 3, 0, -1, "x", None, 1.5)[j % 8]
        if spec["strategy"] in ("random", "tpe", "nsga2") and i % 2:
            space["clock_mhz"] = {"min": 100, "max": 300}
    elif kind == "budget":
        spec["budget"] = (0, -1, 2**70, "3", 1e308, None)[j % 6]
    elif kind == "models":
        spec["models"] = ([], "in/model.onnx", ["in/model.onnx", "in/model.onnx"], ["in/missing.onnx"], ["in"],
                          ["in/t.yaml"], [7], None, ["/dev/zero"], ["../sentinel.txt"])[j % 10]
    elif kind == "space_value":
        space[("gemm.rows", "gemm.cols", "clock_mhz", "gemm.dataflow", "nope.key", "model")[i % 6]] = \
            [PY_VALUES[j % len(PY_VALUES)]] if i % 3 else PY_VALUES[j % len(PY_VALUES)]
    elif kind == "objective":
        spec["objectives"] = ({}, {"latency_ms": "max"}, {"nope": "min"}, {"accuracy.cosine": "max"},
                              {"latency_ms": "minimize"}, [], {"latency_ms": None})[j % 7]
    elif kind == "constraint":
        spec["constraints"] = (["latency_ms <"], ["latency_ms < nan"], ["accuracy.cosine >= 0.99"], ["fits fits"],
                               [""], ["dsp <= 1e400"], [7], "fits", ["energy_mj >= -inf"])[j % 9]
    elif kind == "unknown":
        spec[("unknown", "Space", "seed", "target", "set", "compile")[i % 6]] = PY_VALUES[j % len(PY_VALUES)]
    elif kind == "target_axis":
        space["target"] = (["fpga-u280", "npu-xdna"], ["nope"], [], ["fpga-u280", "fpga-u280"], "fpga-u280",
                           ["in/t.yaml"], [1])[j % 7]
    elif kind == "compile_axis":
        space[("compile.softmax", "compile.quant", "compile.nope")[i % 3]] = (["exact", "shiftmax"], ["nope"], [1],
                                                                              {"min": 1, "max": 2})[j % 4]
    elif kind == "inputs":
        spec["inputs" if i % 2 else "calibrate"] = ("in/s.npz", "in/missing.npz", "in/model.onnx", "in/bad.npz")[j % 4]
    elif kind == "shapes":
        spec["shapes"] = ({"x": [1, 8, 16]}, {"x": [0]}, {"x": []}, {"y": [1]}, {"x": "1x8"}, {"x": [2**70]})[j % 6]
    elif kind == "set":
        spec["set"] = {("gemm.rows", "nope", "clock_mhz", "kind")[i % 4]: PY_VALUES[j % len(PY_VALUES)]}
    elif kind == "drop":
        spec.pop(("models", "target", "space", "objectives", "strategy")[i % 5], None)


def _sweep_files(steps: tuple, text_steps: tuple) -> dict[str, bytes | str]:
    spec = yaml.safe_load(yaml.safe_dump(SWEEP_BASE))
    for kind, i, j in steps:
        _sweep_edit(spec, kind, i, j)
    text = yaml.safe_dump(spec, sort_keys=False)
    return {"in/s.yaml": _mutate_text(text, text_steps) if text_steps else text.encode(),
            "in/model.onnx": seed_bytes("tiny"), "in/t.yaml": _bundled("fpga-u280").encode(),
            "in/s.npz": npz_bytes({"x": tiny_samples()}), "in/bad.npz": b"PK\x03\x04"}


@st.composite
def sweep_cases(draw: st.DrawFn) -> Case:
    """The base sweep (tiny model, 4 grid points) with ranges of NaN / inf / huge step counts, strategies and budgets,
    models, axes, objectives, constraints, unknown keys and damaged text; run with ``--workers 0``."""
    steps = tuple(draw(st.lists(st.tuples(st.sampled_from(_SWEEP_EDITS), st.integers(0, 300), st.integers(0, 300)),
                                min_size=1, max_size=2)))
    text_steps = draw(st.one_of(st.just(()), st.just(()), _yaml_steps(_TEXT_KINDS)))
    workers = draw(st.sampled_from(("0",) * 8 + ("-1", "x")))
    out = draw(st.sampled_from(("out/run",) * 8 + ("in/model.onnx", "out")))
    argv = ("sweep", "in/s.yaml", "--out", out, "--workers", workers, "-q")
    return Case("sweep", argv, f"base sweep with {steps!r}, text {text_steps!r}",
                lambda: _sweep_files(steps, text_steps))
