"""The CLI's error boundary: bad input or environment is one line and status 2, a bug is one line naming the saved
traceback and status 3; `codesign opt` refuses text xDSL cannot survive before xDSL sees it; outputs never fail
with a traceback and never write through a planted symlink."""

from __future__ import annotations

import errno
import json
import math
import os
from pathlib import Path

import onnx
import pytest
from conftest import ROOT, model_path

from codesign import cli
from codesign.cli import main
from codesign.mlir_text import MAX_NESTING, check_mlir_text
from hw.errors import InputError
from hw.rtl.manifest import MARKER

GOOD_MLIR = (ROOT / "tests" / "filecheck" / "fuse.mlir").read_text()


def run(capsys, *args: str) -> tuple[int, str]:
    code = main(list(args))
    return code, capsys.readouterr().err


def one_line(err: str) -> str:
    assert err.count("\n") == 1 and "Traceback" not in err, err
    return err.rstrip("\n")


@pytest.fixture
def cache(tmp_path, monkeypatch) -> Path:
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    return tmp_path / "cache" / "codesign"


def _raise(exc: BaseException):
    def command(args):
        raise exc
    return command


# --- the boundary --------------------------------------------------------------------------------------------------


def test_a_bug_is_one_line_exit_3_naming_the_saved_traceback(capsys, monkeypatch, cache):
    monkeypatch.setattr(cli, "_cmd_targets", _raise(ValueError("boom\nsecond line")))
    code, err = run(capsys, "targets")
    assert code == 3
    line = one_line(err)
    (saved,) = cache.iterdir()
    assert line == (f"codesign: internal error: ValueError: boom second line - this is a bug in codesign, not in your "
                    f"input; the full traceback is in {saved} (please include it in a bug report)")
    text = saved.read_text()
    assert text.startswith("codesign targets\n") and "Traceback (most recent call last)" in text
    assert "ValueError: boom" in text


def test_a_base_exception_that_is_not_exit_or_interrupt_is_caught(capsys, monkeypatch, cache):
    class Odd(BaseException):  # like xDSL's ArgSpecParseError, which derives from BaseException
        pass

    monkeypatch.setattr(cli, "_cmd_targets", _raise(Odd("odd")))
    code, err = run(capsys, "targets")
    assert code == 3 and one_line(err).startswith("codesign: internal error: Odd: odd - this is a bug")


def test_the_traceback_goes_to_the_temp_folder_when_the_cache_is_unwritable(capsys, monkeypatch, tmp_path):
    (tmp_path / "cache").write_text("a file, not a folder")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    temp = tmp_path / "tmp"
    temp.mkdir()
    monkeypatch.setattr("tempfile.tempdir", str(temp))
    monkeypatch.setattr(cli, "_cmd_targets", _raise(KeyError("k")))
    code, err = run(capsys, "targets")
    (saved,) = temp.iterdir()
    assert code == 3 and f"the full traceback is in {saved} " in one_line(err)


def test_interrupt_and_help_keep_their_meaning(capsys, monkeypatch):
    with pytest.raises(SystemExit) as info:
        main(["--help"])
    assert info.value.code == 0
    capsys.readouterr()
    monkeypatch.setattr(cli, "_cmd_targets", _raise(KeyboardInterrupt()))
    assert run(capsys, "targets") == (130, "codesign: interrupted\n")


@pytest.mark.parametrize(("exc", "message"), [
    (PermissionError(errno.EACCES, "Permission denied", "out/r.json"), "out/r.json: Permission denied"),
    (OSError(errno.ENOSPC, "No space left on device", "big.json"), "big.json: No space left on device"),
    (IsADirectoryError(errno.EISDIR, "Is a directory", "d"), "d: Is a directory"),
    (OSError(errno.EIO, "Input/output error"), "m.onnx: Input/output error"),  # no file named: the input is
    (MemoryError(), "m.onnx: out of memory"),
    (onnx.checker.ValidationError("Field 'name' of 'node' is required"), "m.onnx: Field 'name' of 'node' is required"),
    (__import__("yaml").YAMLError("bad yaml"), "m.onnx: bad yaml"),
])
def test_input_and_environment_errors_are_one_line_exit_2(exc, message, capsys, monkeypatch, cache):
    monkeypatch.setattr(cli, "_cmd_compile", _raise(exc))
    code, err = run(capsys, "compile", "m.onnx")
    assert code == 2 and one_line(err) == f"codesign: error: {message}"
    assert not cache.exists()  # not a bug: nothing saved


# --- codesign opt ----------------------------------------------------------------------------------------------------


def _opt(capsys, tmp_path, text: str | bytes, *extra: str) -> tuple[int, str]:
    path = tmp_path / "in.mlir"
    path.write_bytes(text if isinstance(text, bytes) else text.encode())
    return run(capsys, "opt", str(path), *extra)


