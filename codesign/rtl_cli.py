"""``codesign rtl``: emit the Verilog of the integer kernels a compiled design uses, with a manifest.

Two forms::

    codesign rtl model.onnx --target fpga-u280 [--set gemm.rows=16] [--quant int8 --softmax shiftmax ...] \
        --out build/rtl
    codesign rtl --kernel shiftmax --set n=197 --set out_bits=16 --out build/rtl

The first compiles the model exactly as ``codesign compile`` does (same options, parsed by the same code) and
reads the compile's plan (``compiler.schedule.lower.plan_module``: the layers the schedule priced, each with the ops
it stands for) to decide which kernels the design needs, with the parameters the compiler chose
(:func:`plan_kernels`):

============================  ================================================================================
IR                            kernel (parameters)
============================  ================================================================================
integer ``dataflow.gemm``     ``systolic_gemm`` (``systolic_gemm_ws`` on a ws array, ``systolic_gemm_stream`` with
                              ``gemm.fold_overlap``) (rows, cols, acc_bits from the
                              target's ``gemm``; in_bits the operand width); also the QK^T and A.V products of
                              integer ``dataflow.attention``. An array of ``gemm.partitions`` = P sub-arrays is the
                              ``rows / P`` x cols kernel with ``instances`` P; each GEMM's invocations are the
                              busiest sub-array's, as the FPGA model deals them (``FpgaModel.subarray_share``)
``dataflow.requant``          ``requant`` (lanes = the array's cols, acc_bits = input width, out_bits)
softmax ``shiftmax``          ``shiftmax`` (n = row length; in_bits 32 for integer scores, else 16; out_bits from
                              the op's ``softmax_bits``, default 16)
softmax ``online``            ``online_softmax`` (same)
gelu ``shiftgelu``            ``shiftgelu`` with per_element=1 (the streaming max(x, 0) form; n = last dim, the row
                              framing; in_bits = input width, 8 for float inputs)
gelu ``shiftgelu-row``        ``shiftgelu`` with per_element=0 (I-ViT's row-max form; same n and in_bits)
layernorm ``ilayernorm``      ``ilayernorm`` (c = last dim; in_bits = input width, 16 for float inputs; rms=1 for
                              an RMSNorm)
``dataflow.moe``              ``topk_router`` (experts, k = top_k; in_bits 32 for integer logits, else 16); an
                              integer block's expert GEMMs (and an int8 gate) on ``systolic_gemm``, with
                              ``ceil(tokens * k / experts)`` tokens per expert (uniform routing, said in a note)
============================  ================================================================================

Every invocation also carries its runtime configuration (codesign/rtl_config.py: ``x0``, Shiftmax's input
shift, requant ``(m, e)``, I-LayerNorm biases, GEMM weights...), from the scales of one functional-simulator run;
an I-LayerNorm whose integer biases are wider than 32 bits gets a wider ``bias_bits``.

Float inputs to an approximation are quantized per call to the width the published design feeds it, as the
functional simulator models them (compiler/simulate/approx.py); their scale-dependent configuration is null.
Attention in ``edge-moe`` or ``flash`` order with ``--softmax exact`` has no integer softmax: its online softmax
is float (use ``--softmax online`` for the integer Edge-MoE unit). A design with none of these is refused, naming
the options that make an integer datapath.

``--out`` is created if needed; an existing non-empty folder must carry the marker a previous ``codesign rtl``
left (hw/rtl/manifest.py), a regular file and not a link, so a user's files are never overwritten. The design is
written into a fresh private folder inside ``--out`` and each file renamed into place (:func:`write_into`): a rename
replaces a symlink planted in ``--out`` instead of writing through it, and no half-written file is ever in ``--out``.
"""

from __future__ import annotations

import argparse
import math
import sys
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from hw.errors import InputError

if TYPE_CHECKING:  # `codesign --help` starts without loading xDSL or pydantic
    from xdsl.ir import Operation

    from codesign.rtl_config import DesignScales
    from hw.targets.schema import Target

