"""`codesign rtl`'s per-invocation configuration drives the emitted units exactly like the compiled design.

`codesign rtl` compiles vit_tiny (int8, Shiftmax, per-element ShiftGELU, I-LayerNorm) into a folder: Verilog,
manifest.json with every invocation's ``config``, config.npz with the arrays. Separately, the same compile runs in
the functional simulator on a real image (examples/data/vit_tiny_images.npz), and the integer input and output of
one ShiftGELU, one Shiftmax (the scores inside attention, before the compiler's pre-shift), one per-channel requant
and one I-LayerNorm are captured. Each emitted unit (the manifest's Verilog: the testbench builds the same text) is
then driven with nothing but the manifest's config for that layer on a few captured rows, and its output must equal
the simulator's bit for bit. A second compile in Edge-MoE attention order with ``--softmax online`` does the same
for the online_softmax unit (its ``m_c``, ``e_c``).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from conftest import DATA, model_path
from rtl_kernel_checks import SIMS, TB_DIR, run_kernel

import codesign
from codesign.cli import main
from compiler.dialect import dataflow as df
from compiler.simulate.approx import shiftmax_min_step
from hw.rtl import sim
from hw.rtl.emit import params_tag
from hw.rtl.manifest import CONFIG_FILE, FORMAT, resolve_config

CHOICES = {"quant": "int8", "softmax": "shiftmax", "gelu": "shiftgelu", "layernorm": "ilayernorm"}
OVERRIDES = {"gemm.rows": "4", "gemm.cols": "4", "gemm.partitions": "1"}  # a small array: emitting its Verilog takes a second
ROWS = 3
"""Rows of each captured tensor streamed through a unit: row 0 and the rows holding the extremes."""


def _write_design(tmp_path_factory, name: str, choices: dict[str, str]) -> tuple[Path, dict]:
    """The folder `codesign rtl` writes for vit_tiny with ``choices`` (and OVERRIDES), and its manifest."""
    out = tmp_path_factory.mktemp(name) / "rtl"
    argv = ["rtl", str(model_path("vit_tiny.onnx")), *[a for k, v in choices.items() for a in (f"--{k}", v)]]
    argv += [a for k, v in OVERRIDES.items() for a in ("--set", f"{k}={v}")]
    assert main([*argv, "--out", str(out), "-q"]) == 0
    return out, json.loads((out / "manifest.json").read_text())


def _simulate_image(choices: dict[str, str], observe, spy, values: dict | None = None) -> None:
    """Compile vit_tiny with ``choices`` (and OVERRIDES) and simulate it on the first sample image, calling
    ``observe(op, outs)`` after every op while ``spy`` stands in for approx.softmax_int (it is handed the real one
    as its first argument). ``values``, if given, is first filled with the simulator's constants."""
    from compiler.simulate import Simulator, approx

    opts: dict[str, Any] = choices
    result = codesign.compile(str(model_path("vit_tiny.onnx")), "fpga-u280", overrides=OVERRIDES, **opts)
    imported = result.imported
    simulator = Simulator(result.module, result.env.weights, imported.input_names, imported.output_names)
    image = np.load(DATA / "vit_tiny_images.npz")["pixel_values"][0]
    if values is not None:
        values.update(simulator.consts)
    real_softmax = approx.softmax_int
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(approx, "softmax_int", lambda *args: spy(real_softmax, *args))
        simulator.run({imported.input_names[0]: image}, observe)


@pytest.fixture(scope="module")
def design(tmp_path_factory) -> tuple[Path, dict]:
    """The folder `codesign rtl` wrote for vit_tiny, and its manifest."""
    return _write_design(tmp_path_factory, "design", CHOICES)


