"""compiler.npz.read_npz, the one reader of user .npz files: headers checked before data, no pickles, one line naming
the file and member for every malformed archive; through `codesign compile --inputs` and route-moe's inputs=."""

from __future__ import annotations

import io
import zipfile
from pathlib import Path

import numpy as np
import onnx
import pytest
from conftest import model_path

import compiler.calibrate
import compiler.limits
from codesign.cli import main
from compiler.frontend.onnx_ops import run_node
from compiler.npz import read_npz
from hw.errors import InputError


def _message(path: Path, where: str | None = None) -> str:
    with pytest.raises(InputError) as info:
        read_npz(path, where)
    text = str(info.value)
    assert "\n" not in text
    return text


def test_reads_plain_and_compressed(tmp_path):
    a, b = np.arange(6, dtype=np.float32).reshape(2, 3), np.ones((1, 4), np.int64)
    np.savez(tmp_path / "p.npz", a=a, b=b)
    np.savez_compressed(tmp_path / "c.npz", a=a, b=b)
    for name in ("p.npz", "c.npz"):
        got = read_npz(tmp_path / name)
        assert sorted(got) == ["a", "b"]
        np.testing.assert_array_equal(got["a"], a)
        np.testing.assert_array_equal(got["b"], b)


def test_malformed_archives_name_file_and_member(tmp_path):
    with open(tmp_path / "single.npz", "wb") as fh:  # np.save would append .npy to the name
        np.save(fh, np.zeros(3))
    assert _message(tmp_path / "single.npz") == (f"{tmp_path / 'single.npz'}: is a single .npy array, not an .npz "
                                                 "archive; save the arrays with np.savez(path, input_name=array, ...)")
    np.savez(tmp_path / "good.npz", x=np.arange(1000, dtype=np.float64))
    (tmp_path / "trunc.npz").write_bytes((tmp_path / "good.npz").read_bytes()[:600])
    assert _message(tmp_path / "trunc.npz").startswith(f"{tmp_path / 'trunc.npz'}: not an .npz archive (")
    np.savez(tmp_path / "pickled.npz", x=np.array([{"a": 1}], dtype=object))
    assert _message(tmp_path / "pickled.npz") == (
        f"{tmp_path / 'pickled.npz'}: member 'x.npy' holds Python objects (dtype object); loading it would unpickle "
        "code from the file, refused: save numeric arrays")
    with zipfile.ZipFile(tmp_path / "text.npz", "w") as zf:
        zf.writestr("readme.txt", "hi")
    assert _message(tmp_path / "text.npz") == f"{tmp_path / 'text.npz'}: member 'readme.txt' is not a .npy array"
    with zipfile.ZipFile(tmp_path / "header.npz", "w") as zf:
        zf.writestr("x.npy", b"\x93NUMPY\x01\x00garbage")
    assert _message(tmp_path / "header.npz").startswith(
        f"{tmp_path / 'header.npz'}: member 'x.npy': not a valid .npy header (")
    assert _message(tmp_path / "none.npz", "--inputs none.npz") == "--inputs none.npz: no such file"
    assert _message(tmp_path, "--inputs d") == "--inputs d: not a regular file, expected an .npz archive"


def test_huge_declared_array_is_refused_from_its_header(tmp_path):
    """A 100-byte member whose header declares 10^12 float32: refused before any data is read."""
    fake = np.lib.format.header_data_from_array_1_0(np.zeros(1, np.float32)) | {"shape": (10**12,)}
    buf = io.BytesIO()
    np.lib.format.write_array_header_1_0(buf, fake)
    with zipfile.ZipFile(tmp_path / "huge.npz", "w") as zf:
        zf.writestr("x.npy", buf.getvalue() + b"\0" * 16)
    assert _message(tmp_path / "huge.npz") == (f"{tmp_path / 'huge.npz'}: member 'x.npy' declares a 1000000000000 "
                                               f"float32 array (3.6 TiB) but holds only {len(buf.getvalue()) + 16} "
                                               "bytes (truncated?)")