__all__ = ["register", "plan_kernels", "write_into"]

_INTEGER_CHOICES = ("--quant int8|w4a8, --softmax shiftmax|online, --gelu shiftgelu|shiftgelu-row "
                    "or --layernorm ilayernorm")

def register(subparsers: Any) -> None:
    """Add the ``rtl`` subcommand to ``codesign``'s subparsers."""
    from codesign.cli import _add_compile_args

    p = subparsers.add_parser("rtl", help="emit Verilog of the integer kernels a compiled design uses (+ manifest)")
    _add_compile_args(p)
    for action in p._actions:  # the model is optional with --kernel
        if action.dest == "model":
            action.nargs, action.required, action.default = "?", False, None
    p.add_argument("--kernel", help="emit this one kernel (no model); its parameters come from --set KEY=VALUE")
    p.add_argument("--out", default="build/rtl", help="output folder (default: build/rtl)")
    p.add_argument("--system", action="store_true", help="write the whole accelerator (cds1_system), the model's "
                   "program, its DRAM image and a manifest instead of one file per kernel")
    p.add_argument("--simulate", action="store_true", help="with --system: run the program per --inputs sample on "
                   "the top level (Verilator, cocotb) and report its cycles next to the model's")
    p.add_argument("--sim", default="verilator", metavar="verilator|icarus", help="simulator for --simulate")
    p.add_argument("--json", help="with --simulate: write rtl_cycles and latency_cycles, total and per layer")
    p.add_argument("-q", "--quiet", action="store_true", help="print nothing on success")
    p.set_defaults(func=_cmd_rtl)


def _cmd_rtl(args: argparse.Namespace) -> int:
    if args.simulate and not args.system:
        raise InputError("rtl: --simulate runs the system top level; add --system")
    if args.system:
        from codesign.rtl_system_cli import run_system_cli

        return run_system_cli(args)
    if args.json:
        raise InputError("rtl: --json reports a system simulation; use it with --system --simulate")
    if args.kernel and args.model:
        raise InputError("rtl: give a model or --kernel NAME, not both")
    if args.kernel:
        uses, source, clock, notes = _single_kernel(args)
    elif args.model:
        uses, source, clock, notes = _from_model(args)
    else:
        raise InputError("rtl: give a model (an ONNX file) or --kernel NAME (see codesign rtl --help)")
    manifest = write_into(args.out, uses, source, clock, notes)
    if not args.quiet:
        _print_summary(manifest, args.out)
    return 0


def write_into(out: str | Path, uses: Any, source: Any, clock_mhz: float | None, notes: Any) -> dict:
    """``hw.rtl.manifest.write_design`` into the output folder ``out``, safely: the folder must be new, empty or one
    a previous ``codesign rtl`` wrote (its marker a regular file); the design is written into a private staging
    folder inside it, then the files the previous manifest listed are removed and each new file is renamed into
    place (the marker first, ``manifest.json`` last). Returns the manifest."""
    from codesign.rtl_out import write_staged
    from hw.rtl.manifest import write_design

    return write_staged(out, lambda staging: write_design(staging, uses, source, clock_mhz, notes))


def _int_value(text: str) -> tuple[str, int]:
    key, sep, value = text.partition("=")
    if not sep or not key:
        raise InputError(f"--set {text}: expected KEY=VALUE, e.g. n=64")
    try:
        return key, int(value, 0)
    except ValueError:
        raise InputError(f"--set {text}: kernel parameter {key} must be an integer") from None


def _single_kernel(args: argparse.Namespace):
    from hw.rtl.emit import canonical_params
    from hw.rtl.kernels import example_work
    from hw.rtl.manifest import Invocation, KernelUse

    params = canonical_params(args.kernel, dict(_int_value(text) for text in args.overrides))
    use = KernelUse(args.kernel, params, [Invocation("(example: one unit of work)", example_work(args.kernel, params))])
    return [use], {"kernel": args.kernel}, None, []


