"""`codesign rtl --system [--simulate]`: the top level, program, DRAM image and manifest of a compiled model; its
run on the top level in Verilator against `codesign compile --outputs`; and the refusals.

Small targets (`SMALL`: a 4x4 array, a few KiB of buffers) keep the top level's Verilog small; the quick simulated
model is a two-layer int8 MLP exported from torch into tmp_path. The whole-model tests run vit_tiny, bert_tiny and
gpt2_tiny with the I-ViT set on 4x4, 8x8 and 16x16 arrays (docs/RTL.md, A whole model).
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import model_path

from codesign.cli import main
from compiler.backend import Geometry
from hw.isa import Nop, Queue, Vec, VecFn, check_tokens, from_bytes, parse_listing
from hw.rtl.manifest import MARKER
from hw.rtl.system import SystemConfig
from hw.targets.loader import load_target

SMALL = ["--set", "gemm.rows=4", "--set", "gemm.cols=4", "--set", "buffers.act_kb=2", "--set",
         "buffers.weight_kb=2", "--set", "buffers.out_kb=1"]
I_VIT = ["--quant", "int8", "--softmax", "shiftmax", "--gelu", "shiftgelu", "--layernorm", "ilayernorm"]
ONLINE = [o if o != "shiftmax" else "online" for o in I_VIT]  # Edge-MoE's single-pass softmax for shiftmax


def _run(capsys, *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


@pytest.fixture(scope="module")
def mlp(tmp_path_factory) -> tuple[Path, Path]:
    """A two-Linear MLP (16 -> 12 -> 8, four tokens) as ONNX, and two samples of its input."""
    from examples._common import export_onnx

    class Net(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.fc1, self.fc2 = torch.nn.Linear(16, 12), torch.nn.Linear(12, 8)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.fc2(self.fc1(x))

    folder = tmp_path_factory.mktemp("mlp")
    torch.manual_seed(0)
    path = folder / "mlp.onnx"
    export_onnx(Net().eval(), (torch.randn(1, 4, 16),), path, input_names=["x"], output_names=["y"],
                exporter="legacy")
    inputs = folder / "x.npz"
    np.savez(inputs, x=np.random.default_rng(1).standard_normal((2, 1, 4, 16)).astype(np.float32))
    return path, inputs


def _check_design(out: Path, overrides: dict[str, str]) -> dict:
    """The files agree with each other and with the target: the listing is the binary, every layer's range and
    mark are where the manifest says, every DRAM region lies inside the image."""
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["format"] == "cds1-system"
    assert sorted(p.name for p in out.iterdir()) == sorted([MARKER, "manifest.json", *manifest["files"].values()])
    binary = (out / manifest["files"]["program"]).read_bytes()
    program = from_bytes(binary)
    assert parse_listing((out / manifest["files"]["listing"]).read_text()) == program
    check_tokens(program)
    image = (out / manifest["files"]["image"]).read_bytes()
    assert len(image) == program.dram_bytes == manifest["program"]["dram_bytes"]
    assert manifest["program"]["instructions"] == len(program.instructions)
    target = load_target("fpga-u280", overrides)
    config = SystemConfig.from_target(target, trace_depth=manifest["config"]["trace_depth"])
    geo = Geometry.from_target(target)
    c = manifest["config"]
    assert (c["rows"], c["cols"], c["sp_rows"], c["acc_rows"], c["const_rows"]) == \
        (config.rows, config.cols, geo.sp_rows, geo.acc_rows, geo.const_rows)
    assert "module cds1_system(" in (out / manifest["files"]["verilog"]).read_text()
    marks = [i for i, instr in enumerate(program.instructions) if isinstance(instr, Nop) and instr.trace]
    layers = manifest["layers"]
    traced = [program.instructions[i] for i in marks]
    assert [i.mark for i in traced if isinstance(i, Nop)] == [layer["mark"] for layer in layers] == \
        list(range(len(layers)))
    assert len(layers) <= c["trace_depth"]
    end = 4
    for layer, mark in zip(layers, marks):
        first, stop = layer["instructions"]
        assert first == end and first < stop <= mark  # contiguous ranges, each mark behind its layer
        # the mark follows the execute queue's drain that waits for the layer's stores, and the load queue's last
        # drain token is the one the execute queue hands over after them (compiler/backend/gemm.py, _DRAIN)
        drains = [i for i in program.instructions[stop:mark] if isinstance(i, Nop) and i.deps.pop_next]
        assert [i.queue for i in drains] == [Queue.LOAD, Queue.EXECUTE] * 2 + [Queue.LOAD]
        end = stop
    for kind in ("inputs", "masks", "outputs"):
        for region in manifest["dram"][kind]:
            assert 0 <= region["addr"] and region["addr"] + region["bytes"] <= len(image)
            assert region["bytes"] == int(np.prod(region["shape"])) * int(region["dtype"][3:]) // 8
    return manifest


@pytest.mark.slow
@pytest.mark.parametrize(("model", "approx"), [("vit_tiny.onnx", I_VIT), ("bert_tiny.onnx", I_VIT),
                                               ("vit_tiny.onnx", ONLINE)], ids=["vit_tiny", "bert_tiny", "vit_online"])
def test_system_files_of_a_transformer(model: str, approx: list[str], tmp_path, capsys) -> None:
    out = tmp_path / "sys"
    overrides = ["--set", "gemm.rows=8", "--set", "gemm.cols=8", "--set", "buffers.act_kb=16", "--set",
                 "buffers.weight_kb=16", "--set", "buffers.out_kb=16"]
    code, text, err = _run(capsys, "rtl", str(model_path(model)), *approx, *overrides, "--out", str(out), "--system")
    assert code == 0, err
    manifest = _check_design(out, dict(o.split("=") for o in overrides[1::2]))
    ops = {layer["op"] for layer in manifest["layers"]}
    assert {"dataflow.gemm", "dataflow.attention", "dataflow.layernorm", "dataflow.gelu"} <= ops
    assert manifest["dram"]["outputs"] and manifest["dram"]["inputs"]
    # the vector unit runs the whole I-ViT integer set, and the online softmax: nothing is left for --simulate to
    # refuse
    assert manifest["rtl_lacks"] == []
    assert not any("--simulate refuses" in note for note in manifest["notes"])
    vec_fns = {i.fn for i in from_bytes((out / manifest["files"]["program"]).read_bytes()).instructions
               if isinstance(i, Vec)}
    softmax = VecFn.ONLINE_SOFTMAX if approx is ONLINE else VecFn.SHIFTMAX
    assert softmax in vec_fns and ({VecFn.ONLINE_SOFTMAX, VecFn.SHIFTMAX} - {softmax}).isdisjoint(vec_fns)
    if model == "bert_tiny.onnx":
        assert manifest["dram"]["masks"]  # the attention mask's two int32 halves, written by the host
    assert "written to" in text


@pytest.mark.slow
def test_a_rerun_replaces_its_files_and_a_user_folder_is_never_touched(mlp, tmp_path, capsys) -> None:
    model, _ = mlp
    out = tmp_path / "sys"
    assert _run(capsys, "rtl", str(model), "--quant", "int8", *SMALL, "--out", str(out), "--system")[0] == 0
    _check_design(out, dict(o.split("=") for o in SMALL[1::2]))
    assert _run(capsys, "rtl", str(model), "--quant", "int8", *SMALL, "--out", str(out), "--system")[0] == 0
    user = tmp_path / "user"
    user.mkdir()
    (user / "notes.txt").write_text("mine")
    code, _, err = _run(capsys, "rtl", str(model), "--quant", "int8", *SMALL, "--out", str(user), "--system")
    assert code == 2 and f"--out {user}: folder is not empty and was not written by `codesign rtl`" in err
    assert sorted(p.name for p in user.iterdir()) == ["notes.txt"]


def test_simulate_needs_system_and_reports_need_simulate(mlp, tmp_path, capsys) -> None:
    model, inputs = mlp
    out = tmp_path / "sys"
    code, _, err = _run(capsys, "rtl", str(model), "--quant", "int8", "--out", str(out), "--simulate")
    assert (code, err) == (2, "codesign: error: rtl: --simulate runs the system top level; add --system\n")
    code, _, err = _run(capsys, "rtl", str(model), "--quant", "int8", "--out", str(out), "--system", "--inputs",
                        str(inputs), "--outputs", str(tmp_path / "y.npz"))
    assert (code, err) == (2, "codesign: error: rtl: --outputs reports a simulation; add --simulate\n")
    code, _, err = _run(capsys, "rtl", str(model), "--quant", "int8", "--out", str(out), "--json",
                        str(tmp_path / "r.json"))
    assert (code, err) == (2, "codesign: error: rtl: --json reports a system simulation; use it with --system "
                              "--simulate\n")
    assert not out.exists()


def test_bad_inputs_are_named(mlp, tmp_path, capsys) -> None:
    model, _ = mlp
    wrong = tmp_path / "wrong.npz"
    np.savez(wrong, x=np.zeros((1, 1, 4, 15), np.float32))
    missing = tmp_path / "missing.npz"
    np.savez(missing, z=np.zeros((1, 1, 4, 16), np.float32))
    out = tmp_path / "sys"
    base = ["rtl", str(model), "--quant", "int8", *SMALL, "--out", str(out), "--system", "--simulate"]
    code, _, err = _run(capsys, *base, "--inputs", str(wrong))
    assert (code, err) == (2, f"codesign: error: --inputs {wrong}: input 'x' has shape 1x1x4x15, expected Nx1x4x16 "
                              "(a leading sample axis, then the model input's shape)\n")
    code, _, err = _run(capsys, *base, "--inputs", str(missing))
    assert (code, err) == (2, f"codesign: error: --inputs {missing}: no array for model input 'x' (arrays: z)\n")
    assert not out.exists()


def test_a_float_design_is_refused_by_op_and_node(mlp, tmp_path, capsys) -> None:
    model, _ = mlp
    code, _, err = _run(capsys, "rtl", str(model), *SMALL, "--out", str(tmp_path / "sys"), "--system")
    assert code == 2
    assert err.startswith("codesign: error: system backend: dataflow.gemm 'fc1.MatMul': the model has no integer ops "
                          "for the device (compile with --quant int8)")


@pytest.mark.slow
def test_simulate_refuses_a_unit_the_top_level_lacks(tmp_path, capsys) -> None:
    out = tmp_path / "sys"
    # rows > cols: the scratchpad is wider than the accumulator, so a VEC on it would see two different spans
    code, _, err = _run(capsys, "rtl", str(model_path("vit_tiny.onnx")), *ONLINE, "--set", "gemm.rows=8", "--set",
                        "gemm.cols=4", "--out", str(out), "--system", "--simulate")
    assert code == 2
    assert err.startswith("codesign: error: system RTL: dataflow.requant "
                          "'model.vit.layers.0.layernorm_before.LayerNormalization.requant8': instruction 22 is a VEC "
                          "requant on the scratchpad of a 8 x 4 array (rows > cols), which the top level does not build "
                          "yet (it runs LOAD, STORE, output-stationary GEMM")
    assert not out.exists()


@pytest.mark.rtl
@pytest.mark.slow
def test_simulated_outputs_equal_the_functional_simulator(mlp, tmp_path, capsys) -> None:
    """Every sample through Verilator: the outputs file equals `codesign compile --outputs` bit for bit, and the
    cycles are the top level's own, split over the layers by their trace marks."""
    model, inputs = mlp
    out, rtl_y, report, compile_y = (tmp_path / name for name in ("sys", "rtl_y.npz", "r.json", "compile_y.npz"))
    code, text, err = _run(capsys, "rtl", str(model), "--quant", "int8", *SMALL, "--out", str(out), "--system",
                           "--simulate", "--inputs", str(inputs), "--outputs", str(rtl_y), "--json", str(report))
    assert code == 0, err
    code, _, err = _run(capsys, "compile", str(model), "--quant", "int8", *SMALL, "--inputs", str(inputs),
                        "--outputs", str(compile_y), "-q")
    assert code == 0, err
    got, want = np.load(rtl_y), np.load(compile_y)
    assert sorted(got) == sorted(want) == ["y"]
    assert got["y"].shape == (2, 1, 4, 8)
    np.testing.assert_array_equal(got["y"], want["y"])
    r = json.loads(report.read_text())
    assert r["device_outputs_equal_simulator"] is True
    assert r["samples"] == 2 and len(r["rtl_cycles_per_sample"]) == 2
    assert [layer["name"] for layer in r["layers"]] == ["fc1.MatMul", "fc2.MatMul"]
    layer_cycles = [layer["rtl_cycles"] for layer in r["layers"]]
    assert all(c > 0 for c in layer_cycles)
    # the marks split start..done; what is left after the last is the final drain and HALT
    assert 0 <= r["rtl_cycles"] - sum(layer_cycles) < 16
    assert all(isinstance(layer["latency_cycles"], int) and layer["latency_cycles"] > 0 for layer in r["layers"])
    assert isinstance(r["latency_cycles"], int) and r["latency_cycles"] > 0
    assert "fc1.MatMul" in text and "total" in text
    _check_design(out, dict(o.split("=") for o in SMALL[1::2]))