@pytest.fixture(scope="module")
def captured() -> dict[str, dict]:
    """Per layer: the integer ``x`` a unit takes, its scale, and the integer ``y`` the simulator computes.

    GELU, requant and LayerNorm ops are seen through the simulator's observer (the op's operand and result);
    Shiftmax runs inside ``dataflow.attention``, so its call is recorded by wrapping approx.softmax_int (the scores
    exactly as the attention kernel hands them over, before shiftmax_grid's shift).
    """
    values: dict = {}
    softmax_calls: list[tuple] = []
    out: dict[str, dict] = {}

    def spy(real_softmax, name, x, scale, bits, *rest):  # rest: the attention's sinks (None here)
        y, y_scale = real_softmax(name, x, scale, bits, *rest)
        softmax_calls.append((np.array(x), scale, y))
        return y, y_scale

    def observe(op, outs):
        values.update(zip(op.results, outs))
        if isinstance(op, df.AttentionOp) and softmax_calls:
            x, scale, y = softmax_calls.pop()
            out[f"{op.layer_name()}.softmax"] = {"x": x, "scale": scale, "y": y}
        elif isinstance(op, (df.GeluOp, df.RequantOp, df.LayerNormOp)):
            x = values[op.operands[0]]
            out[op.layer_name()] = {"x": x.data, "scale": x.scale, "y": outs[0].data}
        softmax_calls.clear()

    _simulate_image(CHOICES, observe, spy, values)
    return out


def _invocation(manifest: dict, kernel: str, want=lambda inv: True) -> tuple[dict, dict]:
    """The first (kernel entry, invocation) of ``kernel`` whose invocation satisfies ``want``."""
    for entry in manifest["kernels"]:
        if entry["name"] == kernel:
            for inv in entry["invocations"]:
                if want(inv):
                    return entry, inv
    raise AssertionError(f"no {kernel} invocation in the manifest matches")


def _rows(x: np.ndarray, n: int) -> list[int]:
    """Indices of ROWS rows of ``x`` (viewed as rows of ``n``): row 0, the row with the largest value and the row
    with the smallest."""
    flat = x.reshape(-1, n)
    picks = [0, int(flat.max(axis=1).argmax()), int(flat.min(axis=1).argmin())]
    picks += [i for i in range(len(flat)) if i not in picks]
    return list(dict.fromkeys(picks))[:ROWS]


def _assert_built_from_manifest_verilog(out: Path, entry: dict, simulator: str) -> None:
    """The Verilog the testbench simulated is the manifest's file (module renamed from the file stem)."""
    built = sim.sim_build_dir(entry["name"], entry["parameters"], simulator) / (
        f"{entry['name']}_{params_tag(entry['parameters'])}.v")
    emitted = (out / entry["verilog"]).read_text().replace(entry["module"], entry["name"])
    assert built.read_text() == emitted


def _row_unit(out: Path, entry: dict, simulator: str, rows: np.ndarray, ports: dict, node_id: str,
              bias: list[int] | None = None) -> list[int]:
    """Stream ``rows`` through the row kernel ``entry`` with config ports ``ports``; the outputs' ``y``."""
    n = rows.shape[-1]
    case = {"name": node_id, "config": ports, "beats": [{"x": int(v)} for v in rows.reshape(-1)],
            "n_out": rows.size}
    if bias is not None:
        case["bias"] = bias
    (got,) = run_kernel(entry["name"], entry["parameters"], simulator, [case], node_id)
    _assert_built_from_manifest_verilog(out, entry, simulator)
    assert [o["last"] for o in got["outputs"]] == [int(j % n == n - 1) for j in range(rows.size)]
    return [o["y"] for o in got["outputs"]]


# --- the manifest's configuration, without a simulator --------------------------------------------------------