def test_arrays_bigger_than_memory_are_refused_before_loading(tmp_path, monkeypatch):
    np.savez(tmp_path / "a.npz", x=np.zeros(1000, np.float64))
    monkeypatch.setattr(compiler.limits, "available_memory_bytes", lambda: 1000)
    assert _message(tmp_path / "a.npz") == (f"{tmp_path / 'a.npz'}: loading its arrays (1 members) needs 7.8 KiB, "
                                            "more than the 1000 B of memory available; refused before allocating")


def test_corrupt_member_data(tmp_path):
    np.savez(tmp_path / "good.npz", x=np.arange(100, dtype=np.int64))
    raw = bytearray((tmp_path / "good.npz").read_bytes())
    at = raw.index(np.arange(100, dtype=np.int64).tobytes()[8:16])
    raw[at] ^= 0xFF  # the stored CRC no longer matches
    (tmp_path / "crc.npz").write_bytes(bytes(raw))
    message = _message(tmp_path / "crc.npz")  # zipfile checks the CRC once it has read the (small) member whole
    assert message.startswith(f"{tmp_path / 'crc.npz'}: member 'x.npy': ") and "Bad CRC-32" in message, message


def _cli_error(capsys, *args: str) -> str:
    code = main(list(args))
    _, err = capsys.readouterr()
    assert code == 2 and err.count("\n") == 1 and "Traceback" not in err, err
    return err[len("codesign: error: "):-1]


def test_cli_inputs_and_route_moe_refuse_pickles(tmp_path, capsys):
    path = tmp_path / "p.npz"
    np.savez(path, pixel_values=np.array([{"a": 1}], dtype=object))
    refusal = ("member 'pixel_values.npy' holds Python objects (dtype object); loading it would unpickle code from "
               "the file, refused: save numeric arrays")
    assert _cli_error(capsys, "compile", str(model_path("vit_tiny.onnx")), "--inputs", str(path), "-q") == \
        f"--inputs {path}: {refusal}"
    np.savez(path, input_ids=np.array([{"a": 1}], dtype=object))
    passes = f'canonicalize,route-moe{{inputs="{path}"}},schedule'
    assert _cli_error(capsys, "compile", str(model_path("switch_tiny.onnx")), "--passes", passes, "-q") == \
        f"route-moe: inputs file {path}: {refusal.replace('pixel_values', 'input_ids')}"


def test_inputs_simulation_is_refused_beyond_memory(tmp_path, capsys, monkeypatch):
    """Accuracy runs with --inputs estimate the simulation first, like calibration."""
    path = tmp_path / "x.npz"
    np.savez(path, pixel_values=np.random.default_rng(0).standard_normal((2, 1, 3, 32, 32)).astype(np.float32))
    budget = {"bytes": 1 << 40}
    monkeypatch.setattr(compiler.limits, "available_memory_bytes", lambda: budget["bytes"])
    real = compiler.calibrate.simulation_bytes

    def shrink_after_loading(module):  # the npz itself fits; the machine is "full" once simulation is asked for
        budget["bytes"] = 1000
        return real(module)

    monkeypatch.setattr(compiler.calibrate, "simulation_bytes", shrink_after_loading)
    err = _cli_error(capsys, "compile", str(model_path("vit_tiny.onnx")), "--inputs", str(path), "-q")
    assert err.startswith("--inputs simulation (2 samples, 24.0 KiB of inputs; simulating one sample holds ") and \
        err.endswith("more than the 1000 B of memory available; refused before allocating"), err


