"""hw.models.fpga: SCALE-Sim GEMM timing + the RTL readout, buffer tiles, vector (RTL units and table) and DMA
costs, calibrated resources (lanes sized to the units a workload needs), fit check, energy. Exact agreement with
every RTL kernel: test_model_matches_rtl.py."""

from __future__ import annotations

from typing import Any

import pytest

from hw.errors import InputError
from hw.models import FpgaModel, build_model
from hw.models.base import WorkloadSizedModel
from hw.models.fpga import RTL_UNIT_FITS, RTL_VECTOR_UNITS
from hw.models.resources import (
    DEFAULT_CALIBRATION,
    DEFAULT_LANE_UNITS,
    VECTOR_ALU,
    FpgaCalibration,
    lane_cost,
    load_calibration,
    load_unit_costs,
    unit_cost,
)
from hw.perf.workload import GemmWork, MoveWork, VectorWork
from hw.targets import load_target


def model(name: str = "fpga-u280", **overrides: str) -> FpgaModel:
    m = build_model(load_target(name, {k.replace("__", "."): v for k, v in overrides.items()}))
    assert isinstance(m, FpgaModel)
    return m


def test_units_bandwidth_peak() -> None:
    m = model()
    assert m.units() == {"gemm": 1, "vector": 1, "dma": 1}
    assert m.peak_macs_per_cycle() == 64 * 64
    # HBM gives 460e9 / 300e6 = 1533 B/cycle, but 32 DMA channels x 256 bit move only 1024.
    assert m.offchip_bytes_per_cycle() == 1024
    assert model("fpga-zcu102").offchip_bytes_per_cycle() == pytest.approx(19.2e9 / 300e6)


@pytest.mark.parametrize(("dataflow", "cycles"), [("os", 20_351), ("ws", 22_399)])
def test_gemm256_matches_scalesim(dataflow: str, cycles: int) -> None:
    """SCALE-Sim v3, 32x32 array, GEMM 256^3: OS 20,351 cycles, WS 22,399 (docs/SOURCES.md [18])."""
    # SCALE-Sim never overlaps folds: the plain array (the bundled target streams them, gemm.fold_overlap).
    m = model(gemm__rows="32", gemm__cols="32", gemm__dataflow=dataflow, gemm__fold_overlap="false",
              gemm__partitions="1")
    cost = m.cost(GemmWork(256, 256, 256))
    # On top of SCALE-Sim's count the RTL array's readout (test_model_matches_rtl.py): the output-stationary array
    # reads the last fold's 32 result rows out.
    drain = cost.detail["drain_cycles"]
    assert (cost.unit, cost.detail["cycles_per_item"], cost.compute_cycles) == ("gemm", cycles, cycles + drain)
    assert drain == 32 if dataflow == "os" else drain <= 1
    batched = m.cost(GemmWork(256, 256, 256, batch=3))
    assert (batched.compute_cycles, batched.detail["drain_cycles"]) == (3 * (cycles + drain), 3 * drain)


def test_gemm_tiles_follow_buffer_halves() -> None:
    # act 512 KiB, weight 2048 KiB, out 512 KiB, double buffered -> halves of 256 Ki, 1 Mi, 256 Ki bytes.
    # ViT-B QKV: A = 197*768 = 151,296 B (1 tile), B = 768*2304 = 1,769,472 B (2), C = 197*2304*4 = 1,815,552 B (7).
    cost = model().cost(GemmWork(197, 2304, 768))
    assert cost.tiles == 7
    assert cost.detail["folds"] == 13 * 36 and cost.detail["dataflow"] == "os"  # folds of 16 x 64 sub-arrays
    assert model(gemm__partitions="1").cost(GemmWork(197, 2304, 768)).detail["folds"] == 4 * 36
    assert model(buffers__double_buffered="false").cost(GemmWork(197, 2304, 768)).tiles == 4
    assert model().cost(GemmWork(197, 64, 64, batch=12)).tiles == 12


