"""Mapping search per GEMM: dataflow, orientation, loop order and buffer tiles, pruned exhaustive, cached.

A *mapping* says how one GEMM (``hw.perf.workload.GemmWork``: ``batch`` products of an m x k by a k x n matrix)
runs on the target's systolic array:

``dataflow``   which operand stays in the PEs (os / ws / is, ``hw.perf.systolic``), from the dataflows the target
               can run per layer (:func:`mapping_space`);
``transpose``  computing C^T = B^T A^T instead, so n takes the array side m had (a non-square array, or a skinny
               GEMM, can fold better one way round); the array runs the same kernel with its operands swapped and
               the output is written transposed;
``order``      the buffer loop order: ``"mn"`` walks tiles of m outermost (the left operand's tile stays while the
               right one streams past it), ``"nm"`` tiles of n outermost;
``tile_m``, ``tile_n``  the buffer tiles (whole array folds, as the RTL driver feeds them), sized so that a tile of
               each operand and of the accumulators fits its buffer (half of it when double buffered).

Cycles are the target's exact systolic count for the chosen dataflow and orientation (``systolic_cycles``, the same
closed form the FPGA model and the RTL share; ``fold_overlap_cycles`` on an array whose folds stream, the FPGA's
``gemm.fold_overlap``), so every mapping is one the array executes. Loop order and tiles do
not change the array's cycles (the array keeps nothing between folds); they decide how often an operand that does
not fit its buffer is re-read from off-chip (``reread_bytes``), how many pieces the scheduler double-buffers
(``tiles``), and the rows of the output completed at a time (``block_rows``: what a consumer can stream,
``hw.perf.scheduler``). The search ranks by the roofline time of a batch item alone (array cycles, or its off-chip
transfer with the re-reads, whichever is longer), then by block rows (the one whose output streams earliest), then
by re-read bytes and tiles.

Objective (``--mapping-objective``, default the target's ``gemm.mapping_objective``): ``latency`` ranks as above;
``energy`` ranks first by the energy of the batch item run alone under the mapping, ``edp`` by that energy times its
roofline time, then as ``latency`` does. A candidate's energy is priced by the report's own function
(``hw.models.run_energy.run_energy_mj``: on the ASIC its SRAM accesses per operand as the orientation runs them,
PE-cycles and leakage over its roofline time, DRAM bytes with its re-reads), so the mapping an energy objective
picks is the cheapest by the figures the report then shows. Why an objective and not one ranking: a compute-bound
array hides re-reads in time, so the latency ranking is free to re-read (and on FPGAs that buys earlier streaming),
while every re-read byte costs DRAM energy.

Method: the loop-order-first enumeration of ZigZag's LOMA (Symons et al., "LOMA: Fast Auto-Scheduling on DNN
Accelerators through Loop-Order-based Memory Allocation", AICAS 2021) over the small space a fixed systolic array
leaves (its spatial unrolling is the dataflow), with Timeloop's pruning of tile sizes that overflow a buffer
(Parashar et al., "Timeloop: A Systematic Approach to DNN Accelerator Evaluation", ISPASS 2019). The space has at
most 3 dataflows x 2 orientations x 2 orders x (fold-multiple tiles of m x of n), so the search is exhaustive over
it; results are cached per (GEMM shape, space with its objective, energy figures where the objective prices
energy). When no tile fits the buffers (a fold of one operand's rows, all of k, overflows), the reduction streams
through in pieces and every strip that does not fit is re-read once per tile of the other operand.

Sub-arrays: a target built as ``partitions`` independent sub-arrays (the FPGA's ``gemm.partitions``: P instances
of its RTL array kernel, counted by the resource model) is searched on one sub-array's geometry, its folds or whole
batch items (attention heads) dealt out to the P sub-arrays as the model deals them (hw/models/fpga.py). Whether to
partition is a design choice (``--set gemm.partitions=4``, ``codesign fit``), not a per-layer one: the RTL's
sub-arrays cannot fuse back into one array for a layer.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from functools import lru_cache
from typing import Any

from hw.errors import InputError
from hw.models.base import AcceleratorModel
from hw.models.run_energy import run_energy_mj, total_mj
from hw.perf.systolic import fold_overlap_cycles, streamed_folds_cycles, systolic_cycles
from hw.perf.workload import GemmWork

__all__ = ["Mapping", "MappingSpace", "EnergyPricer", "mapping_space", "energy_pricer", "search", "mapped_work",
           "mapping_objective", "MAPPING_MODES", "MAPPING_OBJECTIVES"]

MAPPING_MODES = ("search", "fixed")
"""``--mapping``: ``search`` (the default) picks a mapping per GEMM; ``fixed`` prices every GEMM as the model does
by itself: the target's dataflow, the GEMM as written, the fewest tiles that fit the buffers."""

