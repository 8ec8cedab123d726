"""The parametric FPGA accelerator: one systolic GEMM array, vector lanes, operand buffers and DMA engines.

Timing is the RTL's (``hw.rtl``): every unit ``codesign rtl`` emits for a design is priced with that kernel's exact
``predicted_cycles`` (the cocotb tests pin it to simulation) for the parameters ``codesign rtl`` chooses, so the
model, the RTL and its manifest agree (tests/test_model_matches_rtl.py). Resources come from
``hw.models.resources``, fitted to Yosys synthesis of the same RTL: each vector lane holds the units a compile's work
needs (``design_units``: the RTL unit of every pair below, ``RTL_UNIT_FITS``, and the generic ⚠ vector ALU for
work priced from the cost table or shuffled on the lanes), or, asked without a workload, the default I-ViT lane.

GEMM (unit ``gemm``)
    ``batch x passes`` invocations of the array (a batch item, or one operand-slice pass of a product wider than
    the array, is one invocation, as ``codesign rtl``'s manifest counts them). Each takes SCALE-Sim's count for
    the target's dataflow (``hw.perf.systolic``) plus the readout that SCALE-Sim's count leaves out, the RTL
    array kernel's ``readout_cycles`` (``ARRAY_KERNELS``, from the kernel registry): the output-stationary array
    (``hw.rtl.systolic``) hands the last fold's ``rows`` result rows over one per cycle after its last MAC
    (earlier folds read out under the next fold), the weight-stationary one its last row one cycle late; a
    dataflow without an RTL array adds nothing::

        compute_cycles = batch * passes * (systolic_cycles(m, n, k, rows, cols, dataflow) + drain)
        drain          = readout_cycles  (os: rows, ws: 1; = the kernel's predicted_cycles - SCALE-Sim's count)

    ``compute_cycles`` is what the scheduler holds the array for; ``detail["drain_cycles"]`` says how much of it
    is readout, so that the report gives SCALE-Sim's count (a layer's ``compute_cycles``) and the readout
    (``drain_cycles``) apart (compiler/summary.py). ``detail["cycles_per_item"]`` is SCALE-Sim's count. (The
    array keeps no state between folds, so a driver streaming batch items back to back would hide all readouts
    but the last; the manifest and this model count each item as its own invocation.)

    ``gemm.partitions = P`` builds the array as P independent sub-arrays of ``rows / P`` x ``cols`` (P instances
    of the same RTL kernel; same PEs and DSPs, P weight and output buffer ports, hw.models.resources). A GEMM's
    invocations are dealt out whole (batch items: attention heads in parallel) or each invocation's folds are
    (a skinny product's), whichever ends first (``detail["partition_split"]``)::

        by_items = ceil(batch * passes / P) * (systolic_cycles(m, n, k, rows / P, cols, dataflow) + drain)
        by_folds = batch * passes * (ceil(folds / P) * cycles_per_fold - 1 + drain)

    each sub-array's share being one invocation of its kernel (``predicted_cycles`` for its folds). ``codesign
    rtl`` emits the ``rows / P`` x ``cols`` kernel with P instances and lists the busiest sub-array's invocations
    (:meth:`FpgaModel.subarray_share`), so its manifest and this model agree; the system top level
    (``codesign rtl --system``) has one array and compiles with P = 1.

    ``gemm.fold_overlap: true`` runs the array whose folds stream (``hw.rtl.systolic_stream``, ``STREAM_KERNEL``):
    ``systolic_cycles`` becomes ``fold_overlap_cycles`` (``(folds - 1) * max(k, rows) + k + rows + cols - 3``) and
    the readout one cycle, so an invocation takes that kernel's ``predicted_cycles``; split by folds, a sub-array
    streams its ``ceil(folds / P)`` folds (``streamed_folds_cycles``).
Vector (unit ``vector``, ``vector.count`` of them; with ``gemm.execute_queue`` the system's vector layers, a
requant, an integer residual add, I-LayerNorm, ShiftGELU and an island's quantize, are instead one task each on
unit ``gemm`` for the cycles ``hw.perf.vec_queue.layer_cycles`` gives, loads and stores included)
    ``vector.lanes`` copies of the RTL row unit, each taking whole rows round-robin, so R rows of n elements
    take the unit's cycles for ``ceil(R / lanes)`` rows (``L = lanes``)::

        softmax   shiftmax       ceil(R/L) * (3n + 16) - 1                  hw.rtl.shiftmax
        softmax   online         ceil(R/L) * (2n + 17)                      hw.rtl.online_softmax
        gelu      shiftgelu      n ceil(R/L) + 3                            hw.rtl.shiftgelu, per_element=1
                                                                            (max(x, 0) offset, streaming)
        gelu      shiftgelu-row  2 n ceil(R/L) + 9                          hw.rtl.shiftgelu, per_element=0
                                                                            (I-ViT's row max: load, then issue)
        layernorm ilayernorm     ceil(R/L) * (3n + b + 10 v + 31) - 1       hw.rtl.ilayernorm, eps=1 (b = input bits,
                                                                            16 for a float input, as codesign rtl;
                                                                            v = var_bits + 1: the epsilon's bit)
        router    exact          ceil(T/L) * experts  (T tokens = rows)     hw.rtl.topk_router
        requant   exact          R * ceil(n / cols) + 1                     hw.rtl.requant: one unit of gemm.cols
                                                                            lanes (codesign rtl's), a row per beat

    The target's ``vector.costs`` entries for these pairs are not used on an FPGA (the RTL is the unit); every
    other (kind, approximation) is priced from the cost table (``hw.models.base.vector_cost``,
    ``hw.targets.defaults.VECTOR_COSTS``). The compiler names the pair: ``--softmax log2q`` arrives as
    ``shiftmax``, the online softmax of flash / edge-moe attention as ``online`` (compiler/schedule/), and
    ``--gelu shiftgelu`` / ``shiftgelu-row`` as themselves (the per-element and the row-max ShiftGELU unit).
Moves
    Shuffles on the vector lanes, one byte per lane per cycle; other moves are DMA bursts.
"""