def test_gemm_onchip_traffic_os() -> None:
    # OS on 64x64: A re-read per column fold (ceil(128/64) = 2), B per row fold (ceil(100/64) = 2), C once (int32).
    cost = model(gemm__partitions="1").cost(GemmWork(100, 128, 32))
    assert cost.onchip_bytes == 100 * 32 * 2 + 32 * 128 * 2 + 100 * 128 * 4


def test_wide_operands_take_several_passes() -> None:
    m = model(gemm__partitions="1")  # one array: the passes run one after another
    narrow = m.cost(GemmWork(64, 64, 64))
    wide = m.cost(GemmWork(64, 64, 64, in_bits=16, w_bits=16))
    assert wide.compute_cycles == 4 * narrow.compute_cycles and wide.detail["passes"] == 4
    # each pass is one invocation of the array, read out on its own (the streaming array's last row: one cycle)
    assert wide.detail["drain_cycles"] == 4 * narrow.detail["drain_cycles"] == 4


def test_vector_costs_from_the_table() -> None:
    m = model()
    # 12 heads x 197 x 197 scores, 64 lanes: ceil(465,708 / 64) = 7,277 groups; 2,364 rows -> 37 row groups.
    exact = m.cost(VectorWork("softmax", 12 * 197 * 197, rows=12 * 197, approx="exact"))
    softer = m.cost(VectorWork("softmax", 12 * 197 * 197, rows=12 * 197, approx="softermax"))
    assert (exact.unit, exact.compute_cycles) == ("vector", 7_277 * 8 + 37 * 24)
    assert softer.compute_cycles == 7_277 * 4 + 37 * 24
    assert m.cost(VectorWork("add", 1000)).compute_cycles == 16
    assert m.cost(VectorWork("add", 1000)).onchip_bytes == 2000


def test_vector_rtl_units_take_rows_round_robin() -> None:
    m = model()
    # 2,364 rows on 64 copies of the unit: ceil(2364 / 64) = 37 rows each.
    shift = m.cost(VectorWork("softmax", 12 * 197 * 197, rows=12 * 197, approx="shiftmax"))
    assert (shift.unit, shift.compute_cycles) == ("vector", 37 * (3 * 197 + 16) - 1)
    assert shift.detail["rtl"] == "shiftmax" and shift.detail["rows_per_lane"] == 37
    online = m.cost(VectorWork("softmax", 12 * 197 * 197, rows=12 * 197, approx="online"))
    assert online.compute_cycles == 37 * (2 * 197 + 17)
    # 197 tokens x 3072: ceil(197 / 64) = 4 rows per lane; the per-element ShiftGELU streams them (latency 4), the
    # published row-max one loads and then issues each row (latency 10).
    gelu = m.cost(VectorWork("gelu", 197 * 3072, rows=197, approx="shiftgelu"))
    assert (gelu.compute_cycles, gelu.detail["rtl"], gelu.detail["per_element"]) == (3072 * 4 + 3, "shiftgelu", 1)
    gelu_row = m.cost(VectorWork("gelu", 197 * 3072, rows=197, approx="shiftgelu-row"))
    assert (gelu_row.compute_cycles, gelu_row.detail["per_element"]) == (2 * 3072 * 4 + 9, 0)
    # c = 768, 8-bit input: var_bits = bitlen(768 * 255^2) = 26, one more for the epsilon; a float input is fed as
    # 16 bits (bitlen(768 * 65535^2) = 42, plus one).
    assert m.cost(VectorWork("layernorm", 197 * 768, rows=197, approx="ilayernorm", bits=8)).compute_cycles == (
        4 * (3 * 768 + 8 + 10 * 27 + 31) - 1)
    assert m.cost(VectorWork("layernorm", 197 * 768, rows=197, approx="ilayernorm", bits=32)).compute_cycles == (
        4 * (3 * 768 + 16 + 10 * 43 + 31) - 1)
    # topk router: one token per lane per `experts` cycles; requant: one 64-lane unit (gemm.cols), a row per beat.
    assert m.cost(VectorWork("router", 197 * 16, rows=197)).compute_cycles == 4 * 16
    assert m.cost(VectorWork("requant", 197 * 100, rows=197)).compute_cycles == 197 * 2 + 1
    # A target's cost-table entry does not change an RTL unit; lanes do.
    assert model(vector__costs__softmax__shiftmax="1").cost(
        VectorWork("softmax", 64 * 10, rows=64, approx="shiftmax")).compute_cycles == 3 * 10 + 16 - 1
    assert model(vector__lanes="16").cost(
        VectorWork("softmax", 64 * 10, rows=64, approx="shiftmax")).compute_cycles == 4 * (3 * 10 + 16) - 1