def test_the_bundled_sub_arrays_compile_as_one_array(mlp, tmp_path, capsys) -> None:
    """fpga-u280's YAML builds 4 sub-arrays; the top level has one array, so --system compiles with
    gemm.partitions=1 and says so (an explicit --set gemm.partitions=2 is refused: test_models_fpga_partitions)."""
    model, _ = mlp
    out = tmp_path / "sys"
    code, _, err = _run(capsys, "rtl", str(model), "--quant", "int8", *SMALL, "--out", str(out), "--system", "-q")
    assert code == 0, err
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["source"]["overrides"]["gemm.partitions"] == "1"
    assert any("compiled with gemm.partitions=1" in note for note in manifest["notes"])
    # its folds stream too (gemm.fold_overlap), which the top level's array does not: priced without
    assert manifest["source"]["overrides"]["gemm.fold_overlap"] == "false"
    assert any("compiled with gemm.fold_overlap=false" in note for note in manifest["notes"])
    # and its GEMM layers priced as the top level runs them: a fold per instruction, one execute queue
    assert manifest["source"]["overrides"]["gemm.execute_queue"] == "true"
    assert any("compiled with gemm.execute_queue=true" in note for note in manifest["notes"])


# --- whole models on the top level ---------------------------------------------------------------------------------

