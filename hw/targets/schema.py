"""The one schema for target YAMLs: frozen pydantic models, unknown keys rejected, defaults filled.

A target is one of a few *kinds* (``fpga``, ``npu``, ``optical``, ``gpu``, ``asic``). Every kind shares ``name``,
``description``, ``clock_mhz``, ``offchip`` and ``energy``; each adds its own sections. Kinds register themselves in
``TARGET_KINDS`` (``@register_kind``), and the loader dispatches on the YAML's ``kind`` key, so a new kind is one new
class here plus one model in ``hw.models``; a new section is one new field with a default, and old YAMLs keep loading.

Units are in the key names where they are not obvious: ``_mhz``, ``_kb`` (KiB), ``_gb`` (GB), ``_gbps`` (GB/s, bytes
not bits), ``_w`` (watts), ``_pj`` / ``pj_per_`` (picojoules), ``_us`` (microseconds), ``_hz``, ``_nm``, ``_mm``.
Validation is strict: ``16`` is an int, ``"16"`` is not, and an int is never accepted where a bool is expected.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Annotated, Any, ClassVar, Literal, Protocol, TypeVar

from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    StrictBool,
    ValidationInfo,
    field_validator,
    model_validator,
)

from hw.targets.defaults import PJ_PER_BYTE_OFFCHIP, PJ_PER_BYTE_ONCHIP, PJ_PER_MAC, VECTOR_COSTS
from hw.targets.technology import TECH_NODES_NM, known_node

__all__ = [
    "MAX_COUNT", "MAX_QUANTITY", "MIN_POSITIVE", "Section", "TargetBase", "Target", "TARGET_KINDS", "register_kind",
    "OffChip", "Energy", "VectorCost", "Vector", "Dma", "AttentionEngine",
    "Device", "Gemm", "FpgaGemm", "Buffers", "FpgaTarget",
    "MacArrays", "NpuTarget",
    "Slm", "Camera", "Optics", "Host", "OpticalTarget",
    "Gpu", "GpuTarget",
    "Technology", "AsicGemm", "SramBuffers", "AsicArea", "AsicDynamic", "AsicLeakage", "AsicTarget",
]

MAX_COUNT = 2**31 - 1
"""Largest integer a target takes (a count of LUTs, lanes, bytes...): real ones are below 10**8."""

MAX_QUANTITY = 1e12
"""Largest number a target takes in its unit (MHz, GB/s, KiB, pJ, W, Hz...): real ones are below 10**6."""

MIN_POSITIVE = 1e-6
"""Smallest positive number a target takes: a clock, bandwidth or rate is a divisor of cycle counts, and one near
zero turns them into inf (a 1e-300 GB/s link would need more cycles than a float holds)."""


def _not_tiny(value: float) -> float:
    if value < MIN_POSITIVE:
        raise ValueError(f"must be >= {MIN_POSITIVE:g} (a smaller value makes cycle counts overflow), got {value:g}")
    return value


# Every number is finite (``.inf`` and ``.nan`` are refused) and bounded, so every model computes finite numbers.
Positive = Annotated[int, Field(gt=0, le=MAX_COUNT)]
Count = Annotated[int, Field(ge=0, le=MAX_COUNT)]
Bits = Annotated[int, Field(gt=0, le=64)]
PositiveF = Annotated[float, Field(gt=0, le=MAX_QUANTITY, allow_inf_nan=False), AfterValidator(_not_tiny)]
NonNegF = Annotated[float, Field(ge=0, le=MAX_QUANTITY, allow_inf_nan=False)]
Fraction = Annotated[float, Field(gt=0, le=1, allow_inf_nan=False), AfterValidator(_not_tiny)]
Dataflow = Literal["os", "ws", "is"]


class Section(BaseModel):
    """Base of every YAML section: immutable, strict, no unknown keys."""

    model_config = ConfigDict(frozen=True, extra="forbid", strict=True)


# --- Shared sections --------------------------------------------------------------------------------------------------


class OffChip(Section):
    """Off-chip memory: ``bandwidth_gbps`` is the total over all channels in GB/s (1e9 bytes/s)."""

    kind: Literal["hbm2", "hbm2e", "ddr4", "lpddr4x", "lpddr5", "gddr6"]
    channels: Positive = 1
    bandwidth_gbps: PositiveF
    capacity_gb: PositiveF


class Energy(Section):
    """Energy per event (pJ) and static power (W). Defaults: Horowitz ISSCC 2014, 45 nm (see ``defaults``)."""

    pj_per_mac: dict[Positive, NonNegF] = Field(default_factory=lambda: dict(PJ_PER_MAC), min_length=1)
    pj_per_byte_onchip: NonNegF = PJ_PER_BYTE_ONCHIP
    pj_per_byte_offchip: NonNegF = PJ_PER_BYTE_OFFCHIP
    static_w: NonNegF = 0.0

    def mac_pj(self, bits: int) -> float:
        """pJ for one MAC of ``bits``-bit operands: the entry for the narrowest listed width >= ``bits``; above the
        widest entry, that entry scaled by (bits / widest)^2 (a multiplier's energy grows with its area)."""
        wider = [w for w in self.pj_per_mac if w >= bits]
        if wider:
            return self.pj_per_mac[min(wider)]
        widest = max(self.pj_per_mac)
        return self.pj_per_mac[widest] * (bits / widest) ** 2


class VectorCost(Section):
    """Cost of one vector function: cycles per element on one lane, and serial cycles once per row."""

    per_element: PositiveF
    per_row: NonNegF = 0.0

    @model_validator(mode="before")
    @classmethod
    def _scalar_shorthand(cls, data: Any) -> Any:
        # ``exact: 8`` is shorthand for ``exact: {per_element: 8}``.
        if isinstance(data, (int, float)) and not isinstance(data, bool):
            return {"per_element": data}
        return data


class Vector(Section):
    """Vector / special-function units: ``count`` units of ``lanes`` lanes each.

    ``costs`` maps function kind -> approximation -> cost; a YAML lists only the entries it changes or adds, the
    rest come from ``hw.targets.defaults.VECTOR_COSTS``.
    """

    count: Positive = 1
    lanes: Positive
    costs: dict[str, dict[str, VectorCost]] = Field(default_factory=dict)

    @model_validator(mode="before")
    @classmethod
    def _merge_default_costs(cls, data: Any) -> Any:
        if not isinstance(data, Mapping):
            return data
        user = data.get("costs", {})
        if not isinstance(user, Mapping):
            return data
        merged: dict[Any, Any] = {
            kind: {approx: {"per_element": float(e), "per_row": float(r)} for approx, (e, r) in table.items()}
            for kind, table in VECTOR_COSTS.items()
        }
        for kind, table in user.items():
            if not (isinstance(table, Mapping) and isinstance(merged.get(kind), dict)):
                merged[kind] = table
                continue
            for approx, entry in table.items():
                default = merged[kind].get(approx)
                if isinstance(entry, Mapping) and default is not None:
                    entry = {**default, **entry}  # ``per_row: 40`` alone keeps the default per_element
                merged[kind][approx] = entry
        return {**data, "costs": merged}


class Dma(Section):
    """DMA engines: ``channels`` engines, each moving ``width_bits`` per cycle in bursts of ``burst_bytes``."""

    channels: Positive = 1
    width_bits: Positive = 256
    burst_bytes: Positive = 4096


# --- Kinds ------------------------------------------------------------------------------------------------------------

TARGET_KINDS: dict[str, type[TargetBase]] = {}
"""kind name -> schema class; filled by ``@register_kind``."""


_Kind = TypeVar("_Kind", bound="type[TargetBase]")


def register_kind(cls: _Kind) -> _Kind:
    """Class decorator adding a target kind to ``TARGET_KINDS`` under its ``kind`` literal (the class itself comes
    back, so the type checker keeps each kind's sections)."""
    TARGET_KINDS[cls.KIND] = cls
    return cls


class TargetBase(Section):
    """Sections every target has. ``clock_mhz`` is the clock all of the target's cycle counts are in."""

    KIND: ClassVar[str] = ""

    kind: str
    name: Annotated[str, Field(min_length=1)]
    description: Annotated[str, Field(min_length=1)]
    clock_mhz: PositiveF
    offchip: OffChip
    energy: Energy = Field(default_factory=Energy)

    @field_validator("description")
    @classmethod
    def _one_line(cls, value: str) -> str:
        if "\n" in value.strip():
            raise ValueError("must be one line (it is the summary `codesign targets` prints)")
        return value.strip()

    # What passes and the scheduler ask of any target; a kind with the hardware overrides these, so no caller
    # probes a target's sections by name.

    def systolic_array(self) -> Gemm | None:
        """The systolic MAC array integer GEMMs run on (``codesign rtl`` emits it), or None."""
        return None

    def double_buffered(self) -> bool:
        """Whether loads of the next tile overlap compute on this one (operand buffers in halves); True where the
        target models no buffers."""
        return True

    def attention_buffers(self) -> tuple[float, float, float]:
        """Bytes usable for (Q tile, K+V tiles, scores + output accumulators) of a tiled attention. Kinds without a
        modelled scratchpad (GPU, optics) get 64 KiB each, a stated default."""
        return (65536.0, 65536.0, 65536.0)

    def attention_lanes(self) -> int | None:
        """Query lanes of the reordered-attention datapath (``attention.lanes``), or None for the default."""
        return None


Target = TargetBase
"""Any validated target; narrow with ``isinstance(t, FpgaTarget)`` or ``t.kind``."""


class AttentionEngine(Section):
    """The datapath reordered attention runs on (``--attention edge-moe``): ``lanes`` query lanes sharing one K vector
    per step (Edge-MoE's ATTN_MATMUL_PARALLEL = 4). Optional: targets without the section get the default."""

    lanes: Positive = 4


class Device(Section):
    """FPGA part and its resources (counts of primitives)."""

    part: Annotated[str, Field(min_length=1)]
    lut: Positive
    ff: Positive
    dsp: Positive
    bram18: Count
    uram: Count = 0


class Gemm(Section):
    """A ``rows`` x ``cols`` systolic array of MAC PEs (SCALE-Sim's ArrayHeight x ArrayWidth). ``mapping_objective``
    is what the per-GEMM mapping search minimises first unless ``--mapping-objective`` says otherwise
    (compiler/schedule/mapping.py): ``latency`` where energy is mostly fixed power (an FPGA board), ``energy`` or
    ``edp`` where it follows access counts (the ASIC)."""

    rows: Positive
    cols: Positive
    dataflow: Dataflow = "os"
    in_bits: Bits = 8
    w_bits: Bits = 8
    acc_bits: Bits = 32
    mapping_objective: Literal["latency", "energy", "edp"] = "latency"

    @model_validator(mode="after")
    def _acc_holds_a_product(self) -> Gemm:
        if self.acc_bits < self.in_bits + self.w_bits:
            raise ValueError(
                f"acc_bits {self.acc_bits} cannot hold an in_bits x w_bits product ({self.in_bits + self.w_bits} bits)"
            )
        return self


class FpgaGemm(Gemm):
    """The FPGA's MAC array, built as ``partitions`` independent sub-arrays of ``rows / partitions`` x ``cols`` PEs
    (each one instance of the RTL array kernel, hw/rtl/systolic.py or systolic_ws.py): the folds of one GEMM, or
    whole batch items (attention heads), are dealt out to them (hw/models/fpga.py). 1: one array."""

    partitions: Positive = 1
    fold_overlap: StrictBool = False
    """True: the output-stationary array streams its folds (hw/rtl/systolic_stream.py: shadow accumulators drain a
    fold while the next one's operands enter), priced by ``hw.perf.systolic.fold_overlap_cycles``; False: the plain
    array (hw/rtl/systolic.py), SCALE-Sim's count. Only the output-stationary array has a streaming form: a ws or is
    array runs as it always does (so a dataflow sweep of a target that sets it needs no second key)."""
    execute_queue: StrictBool = False
    """True: the array is the ``cds1`` system top level's (``codesign rtl --system`` sets it): each output fold is
    one ``GEMM`` instruction on the one execute queue, followed there by its fused requant ``VEC``, and the DMA moves
    whole 16-byte beats, a segment per DRAM row; a GEMM layer is priced as that program runs
    (hw/perf/execute_queue.py), and so are the vector layers and attention ops the backend emits for the one vector
    unit, in series on the same queue (hw/perf/vec_queue.py); with ``dataflow: ws`` a weight GEMM's blocks are
    ``ceil(K / rows)`` weight-stationary ``GEMM`` s each (hw/perf/execute_queue_ws.py, the backend's
    compiler/backend/gemm_ws.py), the attention's products stay os. False: the array runs a layer's folds back to back
    with its epilogue on the vector lanes beside it."""

    @model_validator(mode="after")
    def _partitions_divide_rows(self) -> FpgaGemm:
        if self.rows % self.partitions:
            raise ValueError(f"partitions {self.partitions} must divide rows {self.rows} (equal sub-arrays; "
                             "gemm.partitions=1 builds one array)")
        return self


class Buffers(Section):
    """On-chip operand buffers, total KiB each; ``double_buffered`` splits each into two halves (one filling while the
    other is used), so a tile must fit half. ``memory`` picks BRAM or URAM blocks."""

    weight_kb: PositiveF
    act_kb: PositiveF
    out_kb: PositiveF
    double_buffered: bool = True
    memory: Literal["auto", "bram", "uram"] = "auto"


class _OperandBuffers(Protocol):
    """What the array kinds' buffer sections share: KiB per operand, and whether each is split in halves."""

    @property
    def act_kb(self) -> float: ...
    @property
    def weight_kb(self) -> float: ...
    @property
    def out_kb(self) -> float: ...
    @property
    def double_buffered(self) -> bool: ...


class _ArrayAccelerator:
    """The answers of a kind built around one systolic array with per-operand buffers (FPGA and ASIC): the array
    its ``gemm`` section describes, its ``buffers``, and its ``attention`` datapath. A plain mixin, not a section: it
    adds no field, so each kind keeps its own field types and YAML key order."""

    if TYPE_CHECKING:
        @property
        def gemm(self) -> Gemm: ...
        @property
        def buffers(self) -> _OperandBuffers: ...
        @property
        def attention(self) -> AttentionEngine: ...

    def systolic_array(self) -> Gemm | None:
        return self.gemm

    def double_buffered(self) -> bool:
        return self.buffers.double_buffered

    def attention_buffers(self) -> tuple[float, float, float]:
        """Bytes of the act / weight / out buffers a tile may fill: all of each, or one half when double-buffered."""
        half = 0.5 if self.buffers.double_buffered else 1.0
        return (self.buffers.act_kb * 1024 * half, self.buffers.weight_kb * 1024 * half,
                self.buffers.out_kb * 1024 * half)

    def attention_lanes(self) -> int | None:
        return self.attention.lanes


@register_kind
class FpgaTarget(_ArrayAccelerator, TargetBase):
    """A parametric accelerator (systolic GEMM + vector unit + buffers + DMA) on an FPGA device."""

    KIND: ClassVar[str] = "fpga"
    kind: Literal["fpga"]
    device: Device
    gemm: FpgaGemm
    vector: Vector
    buffers: Buffers
    dma: Dma = Field(default_factory=Dma)
    attention: AttentionEngine = Field(default_factory=AttentionEngine)



class MacArrays(Gemm):
    """``count`` identical ``rows`` x ``cols`` MAC arrays."""

    count: Positive = 1


@register_kind
class NpuTarget(TargetBase):
    """A fixed-function NPU: MAC arrays, vector units and ``sram_kb`` KiB of on-chip scratchpad.

    ``mode: independent`` exposes ``mac_arrays.count`` GEMM units and ``vector.count`` vector units that run
    separate ops; ``ganged`` runs every op across all arrays (all vector units) at once, as one unit of each kind.
    """

    KIND: ClassVar[str] = "npu"
    kind: Literal["npu"]
    mode: Literal["independent", "ganged"] = "independent"
    mac_arrays: MacArrays
    vector: Vector
    sram_kb: PositiveF
    dma: Dma = Field(default_factory=Dma)
    attention: AttentionEngine = Field(default_factory=AttentionEngine)

    def systolic_array(self) -> Gemm | None:
        return self.mac_arrays

    def attention_buffers(self) -> tuple[float, float, float]:
        """A third of the scratchpad each."""
        third = self.sram_kb * 1024 / 3
        return (third, third, third)

    def attention_lanes(self) -> int | None:
        return self.attention.lanes


class Slm(Section):
    """A spatial light modulator or DMD: ``width`` x ``height`` pixels, ``refresh_hz`` frames/s, ``bits`` per pixel."""

    width: Positive
    height: Positive
    refresh_hz: PositiveF
    bits: Bits = 8


class Camera(Section):
    """The detector: resolution, frame rate, ADC resolution and the ADC/readout time added to every frame."""

    width: Positive
    height: Positive
    fps: PositiveF
    adc_bits: Bits = 8
    adc_us: NonNegF = 0.0


class Optics(Section):
    """The 4f system: wavelength, lens focal length, total optical-side power while running (laser + SLMs +
    camera, W), whether signed kernels take two passes (ReLU(k), ReLU(-k)), and guard pixels between tiles."""

    wavelength_nm: PositiveF
    focal_length_mm: PositiveF
    power_w: NonNegF
    pseudo_negative: bool = True
    tile_guard_px: Count = 0


class Host(Section):
    """The electronic host: a small vector unit (channel sums, non-linear ops) and the link to SLMs and camera."""

    vector: Vector
    link_gbps: PositiveF


@register_kind
class OpticalTarget(TargetBase):
    """A free-space 4f optical correlator with an electronic host (ConvShareViT formulation)."""

    KIND: ClassVar[str] = "optical"
    kind: Literal["optical"]
    slm: Slm
    filter: Slm
    camera: Camera
    optics: Optics
    host: Host


class Gpu(Section):
    """Data-sheet peaks (dense TOPS / TFLOPS), board power, and the achievable fractions of peak compute and memory
    bandwidth; ``launch_us`` is a fixed per-kernel overhead."""

    peak_int8_tops: PositiveF
    peak_fp16_tops: PositiveF
    tdp_w: PositiveF
    compute_efficiency: Fraction = 0.7
    memory_efficiency: Fraction = 0.8
    launch_us: NonNegF = 0.0


@register_kind
class GpuTarget(TargetBase):
    """A GPU as a roofline baseline."""

    KIND: ClassVar[str] = "gpu"
    kind: Literal["gpu"]
    gpu: Gpu


# --- ASIC -------------------------------------------------------------------------------------------------------------
# Component figures are at the 45 nm reference node (hw.targets.technology) and scaled to ``technology.node_nm``;
# every default is cited in docs/ASIC.md.


class Technology(Section):
    """Process node (nm, one with published scaling figures) and supply voltage (V)."""

    node_nm: int
    vdd: PositiveF = 0.9

    @field_validator("node_nm")
    @classmethod
    def _known_node(cls, value: int) -> int:
        if not known_node(value):
            raise ValueError(f"{value} is not a node with published scaling figures "
                             f"(known: {', '.join(str(n) for n in TECH_NODES_NM)})")
        return value


class AsicGemm(Gemm):
    """The systolic array, and what an idle PE costs (``idle_pe``, docs/ASIC.md):

    ``toggle``  every PE's multiplier, adder and registers switch every cycle of the run (no gating: SCALE-Sim v3's
                Accelergy flow charges every PE a MAC per cycle: scalesim-project/scale-sim-v2,
                rundir-accelergy/create_action_count.py);
    ``clocked`` idle PEs' datapaths are operand-gated, but every PE's registers are clocked every cycle of the run;
    ``gated``   the array's clock is gated outside GEMMs and idle PEs are operand-gated: registers clock only
                while the array runs a GEMM.
    """

    idle_pe: Literal["toggle", "clocked", "gated"] = "toggle"
    # An ASIC's energy follows its access counts, so its GEMMs are mapped for energy-delay product by default: a
    # latency ranking re-reads operands whenever the array hides it in time, and every re-read is DRAM energy.
    mapping_objective: Literal["latency", "energy", "edp"] = "edp"


class SramBuffers(Section):
    """Per-operand SRAM buffers (KiB): left operand (activations), right operand (weights), accumulators. Each is
    built of ``bank_kb`` banks read ``word_bits`` at a time; an access costs what one bank's access costs."""

    act_kb: PositiveF
    weight_kb: PositiveF
    out_kb: PositiveF
    bank_kb: PositiveF = 32.0
    word_bits: Positive = 64
    double_buffered: bool = True

    @model_validator(mode="after")
    def _consistent(self) -> SramBuffers:
        if self.word_bits % 8:
            raise ValueError(f"word_bits {self.word_bits} is not a whole number of bytes")
        for name in ("act_kb", "weight_kb", "out_kb"):
            size = getattr(self, name)
            banks = size / self.bank_kb
            if abs(banks - round(banks)) > 1e-9 or round(banks) < 1:
                raise ValueError(f"{name} {size:g} KiB is not a whole number of bank_kb {self.bank_kb:g} KiB banks")
        return self


class AsicArea(Section):
    """Component areas at 45 nm (um^2), scaled to the target node: an 8x8-bit multiplier (grows with in x w bits), a
    32-bit adder (grows with acc_bits), one register bit, one SRAM bit (cell and periphery) and one vector lane.
    Defaults: the Accelergy Aladdin plug-in's 1 ns rows (logic) and 600 lambda^2 per SRAM bit (docs/ASIC.md)."""

    mult8_um2: PositiveF = 396.875
    add32_um2: PositiveF = 278.0
    register_um2_per_bit: PositiveF = 5.98
    sram_um2_per_bit: PositiveF = 1.215
    vector_lane_um2: PositiveF = 7202.08


class AsicDynamic(Section):
    """Dynamic energies at 45 nm, 0.9 V (pJ), scaled to the target node and vdd: an 8x8-bit multiply, a 32-bit add,
    one register bit clocked, one 32-bit vector-lane operation, and one ``word_bits``-wide SRAM access by bank size
    (KiB -> pJ per 64 bits, log-log interpolated, CACTI-like growth with capacity). Defaults: the Aladdin plug-in's
    1 ns rows for logic, Horowitz ISSCC 2014 for SRAM (docs/ASIC.md)."""

    mult8_pj: NonNegF = 0.7925
    add32_pj: NonNegF = 0.21
    register_pj_per_bit: NonNegF = 0.009
    vector_op_pj: NonNegF = 12.89
    sram_pj_per_64b: dict[PositiveF, NonNegF] = Field(
        default_factory=lambda: {8.0: 10.0, 32.0: 20.0, 1024.0: 100.0}, min_length=1)


class AsicLeakage(Section):
    """Leakage power density at 45 nm, 0.9 V (mW per mm^2 of logic or SRAM), scaled to the target node."""

    mw_per_mm2: NonNegF = 11.7


@register_kind
class AsicTarget(_ArrayAccelerator, TargetBase):
    """A systolic-array ASIC whose area and energy scale with the design: array, per-operand SRAM buffers, vector
    lanes, off-chip DRAM, at a technology node. ``energy.pj_per_byte_offchip`` is the DRAM interface's figure (it
    does not scale with the logic node); ``energy.static_w`` is fixed power beside the modelled leakage."""

    KIND: ClassVar[str] = "asic"
    kind: Literal["asic"]
    technology: Technology
    gemm: AsicGemm
    vector: Vector
    buffers: SramBuffers
    area: AsicArea = Field(default_factory=AsicArea)
    dynamic: AsicDynamic = Field(default_factory=AsicDynamic)
    leakage: AsicLeakage = Field(default_factory=AsicLeakage)
    dma: Dma = Field(default_factory=Dma)
    attention: AttentionEngine = Field(default_factory=AttentionEngine)

    @field_validator("buffers")
    @classmethod
    def _holds_a_fold(cls, value: SramBuffers, info: ValidationInfo) -> SramBuffers:
        # An output-stationary fold drains rows x cols accumulators into the out buffer at once (into one half
        # when double buffered); smaller, the array would stall on every fold, which no cycle count here models.
        gemm = info.data.get("gemm")
        if isinstance(gemm, AsicGemm):
            need = gemm.rows * gemm.cols * gemm.acc_bits / 8 / 1024 * (2 if value.double_buffered else 1)
            if value.out_kb < need:
                halves = " in each half (double_buffered)" if value.double_buffered else ""
                raise ValueError(f"out_kb {value.out_kb:g} KiB cannot hold one fold of {gemm.rows}x{gemm.cols} "
                                 f"{gemm.acc_bits}-bit accumulators{halves}: needs {need:g} KiB; "
                                 f"raise buffers.out_kb or shrink gemm.rows / gemm.cols")
        return value