def test_unknown_vector_function_or_approximation() -> None:
    with pytest.raises(InputError) as info:
        model().cost(VectorWork("softmax", 10, approx="magic"))
    assert str(info.value) == (
        "fpga-u280: no vector cost for softmax approximation 'magic' (known: exact, online, shiftmax, softermax, "
        "ibert); add vector.costs.softmax.magic to the target"
    )
    with pytest.raises(InputError) as info:
        model().cost(VectorWork("swish", 10))
    assert str(info.value).startswith("fpga-u280: no vector cost for function 'swish' (known: add, gelu, layernorm, ")
    assert model(vector__costs__swish__exact="3").cost(VectorWork("swish", 640)).compute_cycles == 30


def test_moves() -> None:
    m = model()
    dma = m.cost(MoveWork("concat", 10_000))
    assert (dma.unit, dma.compute_cycles, dma.detail["bursts"]) == ("dma", 10, 3)  # 1024 B/cycle, 4 KiB bursts
    shuffle = m.cost(MoveWork("transpose", 10_000))
    assert (shuffle.unit, shuffle.compute_cycles) == ("vector", 157)  # a byte per lane per cycle, 64 lanes


def test_resources_use_the_bundled_yosys_fit() -> None:
    fitted = load_calibration()
    assert set(fitted) == {"lut_per_pe", "ff_per_pe_bit", "lut_per_lane", "ff_per_lane", "dsp_per_lane"}
    assert all(getattr(DEFAULT_CALIBRATION, name) == value for name, value in fitted.items())
    assert FpgaCalibration() == DEFAULT_CALIBRATION
    assert DEFAULT_CALIBRATION.lut_per_dma == 1500.0  # not fitted: the hand default stays


def test_resources_u280() -> None:
    cal = DEFAULT_CALIBRATION
    res = model(gemm__partitions="1").resources()
    pes, lanes = 64 * 64, 64
    # two int8 MACs per DSP48E2, plus each vector lane's multipliers (shiftmax, shiftgelu, ilayernorm, requant)
    assert res["dsp"] == (pes / 2 + lanes * cal.dsp_per_lane, 9024)
    # weight 2048 KiB / 32 KiB = 64 URAM; act 512 KiB -> 16; out 512 KiB -> 16, but its 64 x 32-bit port needs 29.
    assert res["uram"] == (64 + 16 + 29, 960)
    # the bundled 4 sub-arrays: the same DSPs; each hands over its own 64 x 32-bit rows: the out port needs 114
    bundled = model().resources()
    assert bundled["dsp"] == res["dsp"] and bundled["uram"] == (64 + 16 + 114, 960)
    assert res["bram18"] == (32 * 2, 4032)  # DMA FIFOs only
    assert res["lut"] == (pytest.approx(pes * cal.lut_per_pe + lanes * cal.lut_per_lane + 32 * 1500 + 5000), 1303680)
    # operands, accumulator and the streaming array's shadow accumulator (gemm.fold_overlap) per PE
    assert res["ff"] == (pytest.approx(pes * cal.ff_per_pe_bit * (8 + 8 + 32 + 32) + lanes * cal.ff_per_lane + 32 * 2000
                                       + 8000), 2607360)
    model().check_fits()
    model("fpga-zcu102").check_fits()
    # the hand defaults, for comparison, are far lighter per lane (400 LUT, 1 DSP)
    hand = FpgaModel(model().target, FpgaCalibration(lut_per_pe=16, ff_per_pe_bit=1, lut_per_lane=400,
                                                     ff_per_lane=400, dsp_per_lane=1))
    assert hand.resources()["lut"][0] == 64 * 64 * 16 + 64 * 400 + 32 * 1500 + 5000