def test_manifest_configs_are_the_simulated_designs(design, captured):
    """Format 2; the configs of the captured layers hold the scales the simulator saw; arrays resolve from
    config.npz; requant (m, e) are the weight store's."""
    out, manifest = design
    assert manifest["format"] == FORMAT == 2 and manifest["config_file"] == CONFIG_FILE
    for kernel in ("shiftgelu", "shiftmax", "ilayernorm"):
        entry = next(k for k in manifest["kernels"] if k["name"] == kernel)
        for inv in entry["invocations"]:
            assert inv["config"]["input_scale"] == float(captured[inv["layer"]]["scale"]), inv["layer"]
    _, gelu = _invocation(manifest, "shiftgelu")
    assert gelu["config"]["x0"] == int(np.floor(-1 / (1.702 * gelu["config"]["input_scale"])))
    _, softmax = _invocation(manifest, "shiftmax")
    k = softmax["config"]["input_shift"]
    need = shiftmax_min_step(17)  # shiftmax_grid's smallest k (17-key rows: its 2^-8 floor)
    grid = softmax["config"]["input_scale"] * 2**k
    assert need <= grid and (k == 0 or grid < 2 * need)
    entry, requant = _invocation(manifest, "requant", lambda inv: isinstance(inv["config"]["m"], dict))
    config = resolve_config(out, requant["config"])
    assert config["m"].shape == config["e"].shape == (captured[requant["layer"]]["x"].shape[-1],)
    _, gemm = _invocation(manifest, "systolic_gemm_stream", lambda inv: "weights" in inv["config"])
    weights = resolve_config(out, gemm["config"])["weights"]
    assert weights.dtype == np.int8 and weights.shape == (gemm["work"]["k"], gemm["work"]["n"])
    _, qk = _invocation(manifest, "systolic_gemm_stream", lambda inv: inv["layer"].endswith(".qk"))
    assert qk["config"] == {}  # both operands are activations


@pytest.mark.parametrize(("bias", "bits"), [([], 32), ([-(2**31), 2**31 - 1], 32), ([2**31], 33),
                                           ([-(2**31) - 1, 5], 33), ([-(2**40)], 41)])
def test_ilayernorm_bias_port_widens_for_wide_biases(bias, bits):
    from codesign.rtl_config import bias_bits

    assert bias_bits({"bias": np.array(bias, dtype=np.int64)}, 32) == bits
    assert bias_bits({"bias": None}, 32) == 32


def test_config_arrays_go_to_the_npz_and_scalars_inline(tmp_path):
    """hw.rtl.manifest on its own: scalars (NumPy ones too) inline, arrays referenced, references resolved."""
    from hw.rtl.manifest import Invocation, KernelUse, write_design

    config = {"x0": np.int64(-11), "input_scale": np.float64(0.5), "note": None, "m": np.arange(3),
              "e": np.array(7)}
    use = KernelUse("shiftmax", {"n": 4}, [Invocation("a/b", {"rows": 1}, 1, config),
                                           Invocation("a/b", {"rows": 2}, 1, {"m": np.ones(2, np.int8)})])
    manifest = write_design(tmp_path, [use], {"kernel": "shiftmax"})
    first, second = (inv["config"] for inv in manifest["kernels"][0]["invocations"])
    assert first == {"x0": -11, "input_scale": 0.5, "note": None, "e": 7,
                     "m": {"npz": "a/b/m", "shape": [3], "dtype": "int64"}}
    assert second == {"m": {"npz": "a/b/m#2", "shape": [2], "dtype": "int8"}}
    assert json.loads((tmp_path / "manifest.json").read_text())["kernels"][0]["invocations"][0]["config"] == first
    assert resolve_config(tmp_path, first)["m"].tolist() == [0, 1, 2]
    assert resolve_config(tmp_path, second)["m"].dtype == np.int8


# --- the emitted units, driven with that configuration --------------------------------------------------------


@pytest.mark.rtl
@pytest.mark.slow
@pytest.mark.parametrize("simulator", SIMS)
def test_shiftgelu_unit_with_the_manifest_x0_is_the_simulator(design, captured, simulator, request):
    out, manifest = design
    entry, inv = _invocation(manifest, "shiftgelu")
    n = entry["parameters"]["n"]
    seen = captured[inv["layer"]]
    picks = _rows(seen["x"], n)
    rows = seen["x"].reshape(-1, n)[picks]
    got = _row_unit(out, entry, simulator, rows, {"x0": inv["config"]["x0"]}, request.node.nodeid)
    assert got == seen["y"].reshape(-1, n)[picks].reshape(-1).tolist()