def _from_model(args: argparse.Namespace):
    from codesign.cli import _compile_options, _print_ir
    from codesign.options import middle_passes
    from codesign.rtl_config import learn_scales
    from compiler.pipeline import run_pipeline
    from compiler.quant_groups import GROUP_ATTR

    if not Path(args.model).exists():
        raise InputError(f"{args.model}: no such file")
    if args.stop_after:
        raise InputError("rtl: --stop-after is not supported (the kernels are read from the fully compiled IR)")
    if getattr(args, "inputs", None) or getattr(args, "outputs", None):
        raise InputError("rtl: --inputs/--outputs run the model; use them with --system --simulate or codesign "
                         "compile")
    options = _compile_options(args)
    if options.choice("weight-group", "none") != "none":
        raise InputError(f"rtl: --weight-group {options.choice('weight-group', 'none')}: the systolic GEMM kernel has "
                         "no per-group rescale; emit RTL without --weight-group (one weight step per output channel)")
    env = None
    if getattr(args, "calibrate", None):  # the same activation ranges as codesign compile --calibrate
        from codesign.accuracy import prepare_env, sample_shapes

        env, _ = prepare_env(args.model, dict(options.shapes), None, args.calibrate,
                             quantized=options.quantized)
        options = sample_shapes(args.model, options, env, None)

    def on_ir(step: str, module: Any) -> None:
        sys.stdout.write(f"// ----- IR after {step} -----\n" + _print_ir(module, False))

    result = run_pipeline(args.model, options, middle=middle_passes(options), on_ir=on_ir, env=env)
    target = result.env.target
    if target is None:
        raise RuntimeError("run_pipeline resolves the target before it compiles")
    if any(GROUP_ATTR in o.attributes for o in result.module.walk()):
        raise InputError("rtl: --quant auto chose per-group weight steps (--weight-group) for some GEMMs, which the "
                         "systolic GEMM kernel cannot rescale; emit RTL with --quant int8 or w4a8")
    uses, notes = plan_kernels(result.module, target, learn_scales(result))
    if not uses:
        raise InputError(f"{args.model}: the compiled design has no integer datapath to emit as RTL; "
                         f"make one with {_INTEGER_CHOICES}")
    source = {"model": str(args.model), "target": target.name, "overrides": dict(options.overrides),
              "choices": dict(options.choices)}
    return uses, source, float(target.clock_mhz), notes


# --- IR -> kernels ----------------------------------------------------------------------------------------


def _planned_ops(module: Any) -> list[Operation]:
    """The ops of the compile's plan (``compiler.schedule.lower.plan_module``: every costed layer, with the ops fused
    into it), in program order: the kernels the design runs are those the schedule priced."""
    from compiler.schedule.lower import plan_module

    order = {id(op): i for i, op in enumerate(module.walk())}
    return sorted((op for layer in plan_module(module).layers for op in layer.ops), key=lambda op: order[id(op)])


def _shape(value: Any) -> tuple[int, ...]:
    return tuple(value.type.get_shape())


