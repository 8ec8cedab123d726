"""Whole models on the ``cds1`` system top level against the performance model: RTL cycles, model cycles (the
device's part), the error, the worst layer, and Verilator's simulated cycles per second.

``python benchmarks/rtl_whole_models.py`` (``bench_rtl.py`` prints it too, so ``make bench`` does): runs ``codesign
rtl MODEL --quant int8 --softmax shiftmax --gelu shiftgelu --layernorm ilayernorm --set gemm.rows=N --set
gemm.cols=N --set offchip.bandwidth_gbps=4.8 --system --simulate --json`` for vit_tiny (4x4), bert_tiny (8x8) and
gpt2_tiny (16x16), the configurations and inputs of ``tests/test_cli_rtl_system.py``'s whole-model test (one
sample: a CIFAR-sized image, or 16 token ids), reusing the Verilator builds cached in ``build/rtl_sim``, and prints
per model the RTL's ``cycles``, the model's latency without the host's ops (``device_latency_cycles``; the host's
ops, which the top level does not run, beside it), ``(model - RTL) / RTL``, the worst layer
(``codesign.rtl_simulate.agreement``: a model layer with the RTL layers it fuses) and Verilator's simulated cycles
per second from ``start`` to ``done`` (and over the whole run, simulator start-up, image load and read-back
included).
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

if __package__ in (None, ""):  # run as a script from a checkout
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

ROOT = Path(__file__).resolve().parents[1]
I_VIT = ["--quant", "int8", "--softmax", "shiftmax", "--gelu", "shiftgelu", "--layernorm", "ilayernorm"]
MODELS = {"vit_tiny": (4, 16), "bert_tiny": (8, 16), "gpt2_tiny": (16, 24)}
"""Model -> (array rows = cols, activation buffer KiB); weights and outputs 16 KiB (tests/test_cli_rtl_system.py)."""
DRAM_BANDWIDTH_GBPS = "4.8"
"""16 bytes a cycle at fpga-u280's 300 MHz: what the top level's DRAM model serves."""


@dataclass(frozen=True)
class ModelFigures:
    """One whole model's run: cycles, the model's device part and host part, the worst layer ``(name, rtl, model,
    error)``, and the run's wall seconds (``program_s`` from ``start`` to ``done``, ``run_s`` the whole run,
    ``wall_s`` the whole ``codesign rtl`` command)."""

    name: str
    array: int
    rtl_cycles: int
    device_cycles: int
    host_cycles: int
    error: float
    worst: tuple[str, int, int, float]
    program_s: float
    run_s: float
    wall_s: float


def write_inputs(model: str, path: Path) -> None:
    """One sample of ``model``'s inputs, as the whole-model test writes it."""
    import numpy as np

    rng = np.random.default_rng(7)
    if model == "vit_tiny":
        images = np.load(ROOT / "examples" / "data" / "vit_tiny_images.npz")["pixel_values"]
        np.savez(path, pixel_values=images[:1])
        return
    ids = rng.integers(0, 100, (1, 1, 16))
    mask = np.ones((1, 1, 16), np.int64)
    if model == "bert_tiny":
        mask[..., -3:] = 0
        np.savez(path, input_ids=ids, attention_mask=mask, token_type_ids=np.zeros_like(ids))
    else:
        np.savez(path, input_ids=ids, attention_mask=mask)


def run_model(model: str, array: int, act_kb: int, folder: Path) -> ModelFigures:
    """``codesign rtl --system --simulate`` of ``model`` into ``folder``, and its figures."""
    from codesign.cli import main
    from codesign.rtl_simulate import agreement

    inputs, report = folder / f"{model}.npz", folder / f"{model}.json"
    write_inputs(model, inputs)
    sizes = ["--set", f"gemm.rows={array}", "--set", f"gemm.cols={array}", "--set",
             f"offchip.bandwidth_gbps={DRAM_BANDWIDTH_GBPS}", "--set", f"buffers.act_kb={act_kb}", "--set",
             "buffers.weight_kb=16", "--set", "buffers.out_kb=16"]
    start = time.perf_counter()
    code = main(["rtl", str(ROOT / "examples" / "models" / f"{model}.onnx"), *I_VIT, *sizes, "--out",
                 str(folder / model), "--system", "--simulate", "--inputs", str(inputs), "--json", str(report), "-q"])
    wall = time.perf_counter() - start
    if code != 0:
        raise RuntimeError(f"codesign rtl {model}: exit {code}")
    r = json.loads(report.read_text())
    if not r["device_outputs_equal_simulator"]:
        raise RuntimeError(f"{model}: the RTL's outputs differ from the functional simulator's")
    a = agreement(r)
    return ModelFigures(model, array, r["rtl_cycles"], r["device_latency_cycles"], r["host_latency_cycles"], a.total,
                        a.worst, r["program_s"], r["run_s"], wall)


def compare(models: list[str] | None = None) -> list[ModelFigures]:
    """:class:`ModelFigures` of ``models`` (default all of :data:`MODELS`)."""
    with tempfile.TemporaryDirectory() as scratch:
        return [run_model(m, *MODELS[m], Path(scratch)) for m in (models or list(MODELS))]


def main(argv: list[str] | None = None) -> list[ModelFigures]:
    """Parse ``argv``, run :func:`compare`, print the table, return the figures."""
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--model", choices=list(MODELS), action="append", help="default: all three")
    args = parser.parse_args(argv)
    figures = compare(args.model)
    print("whole models on the cds1 system top level (I-ViT set, DRAM 16 B/cycle): RTL vs model cycles, "
          "error = (model - RTL) / RTL")
    print(f"{'model':10s} {'array':>5s} {'rtl':>9s} {'model':>9s} {'error':>7s} {'host ops':>9s}  "
          f"{'worst layer':62s} {'error':>7s} {'cycles/s':>9s} {'(whole)':>8s}")
    for f in figures:
        name, _, _, worst = f.worst
        print(f"{f.name:10s} {f'{f.array}x{f.array}':>5s} {f.rtl_cycles:9,d} {f.device_cycles:9,d} {f.error:+7.2%} "
              f"{f.host_cycles:9,d}  {name:62s} {worst:+7.2%} {f.rtl_cycles / f.program_s:9,.0f} "
              f"{f.rtl_cycles / f.run_s:8,.0f}")
    print("model: the device's part (the host's ops, which the top level does not run, beside it); cycles/s: "
          "Verilator from start to done (whole: the run with simulator start-up, image load and read-back)")
    return figures


if __name__ == "__main__":
    main()