# Every model and every array size once (docs/RTL.md, A whole model): buffers small enough to keep the memories (and
# the Verilator build) small, large enough for the backend's folds (gpt2_tiny's K = 512 on 16x16 needs 2,080
# scratchpad rows: 24 KiB of activations), and bert_tiny with the online softmax on the 8x8 build bert_tiny's I-ViT
# run already made (the same configuration and max_row: only its run is added).
WHOLE = [("vit_tiny.onnx", 4, ["16", "16", "16"], I_VIT), ("bert_tiny.onnx", 8, ["16", "16", "16"], I_VIT),
         ("gpt2_tiny.onnx", 16, ["24", "16", "16"], I_VIT), ("bert_tiny.onnx", 8, ["16", "16", "16"], ONLINE)]
# How close the model's latency (gemm.execute_queue, the off-chip bandwidth the DRAM model serves) comes to the
# RTL's cycles (docs/RTL.md, Whole models against the model): (total, worst layer), |model - RTL| / RTL, the total
# without the host's ops (host_latency_cycles), a layer being the model's, with the RTL layers the model fuses into
# it (a GELU, a residual add, their requants) added to it. Pinned for the I-ViT set a little above what was measured
# (totals +0.05% / -0.16% / +0.28%, worst layers +2.11% / -0.63% / +1.07%, 2026-12-05, with the element-row
# transfer split; before it -0.71% / -0.18% / +0.26% and -1.64% / -0.59% / +1.15%); the online softmax's run prints
# its agreement.
AGREEMENT = {"vit_tiny.onnx": (0.01, 0.025), "bert_tiny.onnx": (0.005, 0.01), "gpt2_tiny.onnx": (0.005, 0.02)}
DRAM_BANDWIDTH = ["--set", "offchip.bandwidth_gbps=4.8"]  # 16 B a cycle at fpga-u280's 300 MHz: the DRAM model's


