"""`codesign compile` / `opt` / `targets` / `ops` from the command line: the report contract, pipeline options,
IR round trips, and every bad input with its exact one-line message and exit status 2."""

from __future__ import annotations

import json
import shutil

import onnx
import pytest
from conftest import model_path
from onnx import TensorProto, helper

from codesign.cli import main

REPORT_KEYS = {"model", "target", "clock_mhz", "latency_cycles", "latency_ms", "throughput_per_s", "macs",
               "bytes_offchip", "roofline_cycles", "patterns", "layers", "energy_mj", "resources"}
LAYER_KEYS = {"name", "op", "macs", "bytes_offchip", "compute_cycles", "memory_cycles", "cycles", "start_cycle",
              "end_cycle"}


def run(capsys, *args: str) -> tuple[int, str, str]:
    code = main(list(args))
    out, err = capsys.readouterr()
    return code, out, err


def test_report_contract(tmp_path, capsys):
    out = tmp_path / "r.json"
    trace = tmp_path / "t.json"
    code, stdout, _ = run(capsys, "compile", str(model_path("vit_tiny.onnx")), "--target", "fpga-u280",
                          "--json", str(out), "--trace", str(trace))
    assert code == 0 and "latency" in stdout
    report = json.loads(out.read_text())
    assert REPORT_KEYS <= report.keys()
    assert set(report["patterns"]) == {"attention", "layernorm", "gelu", "gemm", "softmax", "moe"}
    for layer in report["layers"]:
        assert LAYER_KEYS <= layer.keys()
        assert layer["end_cycle"] - layer["start_cycle"] == layer["cycles"]
        assert layer["end_cycle"] <= report["latency_cycles"]
    assert report["latency_cycles"] == max(layer["end_cycle"] for layer in report["layers"])
    assert report["latency_ms"] == pytest.approx(report["latency_cycles"] / (report["clock_mhz"] * 1e3))
    assert report["bytes_offchip"] == sum(layer["bytes_offchip"] for layer in report["layers"])
    assert report["roofline_cycles"] <= report["latency_cycles"]
    # resources are the compiled design's: a float ViT's 64 vector lanes hold the generic ALU only
    detail = report["resources_detail"]
    assert (detail["vector_lanes"], list(detail["lane_units"])) == (64, ["vector_alu"])
    assert sum(detail["components"]["dsp"].values()) == report["resources"]["dsp"]["used"]
    assert "64 x (vector_alu): 400 LUT, 400 FF, 1 DSP each" in " ".join(stdout.split())
    events = json.loads(trace.read_text())["traceEvents"]
    assert {e["name"] for e in events if e["ph"] == "X"} >= {layer["name"] for layer in report["layers"]
                                                             if layer["op"] != "attention"}


def test_set_overrides_change_the_schedule(tmp_path, capsys):
    a, b = tmp_path / "a.json", tmp_path / "b.json"
    model = str(model_path("vit_tiny.onnx"))
    assert main(["compile", model, "--json", str(a), "-q"]) == 0
    assert main(["compile", model, "--json", str(b), "-q", "--set", "gemm.rows=16", "--set", "clock_mhz=250"]) == 0
    ra, rb = json.loads(a.read_text()), json.loads(b.read_text())
    assert rb["clock_mhz"] == 250 and rb["latency_cycles"] != ra["latency_cycles"]
    assert rb["macs"] == ra["macs"]


def test_every_bundled_target_compiles(tmp_path, capsys):
    from hw.targets import bundled_targets

    for name in bundled_targets():
        out = tmp_path / f"{name}.json"
        assert main(["compile", str(model_path("bert_tiny.onnx")), "--target", name, "--json", str(out), "-q"]) == 0
        report = json.loads(out.read_text())
        assert report["target"] == name and report["latency_cycles"] > 0 and report["energy_mj"] > 0


def test_stop_after_and_print_ir_after(capsys):
    model = str(model_path("vit_tiny.onnx"))
    code, out, _ = run(capsys, "compile", model, "--stop-after", "canonicalize", "--print-ir-after", "import")
    assert code == 0
    assert "// ----- IR after import -----" in out and "dataflow.attention" in out
    assert "stopped after 'canonicalize'" in out and "latency" not in out


def test_custom_passes_and_generic_print(tmp_path, capsys):
    model = str(model_path("bert_tiny.onnx"))
    code, out, _ = run(capsys, "compile", model, "--passes", "canonicalize,tile,schedule", "--print-ir-after",
                       "schedule", "--mlir-generic", "-q")
    assert code == 0 and '"dataflow.gemm"' in out and "start =" in out