def test_opt_refuses_an_unterminated_string_before_xdsl(capsys, tmp_path):
    text = GOOD_MLIR.replace('dataflow.weight "w"', 'dataflow.weight "w' + "abcdefghij" * 4, 1)
    code, err = _opt(capsys, tmp_path, text)
    assert code == 2
    line = text[:text.index('dataflow.weight "w')].count("\n") + 1  # the filecheck file may grow above it
    assert one_line(err) == (f"codesign: error: {tmp_path / 'in.mlir'}:{line}: string literal not closed on its line (or "
                             "an escape other than \\\" \\n \\t \\\\ or two hex digits)")


def test_the_string_check_cannot_backtrack():
    # xDSL's regex needs 2**n steps for n letters after an unclosed quote; this returns at all only because the
    # check's possessive pattern fails after one scan.
    for text in ('"' + "a" * 100_000, '"' + "a" * 50_000 + "\\q", '"' + "ab\\n" * 30_000 + "\n\""):
        with pytest.raises(InputError, match="string literal not closed"):
            check_mlir_text(text, "x.mlir")
    check_mlir_text('"' + "a\\22b\\\"" * 10_000 + '" // "unclosed in a comment', "x.mlir")


@pytest.mark.parametrize("width", ["1180591620717411303424", "16777216", "99999999999999999999999999999999"])
def test_opt_refuses_integer_types_wider_than_mlir_allows(width: str, capsys, tmp_path):
    """xDSL computes an integer type's range as 1 << width: an i with 22 digits overflowed (a traceback, found by the
    MLIR fuzz family); MLIR's own limit is 2^24 - 1 bits, alone or as a shaped type's element."""
    for typed, shown in ((f"i{width}", f"i{width}"), (f"tensor<2x?xsi{width}>", f"si{width}")):
        text = f"func.func @f() {{\n  %0 = \"test.op\"() : () -> {typed}\n  func.return\n}}\n"
        code, err = _opt(capsys, tmp_path, text)
        assert code == 2 and one_line(err) == (f"codesign: error: {tmp_path / 'in.mlir'}:2: integer type "
                                               f"{shown[:24]} is wider than MLIR's {2**24 - 1} bits")
    for name in (f"%i{width}", f"@fi{width}", f"!my.i{width}"):  # names that end in digits are not types
        check_mlir_text(f"func.func {name}() {{\n}}\n", "x.mlir")
    check_mlir_text(f"%0 = arith.constant 1 : i{2**24 - 1}\n", "x.mlir")


def test_opt_refuses_deep_nesting_and_parses_up_to_the_limit(capsys, tmp_path):
    deep = GOOD_MLIR.replace("acc_type = f32}", "acc_type = f32, d = " + "[" * 20_000 + "]" * 20_000 + "}", 1)
    code, err = _opt(capsys, tmp_path, deep)
    line = deep[:deep.index("acc_type = f32, d = ")].count("\n") + 1
    assert code == 2 and one_line(err) == (f"codesign: error: {tmp_path / 'in.mlir'}:{line}: brackets nested more than "
                                           f"{MAX_NESTING} deep; codesign opt reads IR nested at most that deep")
    # The worst kind for xDSL's recursion (nested arrays of dictionaries), as deep as the check lets through.
    levels = (MAX_NESTING - 3) // 2  # module, func and the op's attribute dictionary are 3 levels
    at_limit = GOOD_MLIR.replace("acc_type = f32}", "acc_type = f32, d = " + "[{a = " * levels + "1"
                                 + "}]" * levels + "}", 1)
    check_mlir_text(at_limit, "x")
    assert _opt(capsys, tmp_path, at_limit) == (0, "")


@pytest.mark.parametrize(("make", "message"), [
    (lambda p: p.mkdir(), "{p}: is a directory, not an .mlir file"),
    (lambda p: p.write_bytes(b"builtin.module {\xff}\n"), "{p}: not UTF-8 text (byte 16: b'\\xff')"),
    (lambda p: p.write_text(GOOD_MLIR.replace("acc_type = f32}", "acc_type = f32, n = 99999999999999999999999 : i64}",
                                              1)),
     ("{p}: Integer value 99999999999999999999999 is out of range for type i64 which supports values in the range "
      "[-9223372036854775808, 18446744073709551616)")),
])
def test_opt_bad_files_are_one_line(make, message, capsys, tmp_path):
    path = tmp_path / "x.mlir"
    make(path)
    code, err = run(capsys, "opt", str(path))
    assert code == 2 and one_line(err) == "codesign: error: " + message.format(p=path)