def _model_inputs(model: str, path: Path, data: Path) -> None:
    """One sample of ``model``'s inputs: a CIFAR-sized image, or 16 token ids (bert_tiny's last three positions
    padding, so the attention mask's halves matter)."""
    rng = np.random.default_rng(7)
    if model == "vit_tiny.onnx":
        np.savez(path, pixel_values=np.load(data / "vit_tiny_images.npz")["pixel_values"][:1])
        return
    ids = rng.integers(0, 100, (1, 1, 16))
    mask = np.ones((1, 1, 16), np.int64)
    if model == "bert_tiny.onnx":
        mask[..., -3:] = 0
        np.savez(path, input_ids=ids, attention_mask=mask, token_type_ids=np.zeros_like(ids))
    else:
        np.savez(path, input_ids=ids, attention_mask=mask)


def _model_agreement(r: dict) -> tuple[float, tuple[str, float]]:
    """(model - RTL) / RTL of a ``--json`` report's total (the model's without the host's ops), and the layer where
    it is largest (module AGREEMENT)."""
    groups: list[list] = []
    for layer in r["layers"]:
        if layer["latency_cycles"] is None and groups:
            groups[-1][1] += layer["rtl_cycles"]
        else:
            groups.append([layer["name"], layer["rtl_cycles"], layer["latency_cycles"]])
    errors = [(name, (model - rtl) / rtl) for name, rtl, model in groups if model is not None]
    device = r["latency_cycles"] - r["host_latency_cycles"]
    return (device - r["rtl_cycles"]) / r["rtl_cycles"], max(errors, key=lambda e: abs(e[1]))