def test_ir_round_trips_through_opt(tmp_path, capsys):
    ir = tmp_path / "m.mlir"
    once, twice, generic = tmp_path / "a.mlir", tmp_path / "b.mlir", tmp_path / "g.mlir"
    assert main(["compile", str(model_path("gpt2_tiny.onnx")), "--emit-mlir", str(ir), "-q"]) == 0
    assert main(["opt", str(ir), "-o", str(once)]) == 0
    assert main(["opt", str(once), "--mlir-generic", "-o", str(generic)]) == 0
    assert main(["opt", str(generic), "-o", str(twice)]) == 0
    assert once.read_text() == twice.read_text()
    assert main(["opt", str(ir), "--passes", "canonicalize,schedule{target=fpga-zcu102}", "-o", str(once)]) == 0
    assert "start =" in once.read_text()


def test_opt_schedule_without_target_says_how(tmp_path, capsys):
    ir = tmp_path / "m.mlir"
    assert main(["compile", str(model_path("vit_tiny.onnx")), "--emit-mlir", str(ir), "-q",
                 "--stop-after", "import"]) == 0
    code, _, err = run(capsys, "opt", str(ir), "--passes", "schedule")
    assert code == 2
    assert err == "codesign: error: pass 'schedule' needs a target: give it as schedule{target=fpga-u280}\n"


def test_targets_and_ops_list(capsys):
    code, out, _ = run(capsys, "targets")
    assert code == 0 and "fpga-u280" in out and "optical-4f" in out
    code, out, _ = run(capsys, "ops")
    assert code == 0 and "LayerNormalization" in out
    assert "GroupQueryAttention" in out and "MatMulNBits" in out and "QLinearMatMul" in out and "If whose" in out


def _unsupported_model(path) -> None:
    node = helper.make_node("Hardmax", ["x"], ["y"], name="head/hardmax")
    graph = helper.make_graph([node], "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 4])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 4])])
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), path)


BAD_YAML = (
    "kind: fpga\nname: my\ndescription: x\nclock_mhz: 300\n"
    "offchip: {kind: hbm2, bandwidth_gbps: 100, capacity_gb: 8}\n"
    "device: {part: p, lut: 1000000, ff: 2000000, dsp: 9000, bram18: 4000}\n"
    "gemm: {rows: 16, cols: 16, dataflw: os}\nvector: {lanes: 16}\n"
    "buffers: {weight_kb: 512, act_kb: 512, out_kb: 256}\n"
)


