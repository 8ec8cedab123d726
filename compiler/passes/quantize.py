"""``quantize``: post-training integer quantization in I-ViT's style, made visible in the IR.

What changes (``mode=int8``; ``w4a8`` the same with 4-bit weights):

* every GEMM with a constant weight: weights symmetric per output channel (int8 / int4, scale max|w| / (2^(b-1)-1);
  a grouped convolution's batched [G, K, N] weight: per group and channel, [G, 1, N]; with ``group`` a step per
  ``group`` rows of K and output channel as 8-bit multipliers under the channel's step, compiler/quant_groups.py),
  activations symmetric per tensor int8,
  bias int32 at S_x * S_w; operands become ``i8``, the accumulator ``i32``;
* attention: q, k, v int8; scores and A.V accumulate in integers, the softmax unit in between (``set-softmax``);
* other products of two activations: both int8, the right operand ([.., K, N]) with one step per column when its
  calibrated column maxima spread widely (linear attention's ``k^T [v, 1]``; compiler/quant_activation.py), so the
  product's output carries a step per column as with per-channel weights;
* GELU takes int8 (ShiftGELU, as I-ViT; int16 where its x0 needs a finer grid, ``approx.gelu_input_format``) or
  int16 (the others), LayerNorm int16; their outputs stay integers with the scale their kernel defines;
* MoE blocks (``dataflow.moe``): int8 input, int8 (int4) experts per expert and channel, a gate at up to 16 bits
  (compiler/quant_moe.py says why);
* residual adds (an add of two activations) are I-ViT's ``QuantAct(16)``: each branch requantized to the 16-bit
  output scale, summed, clamped;
* an element-wise product of two activations of one shape (GeGLU's ``gelu(x W) * (x V)``, SiLU's ``x * sigmoid(x)``
  and SwiGLU's ``silu(x W) * (x V)``): integer operands at 16 bits, a float gate (sigmoid, tanh, hard sigmoid) beside
  an integer at 8 bits, their exact product requantized to a 16-bit output step (other float factors stay float);
* wherever a consumer needs a narrower per-tensor format, a ``dataflow.requant`` (dyadic multiplier m / 2^e per
  channel, I-ViT's ``fixedpoint_mul``) is inserted; where a float op reads an integer, a dequantize cast.

Recipes (compiler/quant_recipes.py), none of which changes the integer datapath: ``balance`` gives a GEMM input fed
by an integer op one int8 step per channel (``repq``: its calibrated max, RepQ-ViT, only for an input with an outlier
channel, compiler/quant_activation.py's ``balances``; ``smoothquant``: SmoothQuant's or a weight-blind migration,
alpha chosen per GEMM input by cross-validated output error on the calibration rows, or per tensor if that wins),
applied by a per-channel requant and folded into the weights' rows (per-token GEMMs: their 16-bit input grid, by
the same rule); ``observer`` sizes per-tensor int8 activations (max, percentile, MSE or entropy); ``rounding=gptq``
rounds static weights with GPTQ.
``granularity=per-token`` does change the datapath: static GEMMs quantize their (16-bit) input per row at run time
(compiler/quant_activation.py, compiler/numerics/pertoken.py).

Activation scales come from calibration (compiler/calibrate.py): the data in ``env.artifacts["calibration"]``
(``{"names": [...], "data": {name: array with a leading sample axis}, "source": "..."}``) or, without it,
deterministic synthetic samples; the report's ``numerics.calibration`` says which. With an ``attention_mask`` input
(:data:`MASK_INPUT`) the padding rows it marks are left out of every range and fit. A module calibrated before in
this process with the same weights, samples and options gets its results from compiler/calibration_cache.py instead
of the float runs (the same numbers: the key hashes all of that and the compiler's code).

IR conventions (the simulator reads them, compiler/simulate/kernels.py):
``dataflow.elementwise`` ``cast`` with ``attrs = {quant = "quantize", scale, bits}`` / ``{quant = "dequantize"}``;
``dataflow.elementwise`` ``add`` with ``attrs = {quant = "add", scale, bits}`` and ``[m0, e0, m1, e1]`` (rows x
channels) in the WeightStore under its layer; ``mul`` with ``{quant = "mul", scale, bits}`` and ``[m, e]`` there;
``dataflow.requant`` with ``[m, e]`` there and its output scale in the ``scale`` attribute; quantized weights as
``<name>.q8`` + ``<name>.q8.scale`` (per channel); a per-group GEMM carries ``weight_group`` / ``group_scale_bits``
and its multipliers [G, N] under ``<weight>.gscale``.
An integer ``dataflow.moe`` carries ``requant`` (its WeightStore prefix), ``scale`` (its int16 output's) and
``hidden_bits`` attributes; the entries and the arithmetic are listed in compiler/simulate/moe.py.

The rewrite itself is compiler/quant_rewrite.py's ``Quantizer``; static weights go through compiler/quant_weights.py
on both activation granularities.

Derived scales (accumulators, kernel outputs) are computed by calling the simulator's kernels on a zero input, so
the pass and the simulator cannot disagree about a format.
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

import numpy as np
from xdsl.context import Context
from xdsl.dialects import func
from xdsl.dialects.builtin import FloatAttr, IntegerType, ModuleOp
from xdsl.passes import ModulePass

from compiler.calibrate import activation_ranges, check_simulation_memory, synthetic_inputs
from compiler.calibration_cache import CALIBRATIONS, Calibration, calibration_key
from compiler.context import env_of
from compiler.dialect import dataflow as df
from compiler.frontend.qdq import QDQ_RANGE_ATTR
from compiler.quant_activation import GRANULARITY
from compiler.quant_groups import GROUP_SIZES, MAX_ROWS_GROUPED
from compiler.quant_recipes import OBSERVERS, observe_range
from compiler.quant_rewrite import Quantizer
from compiler.simulate._threads import single_threaded
from compiler.simulate.moe import moe_ranges
from hw.errors import InputError

__all__ = ["Quantize", "QUANT_MODES"]

QUANT_MODES = {"int8": 8, "w4a8": 4}
#: How GEMM inputs with outlier channels get their int8 steps: ``none`` one step per tensor; ``repq`` one per
#: channel (its calibrated max, RepQ-ViT), folded into the weights; ``smoothquant`` per channel with SmoothQuant's
#: alpha searched per GEMM input (compiler/quant_recipes.py), or per tensor where that is more accurate.
BALANCE = ("none", "repq", "smoothquant")
ROUNDING = ("nearest", "gptq")
#: The model input whose zeros mark padding positions (BERT-family exports), as codesign.accuracy reads it.
MASK_INPUT = "attention_mask"
#: At most this many calibration rows per GEMM input are kept for the searches (alpha, GPTQ's Hessian).
MAX_ROWS = 512


@dataclass(frozen=True)
class Quantize(ModulePass):
    """Quantize the module (``mode`` int8 | w4a8) with activation ranges from calibration.

    ``percentile``: the statistic of |x| per value (100 = max); ``samples``: synthetic samples when no data.
    ``observer``: how an int8 activation's per-tensor range is taken from each calibration sample's values
    (``minmax``, ``percentile`` at ``percentile`` or 99.99, ``mse``, ``entropy``: compiler/quant_recipes.py); wider
    values (16-bit residuals, kernel inputs) keep the max. ``balance``: per-channel steps for GEMM inputs
    (:data:`BALANCE`). ``rounding``: ``gptq`` rounds static weights with GPTQ on the calibration rows.
    ``granularity``: ``per-token`` quantizes static GEMM inputs per row at run time (:data:`GRANULARITY`).
    ``group``: static 2-D weights get one step per ``group`` input rows and output channel (0: per channel;
    compiler/quant_groups.py has the format and its integer datapath). ``mode=auto``: per GEMM the cheapest weight
    recipe that keeps the output cosine on the calibration data at ``accuracy_target`` (compiler/quant_auto.py);
    ``layers``: JSON ``{layer: [weight bits, group]}`` overriding ``mode`` / ``group`` per GEMM (what auto chose).
    """

    name = "quantize"
    mode: str = "int8"
    percentile: float = 100.0
    samples: int = 4
    balance: str = "repq"
    observer: str = "minmax"
    rounding: str = "nearest"
    granularity: str = "per-tensor"
    group: int = 0
    accuracy_target: float = 0.99
    layers: str = ""

    def apply(self, ctx: Context, op: ModuleOp) -> None:
        if self.mode == "auto":
            from compiler.quant_auto import choose_recipes

            choose_recipes(self, ctx, op)
            return
        if self.group not in (0, *GROUP_SIZES):
            raise InputError(f"--weight-group {self.group}: unknown choice (valid: none, "
                             f"{', '.join(map(str, GROUP_SIZES))})")
        if self.mode not in QUANT_MODES:
            raise InputError(f"--quant {self.mode}: unknown choice (valid: none, {', '.join(QUANT_MODES)})")
        for key, value, valid in (("observer", self.observer, OBSERVERS), ("balance", self.balance, BALANCE),
                                  ("rounding", self.rounding, ROUNDING),
                                  ("granularity", self.granularity, GRANULARITY)):
            if value not in valid:
                raise InputError(f"quantize: {key}={value}: unknown choice (valid: {', '.join(valid)})")
        env = env_of(ctx, self.name, "the model's weights and calibration data")
        fn = next(o for o in op.walk() if isinstance(o, func.FuncOp))
        calib = env.artifacts.get("calibration")
        if calib is not None:
            names, data = list(calib["names"]), calib["data"]
            count = len(next(iter(data.values())))
            label = f"{calib.get('source', 'data')} ({count} samples)"
        else:
            names = [f"arg{i}" for i in range(len(fn.body.block.args))]
            data = synthetic_inputs(op, names, self.samples)
            label = f"synthetic ({self.samples} samples, seed 0)"
        try:
            found = self._calibrate(op, env.weights, names, data)
        except InputError as err:  # a sample the model cannot run (a token id past the vocabulary): say whose
            raise InputError(f"calibrating on {label}: {err}") from None
        ranges, ranges8, channels, kept = found.ranges, found.ranges8, found.channels, found.rows
        imported = 0
        for inner in op.walk():  # ranges a QDQ model brings (compiler/frontend/qdq.py) win over calibration
            attr = inner.attributes.get(QDQ_RANGE_ATTR)
            if isinstance(attr, FloatAttr) and inner.results:
                ranges[inner.results[0]] = float(attr.value.data)
                imported += 1
        if imported:
            label += f"; {imported} ranges from the model's QDQ nodes"
        moes = moe_ranges(op, env.weights, names, data) if any(isinstance(o, df.MoeOp) for o in op.walk()) else {}
        quantizer = Quantizer(env.weights, ranges, QUANT_MODES[self.mode], channels=channels, balance=self.balance,
                               moe_ranges=moes, rows=kept, ranges8=ranges8, rounding=self.rounding,
                               granularity=self.granularity, group=self.group,
                               layer_recipes={k: (int(b), int(g)) for k, (b, g) in
                                              (json.loads(self.layers) if self.layers else {}).items()})
        # Thousands of small torch and NumPy calls (dyadic multipliers per channel, the GELU fits): torch's thread
        # pool costs 20-50x their arithmetic on 2 busy cores (measured: 5 ms -> 0.1 ms of CPU per 3072 multipliers)
        with single_threaded():
            quantizer.run(fn)
        section = env.artifacts.setdefault("report", {}).setdefault("numerics", {})
        section.update({"quant": self.mode, "weight_bits": QUANT_MODES[self.mode], "activation_bits": 8,
                        "residual_bits": 16, "calibration": label, "calibration_statistic":
                        "max" if self.percentile >= 100 else f"p{self.percentile:g}",
                        "observer": self.observer, "balance": self.balance, "weight_rounding": self.rounding,
                        "activation_granularity": self.granularity})
        if self.group:
            section["weight_group"] = self.group
        if quantizer.choices:
            section["recipe_per_layer"] = quantizer.choices
        left = [o.layer_name() for o in op.walk() if isinstance(o, df.MoeOp)
                and not isinstance(o.input.type.get_element_type(), IntegerType)]  # type: ignore[attr-defined]
        if left:  # never silent: one line in the report and the CLI's table
            section["float_blocks"] = (f"{len(left)} MoE block(s) stay float behind a dequantize (weights not "
                                       f"constant or no calibrated range): {', '.join(left)}")


    def _calibrate(self, op: ModuleOp, weights: dict[str, np.ndarray], names: list[str],
                   data: dict[str, np.ndarray]) -> Calibration:
        """Ranges, int8 observer ranges, channel maxima and the fits' rows of ``op``'s values over ``data``
        (compiler/calibrate.py), from the process's calibration cache when this module, these weights, samples
        and options were calibrated before (compiler/calibration_cache.py); the memory check runs either way."""
        limit = MAX_ROWS_GROUPED if self.group else MAX_ROWS
        gemm_rows = self.balance == "smoothquant" or self.rounding == "gptq"
        check_simulation_memory(op, len(next(iter(data.values()))), sum(int(v.nbytes) for v in data.values()),
                                "calibration")
        key = calibration_key(op, weights, names, data, {"percentile": self.percentile, "observer": self.observer,
                                                         "gemm_rows": gemm_rows, "row_limit": limit})
        got = CALIBRATIONS.get(key, op) if key is not None else None
        if got is not None:
            return got
        channels: dict[Any, np.ndarray] = {}
        rows: dict[Any, list[np.ndarray]] = {}
        if gemm_rows:
            rows = {o.lhs: [] for o in op.walk() if isinstance(o, df.GemmOp) and isinstance(o.rhs.owner, df.WeightOp)}
        # an approximate integer GELU's output gets its calibrated affine correction (quant_recipes.gelu_correction)
        rows.update({o.input: [] for o in op.walk() if isinstance(o, df.GeluOp)
                     and o.approx_choice() not in (df.GeluApprox.EXACT, df.GeluApprox.TANH)})
        # With an attention mask the model never reads a padding row's result: ranges, channel maxima and the fits'
        # rows (GPTQ's Hessian, SmoothQuant's search, the GELU correction) are taken over real positions only.
        # Calibration data without one real position (every mask all 0) has nothing else to measure: all rows.
        masks = data.get(MASK_INPUT)
        if masks is not None and not np.any(masks):
            masks = None
        ranges8: dict[Any, float] = {}
        pct = self.percentile if self.percentile < 100 else 99.99
        observer = (lambda a: observe_range(a, self.observer, 8, pct), ranges8) if self.observer != "minmax" else None
        ranges = activation_ranges(op, weights, names, data, self.percentile, channels, rows=rows, row_masks=masks,
                                   also=observer)
        kept = {v: _subsample(r, limit) for v, r in rows.items() if r}
        found = Calibration(ranges=ranges, ranges8=ranges8, channels=channels, rows=kept)
        if key is not None:
            CALIBRATIONS.put(key, op, found)
        return found


def _subsample(samples: list[np.ndarray], limit: int = MAX_ROWS) -> list[np.ndarray]:
    """Each sample's rows, evenly thinned (deterministic) to at most ``limit`` in all, so the searches cost the same
    for any amount of calibration data."""
    total = sum(len(r) for r in samples)
    if total <= limit:
        return samples
    keep = max(1, limit // len(samples))
    return [r[np.linspace(0, len(r) - 1, min(keep, len(r))).astype(np.int64)] for r in samples]
