"""`codesign rtl`: kernels read from the compiled IR, Verilog + manifest.json, and the refusals.

Arrays are shrunk with ``--set gemm.rows=4 --set gemm.cols=4`` so that emitting the systolic array's
Verilog takes a second, not a minute.
"""

from __future__ import annotations

import json
import re

import pytest
from conftest import model_path

from codesign.cli import main
from hw.rtl.kernels import invocation_cycles
from hw.rtl.manifest import CONFIG_FILE, MARKER, resolve_config

SMALL_ARRAY = ["--set", "gemm.rows=4", "--set", "gemm.cols=4", "--set", "gemm.partitions=1"]  # one small array


def _run(capsys, *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def _manifest(out_dir) -> dict:
    return json.loads((out_dir / "manifest.json").read_text())


def test_quantized_vit_uses_gemm_requant_and_the_three_i_vit_units(tmp_path, capsys):
    out = tmp_path / "rtl"
    code, text, err = _run(capsys, "rtl", str(model_path("vit_tiny.onnx")), "--quant", "int8", "--softmax", "shiftmax",
                           "--gelu", "shiftgelu", "--layernorm", "ilayernorm", *SMALL_ARRAY, "--out", str(out))
    assert code == 0, err
    manifest = _manifest(out)
    by_name = {k["name"]: k for k in manifest["kernels"]}
    assert set(by_name) == {"systolic_gemm_stream", "requant", "shiftmax", "shiftgelu", "ilayernorm"}
    assert manifest["source"]["choices"] == {"quant": "int8", "softmax": "shiftmax", "gelu": "shiftgelu",
                                             "layernorm": "ilayernorm"}
    assert by_name["systolic_gemm_stream"]["parameters"] == {"rows": 4, "cols": 4, "in_bits": 8, "acc_bits": 32}
    # vit_tiny: 17 tokens, 4 heads of 16, hidden 64, MLP 128 (examples/build_models.py).
    assert by_name["shiftmax"]["parameters"] == {"n": 17, "in_bits": 32, "out_bits": 16, "x0_bits": 16}
    gelu = by_name["shiftgelu"]
    assert gelu["parameters"]["n"] == 128 and gelu["parameters"]["in_bits"] == 8
    assert gelu["parameters"]["per_element"] == 1 and gelu["cycles_formula"] == "n * rows + 4 - 1"
    assert gelu["predicted_cycles_per_invocation"] == 128 * 17 + 3  # 17 tokens streamed, one element per cycle
    assert "row [" not in (out / gelu["verilog"]).read_text()  # no row memory
    assert by_name["ilayernorm"]["parameters"] == {"c": 64, "in_bits": 16, "bias_bits": 32, "eps": 1, "rms": 0}
    softmax = by_name["shiftmax"]
    assert [inv["work"] for inv in softmax["invocations"]] == [{"rows": 4 * 17}] * 2
    assert softmax["predicted_cycles_per_invocation"] == 4 * 17 * (3 * 17 + 16) - 1
    for kernel in manifest["kernels"]:
        text_v = (out / kernel["verilog"]).read_text()
        assert f"module {kernel['module']}(" in text_v
        assert [p["name"] for p in kernel["ports"][:2]] == ["clk", "rst"]
        for inv in kernel["invocations"]:
            assert inv["cycles"] == invocation_cycles(kernel["name"], kernel["parameters"], inv["work"])
        assert kernel["total_cycles"] == sum(i["count"] * i["cycles"] for i in kernel["invocations"])
    assert "shiftmax_n17_in_bits32_out_bits16_x0_bits16.v" in text
    assert (out / MARKER).is_file()
    # Every invocation carries its runtime configuration (tests/test_rtl_design_config.py drives the units with it).
    assert manifest["format"] == 2 and manifest["config_file"] == CONFIG_FILE and (out / CONFIG_FILE).is_file()
    assert set(softmax["invocations"][0]["config"]) == {"x0", "input_shift", "input_scale", "output_scale"}
    assert set(gelu["invocations"][0]["config"]) == {"x0", "input_scale", "output_scale"}
    bias = by_name["ilayernorm"]["invocations"][0]["config"]["bias"]
    assert bias["shape"] == [64] and bias["dtype"] == "int64"
    assert resolve_config(out, by_name["ilayernorm"]["invocations"][0]["config"])["bias"].shape == (64,)
    # A later run into the same folder removes the previous run's config.npz with its Verilog.
    assert _run(capsys, "rtl", "--kernel", "shiftmax", "--set", "n=4", "--out", str(out), "-q")[0] == 0
    assert sorted(p.name for p in out.iterdir()) == [MARKER, "manifest.json",
                                                     "shiftmax_n4_in_bits16_out_bits8_x0_bits16.v"]
    (kernel,) = _manifest(out)["kernels"]
    assert kernel["invocations"][0]["config"] == {} and _manifest(out)["config_file"] is None


def test_float_inputs_to_the_units_have_per_call_configs(tmp_path, capsys):
    """Without --quant the units' inputs are quantized per call: x0 is only known per call, said in a note; the
    I-LayerNorm biases do not depend on the input scale and are written."""
    out = tmp_path / "rtl"
    code, _, err = _run(capsys, "rtl", str(model_path("vit_tiny.onnx")), "--softmax", "shiftmax", "--gelu",
                        "shiftgelu", "--layernorm", "ilayernorm", "--out", str(out), "-q")
    assert code == 0, err
    manifest = _manifest(out)
    by_name = {k["name"]: k for k in manifest["kernels"]}
    assert by_name["shiftmax"]["invocations"][0]["config"]["x0"] is None
    assert by_name["shiftgelu"]["invocations"][0]["config"]["x0"] is None
    assert "npz" in by_name["ilayernorm"]["invocations"][0]["config"]["bias"]
    assert any(note.startswith("4 invocation(s) take float inputs that the design quantizes per call")
               for note in manifest["notes"])


def test_edge_moe_model_gets_the_online_softmax_and_the_router(tmp_path, capsys):
    out = tmp_path / "rtl"
    code, _, err = _run(capsys, "rtl", str(model_path("m3vit_tiny.onnx")), "--quant", "int8", "--softmax", "online",
                        "--attention", "edge-moe", *SMALL_ARRAY, "--out", str(out), "-q")
    assert code == 0, err
    manifest = _manifest(out)
    by_name = {k["name"]: k for k in manifest["kernels"]}
    assert {"online_softmax", "topk_router", "systolic_gemm_stream"} <= set(by_name)
    assert by_name["topk_router"]["parameters"]["k"] == 2
    assert by_name["online_softmax"]["parameters"]["out_bits"] == 16
    router_bits = by_name["topk_router"]["parameters"]["in_bits"]
    if router_bits == 16:  # a float MoE block: logits compared as fixed point, said in a note
        assert any("float gate logits" in note for note in manifest["notes"])
    else:  # an integer MoE block: int32 logits, and the experts' GEMMs on the array
        assert router_bits == 32
        layers = {inv["layer"] for inv in by_name["systolic_gemm_stream"]["invocations"]}
        assert {"blocks.1.ffn.experts.w1", "blocks.1.ffn.experts.w2"} <= layers
        assert any("uniform routing" in note for note in manifest["notes"])


def test_shiftgelu_row_gets_the_row_max_unit(tmp_path, capsys):
    out = tmp_path / "rtl"
    code, _, err = _run(capsys, "rtl", str(model_path("vit_tiny.onnx")), "--quant", "int8", "--gelu", "shiftgelu-row",
                        *SMALL_ARRAY, "--out", str(out), "-q")
    assert code == 0, err
    (gelu,) = [k for k in _manifest(out)["kernels"] if k["name"] == "shiftgelu"]
    assert gelu["parameters"]["per_element"] == 0 and gelu["cycles_formula"] == "2 * n * rows + 10 - 1"
    assert gelu["predicted_cycles_per_invocation"] == 2 * 128 * 17 + 9
    assert gelu["verilog"] == "shiftgelu_n128_in_bits8_out_bits8_x0_bits16_per_element0.v"


def test_one_kernel_on_its_own(tmp_path, capsys):
    out = tmp_path / "one"
    code, _, err = _run(capsys, "rtl", "--kernel", "topk_router", "--set", "experts=16", "--set", "k=2",
                        "--out", str(out), "-q")
    assert code == 0, err
    (kernel,) = _manifest(out)["kernels"]
    assert kernel["parameters"] == {"experts": 16, "k": 2, "in_bits": 16}
    assert kernel["invocations"][0]["work"] == {"tokens": 1} and kernel["invocations"][0]["cycles"] == 16
    payload = next(p for p in kernel["ports"] if p["name"] == "outputs__payload")
    assert payload["fields"][0] == {"name": "index", "offset": 0, "width": 8, "lanes": 2, "lane_width": 4,
                                    "signed": False}


def test_a_design_without_integer_datapath_is_refused_naming_the_options(tmp_path, capsys):
    model = model_path("vit_tiny.onnx")
    code, _, err = _run(capsys, "rtl", str(model), "--out", str(tmp_path / "rtl"))
    assert code == 2
    assert err.strip() == (f"codesign: error: {model}: the compiled design has no integer datapath to emit as RTL; "
                           "make one with --quant int8|w4a8, --softmax shiftmax|online, --gelu "
                           "shiftgelu|shiftgelu-row or --layernorm ilayernorm")
    assert not (tmp_path / "rtl").exists()


def test_out_never_overwrites_a_users_folder_but_reuses_its_own(tmp_path, capsys):
    user = tmp_path / "mine"
    user.mkdir()
    (user / "notes.txt").write_text("keep me")
    code, _, err = _run(capsys, "rtl", "--kernel", "shiftmax", "--out", str(user))
    assert code == 2
    assert re.fullmatch(r"codesign: error: --out \S+: folder is not empty and was not written by `codesign rtl` "
                        r"\(no \.codesign-rtl marker\); choose a new or empty folder\n", err)
    assert sorted(p.name for p in user.iterdir()) == ["notes.txt"]
    ours = tmp_path / "ours"
    assert _run(capsys, "rtl", "--kernel", "shiftmax", "--set", "n=4", "--out", str(ours), "-q")[0] == 0
    assert _run(capsys, "rtl", "--kernel", "shiftgelu", "--out", str(ours), "-q")[0] == 0
    # The second run replaced the first one's Verilog instead of leaving it next to its own.
    assert sorted(p.name for p in ours.iterdir()) == [MARKER, "manifest.json",
                                                      "shiftgelu_n16_in_bits8_out_bits8_x0_bits16_per_element0.v"]
    (tmp_path / "file").write_text("")
    code, _, err = _run(capsys, "rtl", "--kernel", "shiftmax", "--out", str(tmp_path / "file"))
    assert code == 2 and "is a file, not a folder" in err


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--kernel", "shiftmax", "--set", "n=0"], "shiftmax: parameter n=0 is out of range (must be >= 1 and <= 4096)"),
        (["--kernel", "shiftmax", "--set", "n=many"], "--set n=many: kernel parameter n must be an integer"),
        (["--kernel", "shiftmax", "--set", "depth"], "--set depth: expected KEY=VALUE, e.g. n=64"),
        (["--kernel", "fft"], "unknown RTL kernel 'fft' (known: ilayernorm, online_softmax, requant, shiftgelu, "
                              "shiftmax, systolic_gemm, systolic_gemm_stream, systolic_gemm_ws, topk_router)"),
        (["model.onnx", "--kernel", "shiftmax"], "rtl: give a model or --kernel NAME, not both"),
        ([], "rtl: give a model (an ONNX file) or --kernel NAME (see codesign rtl --help)"),
        (["missing.onnx"], "missing.onnx: no such file"),
        ([str(model_path("vit_tiny.onnx")), "--inputs", "x.npz"],
         "rtl: --inputs/--outputs run the model; use them with --system --simulate or codesign compile"),
    ],
)
def test_bad_invocations_are_one_line_errors(argv, message, tmp_path, capsys):
    code, _, err = _run(capsys, "rtl", *argv, "--out", str(tmp_path / "rtl"))
    assert code == 2
    assert err == f"codesign: error: {message}\n"
    assert not (tmp_path / "rtl").exists()