def test_every_rtl_vector_unit_has_a_fit_of_its_kernel() -> None:
    """RTL_UNIT_FITS names, for each pair an RTL unit runs, the calibration fit synthesized from that kernel with
    the parameters the pair fixes (so --gelu shiftgelu-row is charged the row-max unit, not the per-element one)."""
    import json
    from importlib import resources

    doc = json.loads(resources.files("hw.models").joinpath("calibration.json").read_text())
    assert RTL_UNIT_FITS.keys() == RTL_VECTOR_UNITS.keys()
    for pair, name in RTL_UNIT_FITS.items():
        kernel, fixed = RTL_VECTOR_UNITS[pair]
        points = [p for p in doc["points"] if p["unit"] == name]
        assert points and all(p["kernel"] == kernel and fixed.items() <= p["params"].items() for p in points), pair
    assert set(DEFAULT_LANE_UNITS) == {"shiftmax", "shiftgelu", "ilayernorm", "requant"}


def test_unit_costs_are_the_fits_fixed_logic() -> None:
    units = load_unit_costs()
    assert set(units) == set(RTL_UNIT_FITS.values())
    assert units["shiftgelu-row"] == (4123.857, 1096.571, 5.0)  # the intercept: its row buffer is the buffer model's
    assert units["requant"] == (763.667, 80.0, 4.0)  # requant is fitted per lane: its slope
    assert unit_cost("online_softmax") == {"lut": 1248.286, "ff": 200.571, "dsp": 6.0}
    assert unit_cost(VECTOR_ALU) == {"lut": 400.0, "ff": 400.0, "dsp": 1.0}  # the ⚠ default generic ALU
    # The default lane's fitted figures are its units' sum (calibration.json rounds them to 0.1).
    lane = lane_cost(DEFAULT_LANE_UNITS)
    assert lane == pytest.approx({"lut": DEFAULT_CALIBRATION.lut_per_lane, "ff": DEFAULT_CALIBRATION.ff_per_lane,
                                  "dsp": DEFAULT_CALIBRATION.dsp_per_lane}, abs=0.05)
    assert lane_cost(()) == {"lut": 0.0, "ff": 0.0, "dsp": 0.0}
    with pytest.raises(ValueError) as info:
        unit_cost("softmax9000")
    assert str(info.value) == (
        "no resource fit for vector unit 'softmax9000' (calibrated: ilayernorm, online_softmax, requant, shiftgelu, "
        "shiftgelu-row, shiftmax, topk_router, vector_alu)")


def test_design_units_follow_what_cost_runs() -> None:
    m = model()
    assert isinstance(m, WorkloadSizedModel)
    rows: dict[str, Any] = {"elements": 64 * 10, "rows": 64}
    assert m.design_units([VectorWork("softmax", approx="shiftmax", **rows),
                           VectorWork("gelu", approx="shiftgelu-row", **rows)]) == ("shiftgelu-row", "shiftmax")
    assert m.design_units([VectorWork("softmax", approx="online", **rows), VectorWork("router", **rows),
                           VectorWork("requant", **rows), VectorWork("layernorm", approx="ilayernorm", **rows)]) == (
        "ilayernorm", "online_softmax", "requant", "topk_router")
    # Cost-table work (exact softmax, adds) and shuffles run on the generic ALU; GEMMs and DMA moves need no lane
    # unit; an RTL pair with no rows is priced from the table, so it needs the ALU too.
    assert m.design_units([VectorWork("softmax", **rows), VectorWork("add", 100)]) == (VECTOR_ALU,)
    assert m.design_units([MoveWork("transpose", 100)]) == (VECTOR_ALU,)
    assert m.design_units([VectorWork("softmax", elements=0, rows=0, approx="shiftmax")]) == (VECTOR_ALU,)
    assert m.design_units([GemmWork(64, 64, 64), MoveWork("concat", 100)]) == ()


