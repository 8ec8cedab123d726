"""The FPGA performance model predicts the RTL's cycle counts exactly.

Each RTL kernel's ``predicted_cycles`` equals simulation (tests/test_rtl_<kernel>.py, on Icarus and Verilator); here
the model's cost of the equivalent work item equals ``predicted_cycles``, for the parameter sets those tests
simulate, and a compiled ViT's scheduled compute equals what ``codesign rtl``'s manifest predicts for it.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Callable

import pytest

from hw.models import FpgaModel, build_model
from hw.models.fpga import RTL_VECTOR_UNITS
from hw.perf.systolic import fold_overlap_cycles, systolic_cycles
from hw.perf.workload import GemmWork, VectorWork, Work
from hw.rtl import ilayernorm, online_softmax, requant, shiftgelu, shiftmax, systolic, systolic_stream, topk_router
from hw.targets import load_target
from hw.targets.schema import FpgaTarget

LANES = [1, 4, 64]
ROWS = [1, 3, 12, 197]


def gemm_shapes(rows: int, cols: int) -> list[tuple[int, int, int]]:
    """(m, n, k) of test_rtl_systolic's cases on a rows x cols array: ragged, exact fit, 1x1x1, k = 1, extremes."""
    return [(2 * rows + 1, cols + 2, 7), (rows, cols, 5), (1, 1, 1), (2 * rows + 1, cols + 2, 1), (rows + 1, cols, 9),
            (rows, cols + 1, 9), (3, 3, 4)]


def fpga(**overrides: object) -> FpgaModel:
    overrides = {"gemm__partitions": 1, **overrides}  # the small arrays below are one array each
    m = build_model(load_target("fpga-u280", {k.replace("__", "."): str(v) for k, v in overrides.items()}))
    assert isinstance(m, FpgaModel)
    return m


# --- one kernel at a time: the parameter sets tests/test_rtl_<kernel>.py simulate ---------------------------------


@pytest.mark.parametrize("shape", [(2, 2), (4, 4), (3, 5), (5, 3)], ids=lambda s: f"{s[0]}x{s[1]}")
@pytest.mark.parametrize("bits", [8, 4])
@pytest.mark.parametrize("overlap", [False, True], ids=["plain", "fold_overlap"])
def test_gemm_is_the_systolic_rtl(shape: tuple[int, int], bits: int, overlap: bool) -> None:
    """The plain array (hw.rtl.systolic, SCALE-Sim's count + rows of readout) or, with ``gemm.fold_overlap``, the
    streaming one (hw.rtl.systolic_stream, its fold-overlapped count + 1), per invocation."""
    rows, cols = shape
    m = fpga(gemm__rows=rows, gemm__cols=cols, gemm__fold_overlap=str(overlap).lower())
    for mm, n, k in gemm_shapes(rows, cols) + [(3 * rows - 1, 2 * cols + 1, max(1, rows - 1))]:
        if overlap:
            rtl, count, drain = (systolic_stream.predicted_cycles(mm, n, k, rows, cols),
                                 fold_overlap_cycles(mm, n, k, rows, cols), 1)
        else:
            rtl, count, drain = (systolic.predicted_cycles(mm, n, k, rows, cols),
                                 systolic_cycles(mm, n, k, rows, cols, "os"), rows)
        for batch in (1, 3):
            cost = m.cost(GemmWork(mm, n, k, batch=batch, in_bits=bits, w_bits=bits))
            assert cost.compute_cycles == batch * rtl, (mm, n, k, batch)
            # The array's compute count stays visible; the rest is the readout of each invocation's last fold.
            assert cost.detail["cycles_per_item"] == count
            assert cost.detail["drain_cycles"] == batch * drain == cost.compute_cycles - batch * cost.detail[
                "cycles_per_item"]


@pytest.mark.parametrize("dataflow", ["ws", "is"])
def test_other_dataflows_follow_their_rtl_array_or_scalesim(dataflow: str) -> None:
    """A dataflow with an RTL array (``ARRAY_KERNELS``, where hw.rtl has it) is priced at its predicted cycles;
    one without stays SCALE-Sim's count."""
    from hw.models.fpga import ARRAY_KERNELS
    from hw.rtl.kernels import invocation_cycles

    for rows, cols in [(2, 2), (4, 4), (3, 5)]:
        m = fpga(gemm__rows=rows, gemm__cols=cols, gemm__dataflow=dataflow)
        for mm, n, k in gemm_shapes(rows, cols):
            kernel = ARRAY_KERNELS.get(dataflow)
            if kernel is not None:
                expected = invocation_cycles(kernel, {"rows": rows, "cols": cols}, {"m": mm, "n": n, "k": k})
            else:
                expected = systolic_cycles(mm, n, k, rows, cols, dataflow)
            assert m.cost(GemmWork(mm, n, k, batch=2)).compute_cycles == 2 * expected


