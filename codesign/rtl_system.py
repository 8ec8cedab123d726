"""``codesign rtl model.onnx --system``: the whole accelerator for a compiled model, and the program it runs.

::

    codesign rtl model.onnx --target fpga-u280 --set gemm.rows=8 --quant int8 ... --out build/sys --system \
        [--inputs x.npz] [--simulate --outputs y.npz --json r.json]

The model is compiled exactly as ``codesign compile`` compiles it (same options; ``--inputs`` also calibrates, as
there). The compiler backend (compiler/backend/model.py) turns the integer part into one ``cds1`` program (the host
runs the float prologue and epilogue, docs/ISA.md "Host split") and ``--out`` receives:

================  ===================================================================================================
``cds1_system.v``  the top level (``hw/rtl/system``), sized from the target's ``gemm`` and ``buffers`` and ``--set``
``program.bin``    the program (docs/ISA.md, Program file); ``program.lst`` its listing, re-assemblable
``image.bin``      the DRAM image: weights and constants, and the program inputs of one sample (the first of
                   ``--inputs``, else the synthetic sample calibration uses) written by the host prologue
``manifest.json``  ``format`` ``cds1-system``: the configuration, the files, the DRAM map (address, shape and dtype
                   of every program input, mask half and output), each layer's instruction range and trace mark, the
                   ops the host runs, and the layers whose instructions the RTL does not build yet
================  ===================================================================================================

The command is codesign/rtl_system_cli.py; ``--simulate`` (codesign/rtl_simulate.py) then runs the program per
``--inputs`` sample on the top level in Verilator. A model the backend cannot program (float ops left between
integer ops, an op with no code generator) is refused by the backend's own one-line message naming the op and
node; ``--simulate`` also refuses a program with an instruction the top level does not build yet
(hw/rtl/system/support.py), naming the layer.
"""

from __future__ import annotations

import argparse
import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from xdsl.dialects.builtin import StringAttr
from xdsl.ir import SSAValue

from compiler.dialect import dataflow as df
from compiler.dialect.choices import LAYER_ATTR
from hw.errors import InputError

__all__ = ["SystemDesign", "build_design", "has_ws_gemm", "longest_row", "host_values", "sample_image", "first_feeds",
           "manifest_of", "write_system"]

FORMAT = "cds1-system"
FILES = {"verilog": "cds1_system.v", "program": "program.bin", "listing": "program.lst", "image": "image.bin"}
_MIN_TRACE = 16
_MIN_ROW = 16


def has_ws_gemm(program: Any) -> bool:
    """Whether ``program`` has a weight-stationary ``GEMM`` (the backend's folds for a target with ``gemm.dataflow:
    ws``): the top level is then built with the ws array too (``SystemConfig.ws_array``), else without it."""
    from hw.isa import Gemm

    return any(isinstance(i, Gemm) and i.dataflow == 1 for i in program.instructions)


def longest_row(program: Any) -> int:
    """The ``max_row`` the top level is built with for ``program`` (elements): its longest ``shiftmax`` or
    ``ilayernorm`` row rounded up to a power of two (at least 16, so programs of similar models share a Verilator
    build). The row kernels' buffers and I-LayerNorm's dividers are sized by it (``SystemConfig.max_row``)."""
    from hw.isa import Vec, VecFn
    from hw.rtl.system.vec import MAX_ROW

    rows = [i.n for i in program.instructions if isinstance(i, Vec) and i.fn in (VecFn.SHIFTMAX, VecFn.ILAYERNORM)]
    return min(MAX_ROW, max(_MIN_ROW, 1 << (max(rows, default=1) - 1).bit_length()))


@dataclass
class SystemDesign:
    """A compiled model's system: the compile, its backend program, the top level's configuration, and notes."""

    result: Any
    mp: Any
    config: Any
    geometry: Any
    source: dict[str, Any]
    samples: dict[str, np.ndarray] | None
    ops: dict[str, str] = field(default_factory=dict)  # layer name -> op name ("dataflow.gemm")
    lacks: list[dict[str, Any]] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)