MAPPING_OBJECTIVES = ("latency", "energy", "edp")
"""What the search minimises per GEMM first (module docstring); a target's ``gemm.mapping_objective`` is one."""


@dataclass(frozen=True)
class MappingSpace:
    """What the target lets a GEMM's mapping choose: the array (``partitions`` sub-arrays of ``rows`` x ``cols``),
    the dataflows it runs per layer,
    the bytes a tile of the left operand, the right operand and the accumulators may take (``caps``), the
    off-chip bandwidth (bytes/cycle) that prices re-reads against cycles, the ``objective`` the search
    minimises first (``MAPPING_OBJECTIVES``; part of the search's cache key with the space), and whether the
    output-stationary array streams its folds (``fold_overlap``, the FPGA's ``gemm.fold_overlap``), and whether
    a GEMM runs only as written (``as_written``: no transposed mapping; the system top level's weight-stationary
    program, ``gemm.execute_queue`` with ``gemm.dataflow: ws``, whose backend keeps ``K`` on the array rows)."""

    rows: int
    cols: int
    dataflows: tuple[str, ...]
    caps: tuple[int, int, int]
    bytes_per_cycle: float = float("inf")
    partitions: int = 1
    objective: str = "latency"
    fold_overlap: bool = False
    as_written: bool = False


class EnergyPricer:
    """The energy (mJ) of one GEMM run alone on ``model``, by the report's function (``run_energy_mj``). Equal, and
    hashed alike, for models of equal targets, so the search's cache serves every design point with the same
    figures and no point is priced with another's."""

    def __init__(self, model: AcceleratorModel) -> None:
        self.model = model
        self.key = (type(model).__name__, model.target.model_dump_json())

    def __hash__(self) -> int:
        return hash(self.key)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, EnergyPricer) and other.key == self.key

    def __call__(self, run: GemmWork, offchip_bytes: int, cycles: int) -> float:
        """mJ of ``run`` (the GEMM as the array runs it) moving ``offchip_bytes`` over ``cycles``."""
        cost = self.model.cost(run)
        return total_mj(run_energy_mj(self.model, (run,), {max(run.in_bits, run.w_bits): run.macs},
                                      cost.onchip_bytes, offchip_bytes, cycles))


@dataclass(frozen=True)
class Mapping:
    """One GEMM's mapping (module docstring); ``cycles`` per batch item (SCALE-Sim's count), ``reread_bytes`` per
    batch item, ``tiles`` per batch item, ``block_rows`` the output rows completed at a time."""

    dataflow: str
    transpose: bool
    order: str
    tile_m: int
    tile_n: int
    cycles: int
    reread_bytes: int
    tiles: int
    block_rows: int

    def label(self) -> str:
        """A short text form for the IR, the report and the trace, e.g. ``os mn 64x768``."""
        return f"{self.dataflow}{'^T' if self.transpose else ''} {self.order} {self.tile_m}x{self.tile_n}"

    def detail(self) -> dict[str, Any]:
        """The fields a priced layer's ``detail`` carries (report, trace)."""
        return {"mapping": self.label(), "mapping_dataflow": self.dataflow, "mapping_transpose": self.transpose,
                "mapping_order": self.order, "tile_m": self.tile_m, "tile_n": self.tile_n,
                "reread_bytes": self.reread_bytes}


def mapping_space(model: Any, objective: str | None = None) -> MappingSpace | None:
    """The mapping space of ``model``'s target: its one array and its dataflow (every bundled schema fixes one
    dataflow per design, so a per-layer choice would price an array the target does not have), its operand buffers
    (half of each when double buffered), its off-chip bandwidth, and ``objective`` (None: the target's
    ``gemm.mapping_objective``, else latency). None for a target without a systolic array."""
    target = model.target
    gemm = getattr(target, "gemm", None)
    if objective is None:
        objective = str(getattr(gemm, "mapping_objective", "latency"))
    if objective not in MAPPING_OBJECTIVES:
        raise InputError(f"--mapping-objective {objective}: unknown objective (valid: {', '.join(MAPPING_OBJECTIVES)})")
    rows, cols, dataflow = (getattr(gemm, a, None) for a in ("rows", "cols", "dataflow"))
    if not (isinstance(rows, int) and isinstance(cols, int) and isinstance(dataflow, str)):
        return None
    buffers = getattr(target, "buffers", None)
    half = 0.5 if getattr(buffers, "double_buffered", True) else 1.0
    kbs = [getattr(buffers, key, None) for key in ("act_kb", "weight_kb", "out_kb")]
    if all(isinstance(kb, (int, float)) for kb in kbs):
        caps = tuple(max(1, int(kb * 1024 * half)) for kb in kbs)  # type: ignore[operator]
    else:
        sram = getattr(target, "sram_kb", None)
        each = int(sram * 1024 * half / 3) if isinstance(sram, (int, float)) else 1 << 40
        caps = (each, each, each)
    parts = getattr(gemm, "partitions", 1)
    return MappingSpace(rows // parts, cols, (dataflow,), caps,  # type: ignore[arg-type]
                        float(model.offchip_bytes_per_cycle()), parts, objective,
                        bool(getattr(gemm, "fold_overlap", False)) and dataflow == "os",
                        bool(getattr(gemm, "execute_queue", False)) and dataflow == "ws")