@pytest.mark.parametrize("lanes", LANES)
@pytest.mark.parametrize("n", [4, 13, 32])
def test_shiftmax(lanes: int, n: int) -> None:
    m = fpga(vector__lanes=lanes)
    for rows in ROWS:
        cost = m.cost(VectorWork("softmax", rows * n, rows=rows, approx="shiftmax"))
        assert cost.compute_cycles == shiftmax.predicted_cycles(n, math.ceil(rows / lanes))


@pytest.mark.parametrize("lanes", LANES)
@pytest.mark.parametrize("n", [4, 11, 40])
def test_online_softmax(lanes: int, n: int) -> None:
    m = fpga(vector__lanes=lanes)
    for rows in ROWS:
        cost = m.cost(VectorWork("softmax", rows * n, rows=rows, approx="online"))
        assert cost.compute_cycles == online_softmax.predicted_cycles(n, math.ceil(rows / lanes))


@pytest.mark.parametrize("lanes", LANES)
@pytest.mark.parametrize("n", [4, 9, 24])
@pytest.mark.parametrize(("approx", "per_element"), [("shiftgelu", 1), ("shiftgelu-row", 0)])
def test_shiftgelu(lanes: int, n: int, approx: str, per_element: int) -> None:
    """--gelu shiftgelu is the streaming per-element unit, --gelu shiftgelu-row the published row-max unit."""
    from hw.rtl.kernels import invocation_cycles

    m = fpga(vector__lanes=lanes)
    assert RTL_VECTOR_UNITS[("gelu", approx)] == ("shiftgelu", {"per_element": per_element})
    for rows in ROWS:
        cost = m.cost(VectorWork("gelu", rows * n, rows=rows, approx=approx))
        per_lane = math.ceil(rows / lanes)
        assert cost.compute_cycles == shiftgelu.predicted_cycles(n, per_lane, per_element)
        assert cost.compute_cycles == invocation_cycles("shiftgelu", {"n": n, "per_element": per_element},
                                                        {"rows": per_lane})
        assert cost.detail["per_element"] == per_element


def test_manifest_names_each_shiftgelu_forms_formula() -> None:
    from hw.rtl.kernels import cycles_formula

    texts = set()
    for per_element, (n, rows) in itertools.product((0, 1), [(1, 1), (9, 3), (768, 197)]):
        text = cycles_formula("shiftgelu", {"n": n, "per_element": per_element})
        texts.add(text)
        assert eval(text, {"n": n, "rows": rows}) == shiftgelu.predicted_cycles(n, rows, per_element)
    assert len(texts) == 2  # one formula per form


@pytest.mark.parametrize("lanes", LANES)
@pytest.mark.parametrize(("c", "in_bits"), [(4, 8), (12, 16), (33, 8)])
def test_ilayernorm(lanes: int, c: int, in_bits: int) -> None:
    m = fpga(vector__lanes=lanes)
    for rows in ROWS:
        cost = m.cost(VectorWork("layernorm", rows * c, rows=rows, approx="ilayernorm", bits=in_bits))
        # the compiled I-LayerNorm's unit has the epsilon port (its Newton divisions one bit wider)
        assert cost.compute_cycles == ilayernorm.predicted_cycles(c, in_bits, math.ceil(rows / lanes), eps=1)


@pytest.mark.parametrize("lanes", LANES)
@pytest.mark.parametrize("experts", [5, 8, 16])
def test_topk_router(lanes: int, experts: int) -> None:
    m = fpga(vector__lanes=lanes)
    for tokens in ROWS:
        cost = m.cost(VectorWork("router", tokens * experts, rows=tokens))
        assert cost.compute_cycles == topk_router.predicted_cycles(experts, math.ceil(tokens / lanes))


@pytest.mark.parametrize("lanes", [4, 3, 2])
def test_requant(lanes: int) -> None:
    # codesign rtl sizes the requant unit to the array's columns: one beat carries `cols` values of one row.
    m = fpga(gemm__cols=lanes)
    for rows, n in [(1, 1), (1, 8), (5, 7), (17, 64), (197, 768)]:
        cost = m.cost(VectorWork("requant", rows * n, rows=rows))
        assert cost.compute_cycles == requant.predicted_cycles(rows * math.ceil(n / lanes))


# --- a compiled design against its `codesign rtl` manifest ---------------------------------------------------------


@pytest.mark.parametrize(("lanes", "gelu"), [(None, "shiftgelu"), (1, "shiftgelu"), (None, "shiftgelu-row")],
                         ids=["bundled-lanes", "one-lane", "shiftgelu-row"])