def one_array(options: Any) -> tuple[Any, list[str]]:
    """``options`` for the system top level, which has one GEMM array (``cds1_system``) running each fold whole
    (``hw/rtl/systolic.py``), and the notes saying what was changed. A target whose YAML builds the array as
    ``gemm.partitions`` sub-arrays (the bundled fpga-u280) is compiled with ``gemm.partitions=1``, and one whose
    folds stream (``gemm.fold_overlap``) with ``gemm.fold_overlap=false``, and an FPGA target with
    ``gemm.execute_queue=true`` (each fold one instruction on the one execute queue, its requant after it there:
    ``hw/perf/execute_queue.py``), so the program, its model cycles and the RTL describe the same machine; a
    ``--set`` asking for another value explicitly asks for what the top level cannot build and is refused in one
    line naming the key."""
    from dataclasses import replace

    from hw.targets import load_target
    from hw.targets.schema import FpgaGemm

    given = dict(options.overrides)
    target = load_target(options.target, given)
    array = target.systolic_array()
    fpga = isinstance(array, FpgaGemm)
    changes = {"gemm.partitions": ("1", array.partitions if fpga else 1, 1,
                                   "builds its GEMM array as sub-arrays (gemm.partitions)"),
               "gemm.fold_overlap": ("false", bool(getattr(array, "fold_overlap", False)), False,
                                     "streams consecutive folds (gemm.fold_overlap)"),
               "gemm.execute_queue": ("true", bool(getattr(array, "execute_queue", False)), fpga,
                                      "prices a GEMM layer's folds back to back with its epilogue on vector lanes "
                                      "beside the array (gemm.execute_queue=false)")}
    extra, notes = [], []
    for key, (value, have, want, what) in changes.items():
        if have == want or array is None:
            continue
        if key in given:
            raise InputError(f"{key}: codesign rtl --system builds one array that runs each fold whole "
                             f"(cds1_system), got {have}; drop --set {key}, or emit the kernels without --system")
        extra.append((key, value))
        notes.append(f"target '{target.name}' {what}; the top level has one {array.rows}x{array.cols} array that "
                     f"runs each fold whole, so the model was compiled with {key}={value}")
    return (replace(options, overrides=(*options.overrides, *extra)) if extra else options), notes


def build_design(args: argparse.Namespace) -> SystemDesign:
    """Compile ``args.model`` as ``codesign compile`` would and program it (module docstring)."""
    from codesign.accuracy import prepare_env, sample_shapes
    from codesign.cli import _compile_options
    from codesign.options import middle_passes
    from codesign.rtl_config import learn_scales
    from compiler.backend import Geometry, build_model_program
    from compiler.pipeline import run_pipeline
    from compiler.summary import build_report
    from hw.rtl.system import SystemConfig
    from hw.rtl.system.support import rtl_lacks

    if not Path(args.model).exists():
        raise InputError(f"{args.model}: no such file")
    if args.stop_after:
        raise InputError("rtl --system: --stop-after is not supported (the program is built from the compiled IR)")
    options, notes = one_array(_compile_options(args))
    env, samples = prepare_env(args.model, dict(options.shapes), args.inputs, args.calibrate,
                               quantized=options.quantized)
    options = sample_shapes(args.model, options, env, samples)
    result = run_pipeline(args.model, options, middle=middle_passes(options), report=build_report, env=env)
    target = result.env.target
    if target is None:
        raise RuntimeError("run_pipeline resolves the target before it compiles")
    geometry = Geometry.from_target(target)
    mp = build_model_program(result.module, result.env.weights, learn_scales(result), geometry)
    spans = mp.builder.layers
    depth = max(_MIN_TRACE, 1 << max(len(spans) - 1, 0).bit_length())
    program = mp.program
    if program is None:
        raise RuntimeError("build_model_program finishes the program")
    config = SystemConfig.from_target(target, trace_depth=depth, max_row=longest_row(program),
                                      ws_array=has_ws_gemm(program))
    ops: dict[str, str] = {}
    for op in result.module.walk():
        layer = op.properties.get(LAYER_ATTR)
        if isinstance(layer, StringAttr):
            ops.setdefault(layer.data, op.name)
    lacks = []
    for span in spans:
        for index in range(span.first, span.end):
            why = rtl_lacks(program.instructions[index], config)
            if why is not None:
                lacks.append({"layer": span.name, "op": ops.get(span.name, "?"), "instruction": index, "lacks": why})
                break
    source = {"model": str(args.model), "target": target.name, "overrides": dict(options.overrides),
              "choices": dict(options.choices)}
    return SystemDesign(result, mp, config, geometry, source, samples, ops, lacks, notes)


def _dtype(elem_bytes: int) -> str:
    return f"int{8 * elem_bytes}"


def _region(region: Any, value: str | None = None) -> dict[str, Any]:
    entry = {"name": region.name, "addr": region.addr, "bytes": region.nbytes, "shape": list(region.shape),
             "dtype": _dtype(region.elem_bytes)}
    if value is not None:
        entry["value"] = value
    return entry