def test_cli_malformed_npz_one_line(tmp_path, capsys):
    vit = str(model_path("vit_tiny.onnx"))
    npy = tmp_path / "single.npz"
    with open(npy, "wb") as fh:
        np.save(fh, np.zeros((2, 1, 3, 32, 32), np.float32))
    assert _cli_error(capsys, "compile", vit, "--calibrate", str(npy), "--quant", "int8", "-q") == (
        f"--calibrate {npy}: is a single .npy array, not an .npz archive; save the arrays with "
        "np.savez(path, input_name=array, ...)")
    good = tmp_path / "good.npz"
    np.savez(good, pixel_values=np.ones((2, 1, 3, 32, 32), np.float32))
    trunc = tmp_path / "trunc.npz"
    trunc.write_bytes(good.read_bytes()[:1000])
    assert _cli_error(capsys, "compile", vit, "--inputs", str(trunc), "-q").startswith(
        f"--inputs {trunc}: not an .npz archive (")
    header = np.lib.format.header_data_from_array_1_0(np.zeros(1, np.float32)) | {"shape": (10**9, 1, 3, 32, 32)}
    buf = io.BytesIO()
    np.lib.format.write_array_header_1_0(buf, header)
    huge = tmp_path / "huge.npz"
    with zipfile.ZipFile(huge, "w") as zf:
        zf.writestr("pixel_values.npy", buf.getvalue())
    assert _cli_error(capsys, "compile", vit, "--inputs", str(huge), "-q") == (
        f"--inputs {huge}: member 'pixel_values.npy' declares a 1000000000x1x3x32x32 float32 array (11.2 TiB) but "
        f"holds only {len(buf.getvalue())} bytes (truncated?)")


def test_out_of_range_indices_in_samples_are_one_line(tmp_path, capsys):
    """A token id past the vocabulary is the sample's fault: onnxruntime refuses it (--inputs), and calibration on it
    (--calibrate, which onnxruntime never sees) names the file, the op and the index instead of an IndexError."""
    bert = str(model_path("bert_tiny.onnx"))
    rows = onnx.load(bert).graph.initializer
    vocab = next(int(t.dims[0]) for t in rows if "word_embeddings" in t.name)
    ids = np.random.default_rng(0).integers(0, 300, (2, 1, 16)).astype(np.int64)
    ids[1, 0, 3] = vocab + 7
    bad = tmp_path / "bad.npz"
    np.savez(bad, input_ids=ids, attention_mask=np.ones_like(ids), token_type_ids=np.zeros_like(ids))
    assert _cli_error(capsys, "compile", bert, "--calibrate", str(bad), "--quant", "int8", "-q") == (
        f"calibrating on bad.npz (2 samples): simulating dataflow.embedding 'model.embeddings.word_embeddings.Gather':"
        f" index {vocab + 7} is out of range for the embedding table's rows of size {vocab} (valid: -{vocab}.."
        f"{vocab - 1})")
    assert _cli_error(capsys, "compile", bert, "--inputs", str(bad), "-q").startswith(
        "--inputs sample 1: onnxruntime failed on the FP32 reference model: ")


@pytest.mark.parametrize("op", ["Gather", "GatherElements", "ScatterElements"])
def test_index_ops_check_their_range(op):
    """The simulator's index ops take ONNX's negative indices and refuse one past the axis (a ValueError the
    simulator reports as the op's), as onnxruntime does."""
    data = np.arange(12, dtype=np.float32).reshape(3, 4)
    args = [data, np.array([[-1, 0], [2, 1]], np.int64)]
    if op == "ScatterElements":
        args.append(np.ones((2, 2), np.float32))
    got = run_node(op, args, {"axis": 1}, 1)[0]
    want = {"Gather": data[:, [[3, 0], [2, 1]]], "GatherElements": np.array([[3, 0], [6, 5]], np.float32)}
    if op in want:
        np.testing.assert_array_equal(got, want[op])
    args[1] = np.array([[4, 0], [0, 0]], np.int64)
    with pytest.raises(ValueError, match="^index 4 is out of range for axis 1 of size 4"):
        run_node(op, args, {"axis": 1}, 1)