def test_bad_inputs_one_line_exit_2(tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    vit = model_path("vit_tiny.onnx")
    shutil.copy(vit, "vit.onnx")
    shutil.copy(model_path("vit_tiny_symbolic.onnx"), "sym.onnx")
    (tmp_path / "garbage.onnx").write_bytes(b"garbage not onnx\n")
    (tmp_path / "trunc.onnx").write_bytes(vit.read_bytes()[:100000])
    (tmp_path / "my.yaml").write_text(BAD_YAML)
    _unsupported_model(tmp_path / "hard.onnx")
    from codesign.api import compile_options
    from codesign.options import middle_passes
    from compiler.passes import PASSES

    known = ", ".join(sorted(PASSES))
    steps = ", ".join(["import"] + [p.name for p in middle_passes(compile_options())] + ["report"])
    cases = {
        ("compile", "missing.onnx"): "missing.onnx: no such file",
        ("compile", "garbage.onnx"): "garbage.onnx: not a valid ONNX model (truncated or not ONNX: Error parsing "
                                     "message with type 'onnx.ModelProto': Wire format was corrupt)",
        ("compile", "trunc.onnx"): "trunc.onnx: not a valid ONNX model (truncated or not ONNX: Error parsing "
                                   "message with type 'onnx.ModelProto': Wire format was corrupt)",
        ("compile", "hard.onnx"): "hard.onnx: unsupported op Hardmax (node 'head/hardmax'); supported ops are "
                                  "listed by `codesign ops` — re-export without it or open an issue with the model",
        ("compile", "vit.onnx", "--target", "fpga-u208"): "unknown target 'fpga-u208' (did you mean fpga-u280?); "
        "bundled targets: asic-systolic, fpga-u280, fpga-zcu102, gpu-a100, gpu-rtx2080ti, npu-hexagon, npu-xdna, "
        "optical-4f; or give a YAML path",
        ("compile", "vit.onnx", "--target", "my.yaml"): "my.yaml:7: unknown key 'gemm.dataflw' (did you mean "
                                                        "gemm.dataflow?)",
        ("compile", "vit.onnx", "--set", "gemm.rowz=16"): "--set gemm.rowz=16: unknown key 'gemm.rowz' (did you "
                                                          "mean gemm.rows?)",
        ("compile", "vit.onnx", "--set", "gemm.rows=abc"): "--set gemm.rows=abc: gemm.rows: expected an integer, "
                                                           "got 'abc'",
        ("compile", "vit.onnx", "--set", "gemm.rows"): "--set gemm.rows: expected KEY=VALUE, e.g. gemm.rows=16",
        ("compile", "sym.onnx"): "sym.onnx: input 'pixel_values' has symbolic shape batchx3x32x32; give it with "
                                 "--shape pixel_values=1x3x32x32 or name its dims: --shape batch=N",
        ("compile", "vit.onnx", "--shape", "foo=1x2"): "--shape foo=...: vit.onnx has no input 'foo' "
                                                       "(inputs: pixel_values)",
        ("compile", "vit.onnx", "--shape", "pixel_values=1xq"): "--shape pixel_values=1xq: expected NAME=DIMxDIM..., "
                                                                 "e.g. input_ids=1x128",
        ("compile", "vit.onnx", "--stop-after", "nostep"): f"no step 'nostep' in this pipeline (steps: {steps})",
        ("compile", "vit.onnx", "--passes", "bogus"): f"--passes: unknown pass 'bogus' (known: {known})",
        ("compile", "vit.onnx", "--json", "vit.onnx"): "--json vit.onnx: refusing to overwrite the input file",
        ("compile", "vit.onnx", "--json", "nodir/r.json"): "--json nodir/r.json: directory nodir does not exist",
        ("compile", "vit.onnx", "--set", "gemm.rows=512", "--target", "fpga-zcu102"): None,
        ("opt", "missing.mlir"): "missing.mlir: no such file",
    }
    for args, message in cases.items():
        code, _, err = run(capsys, *args)
        assert code == 2, args
        assert err.count("\n") == 1 and "Traceback" not in err, err
        if message is not None:
            assert err == f"codesign: error: {message}\n", args
    assert (tmp_path / "vit.onnx").read_bytes() == vit.read_bytes()


def test_design_too_big_names_the_resource(capsys):
    code, _, err = run(capsys, "compile", str(model_path("vit_tiny.onnx")), "--target", "fpga-zcu102",
                       "--set", "gemm.rows=256", "--set", "gemm.cols=256")
    assert code == 2 and "does not fit" in err and "DSP" in err


def test_external_data_and_symbolic_shape(tmp_path, capsys):
    a, b = tmp_path / "a.json", tmp_path / "b.json"
    assert main(["compile", str(model_path("vit_tiny_external.onnx")), "--json", str(a), "-q"]) == 0
    assert main(["compile", str(model_path("vit_tiny_symbolic.onnx")), "--shape", "pixel_values=2x3x32x32",
                 "--json", str(b), "-q"]) == 0
    ra, rb = json.loads(a.read_text()), json.loads(b.read_text())
    assert rb["macs"] == 2 * ra["macs"]


def test_python_api_accepts_path_proto_and_torch_module():
    import torch

    import codesign

    by_path = codesign.compile(str(model_path("vit_tiny.onnx")))
    by_proto = codesign.compile(onnx.load(str(model_path("vit_tiny.onnx"))))
    assert by_path.report["latency_cycles"] == by_proto.report["latency_cycles"]

    class Block(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.qkv = torch.nn.Linear(32, 96)
            self.out = torch.nn.Linear(32, 32)
            self.norm = torch.nn.LayerNorm(32)

        def forward(self, x):
            q, k, v = self.qkv(self.norm(x)).split(32, dim=-1)
            split = lambda t: t.reshape(1, 8, 4, 8).transpose(1, 2)  # noqa: E731
            a = torch.softmax(split(q) @ split(k).transpose(-1, -2) / 8 ** 0.5, dim=-1) @ split(v)
            return x + torch.nn.functional.gelu(self.out(a.transpose(1, 2).reshape(1, 8, 32)))

    result = codesign.compile(Block(), target="fpga-zcu102", example_inputs=(torch.randn(1, 8, 32),))
    assert result.report["patterns"]["attention"] == 1 and result.report["patterns"]["layernorm"] == 1
    assert result.report["patterns"]["gelu"] == 1
    assert result.report["macs"] == 8 * 32 * 96 + 8 * 32 * 32 + 2 * 4 * 8 * 8 * 8
    with pytest.raises(codesign.InputError, match="example_inputs"):
        codesign.compile(Block())


def test_html_report_is_self_contained(tmp_path, capsys):
    out = tmp_path / "r.html"
    assert main(["compile", str(model_path("vit_tiny.onnx")), "--html", str(out), "-q"]) == 0
    text = out.read_text()
    assert text.count("data:image/png;base64,") == 3 and "<h2>Roofline</h2>" in text
    assert "src=\"http" not in text


@pytest.mark.slow
def test_vit_base_compiles_on_every_bundled_target(tmp_path):
    from hw.targets import bundled_targets

    for name in bundled_targets():
        out = tmp_path / f"{name}.json"
        assert main(["compile", str(model_path("vit_base.onnx")), "--target", name, "--json", str(out), "-q"]) == 0
        report = json.loads(out.read_text())
        assert report["patterns"]["attention"] == 12 and report["latency_cycles"] >= report["roofline_cycles"] > 0