def host_values(design: SystemDesign, feeds: dict[str, np.ndarray]) -> dict[SSAValue, np.ndarray]:
    """The functional simulator's value of every IR value on one sample (the host prologue's results among them) and
    of every constant."""
    from compiler.simulate import Simulator

    imported = design.result.imported
    sim = Simulator(design.result.module, design.result.env.weights, imported.input_names, imported.output_names)
    values: dict[SSAValue, np.ndarray] = {}

    def observe(op: Any, outs: list[Any]) -> None:
        for value, tensor in zip(op.results, outs):
            values[value] = np.asarray(tensor.data)

    sim.run(feeds, observe)
    weights = design.result.env.weights
    for op in design.result.module.walk():  # constants the host reads too (a mask the frontend folded: T5's bias)
        if isinstance(op, df.WeightOp) and op.result not in values and df.layer_of(op) in weights:
            values[op.result] = np.asarray(weights[df.layer_of(op)])
    return values


def sample_image(design: SystemDesign, values: dict[SSAValue, np.ndarray]) -> bytes:
    """The DRAM image with one sample's program inputs and mask halves written in (the host prologue's work)."""
    from compiler.backend.attention import host_mask_halves

    image = design.mp.builder.image
    pristine = bytes(image.buffer())
    try:
        for value, region in design.mp.inputs.items():
            image.write(region.name, values[value].reshape(region.shape))
        for plan, mask in design.mp.masks:
            a, b = host_mask_halves(None if mask is None else values[mask], plan)
            image.write(plan.mask[0].name, a)
            image.write(plan.mask[1].name, b)
        return bytes(image.buffer())
    finally:
        image.buffer()[:] = pristine


def first_feeds(design: SystemDesign) -> tuple[dict[str, np.ndarray], str]:
    """The first sample's model inputs and where they come from (``--inputs`` or the synthetic calibration one)."""
    from compiler.calibrate import synthetic_inputs

    if design.samples is not None:
        return {k: v[0] for k, v in design.samples.items()}, "--inputs sample 0"
    names = design.result.imported.input_names
    batch = synthetic_inputs(design.result.module, names, 1)
    return {name: batch[name][0] for name in names}, "synthetic sample (compiler.calibrate.synthetic_inputs)"


def manifest_of(design: SystemDesign, image_inputs: str) -> dict[str, Any]:
    """The ``manifest.json`` of a system design (module docstring)."""
    mp, program = design.mp, design.mp.program
    notes = list(design.notes)
    if design.lacks:
        first = design.lacks[0]
        notes.append(f"{len(design.lacks)} layer(s) use instructions the top level does not build yet, e.g. "
                     f"{first['op']} '{first['layer']}' ({first['lacks']}); --simulate refuses this program")
    return {
        "format": FORMAT,
        "version": 1,
        "source": design.source,
        "clock_mhz": float(design.result.env.target.clock_mhz),
        "top": "cds1_system",
        "config": {**asdict(design.config), "width": design.config.width},
        "files": dict(FILES),
        "program": {"instructions": len(program.instructions), "dram_bytes": program.dram_bytes,
                    "image_inputs": image_inputs},
        "dram": {
            "inputs": [_region(r) for r in mp.inputs.values()],
            "masks": [_region(r) for plan, _ in mp.masks for r in plan.mask],
            "outputs": [_region(r) for r in mp.outputs.values()],
        },
        "layers": [{"name": s.name, "op": design.ops.get(s.name, "?"), "instructions": [s.first, s.end],
                    "mark": s.mark} for s in mp.builder.layers],
        "host_ops": list(mp.host_ops),
        "rtl_lacks": design.lacks,
        "notes": notes,
    }


def write_system(out: str | Path, design: SystemDesign, image: bytes, image_inputs: str) -> dict[str, Any]:
    """Write the design's files into ``out`` (created or a previous ``codesign rtl`` folder; codesign/rtl_out.py's
    staged write). Returns the manifest."""
    from codesign.rtl_out import write_staged
    from hw.isa import listing, to_bytes
    from hw.rtl.manifest import prepare_out_dir
    from hw.rtl.system.emit import system_verilog

    program = design.mp.program
    manifest = manifest_of(design, image_inputs)
    text = system_verilog(design.config)
    binary = to_bytes(program)

    def write(staging: Path) -> dict[str, Any]:
        path = prepare_out_dir(staging)
        (path / FILES["verilog"]).write_text(text)
        (path / FILES["program"]).write_bytes(binary)
        (path / FILES["listing"]).write_text(listing(program))
        (path / FILES["image"]).write_bytes(image)
        (path / "manifest.json").write_text(json.dumps(manifest, indent=2) + "\n")
        return manifest

    return write_staged(out, write)