def test_resources_of_a_workloads_lane() -> None:
    m = model()
    lanes, default = 64, m.resources()
    gemm_etc = {r: default[r][0] - lanes * lane_cost(None)[r] for r in ("lut", "ff", "dsp")}
    for units in ((), (VECTOR_ALU,), ("shiftgelu-row", "shiftmax", VECTOR_ALU)):
        res = m.resources(units)
        for r in ("lut", "ff", "dsp"):
            assert res[r] == (pytest.approx(gemm_etc[r] + lanes * sum(unit_cost(u)[r] for u in units)),
                              default[r][1])
        assert res["uram"] == default["uram"] and res["bram18"] == default["bram18"]
    # --gelu shiftgelu-row against shiftgelu: the fitted difference per lane, 64 lanes.
    row, elem = m.resources(("shiftgelu-row",)), m.resources(("shiftgelu",))
    assert row["dsp"][0] - elem["dsp"][0] == 64 * (5 - 4)
    assert row["lut"][0] - elem["lut"][0] == pytest.approx(64 * (4123.857 - 1468.571))
    detail = m.resource_detail(("shiftmax", VECTOR_ALU))
    assert detail["vector_lanes"] == 64 and list(detail["lane_units"]) == ["shiftmax", VECTOR_ALU]
    assert detail["per_lane"] == pytest.approx({"lut": 951.286 + 400, "ff": 183.571 + 400, "dsp": 4.0})
    assert detail["components"]["dsp"]["vector"] == 64 * 4
    assert list(m.resource_detail()["lane_units"]) == list(DEFAULT_LANE_UNITS)  # target only: the default lane
    # A design that holds no integer unit fits where the default lane does not (16 lanes x 14 DSPs on top).
    tight = model("fpga-zcu102", gemm__rows="70", gemm__cols="70")
    with pytest.raises(InputError, match="DSP needs 2,674 of 2,520"):
        tight.check_fits()
    tight.check_fits((VECTOR_ALU,))


def test_resources_wide_operands_and_bram() -> None:
    m = model("fpga-zcu102", gemm__in_bits="16", gemm__w_bits="16")
    assert m.resources()["dsp"][0] == 16 * 16 + 16 * DEFAULT_CALIBRATION.dsp_per_lane  # one MAC per DSP at 16 bit
    assert m.resources()["uram"] == (0, 0)
    # zcu102 buffers live in BRAM18 (2 KiB usable each): 256 + 128 + 128 KiB -> 128 + 64 + 64, + 2 x 2 DMA FIFOs.
    assert model("fpga-zcu102").resources()["bram18"] == (256 + 4, 1824)


def test_check_fits_names_the_overflowing_resource() -> None:
    with pytest.raises(InputError) as info:
        model("fpga-zcu102", gemm__rows="256", gemm__cols="256").check_fits()
    # DSP: 256 x 256 / 2 = 32,768 for the array + 16 lanes x 14 (fitted dsp_per_lane) = 32,992.
    assert DEFAULT_CALIBRATION.dsp_per_lane == 14
    assert str(info.value) == (
        "fpga-zcu102: the design does not fit xczu9eg-ffvb1156-2-e: DSP needs 32,992 of 2,520 (over by 30,472; gemm "
        "uses 32,768); reduce gemm.rows or gemm.cols (LUT, FF over too)"
    )
    with pytest.raises(InputError) as info:
        model("fpga-zcu102", buffers__weight_kb="8192").check_fits()
    assert str(info.value) == (
        "fpga-zcu102: the design does not fit xczu9eg-ffvb1156-2-e: BRAM18 needs 4,228 of 1,824 (over by 2,404; "
        "buffers.weight_kb uses 4,096); reduce buffers.weight_kb"
    )


def test_energy_breakdown() -> None:
    m = model()
    # 1e9 int8 MACs x 1.0 pJ = 1 mJ; 1e6 B on chip x 2.5 pJ; 1e6 B HBM x 31 pJ; 20 W for 300,000 cycles at 300 MHz.
    e = m.energy({8: 10**9}, 10**6, 10**6, 300_000)
    assert e == pytest.approx({"mac": 1.0, "onchip": 0.0025, "offchip": 0.031, "static": 20.0})
    assert sum(e.values()) == pytest.approx(21.0335)
    assert m.energy({16: 10**9}, 0, 0, 0)["mac"] == pytest.approx(2.7)