@pytest.mark.rtl
@pytest.mark.slow
@pytest.mark.parametrize("simulator", SIMS)
def test_shiftmax_unit_with_the_manifest_shift_and_x0_is_the_simulator(design, captured, simulator, request):
    out, manifest = design
    entry, inv = _invocation(manifest, "shiftmax")
    n = entry["parameters"]["n"]
    seen = captured[inv["layer"]]
    assert inv["config"]["input_shift"] >= 1  # vit_tiny's 17-key rows need the pre-shift: the test exercises it
    picks = _rows(seen["x"], n)
    rows = np.right_shift(seen["x"].reshape(-1, n)[picks].astype(np.int64), inv["config"]["input_shift"])
    got = _row_unit(out, entry, simulator, rows, {"x0": inv["config"]["x0"]}, request.node.nodeid)
    assert got == seen["y"].reshape(-1, n)[picks].reshape(-1).tolist()


@pytest.mark.rtl
@pytest.mark.slow
@pytest.mark.parametrize("simulator", SIMS)
def test_ilayernorm_unit_with_the_manifest_biases_is_the_simulator(design, captured, simulator, request):
    out, manifest = design
    entry, inv = _invocation(manifest, "ilayernorm")
    c = entry["parameters"]["c"]
    seen = captured[inv["layer"]]
    config = resolve_config(out, inv["config"])
    # the model's epsilon in variance units: vit_tiny's 1e-12 (transformers' ViT) rounds to 0 on its 16-bit grid;
    # tests/test_rtl_ilayernorm.py drives the port with nonzero ones
    assert entry["parameters"]["eps"] == 1 and config["eps"] == 0
    picks = _rows(seen["x"], c)
    got = _row_unit(out, entry, simulator, seen["x"].reshape(-1, c)[picks], {"eps": config["eps"]},
                    request.node.nodeid, bias=config["bias"].tolist())
    assert got == seen["y"].reshape(-1, c)[picks].reshape(-1).tolist()


@pytest.mark.rtl
@pytest.mark.slow
@pytest.mark.parametrize("simulator", SIMS)
def test_requant_unit_with_the_manifest_multipliers_is_the_simulator(design, captured, simulator):
    """A per-channel requant: channel c of a row on lane c % lanes of the row's beat c // lanes."""
    out, manifest = design
    entry, inv = _invocation(manifest, "requant", lambda inv: isinstance(inv["config"]["m"], dict))
    lanes = entry["parameters"]["lanes"]
    config = resolve_config(out, inv["config"])
    seen = captured[inv["layer"]]
    c = seen["x"].shape[-1]
    assert c % lanes == 0
    picks = _rows(seen["x"], c)
    acc = seen["x"].reshape(-1, c)[picks].reshape(-1, lanes)
    m = np.broadcast_to(config["m"], (len(picks), c)).reshape(-1, lanes)
    e = np.broadcast_to(config["e"], (len(picks), c)).reshape(-1, lanes)
    case = {"acc": acc.tolist(), "m": m.tolist(), "e": e.tolist()}
    run = sim.run_testbench("requant", entry["parameters"], simulator, "tb_requant", TB_DIR,
                            {"params": entry["parameters"], "cases": [case]})
    _assert_built_from_manifest_verilog(out, entry, simulator)
    (got,) = run.result["cases"]
    assert got["last_flags_ok"]
    assert np.array(got["y"]).reshape(-1).tolist() == seen["y"].reshape(-1, c)[picks].reshape(-1).tolist()


# --- the online softmax (Edge-MoE attention order) ------------------------------------------------------------

ONLINE_CHOICES = {**CHOICES, "softmax": "online", "attention": "edge-moe"}
"""vit_tiny with Edge-MoE attention and its integer single-pass softmax: the `online_softmax` unit."""


@pytest.fixture(scope="module")
def online_design(tmp_path_factory) -> tuple[Path, dict]:
    """The folder `codesign rtl` wrote for vit_tiny in Edge-MoE order with ``--softmax online``, and its manifest."""
    return _write_design(tmp_path_factory, "online", ONLINE_CHOICES)