def simulated_equals_compiled(capsys, tmp_path: Path, data_dir: Path, model: str,
                              flags: list[str]) -> tuple[dict, Path]:
    """`codesign rtl --system --simulate` and `codesign compile` of ``model`` with ``flags`` on one sample
    (`_model_inputs`): both exit 0, their outputs files are equal bit for bit, and every program output in DRAM
    equals the functional simulator's. Returns the rtl run's ``--json`` report and its ``--out`` folder."""
    inputs, out, rtl_y, report, compile_y = (tmp_path / name for name in ("x.npz", "sys", "rtl_y.npz", "r.json",
                                                                          "compile_y.npz"))
    _model_inputs(model, inputs, data_dir)
    path = str(model_path(model))
    code, _, err = _run(capsys, "rtl", path, *flags, "--out", str(out), "--system", "--simulate", "--inputs",
                        str(inputs), "--outputs", str(rtl_y), "--json", str(report))
    assert code == 0, err
    code, _, err = _run(capsys, "compile", path, *flags, "--inputs", str(inputs), "--outputs", str(compile_y), "-q")
    assert code == 0, err
    got, want = np.load(rtl_y), np.load(compile_y)
    assert sorted(got) == sorted(want)
    for name in want:
        np.testing.assert_array_equal(got[name], want[name], err_msg=name)
    r = json.loads(report.read_text())
    assert r["device_outputs_equal_simulator"] is True
    return r, out


@pytest.mark.rtl
@pytest.mark.slow
@pytest.mark.timeout(3600)
@pytest.mark.parametrize(("model", "array", "buffers", "approx"), WHOLE,
                         ids=[f"{m[:-5]}-{a}x{a}{'-online' if x is ONLINE else ''}" for m, a, _, x in WHOLE])
def test_a_whole_model_simulated_equals_codesign_compile(model: str, array: int, buffers: list[str],
                                                          approx: list[str], data_dir, tmp_path, capsys) -> None:
    """A whole int8 I-ViT-set model (or it with the online softmax) as one program on the top level through `codesign
    rtl --system --simulate`:
    the outputs file equals `codesign compile --outputs` bit for bit, every program output equals the functional
    simulator's, and the top level was built for the program's longest row."""
    sizes = ["--set", f"gemm.rows={array}", "--set", f"gemm.cols={array}", *DRAM_BANDWIDTH]
    for key, kb in zip(("act_kb", "weight_kb", "out_kb"), buffers):
        sizes += ["--set", f"buffers.{key}={kb}"]
    r, out = simulated_equals_compiled(capsys, tmp_path, data_dir, model, [*approx, *sizes])
    assert (r["system"]["rows"], r["system"]["cols"]) == (array, array)
    vecs = [i for i in from_bytes((out / "program.bin").read_bytes()).instructions if isinstance(i, Vec)]
    rows = [i.n for i in vecs if i.fn in (VecFn.SHIFTMAX, VecFn.ILAYERNORM)]
    assert rows and max(rows) <= r["system"]["max_row"] < 2 * max(rows)
    assert any(i.fn == (VecFn.ONLINE_SOFTMAX if approx is ONLINE else VecFn.SHIFTMAX) for i in vecs)
    assert sum(layer["rtl_cycles"] for layer in r["layers"]) <= r["rtl_cycles"]
    # the model's total is the device's part plus the host's ops (each named), which the top level does not run
    assert r["device_latency_cycles"] == r["latency_cycles"] - r["host_latency_cycles"]
    assert [h["name"] for h in r["host_layers"]] == r["host_ops"]
    assert sum(h["latency_cycles"] or 0 for h in r["host_layers"]) == r["host_latency_cycles"]
    total, worst = _model_agreement(r)
    print(f"\n{model} {array}x{array}: {r['rtl_cycles']} cycles, build {r['build_s']} s, run {r['run_s']} s; model "
          f"{r['latency_cycles']}, {r['host_latency_cycles']} of it the host's ({total:+.1%}), worst layer "
          f"{worst[1]:+.1%} ({worst[0]})")
    if approx is I_VIT:
        assert abs(total) <= AGREEMENT[model][0] and abs(worst[1]) <= AGREEMENT[model][1]
    _check_design(out, dict(o.split("=") for o in sizes[1::2]))