from __future__ import annotations

from collections.abc import Collection, Iterable, Mapping
from dataclasses import asdict
from types import MappingProxyType
from typing import Any

from hw.errors import InputError
from hw.isa.memory import memory_sizes
from hw.models.base import (
    Cost,
    buffer_tiles,
    ceil_div,
    dma_move,
    gemm_onchip_bytes,
    move_on_vector,
    offchip_rate,
    operand_passes,
    vector_cost,
)
from hw.models.energy import event_energy_mj
from hw.models.resources import (
    DEFAULT_CALIBRATION,
    DEFAULT_LANE_UNITS,
    VECTOR_ALU,
    FpgaCalibration,
    estimate,
    lane_cost,
    unit_cost,
)
from hw.perf import execute_queue, execute_queue_ws, vec_queue
from hw.perf.systolic import fold_counts, fold_overlap_cycles, systolic_cycles
from hw.perf.workload import GemmWork, MoveWork, VectorWork, Work
from hw.rtl.kernels import array_kernels, invocation_cycles, kernel_class, vector_roles
from hw.targets.schema import FpgaTarget

__all__ = ["FpgaModel", "SHUFFLE_MOVES", "RTL_VECTOR_UNITS", "RTL_UNIT_FITS", "ARRAY_KERNELS", "STREAM_KERNEL"]

SHUFFLE_MOVES = frozenset({"transpose", "gather", "scatter", "permute", "sort"})
"""Moves that reorder elements run on the vector lanes; the rest (copy, concat, slice ...) are DMA bursts."""

ARRAY_KERNELS: Mapping[str, str] = MappingProxyType(array_kernels())
"""GEMM dataflow -> the ``hw.rtl`` array kernel that times it (the registry's arrays; none for ``is`` yet)."""

STREAM_KERNEL = "systolic_gemm_stream"
"""The output-stationary array whose folds stream (``hw.rtl.systolic_stream``): what ``gemm.fold_overlap`` runs."""

_ROLES = vector_roles()

RTL_VECTOR_UNITS: Mapping[tuple[str, str], tuple[str, Mapping[str, int]]] = MappingProxyType(
    {pair: (kernel, role.fixed) for pair, (kernel, role) in _ROLES.items()})
"""(vector kind, approximation) -> (the ``hw.rtl`` kernel that runs it, the kernel parameters the pair fixes, as
``codesign rtl`` sets them): the registry's vector roles (``hw.rtl.kernels.vector_roles``)."""