@pytest.fixture(scope="module")
def online_captured() -> dict[str, dict]:
    """Per attention layer: the integer scores its online softmax takes (``x``, a row per query and head), their
    scale and the probabilities ``y`` the simulator computes, recorded by wrapping approx.softmax_int as above.

    In Edge-MoE order the simulator hands ``softmax_int("online", ...)`` each query row's scores in its lane's
    rotated key order (compiler/simulate/attention.py, edge_moe_visit_order; the online sum's shifts floor, so the
    order matters): exactly the stream the unit takes (no pre-shift), and its output, in the same order, is what the
    unit's pass 2 emits. The unit is fed the captured rows as they are.
    """
    calls: list[tuple] = []
    out: dict[str, dict] = {}

    def spy(real_softmax, name, x, scale, bits, *rest):  # rest: the attention's sinks (None here)
        y, y_scale = real_softmax(name, x, scale, bits, *rest)
        calls.append((name, np.array(x), scale, y, y_scale))
        return y, y_scale

    def observe(op, outs):
        if isinstance(op, df.AttentionOp):
            (name, x, scale, y, y_scale), = calls
            out[f"{op.layer_name()}.softmax"] = {"name": name, "x": x, "scale": scale, "y": y, "y_scale": y_scale,
                                                 "algorithm": df.str_attr(op, "algorithm")}
        calls.clear()

    _simulate_image(ONLINE_CHOICES, observe, spy)
    return out


def test_online_softmax_manifest_config_is_the_simulated_design(online_design, online_captured):
    """Every attention layer is in Edge-MoE order on the online_softmax unit; the manifest's input scale is the one
    the simulator's scores have, and (m_c, e_c) is its dyadic log2-domain multiplier."""
    from compiler.numerics import dyadic

    _, manifest = online_design
    assert not any(k["name"] == "shiftmax" for k in manifest["kernels"])
    entry = next(k for k in manifest["kernels"] if k["name"] == "online_softmax")
    assert {inv["layer"] for inv in entry["invocations"]} == set(online_captured)
    for inv in entry["invocations"]:
        seen, config = online_captured[inv["layer"]], inv["config"]
        assert seen["name"] == "online" and seen["algorithm"] == "edge-moe", inv["layer"]
        assert seen["x"].shape[-1] == entry["parameters"]["n"]
        assert config["input_scale"] == float(seen["scale"]), inv["layer"]
        assert config["output_scale"] == seen["y_scale"] == 2.0 ** -(entry["parameters"]["out_bits"] - 1)
        assert (config["m_c"], config["e_c"]) == dyadic(seen["scale"] * np.log2(np.e) * 256)


@pytest.mark.rtl
@pytest.mark.slow
@pytest.mark.parametrize("simulator", SIMS)
def test_online_softmax_unit_with_the_manifest_multiplier_is_the_simulator(online_design, online_captured, simulator,
                                                                         request):
    """Each captured row sent twice (pass 1: statistics, pass 2: normalize), the manifest's (m_c, e_c) on the
    ports and nothing else: the unit's pass-2 outputs are the simulator's probabilities."""
    out, manifest = online_design
    entry, inv = _invocation(manifest, "online_softmax")
    n = entry["parameters"]["n"]
    seen = online_captured[inv["layer"]]
    picks = _rows(seen["x"], n)
    rows = seen["x"].reshape(-1, n)[picks].astype(np.int64)
    ports = {"m_c": inv["config"]["m_c"], "e_c": inv["config"]["e_c"]}
    case = {"name": request.node.nodeid, "config": ports, "beats": [{"x": int(v)} for row in rows for v in
                                                                    [*row, *row]], "n_out": rows.size}
    (got,) = run_kernel(entry["name"], entry["parameters"], simulator, [case], request.node.nodeid)
    _assert_built_from_manifest_verilog(out, entry, simulator)
    assert [o["last"] for o in got["outputs"]] == [int(j % n == n - 1) for j in range(rows.size)]
    assert [o["y"] for o in got["outputs"]] == seen["y"].reshape(-1, n)[picks].reshape(-1).tolist()