def test_compiled_vit_matches_the_rtl_manifest(monkeypatch, lanes: int | None, gelu: str) -> None:
    """Every kernel invocation ``codesign rtl`` lists for an integer ViT on fpga-u280 is scheduled for exactly its
    predicted cycles x its count (row units: for ceil(rows / lanes) rows, the rows dealt over the lanes); the GELU
    form the compile chose is the one emitted and priced."""
    from conftest import model_path

    import codesign
    from codesign.rtl_cli import plan_kernels
    from hw.rtl.kernels import invocation_cycles

    priced: list[tuple[Work, int]] = []
    cost = FpgaModel.cost

    def spy(self: FpgaModel, work: Work):
        c = cost(self, work)
        priced.append((work, c.compute_cycles))
        return c

    monkeypatch.setattr(FpgaModel, "cost", spy)
    overrides = {"vector.lanes": str(lanes)} if lanes else {}
    result = codesign.compile(str(model_path("vit_tiny.onnx")), "fpga-u280", overrides=overrides, quant="int8",
                              softmax="shiftmax", gelu=gelu, layernorm="ilayernorm")
    target = result.env.target
    assert isinstance(target, FpgaTarget), target
    uses, _ = plan_kernels(result.module, target)
    model = FpgaModel(target)
    rows_each = target.gemm.rows // target.gemm.partitions
    assert {u.instances for u in uses if u.kernel.startswith("systolic")} == {target.gemm.partitions}
    tasks = {t.name: (plan, t) for plan in result.env.plans for t in plan.tasks}
    layers = {layer["name"]: layer for layer in result.report["layers"]}
    pair_of = {(kernel, tuple(sorted(fixed.items()))): pair for pair, (kernel, fixed) in RTL_VECTOR_UNITS.items()}
    checked = {"exact": 0, "fused": 0}
    array_kernel = "systolic_gemm_stream" if target.gemm.fold_overlap else "systolic_gemm"
    assert {u.kernel for u in uses} == {array_kernel, "requant", "shiftmax", "shiftgelu", "ilayernorm"}
    per_element = {"shiftgelu": 1, "shiftgelu-row": 0}[gelu]
    assert {u.params["per_element"] for u in uses if u.kernel == "shiftgelu"} == {per_element}
    same: Callable[[object], bool]
    for use in uses:
        for inv in use.invocations:
            manifest_cycles = invocation_cycles(use.kernel, use.params, inv.work)
            if use.kernel == array_kernel:
                expected = manifest_cycles * inv.count
                w = inv.work

                def same_gemm(x: object, w: dict = w, count: int = inv.count) -> bool:
                    # the busiest sub-array's share of the product (the product itself on one array)
                    return isinstance(x, GemmWork) and model.subarray_share(x)[1:] == (w, count)
                same = same_gemm
            else:
                assert inv.count == 1
                if "rows" in inv.work:  # row units: rows dealt round-robin over the lanes
                    rows = inv.work["rows"]
                    expected = invocation_cycles(use.kernel, use.params,
                                                 {"rows": math.ceil(rows / target.vector.lanes)})
                    if target.vector.lanes == 1:
                        assert expected == manifest_cycles
                else:  # requant: one unit of gemm.cols lanes
                    rows, expected = None, manifest_cycles
                fixed = {key: use.params[key] for key in {"shiftgelu": ("per_element",),
                                                          "ilayernorm": ("eps",)}.get(use.kernel, ())}
                kind, approx = pair_of[(use.kernel, tuple(sorted(fixed.items())))]

                def same_vector(x: object, kind: str = kind, approx: str = approx, rows: int | None = rows) -> bool:
                    return (isinstance(x, VectorWork) and (x.kind, x.approx) == (kind, approx)
                            and (rows is None or x.rows == rows))
                same = same_vector
            # The model priced this invocation's work at exactly the RTL's cycles ...
            assert expected in {c for x, c in priced if same(x)}, (inv.layer, use.kernel, expected)
            # ... and the schedule runs it for that long: alone, or under the longer of a fused group.
            if inv.layer in tasks:
                plan, task = tasks[inv.layer]
                if "+" in plan.op:
                    assert task.compute_cycles >= expected, inv.layer
                    checked["fused"] += 1
                else:
                    assert task.compute_cycles == expected, inv.layer
                    checked["exact"] += 1
                if use.kernel == array_kernel and inv.layer in layers and task.compute_cycles == expected:
                    # the report keeps the array's compute count and the readout apart
                    layer = layers[inv.layer]
                    g = target.gemm
                    if g.fold_overlap:
                        count, drain = fold_overlap_cycles(w["m"], w["n"], w["k"], rows_each, g.cols), 1
                    else:
                        count, drain = systolic_cycles(w["m"], w["n"], w["k"], rows_each, g.cols, "os"), rows_each
                    assert (layer["compute_cycles"], layer["drain_cycles"]) == (
                        inv.count * count, inv.count * drain), inv.layer
            else:  # an epilogue fused into the GEMM before it
                checked["fused"] += 1
    assert checked["exact"] >= 10 and checked["fused"] >= 10