def test_opt_refuses_a_file_over_the_size_limit(capsys, tmp_path, monkeypatch):
    monkeypatch.setattr("codesign.mlir_text.MAX_MLIR_BYTES", 100)
    code, err = _opt(capsys, tmp_path, GOOD_MLIR)
    assert code == 2 and one_line(err) == (f"codesign: error: {tmp_path / 'in.mlir'}: {len(GOOD_MLIR)} bytes is "
                                           "larger than the 100 bytes codesign opt reads")


@pytest.mark.parametrize(("passes", "message"), [
    ("fuse{", "--passes 'fuse{': Expected argument name here"),  # xDSL's ArgSpecParseError, a BaseException
    (",,", "--passes ',,': Expected pass name here"),
    ("fuse{x=1}", "--passes: pass 'fuse': Provided arguments [\"x\"] not found in expected arguments []"),
])
def test_opt_bad_pass_specs_are_one_line(passes, message, capsys, tmp_path):
    code, err = _opt(capsys, tmp_path, GOOD_MLIR, "--passes", passes)
    assert code == 2 and one_line(err) == f"codesign: error: {message}"


# --- outputs ---------------------------------------------------------------------------------------------------------


@pytest.fixture
def read_only(tmp_path, monkeypatch) -> Path:
    """A folder where creating a file fails as in a read-only folder (for root too, who may write anywhere)."""
    folder = tmp_path / "ro"
    folder.mkdir()
    real_open, real_mkdir = os.open, os.mkdir

    def refuse(path):
        if Path(path).parent == folder:
            raise PermissionError(errno.EACCES, "Permission denied", str(path))

    def fake_open(path, flags, mode=0o777, **kw):
        if flags & os.O_CREAT:
            refuse(path)
        return real_open(path, flags, mode, **kw)

    def fake_mkdir(path, mode=0o777, **kw):
        refuse(path)
        return real_mkdir(path, mode, **kw)

    monkeypatch.setattr(os, "open", fake_open)
    monkeypatch.setattr(os, "mkdir", fake_mkdir)
    return folder


def test_opt_output_into_a_read_only_folder_or_a_full_disk(capsys, tmp_path, read_only):
    code, err = _opt(capsys, tmp_path, GOOD_MLIR, "-o", str(read_only / "out.mlir"))
    assert code == 2 and one_line(err) == f"codesign: error: {read_only / 'out.mlir'}: Permission denied"
    code, err = _opt(capsys, tmp_path, GOOD_MLIR, "-o", "/dev/full")
    assert code == 2 and one_line(err) == "codesign: error: /dev/full: No space left on device"


def test_compile_outputs_into_a_read_only_folder(capsys, read_only):
    model = str(model_path("vit_tiny.onnx"))
    for flag, name in (("--json", "r.json"), ("--trace", "t.json")):
        code, err = run(capsys, "compile", model, "-q", flag, str(read_only / name))
        assert code == 2 and one_line(err) == f"codesign: error: {read_only / name}: Permission denied"
    assert list(read_only.iterdir()) == []


def test_the_json_report_is_strict(tmp_path):
    from codesign.report import write_json

    write_json({"accuracy": {"cosine_mean": math.nan, "max_abs_error": math.inf}, "macs": 3}, tmp_path / "r.json")
    text = (tmp_path / "r.json").read_text()
    assert json.loads(text) == {"accuracy": {"cosine_mean": None, "max_abs_error": None}, "macs": 3}
    assert "NaN" not in text and "Infinity" not in text


# --- codesign rtl --out ----------------------------------------------------------------------------------------------


def test_rtl_refuses_a_folder_whose_marker_is_a_symlink(capsys, tmp_path):
    victim = tmp_path / "victim.txt"
    victim.write_text("precious")
    out = tmp_path / "rtl"
    out.mkdir()
    (out / MARKER).symlink_to(victim)
    code, err = run(capsys, "rtl", "--kernel", "topk_router", "--set", "experts=4", "--set", "k=1", "--out", str(out))
    assert code == 2 and one_line(err) == (f"codesign: error: --out {out}: its {MARKER} marker is a symbolic link, "
                                           "not the file `codesign rtl` writes; refusing to write into this folder")
    assert victim.read_text() == "precious" and sorted(p.name for p in out.iterdir()) == [MARKER]


def test_rtl_replaces_links_in_its_own_folder_instead_of_following_them(capsys, tmp_path):
    victim = tmp_path / "victim.txt"
    victim.write_text("precious")
    out = tmp_path / "rtl"
    argv = ("rtl", "--kernel", "topk_router", "--set", "experts=4", "--set", "k=1", "--out", str(out), "-q")
    assert run(capsys, *argv) == (0, "")
    names = sorted(p.name for p in out.iterdir())
    for name in ("manifest.json", next(n for n in names if n.endswith(".v"))):
        (out / name).unlink()
        (out / name).symlink_to(victim)
    assert run(capsys, *argv) == (0, "")
    assert victim.read_text() == "precious"
    assert sorted(p.name for p in out.iterdir()) == names and not any(p.is_symlink() for p in out.iterdir())
    assert json.loads((out / "manifest.json").read_text())["kernels"][0]["name"] == "topk_router"