def mapping_objective(options: Any) -> str | None:
    """The objective a compile's options ask for (``--mapping-objective``), or None for the target's own."""
    chosen = options.get("mapping-objective", "target")
    return None if chosen in (None, "target") else str(chosen)


def energy_pricer(model: AcceleratorModel, space: MappingSpace | None) -> EnergyPricer | None:
    """What :func:`search` prices candidates' energy with: None when ``space`` ranks by latency alone (so every
    latency search shares the cache whatever the target's energy figures)."""
    return EnergyPricer(model) if space is not None and space.objective != "latency" else None


def mapped_work(work: GemmWork, mapping: Mapping) -> GemmWork:
    """The GEMM the array runs under ``mapping``: ``work`` with its operands swapped when transposed."""
    if not mapping.transpose:
        return work
    return GemmWork(m=work.n, n=work.m, k=work.k, batch=work.batch, in_bits=work.w_bits, w_bits=work.in_bits,
                    acc_bits=work.acc_bits, weights_static=work.weights_static)


def _tile_sizes(extent: int, fold: int) -> list[int]:
    """Whole-fold tile sizes of a dimension, largest first: ``extent``, then halvings down to one fold."""
    sizes = [extent]
    t = -(-extent // fold) * fold
    while t > fold:
        t = -(-(t // 2) // fold) * fold
        if t < sizes[-1]:
            sizes.append(t)
    return sizes


def _cycles(m: int, n: int, k: int, batch: int, space: MappingSpace, dataflow: str) -> tuple[int, bool]:
    """Array cycles per batch item (SCALE-Sim's count, readouts aside) of an m x n x k product on ``space``, and
    whether its sub-arrays take whole batch items rather than folds (hw/models/fpga.py deals them out the same)."""
    overlap = space.fold_overlap and dataflow == "os"
    per_item = (fold_overlap_cycles(m, n, k, space.rows, space.cols) if overlap
                else systolic_cycles(m, n, k, space.rows, space.cols, dataflow))
    parts = space.partitions
    if parts == 1:
        return per_item, False
    rf, cf = -(-m // space.rows), -(-n // space.cols)
    if dataflow != "os":
        rf, cf = -(-k // space.rows), -(-(n if dataflow == "ws" else m) // space.cols)
    folds = rf * cf
    if overlap:
        by_folds = streamed_folds_cycles(-(-folds // parts), k, space.rows, space.cols)
    else:
        by_folds = -(-folds // parts) * ((per_item + 1) // folds) - 1
    by_items = -(-batch // parts) * per_item // batch
    return (by_items, True) if by_items < by_folds else (by_folds, False)


def _candidates(work: GemmWork, space: MappingSpace, dataflows: tuple[str, ...], transposes: tuple[bool, ...],
                orders: tuple[str, ...]) -> list[Mapping]:
    m, n, k = work.m, work.n, work.k
    a_bytes = m * k * work.in_bits // 8
    b_bytes = k * n * work.w_bits // 8
    cap_a, cap_b, cap_c = space.caps
    found: list[Mapping] = []
    for dataflow in dataflows:
        for transpose in transposes:
            am, an = (n, m) if transpose else (m, n)
            cycles, by_items = _cycles(am, an, k, work.batch, space, dataflow)
            # m's and n's fold: the whole array side each is on (all sub-arrays' rows: they take folds in turn).
            fold_m = space.cols if transpose else space.rows * space.partitions
            fold_n = space.rows * space.partitions if transpose else space.cols
            for tm in _tile_sizes(m, fold_m if dataflow == "os" else 1 if dataflow == "ws" else fold_m):
                for tn in _tile_sizes(n, fold_n):
                    # Timeloop-style pruning: a tile that overflows a buffer is no mapping.
                    if (-(-tm * k * work.in_bits // 8) > cap_a or -(-k * tn * work.w_bits // 8) > cap_b
                            or -(-tm * tn * work.acc_bits // 8) > cap_c):
                        continue
                    mt, nt = -(-m // tm), -(-n // tn)
                    for order in orders:
                        # The outer operand's tile stays; the inner one is re-read once per outer tile unless whole.
                        if order == "mn":
                            reread = (mt - 1) * b_bytes if nt > 1 else 0
                        else:
                            reread = (nt - 1) * a_bytes if mt > 1 else 0
                        # Output rows complete in order: fold by fold within a tile holding all of n (row folds
                        # outermost), else tile by tile of m when m's tiles are outermost, else only at the end.
                        block = m
                        if dataflow == "os" and not transpose and not by_items:
                            if nt == 1:
                                block = min(tm, space.rows * space.partitions)
                            elif order == "mn":
                                block = tm
                        found.append(Mapping(dataflow, transpose, order, tm, tn, cycles, reread, mt * nt, block))
    return found


def _ranker(work: GemmWork, space: MappingSpace, pricer: EnergyPricer | None) -> Any:
    """Rank by the roofline time of one batch item alone (array cycles, or the transfer of its operands, output and
    re-reads, whichever is longer), then by block rows (the earlier a consumer can stream), re-read bytes and tiles;
    ``energy`` and ``edp`` objectives first by the item's energy (``pricer``: operands, output and re-reads off
    chip, over the roofline time), or that energy times the roofline time."""
    a, b, c = (work.m * work.k * work.in_bits // 8, work.k * work.n * work.w_bits // 8,
               work.m * work.n * work.acc_bits // 8)

    def rank(mp: Mapping) -> tuple[float, ...]:
        offchip = a + b + c + mp.reread_bytes
        time = max(float(mp.cycles), offchip / space.bytes_per_cycle)
        latency = (time, mp.block_rows, mp.reread_bytes, mp.tiles)
        if pricer is None or space.objective == "latency":
            return latency
        energy = pricer(mapped_work(work, mp), offchip, math.ceil(time))
        return (energy if space.objective == "energy" else energy * time, *latency)

    return rank


def _fallback(work: GemmWork, space: MappingSpace, dataflow: str, transpose: bool) -> list[Mapping]:
    """One-fold tiles in either order when no tile fits the buffers (an operand's k rows alone overflow): the
    reduction then streams through in pieces, as the model's ``buffer_tiles`` counts them. Each output fold reads
    a strip of each operand (its fold of rows or columns, all of k): the inner operand's strips are re-read once per
    outer tile, and the outer one's too, once per inner tile, where its strip does not fit its buffer."""
    am, an = (work.n, work.m) if transpose else (work.m, work.n)
    tm, tn = (space.cols, space.rows) if transpose else (space.rows, space.cols)
    tm, tn = min(tm, work.m), min(tn, work.n)
    mt, nt = -(-work.m // tm), -(-work.n // tn)
    cycles, _ = _cycles(am, an, work.k, work.batch, space, dataflow)
    a, b = work.m * work.k * work.in_bits // 8, work.k * work.n * work.w_bits // 8
    a_fits = -(-tm * work.k * work.in_bits // 8) <= space.caps[0]
    b_fits = -(-work.k * tn * work.w_bits // 8) <= space.caps[1]
    mn = (mt - 1) * b + (0 if a_fits else (nt - 1) * a)
    nm = (nt - 1) * a + (0 if b_fits else (mt - 1) * b)
    return [Mapping(dataflow, transpose, order, tm, tn, cycles, reread, mt * nt, work.m)
            for order, reread in (("mn", mn), ("nm", nm))]


@lru_cache(maxsize=4096)
def search(work: GemmWork, space: MappingSpace, pricer: EnergyPricer | None = None) -> Mapping:
    """The best mapping of one batch item of ``work`` on ``space`` (module docstring) by ``space.objective``,
    cached per (shape, space with its objective, energy figures). ``pricer`` (:func:`energy_pricer`) is needed by
    the ``energy`` and ``edp`` objectives."""
    if space.objective != "latency" and pricer is None:
        raise ValueError(f"the {space.objective} objective needs an energy pricer (energy_pricer(model, space))")
    item = GemmWork(m=work.m, n=work.n, k=work.k, batch=work.batch if space.partitions > 1 else 1,
                    in_bits=work.in_bits, w_bits=work.w_bits, acc_bits=work.acc_bits,
                    weights_static=work.weights_static)
    transposes = (False,) if space.as_written else (False, True)
    found = _candidates(item, space, space.dataflows, transposes, ("mn", "nm"))
    rank = _ranker(item, space, pricer)
    if not found:
        return min((mp for d in space.dataflows for t in transposes for mp in _fallback(item, space, d, t)),
                   key=rank)
    return min(found, key=rank)