def plan_kernels(module: Any, target: Target, values: DesignScales | None = None) -> tuple[list, list[str]]:
    """The kernel uses of a compiled module on ``target``: (list of ``KernelUse``, notes).

    See the module docstring for the rules. Parameters are checked later, by ``write_design``; a value out
    of a kernel's range is reported with the layer that asked for it. With ``values`` (the
    ``codesign.rtl_config.DesignScales`` of one simulator run) every invocation carries its runtime configuration
    (codesign/rtl_config.py); without, configs are empty.
    """
    from codesign import rtl_config as rc
    from compiler.dialect import dataflow as df
    from compiler.simulate.kernels import softmax_bits
    from hw.models import build_model
    from hw.models.fpga import RTL_VECTOR_UNITS, FpgaModel
    from hw.perf.workload import GemmWork
    from hw.rtl.emit import canonical_params
    from hw.rtl.manifest import Invocation, KernelUse
    from hw.rtl.requant import E_BITS, M_BITS
    from hw.targets.schema import FpgaGemm

    uses: list[KernelUse] = []
    notes: list[str] = []
    per_call: list[str] = []
    array = target.systolic_array()
    parts = array.partitions if isinstance(array, FpgaGemm) else 1
    model = build_model(target) if parts > 1 else None

    def add(kernel: str, params: dict[str, int], layer: str, work: dict[str, int], count: int = 1,
            config: Callable[[dict[str, int], DesignScales], dict[str, Any]] | None = None,
            instances: int = 1) -> None:
        try:
            full = canonical_params(kernel, params)
            cfg = config(full, values) if config is not None and values is not None else {}
        except InputError as err:
            raise InputError(f"layer '{layer}': {err}") from None
        if any(cfg.get(key, 0) is None for key in ("x0", "m_c")):
            per_call.append(layer)
        uses.append(KernelUse(kernel, full, [Invocation(layer, work, count, cfg)], instances))

    def gemm(layer: str, m: int, n: int, k: int, bits: int, count: int, op: Any = None) -> None:
        if array is None:
            raise InputError(f"layer '{layer}': target '{target.name}' has no systolic GEMM array for integer GEMMs")
        params = {"rows": array.rows // parts, "cols": array.cols, "in_bits": bits, "acc_bits": array.acc_bits}
        kernel = ("systolic_gemm_ws" if array.dataflow == "ws" else
                  "systolic_gemm_stream" if getattr(array, "fold_overlap", False) else "systolic_gemm")
        work = {"m": m, "n": n, "k": k}
        if isinstance(model, FpgaModel):  # sub-arrays: the busiest one's invocations, as the model deals them
            transposed = op is not None and "mapping" in op.attributes and \
                "^T" in str(op.attributes["mapping"].data).split()[0]
            run = GemmWork(m=n if transposed else m, n=m if transposed else n, k=k, batch=count, in_bits=bits,
                           w_bits=bits)
            _, work, count = model.subarray_share(run)
        add(kernel, params, layer, work, count,
            (lambda _, v: rc.gemm_config(op, v)) if op is not None else None, parts)

    def softmax(op: Any, layer: str, approx: str, n: int, rows: int, integer: bool,
                scale: Callable[[DesignScales], float | None]) -> None:
        if approx not in ("shiftmax", "online"):
            return
        kernel = "shiftmax" if approx == "shiftmax" else "online_softmax"
        params = {"n": n, "in_bits": 32 if integer else 16, "out_bits": softmax_bits(op, approx)}
        if approx == "shiftmax":
            add(kernel, params, layer, {"rows": rows}, config=lambda full, v: rc.shiftmax_config(scale(v), n, full))
        else:
            add(kernel, params, layer, {"rows": rows}, config=lambda full, v: rc.online_softmax_config(scale(v), full))

    if array is not None and array.dataflow == "is":
        notes.append(f"target '{target.name}' uses an input-stationary array, which has no RTL kernel yet; the "
                     "emitted systolic_gemm is output-stationary (same MACs, cycles per its own model)")
    for op in module.walk():
        if isinstance(op, df.RopeOp):  # no kernel computes it: a design without it would be silently incomplete
            raise InputError(f"layer '{op.layer_name()}': op dataflow.rope (rotary embedding, node "
                             f"'{op.layer_name()}') has no standalone RTL kernel; codesign rtl --system runs it on "
                             "the top level's array and vector unit")
        if isinstance(op, df.AttentionOp) and op.sinks_value() is not None:  # no softmax unit takes a sink
            raise InputError(f"layer '{op.layer_name()}': dataflow.attention with attention sinks has no RTL "
                             "softmax unit (none takes a sink logit per row); codesign rtl cannot build this model")
    for op in _planned_ops(module):
        if isinstance(op, df.GemmOp):
            lhs_bits, rhs_bits = df.int_bits(op.lhs), df.int_bits(op.rhs)
            if lhs_bits is not None and rhs_bits is not None:
                batch, m, n, k = op.mnk()
                gemm(op.layer_name(), m, n, k, max(lhs_bits, rhs_bits), batch, op)
        elif isinstance(op, df.RequantOp):
            bits, acc = op.out_bits_value(), df.int_bits(op.input)
            if array is None or acc is None or bits not in (4, 8, 16):
                continue
            shape = _shape(op.input)
            lanes = array.cols
            beats = math.prod(shape[:-1]) * -(-shape[-1] // lanes)
            add("requant", {"lanes": lanes, "acc_bits": min(max(acc, 2), 32), "out_bits": bits}, op.layer_name(),
                {"beats": beats}, config=lambda _, v, op=op: rc.requant_config(op, v, M_BITS, E_BITS))
        elif isinstance(op, df.AttentionOp):
            layer, d = op.layer_name(), op.dims()
            b, sq, sk, heads, dh, dv = d.batch, d.seq_q, d.seq_k, d.num_heads, d.head_dim, d.v_head_dim
            q_bits, k_bits, v_bits = df.int_bits(op.q), df.int_bits(op.k), df.int_bits(op.v)
            integer = q_bits is not None and k_bits is not None
            if q_bits is not None and k_bits is not None:
                gemm(f"{layer}.qk", sq, sk, dh, max(q_bits, k_bits), b * heads)
                if v_bits is not None:
                    gemm(f"{layer}.av", sq, dv, sk, max(v_bits, 8), b * heads)
            approx, algorithm = op.softmax_choice(), op.algorithm_choice()
            if algorithm in (df.AttentionAlgorithm.EDGE_MOE, df.AttentionAlgorithm.FLASH) \
                    and approx == df.SoftmaxApprox.EXACT:
                notes.append(f"layer '{layer}': {algorithm} order with --softmax exact has a float online softmax; "
                             "use --softmax online for the integer Edge-MoE unit")
            if op.softcap_value() is not None:
                notes.append(f"layer '{layer}': its logit soft-cap (c * tanh(s / c)) has no RTL unit; the emitted "
                             "softmax unit is the one that reads the capped scores")
            softmax(op, f"{layer}.softmax", approx, sk, b * heads * sq, integer,
                    lambda v, op=op: rc.attention_scores_scale(op, v))
        elif isinstance(op, df.SoftmaxOp):
            shape = _shape(op.input)
            n = shape[op.axis_value()]
            softmax(op, op.layer_name(), op.approx_choice(), n, math.prod(shape) // n,
                    df.int_bits(op.input) is not None, lambda v, op=op: rc.per_tensor(v.scale(op.input)))
        elif isinstance(op, df.GeluOp) and ("gelu", op.approx_choice()) in RTL_VECTOR_UNITS:
            shape = _shape(op.input)
            bits = df.int_bits(op.input) or 8
            _, fixed = RTL_VECTOR_UNITS[("gelu", op.approx_choice())]  # the form the FPGA model prices
            add("shiftgelu", {"n": shape[-1], "in_bits": bits, "out_bits": 8, **fixed}, op.layer_name(),
                {"rows": math.prod(shape) // shape[-1]},
                config=lambda full, v, op=op: rc.shiftgelu_config(rc.per_tensor(v.scale(op.input)), full))
        elif isinstance(op, df.LayerNormOp) and op.approx_choice() == df.LayerNormApprox.ILAYERNORM:
            shape = _shape(op.input)
            bits = df.int_bits(op.input) or 16
            _, fixed = RTL_VECTOR_UNITS[("layernorm", "ilayernorm")]  # the eps port the compiled numerics need
            params = {"c": shape[-1], "in_bits": bits, **fixed}
            if op.norm_kind() == df.LayerNormKind.RMSNORM:
                params["rms"] = 1  # the integer RMSNorm: the mean taken as 0
            cfg: dict[str, Any] = {}
            if values is not None:  # a bias wider than the default port widens it
                try:
                    cfg = rc.ilayernorm_config(op, values)
                except InputError as err:
                    raise InputError(f"layer '{op.layer_name()}': {err}") from None
                params["bias_bits"] = rc.bias_bits(cfg, canonical_params("ilayernorm", params)["bias_bits"])
            add("ilayernorm", params, op.layer_name(), {"rows": math.prod(shape) // shape[-1]},
                config=lambda _, __, cfg=cfg: cfg)
        elif isinstance(op, df.MoeOp):
            shape = _shape(op.input)
            mode = op.mode_choice()
            tokens = math.prod(shape[:-2]) if mode == df.MoeMode.IMAGE and shape[2:] else math.prod(shape) // shape[-1]
            layer, experts, top_k = op.layer_name(), op.num_experts_value(), op.top_k_value()
            x_bits = df.int_bits(op.input)
            bits = 32 if x_bits is not None else 16
            add("topk_router", {"experts": experts, "k": top_k, "in_bits": bits}, f"{layer}.router",
                {"tokens": tokens})
            if bits == 16:
                notes.append(f"layer '{layer}': float gate logits; the router compares them as 16-bit fixed point")
            w1_bits, w2_bits, gate_bits = df.int_bits(op.w1), df.int_bits(op.w2), df.int_bits(op.gate)
            if x_bits is not None and w1_bits is not None and w2_bits is not None:
                _, d, hidden = _shape(op.w1)
                rows = -(-(math.prod(shape) // shape[-1]) * top_k // experts)
                gemm(f"{layer}.experts.w1", rows, hidden, d, max(x_bits, w1_bits), experts)
                gemm(f"{layer}.experts.w2", rows, d, hidden, max(8, w2_bits), experts)
                notes.append(f"layer '{layer}': expert GEMMs assume uniform routing, ceil(tokens * {top_k} / "
                             f"{experts}) = {rows} tokens per expert")
                if gate_bits is not None and gate_bits <= 8:
                    gemm(f"{layer}.gate", math.prod(shape) // shape[-1], experts, d, max(x_bits, gate_bits), 1)
                else:
                    notes.append(f"layer '{layer}': the gate GEMM ({gate_bits or 'float'}-bit weights) is not on "
                                 "the int8 array")
    if parts > 1 and array is not None and any(u.instances > 1 for u in uses):
        notes.append(f"gemm.partitions = {parts}: the GEMM array is {parts} instances of the emitted "
                     f"{array.rows // parts}x{array.cols} kernel side by side; each GEMM's invocations are the "
                     "busiest instance's (whole products dealt round-robin, or a product's folds dealt out, a share "
                     "streamed as one invocation of a product with as many folds), so its cycles are the layer's")
    if per_call:
        notes.append(f"{len(per_call)} invocation(s) take float inputs that the design quantizes per call "
                     f"(compiler/simulate/approx.py), e.g. layer '{per_call[0]}': their scale-dependent config "
                     "(x0, input_shift, m_c, e_c) is null, set per call from that call's scale")
    only_float = all(u.kernel == "topk_router" for u in uses)
    return ([] if only_float else uses), notes


def _print_summary(manifest: dict, out: str) -> None:
    from rich.console import Console
    from rich.table import Table

    files = "manifest.json" + (f", {manifest['config_file']}" if manifest.get("config_file") else "")
    table = Table(title=f"RTL kernels written to {out} ({files})")
    for column in ("kernel", "parameters", "verilog", "calls", "cycles/call", "total cycles"):
        table.add_column(column, justify="right" if "cycles" in column or column == "calls" else "left")
    for k in manifest["kernels"]:
        per = k["predicted_cycles_per_invocation"]
        name = k["name"] + (f" x{k['instances']}" if k.get("instances", 1) > 1 else "")
        table.add_row(name, " ".join(f"{key}={v}" for key, v in k["parameters"].items()), k["verilog"],
                      str(k["total_invocations"]), "varies" if per is None else str(per), str(k["total_cycles"]))
    console = Console() if sys.stdout.isatty() else Console(width=160)
    console.print(table)
    for note in manifest["notes"]:
        console.print(f"note: {note}")