def test_rtl_out_in_a_read_only_folder(capsys, read_only):
    out = read_only / "rtl"
    code, err = run(capsys, "rtl", "--kernel", "topk_router", "--set", "experts=4", "--set", "k=1", "--out", str(out))
    assert code == 2 and one_line(err) == f"codesign: error: --out {out}: cannot create the folder: Permission denied"


# --- targets through the CLI ------------------------------------------------------------------------------------------


@pytest.mark.parametrize(("extra", "message"), [
    (("--set", "offchip.bandwidth_gbps=.inf"),
     "--set offchip.bandwidth_gbps=.inf: offchip.bandwidth_gbps: must be a finite number, got inf"),
    (("--set", "clock_mhz=.inf"), "--set clock_mhz=.inf: clock_mhz: must be a finite number, got inf"),
    (("--set", "clock_mhz=!!python/object/apply:os.system [echo]"),
     ("--set clock_mhz=!!python/object/apply:os.system [echo]: clock_mhz: cannot parse "
      "'!!python/object/apply:os.system [echo]' as a YAML value")),
])
def test_compile_refuses_meaningless_target_numbers(extra, message, capsys):
    code, err = run(capsys, "compile", str(model_path("vit_tiny.onnx")), "-q", *extra)
    assert code == 2 and one_line(err) == f"codesign: error: {message}"


def test_compile_refuses_a_python_tag_in_a_target_file(capsys, tmp_path):
    target = tmp_path / "t.yaml"
    target.write_text("kind: fpga\ndescription: !!python/object/apply:os.system ['echo pwned']\n")
    code, err = run(capsys, "compile", str(model_path("vit_tiny.onnx")), "--target", str(target))
    assert code == 2 and one_line(err) == (f"codesign: error: {target}:2: YAML tag "
                                           "!!python/object/apply:os.system is not allowed (plain YAML values only)")


def test_passes_without_schedule_cannot_report(models_dir, capsys):
    model = str(models_dir / "vit_tiny.onnx")
    assert main(["compile", model, "-q", "--passes", "canonicalize,canonicalize"]) == 2
    assert capsys.readouterr().err == (
        "codesign: error: --passes canonicalize,canonicalize: has no 'schedule' pass, and the report is built from "
        "the schedule; add it (e.g. 'canonicalize,canonicalize,schedule') or stop earlier with --stop-after\n")
    assert main(["compile", model, "-q", "--passes", "canonicalize", "--stop-after", "canonicalize"]) == 0


@pytest.mark.parametrize(("flag", "says"), [
    ("input", "its condition is input 'use_cache_branch', so the file holds one model per branch"),
    ("computed", "export with static shapes and without data-dependent branches"),
])
def test_an_if_is_one_line_saying_what_to_export_instead(tmp_path, capsys, flag: str, says: str) -> None:
    """HF Optimum's merged decoder picks its cache branch with an If on a boolean input: two models in one file."""
    from onnx import TensorProto, helper

    def branch(op: str) -> onnx.GraphProto:
        return helper.make_graph([helper.make_node(op, ["x"], [op])], op, [],
                                 [helper.make_tensor_value_info(op, TensorProto.FLOAT, [2, 4])])

    cond = (helper.make_node("Squeeze", ["use_cache_branch"], ["c"]) if flag == "input"
            else helper.make_node("ReduceMax", ["x"], ["m"], keepdims=0))
    nodes = [cond] + ([] if flag == "input" else [helper.make_node("Cast", ["m"], ["c"], to=TensorProto.BOOL)])
    nodes.append(helper.make_node("If", ["c"], ["y"], then_branch=branch("Relu"), else_branch=branch("Neg"),
                                  name="if"))
    inputs = [helper.make_tensor_value_info("x", TensorProto.FLOAT, [2, 4]),
              helper.make_tensor_value_info("use_cache_branch", TensorProto.BOOL, [1])]
    graph = helper.make_graph(nodes, "g", inputs, [helper.make_tensor_value_info("y", TensorProto.FLOAT, [2, 4])])
    path = tmp_path / "merged.onnx"
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=8), str(path))
    code, err = run(capsys, "compile", str(path), "-q")
    assert code == 2 and ("unsupported op If 'if': control flow is not supported (its condition depends on input "
                          "values); " + says) in one_line(err)