RTL_UNIT_FITS: Mapping[tuple[str, str], str] = MappingProxyType({pair: role.fit for pair, (_, role) in _ROLES.items()})
"""(vector kind, approximation) -> the unit's name among calibration.json's per-unit fits (``hw.rtl.calibrate``
synthesizes each role's kernel with its fixed parameters under that name): what a lane running the pair costs."""

_ILAYERNORM_MAX_BITS = 24  # ILayerNorm's widest integer input; wider elements are floats, fed as 16 bits
_ILAYERNORM_FLOAT_BITS = 16

# Which key to change when a component overflows the device.
_KEYS = {
    "gemm": "gemm.rows or gemm.cols",
    "vector": "vector.lanes",
    "dma": "dma.channels",
    "control": "a smaller device.part",
}


#: ``VectorWork.quant`` -> the system's vector layer (``hw.perf.vec_queue.layer_cycles``): an island's quantize runs
#: as threshold layers, an integer residual add as ``requant_add`` (per tensor or per channel), a requant with one
#: multiplier streams, an integer product is ``VEC mul`` and a requant.
_ROLE_LAYERS = {"island": "threshold", "add": "add", "add_channel": "add_channel", "tensor": "requant_tensor",
                "mul": "product"}


class FpgaModel:
    """Cost, resource and energy model of an ``FpgaTarget``."""

    def __init__(self, target: FpgaTarget, calibration: FpgaCalibration = DEFAULT_CALIBRATION) -> None:
        self.target = target
        self.calibration = calibration

    def units(self) -> dict[str, int]:
        """One GEMM array, ``vector.count`` vector units, one DMA engine group."""
        return {"gemm": 1, "vector": self.target.vector.count, "dma": 1}

    def offchip_bytes_per_cycle(self) -> float:
        """The smaller of the memory's bandwidth and what the DMA channels can move per cycle, bytes/cycle."""
        return offchip_rate(self.target)

    def peak_macs_per_cycle(self) -> float:
        """rows x cols."""
        return float(self.target.gemm.rows * self.target.gemm.cols)

    def cost(self, work: Work) -> Cost:
        """GEMM -> ``gemm``; vector -> ``vector`` (an RTL unit where there is one); moves -> ``dma`` or ``vector``
        (shuffles). Cycles as in the module docstring."""
        t = self.target
        if isinstance(work, GemmWork):
            return self._gemm_cost(work)
        if t.gemm.execute_queue and not isinstance(work, GemmWork) and work.quant == "island_member":
            # the system runs no instruction for an island's dequantize and moves: the quantize's threshold layers
            # read the integer source through a DMA window (compiler/backend/model.py, _threshold)
            return Cost(unit="gemm", compute_cycles=0, detail={"execute_queue": True, "island_member": True})
        if isinstance(work, VectorWork):
            queued = self._execute_queue_vector(work) if t.gemm.execute_queue else None
            if queued is not None:
                return queued
            if not _on_rtl_unit(work):
                return vector_cost(t, t.vector, work)
            return self._rtl_vector_cost(*RTL_VECTOR_UNITS[(work.kind, work.approx)], work)
        if isinstance(work, MoveWork):
            if t.gemm.execute_queue and work.quant == "transposed":
                cycles = vec_queue.transposed_copy_cycles(work.rows, work.row_length, max(1, work.bits // 8),
                                                          self._system_machine())
                return Cost(unit="gemm", compute_cycles=cycles, onchip_bytes=2 * work.bytes,
                            detail={"execute_queue": True, "vector_layer": "transposed_copy"})
            if work.kind in SHUFFLE_MOVES:
                return move_on_vector(t.vector, work)
            return dma_move(t, work, bursts=ceil_div(work.bytes, t.dma.burst_bytes))
        raise TypeError(f"not a work item: {work!r}")

    def _gemm_cost(self, work: GemmWork) -> Cost:
        t = self.target
        g = t.gemm
        parts = g.partitions
        rows = g.rows // parts  # each sub-array's rows (one sub-array = the whole array when partitions = 1)
        passes = operand_passes(work, g)
        invocations = work.batch * passes
        overlap = g.fold_overlap and g.dataflow == "os"
        if overlap:  # the streaming array (hw.rtl.systolic_stream): the skew once per invocation, not per fold
            per_item = fold_overlap_cycles(work.m, work.n, work.k, rows, g.cols)
            kernel: str | None = STREAM_KERNEL
        else:
            per_item = systolic_cycles(work.m, work.n, work.k, rows, g.cols, g.dataflow)
            kernel = ARRAY_KERNELS.get(g.dataflow)
        drain = kernel_class(kernel).readout_cycles({"rows": rows, "cols": g.cols}) if kernel else 0
        half = 0.5 if t.buffers.double_buffered else 1.0
        caps = tuple(kb * 1024 * half for kb in (t.buffers.act_kb, t.buffers.weight_kb, t.buffers.out_kb))
        folds = _product(fold_counts(work.m, work.n, work.k, rows, g.cols, g.dataflow))
        split, cycles, readouts = "none", invocations * (per_item + drain), invocations
        if parts > 1:
            # Sub-arrays: each invocation's folds dealt out to them, or whole invocations (batch items: attention
            # heads), whichever ends first; the busiest sub-array's invocations of its RTL kernel.
            split, share, readouts = self.subarray_share(work)
            cycles = readouts * self._invocation_cycles(share)
        detail: dict[str, Any] = {
            "folds": work.batch * folds,
            "cycles_per_item": per_item,
            "passes": passes,
            "drain_cycles": readouts * drain,
            "utilization": work.macs / ((cycles - readouts * drain) * g.rows * g.cols) if cycles else 0.0,
            "dataflow": g.dataflow,
        }
        if overlap:
            detail["fold_overlap"] = True
        if parts > 1:
            detail.update(partitions=parts, partition_split=split)
        tiles = buffer_tiles(work, caps)
        if g.execute_queue and g.dataflow == "ws" and work.weights_static and parts == 1:
            cycles, tiles = self._execute_queue_gemm_ws(work, invocations, detail)
        elif g.execute_queue and g.dataflow in ("os", "ws") and parts == 1 and not overlap:
            # ws: the backend runs a product without a weight operand (attention) output stationary
            cycles, tiles = self._execute_queue_gemm(work, invocations, detail)
        return Cost(
            unit="gemm",
            compute_cycles=cycles,
            tiles=tiles,
            onchip_bytes=gemm_onchip_bytes(work, rows, g.cols, g.dataflow),
            detail=detail,
        )

    def _execute_queue_gemm(self, work: GemmWork, invocations: int, detail: dict[str, Any]) -> tuple[int, int]:
        """``gemm.execute_queue`` (the system top level, ``hw.perf.execute_queue``): ``(cycles, tiles)`` of
        ``work`` run as one ``GEMM`` instruction per fold, and ``detail`` filled with what the layer's pricing
        needs: ``fused_requant_cycles`` (a requant fused behind the product runs per fold after its ``GEMM`` on the
        same queue), ``lead_bus_bytes`` / ``load_bus_bytes`` (the loads in bus bytes, 16 per DMA beat: what the first
        fold needs, and all of them), ``array_rows`` / ``array_cols``. One tile per fold, as the program loads,
        computes and stores; each fold's readout is inside its instruction."""
        g = self.target.gemm
        fold_cycles = execute_queue.gemm_fold_cycles(work.k, g.rows, g.cols)
        row_folds, col_folds = fold_counts(work.m, work.n, work.k, g.rows, g.cols, "os")
        # a fold on the execute queue: its GEMM and the requant the backend fuses behind it
        per_fold = fold_cycles + execute_queue.requant_fold_cycles(g.rows)
        traffic = execute_queue.gemm_traffic(work.m, work.n, work.k, g.rows, g.cols, ceil_div(work.in_bits, 8),
                                             ceil_div(work.w_bits, 8), per_fold)
        detail.update(
            execute_queue=True,
            cycles_per_item=row_folds * col_folds * fold_cycles,
            drain_cycles=0,  # each fold's readout is part of its instruction's cycles
            fused_requant_cycles=invocations * execute_queue.fused_requant_cycles(work.m, work.n, g.rows, g.cols),
            lead_bus_bytes=execute_queue.BEAT_BYTES * traffic.lead,
            load_bus_bytes=invocations * execute_queue.BEAT_BYTES * traffic.total,
            array_rows=g.rows,
            array_cols=g.cols,
            **{f"system_{key}": value for key, value in asdict(self._system_machine()).items()},
        )
        cycles = invocations * row_folds * col_folds * fold_cycles
        detail["utilization"] = work.macs / (cycles * g.rows * g.cols) if cycles else 0.0
        return cycles, invocations * traffic.folds

    def _execute_queue_gemm_ws(self, work: GemmWork, invocations: int, detail: dict[str, Any]) -> tuple[int, int]:
        """``gemm.execute_queue`` with ``gemm.dataflow: ws``: a weight GEMM as ``compiler/backend/gemm_ws.py``'s
        program runs it (``hw.perf.execute_queue_ws``: blocks of ``mt`` output rows, one ws ``GEMM`` per weight
        tile); ``detail`` as :meth:`_execute_queue_gemm` fills it, ``ws_block_rows`` added."""
        g = self.target.gemm
        mt = execute_queue_ws.ws_block_rows(work.m, memory_sizes(self.target, "gemm.execute_queue").acc_rows)
        per_item = execute_queue_ws.ws_layer_gemm_cycles(work.m, work.n, work.k, g.rows, g.cols, mt)
        traffic = execute_queue_ws.ws_gemm_traffic(work.m, work.n, work.k, g.rows, g.cols, mt,
                                                   ceil_div(work.in_bits, 8), ceil_div(work.w_bits, 8))
        detail.update(
            execute_queue=True,
            cycles_per_item=per_item,
            drain_cycles=0,  # each tile's readout is part of its instruction's cycles
            fused_requant_cycles=invocations * execute_queue_ws.ws_fused_requant_cycles(work.m, work.n, g.cols, mt),
            lead_bus_bytes=execute_queue.BEAT_BYTES * traffic.lead,
            load_bus_bytes=invocations * execute_queue.BEAT_BYTES * traffic.total,
            array_rows=g.rows,
            array_cols=g.cols,
            ws_block_rows=mt,
            **{f"system_{key}": value for key, value in asdict(self._system_machine()).items()},
        )
        cycles = invocations * per_item
        detail["utilization"] = work.macs / (cycles * g.rows * g.cols) if cycles else 0.0
        return cycles, invocations * traffic.folds

    def _system_machine(self) -> vec_queue.Machine:
        """The system top level's vector unit and memories for this target (``hw.isa.memory_sizes``)."""
        sizes = memory_sizes(self.target, "gemm.execute_queue")
        return vec_queue.Machine(lanes=sizes.cols, width=max(sizes.rows, sizes.cols), acc_rows=sizes.acc_rows,
                                 sp_rows=sizes.sp_rows, in_bits=sizes.in_bits)

    def _execute_queue_vector(self, work: VectorWork) -> Cost | None:
        """``gemm.execute_queue``: ``work`` as the system top level runs it (``hw.perf.vec_queue``), a vector layer
        of row blocks on the one execute queue, its loads and stores inside its cycles; None for work it does not
        price there (the lanes' cost then applies)."""
        if work.quant == "rope":  # one layer of its own: the add is its requant_add (compiler/backend/rope.py)
            cycles = vec_queue.rope_cycles(work.rows, work.row_length, self._system_machine(), self.target.gemm.rows) \
                if work.kind == "mul" else 0
            return Cost(unit="gemm", compute_cycles=cycles, onchip_bytes=2 * ceil_div(work.elements * work.bits, 8),
                        detail={"execute_queue": True, "vector_layer": "rope"})
        n = work.row_length or (ceil_div(work.elements, work.rows) if work.rows > 1 else 0)
        rows = ceil_div(work.elements, n) if n else 0
        if work.kind in ("layernorm", "gelu") and work.approx not in ("ilayernorm", "shiftgelu"):
            return None
        # an integer op's role names its layer (_ROLE_LAYERS); other element-wise work (the host's float prologue)
        # is priced on the lanes
        kind = _ROLE_LAYERS.get(work.quant, work.kind)
        if work.kind == "add" and kind == "add" and work.quant != "add":
            return None
        mach = self._system_machine()
        cycles = vec_queue.layer_cycles(kind, rows, n, work.in_bits or 32, work.out_bits or work.bits, mach,
                                        work.row_kernel)
        if cycles is None:
            return None
        return Cost(unit="gemm", compute_cycles=cycles, onchip_bytes=2 * ceil_div(work.elements * work.bits, 8),
                    detail={"execute_queue": True, "vector_layer": kind, "row_length": n, "rows": rows})

    def subarray_share(self, work: GemmWork) -> tuple[str, dict[str, int], int]:
        """How the busiest of ``gemm.partitions`` sub-arrays runs ``work`` (module docstring): ``(split, sub_work,
        count)``, ``count`` invocations of its RTL kernel (one sub-array's geometry) on ``sub_work`` (``m``, ``n``,
        ``k``), which take that kernel's ``predicted_cycles`` each. Split ``"items"``: whole invocations (batch
        items, operand passes) dealt round-robin, ``sub_work`` the product itself. Split ``"folds"``: each
        invocation's folds dealt out, ``ceil(folds / P)`` per sub-array, streamed as one invocation; ``sub_work``
        is a product with exactly that many folds (one fold of rows, the share's folds across ``n``: the kernel's
        count depends on its folds, not on which output tiles they are). ``"none"`` on one array."""
        g = self.target.gemm
        parts, rows = g.partitions, g.rows // g.partitions
        invocations = work.batch * operand_passes(work, g)
        whole = {"m": work.m, "n": work.n, "k": work.k}
        if parts == 1:
            return "none", whole, invocations
        rf, cf = fold_counts(work.m, work.n, work.k, rows, g.cols, g.dataflow)
        share = -(-(rf * cf) // parts)
        # One fold's worth of the reduced dimension (os: m rows; ws/is: k rows), share folds across n (or m).
        folded = ({"m": rows, "n": share * g.cols, "k": work.k} if g.dataflow == "os" else
                  {"m": work.m, "n": share * g.cols, "k": rows} if g.dataflow == "ws" else
                  {"m": share * g.cols, "n": work.n, "k": rows})
        by_items = -(-invocations // parts) * self._invocation_cycles(whole)
        by_folds = invocations * self._invocation_cycles(folded)
        if by_items < by_folds:
            return "items", whole, -(-invocations // parts)
        return "folds", folded, invocations

    def _invocation_cycles(self, work: dict[str, int]) -> int:
        """Cycles of one invocation of one (sub-)array on ``work`` (``m``, ``n``, ``k``): the count of the array
        the target runs (streaming or not) plus its kernel's readout, i.e. that kernel's ``predicted_cycles``."""
        g = self.target.gemm
        rows = g.rows // g.partitions
        m, n, k = work["m"], work["n"], work["k"]
        if g.fold_overlap and g.dataflow == "os":
            count, kernel = fold_overlap_cycles(m, n, k, rows, g.cols), STREAM_KERNEL
        else:
            count, kernel = systolic_cycles(m, n, k, rows, g.cols, g.dataflow), ARRAY_KERNELS.get(g.dataflow)
        drain = kernel_class(kernel).readout_cycles({"rows": rows, "cols": g.cols}) if kernel else 0
        return count + drain

    def _rtl_vector_cost(self, kernel: str, fixed: Mapping[str, int], work: VectorWork) -> Cost:
        """``work`` on ``vector.lanes`` copies of RTL ``kernel`` (with the ``fixed`` parameters), rows dealt
        round-robin (module docstring)."""
        lanes = self.target.vector.lanes
        n = ceil_div(work.elements, work.rows)
        per_lane = ceil_div(work.rows, lanes)
        detail: dict[str, object] = {"rtl": kernel, **fixed, "lanes": lanes, "row_length": n,
                                     "rows_per_lane": per_lane}
        if kernel == "requant":  # one unit, gemm.cols values per beat, rows never share a beat
            cols = self.target.gemm.cols
            cycles = invocation_cycles(kernel, {"lanes": cols}, {"beats": work.rows * ceil_div(n, cols)})
            detail.update(lanes=cols, rows_per_lane=work.rows)
        elif kernel == "ilayernorm":
            in_bits = work.bits if work.bits <= _ILAYERNORM_MAX_BITS else _ILAYERNORM_FLOAT_BITS
            cycles = invocation_cycles(kernel, {"c": n, "in_bits": in_bits, **fixed}, {"rows": per_lane})
            detail["in_bits"] = in_bits
        elif kernel == "topk_router":
            cycles = invocation_cycles(kernel, {"experts": n}, {"tokens": per_lane})
        else:
            cycles = invocation_cycles(kernel, {"n": n, **fixed}, {"rows": per_lane})
        return Cost(unit="vector", compute_cycles=cycles, onchip_bytes=2 * ceil_div(work.elements * work.bits, 8),
                    detail=detail)

    def design_units(self, work: Iterable[Work]) -> tuple[str, ...]:
        """The units each vector lane holds to run ``work`` (sorted names for ``hw.models.resources.unit_cost``): the
        RTL unit of every vector pair ``cost`` runs on one (``RTL_UNIT_FITS``), and ``VECTOR_ALU`` when some vector
        work is priced from the cost table or a move is shuffled on the lanes. GEMMs and DMA moves need none."""
        units: set[str] = set()
        for item in work:
            if isinstance(item, VectorWork):
                units.add(RTL_UNIT_FITS[(item.kind, item.approx)] if _on_rtl_unit(item) else VECTOR_ALU)
            elif isinstance(item, MoveWork) and item.kind in SHUFFLE_MOVES:
                units.add(VECTOR_ALU)
        return tuple(sorted(units))

    def resource_breakdown(self, units: Collection[str] | None = None) -> dict[str, dict[str, float]]:
        """resource -> component -> count with ``units`` in every vector lane (``None``: the default lane; see
        ``hw.models.resources.estimate``)."""
        return estimate(self.target, self.calibration, units)

    def resources(self, units: Collection[str] | None = None) -> dict[str, tuple[float, float]]:
        """resource -> (used, available) for lut, ff, dsp, bram18, uram, with ``units`` in every vector lane
        (``design_units``; ``None``: the default lane)."""
        dev = self.target.device
        available = {"lut": dev.lut, "ff": dev.ff, "dsp": dev.dsp, "bram18": dev.bram18, "uram": dev.uram}
        return {r: (sum(parts.values()), float(available[r])) for r, parts in self.resource_breakdown(units).items()}

    def resource_detail(self, units: Collection[str] | None = None) -> dict[str, Any]:
        """The report's explanation of ``resources(units)``: the vector lane count, the units one lane holds with
        their LUT / FF / DSP each (``None``: the default lane's units, charged at its fitted total ``per_lane``),
        a lane's total, and every resource's count per component."""
        v = self.target.vector
        held = DEFAULT_LANE_UNITS if units is None else tuple(units)
        return {
            "vector_lanes": v.count * v.lanes,
            "lane_units": {unit: unit_cost(unit, self.calibration) for unit in held},
            "per_lane": lane_cost(units, self.calibration),
            "components": self.resource_breakdown(units),
        }

    def check_fits(self, units: Collection[str] | None = None) -> None:
        """Raise ``InputError`` naming the resource overflowed the most (by ratio), its biggest user and the key to
        change; other overflowing resources are listed after it. ``units``: as for ``resources``."""
        resources = self.resources(units)
        over = {r: used / max(available, 1e-9) for r, (used, available) in resources.items() if used > available}
        if not over:
            return
        resource = max(over, key=lambda r: over[r])
        used, available = resources[resource]
        parts = self.resource_breakdown(units)[resource]
        culprit = max(parts, key=lambda c: parts[c])
        key = _KEYS.get(culprit) or culprit  # buffers.weight_kb ... are keys already
        others = [r.upper() for r in over if r != resource]
        also = f" ({', '.join(others)} over too)" if others else ""
        raise InputError(
            f"{self.target.name}: the design does not fit {self.target.device.part}: {resource.upper()} needs "
            f"{used:,.0f} of {available:,.0f} (over by {used - available:,.0f}; {culprit} uses {parts[culprit]:,.0f}); "
            f"reduce {key}{also}"
        )

    def energy(
        self, macs_by_bits: Mapping[int, int], onchip_bytes: int, offchip_bytes: int, cycles: int
    ) -> dict[str, float]:
        """mJ: ``mac``, ``onchip``, ``offchip``, ``static``."""
        t = self.target
        return event_energy_mj(t.energy, t.clock_mhz, macs_by_bits, onchip_bytes, offchip_bytes, cycles)


def _on_rtl_unit(work: VectorWork) -> bool:
    """Whether ``cost`` runs ``work`` on an RTL unit (else on the cost table's generic lanes)."""
    return (work.kind, work.approx) in RTL_VECTOR_UNITS and work.elements > 0 and work.rows > 0


def _product(pair: tuple[int, int]) -> int:
    return pair[0] * pair[1]
