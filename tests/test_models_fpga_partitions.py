"""An FPGA array built as sub-arrays (``gemm.partitions``): priced as that many instances of the RTL array kernel,
its extra buffer ports counted, and refused where the sub-arrays would not be equal; `codesign rtl` emits the
sub-array kernel with its instance count, and `--system` (one array) compiles the bundled target with one."""

from __future__ import annotations

import pytest

from hw.errors import InputError
from hw.models import FpgaModel, build_model
from hw.perf.systolic import fold_counts
from hw.perf.workload import GemmWork
from hw.rtl import systolic
from hw.targets import load_target
from hw.targets.schema import FpgaGemm


def fpga(rows: int, cols: int, parts: int, overlap: bool = False) -> FpgaModel:
    m = build_model(load_target("fpga-u280", {"gemm.rows": str(rows), "gemm.cols": str(cols),
                                              "gemm.partitions": str(parts),
                                              "gemm.fold_overlap": str(overlap).lower()}))
    assert isinstance(m, FpgaModel)
    return m


@pytest.mark.parametrize("m,n,k", [(197, 768, 768), (9, 5, 3), (64, 64, 64), (1, 1000, 768)])
def test_folds_dealt_to_sub_arrays_take_the_rtl_cycles_of_the_biggest_share(m: int, n: int, k: int) -> None:
    model = fpga(64, 64, 4)
    cost = model.cost(GemmWork(m=m, n=n, k=k))
    rf, cf = fold_counts(m, n, k, 16, 64, "os")
    share = -(-(rf * cf) // 4)  # folds of the busiest sub-array: one invocation of a 16 x 64 RTL array
    # predicted_cycles of `share` whole folds: a product of share x 16 rows of m and 64 columns of n.
    rtl = systolic.predicted_cycles(share * 16, 64, k, 16, 64)
    if cost.detail["partition_split"] == "folds":
        assert cost.compute_cycles == rtl
    else:  # one item: whole-item dealing is the one-sub-array invocation
        assert cost.compute_cycles == systolic.predicted_cycles(m, n, k, 16, 64) < rtl


def test_heads_are_dealt_out_whole() -> None:
    # 8 heads of 64 x 64 x 64 on 8 sub-arrays of 8 x 64: a head each pays one readout; dealing each head's 8 folds
    # out would pay 8.
    model = fpga(64, 64, 8)
    cost = model.cost(GemmWork(m=64, n=64, k=64, batch=8, weights_static=False))
    assert cost.detail["partition_split"] == "items"
    assert cost.compute_cycles == systolic.predicted_cycles(64, 64, 64, 8, 64)
    by_folds = 8 * systolic.predicted_cycles(8, 64, 64, 8, 64)
    assert cost.compute_cycles < by_folds


def test_one_partition_is_the_plain_array() -> None:
    work = GemmWork(m=197, n=768, k=768)
    assert fpga(64, 64, 1).cost(work).compute_cycles == systolic.predicted_cycles(197, 768, 768, 64, 64)
    assert "partitions" not in fpga(64, 64, 1).cost(work).detail


def test_sub_arrays_cost_their_buffer_ports_not_more_dsps() -> None:
    one, eight = fpga(64, 64, 1).resource_breakdown(), fpga(64, 64, 8).resource_breakdown()
    assert one["dsp"]["gemm"] == eight["dsp"]["gemm"]
    assert sum(eight["uram"].values()) > sum(one["uram"].values())


def test_partitions_must_divide_rows() -> None:
    with pytest.raises(InputError, match="partitions 3 must divide rows 64"):
        fpga(64, 64, 3)


def test_bundled_sub_arrays_name_the_way_out_when_rows_do_not_divide() -> None:
    """The bundled fpga-u280 builds 4 sub-arrays: rows that 4 does not divide are refused, naming the key to set."""
    with pytest.raises(InputError, match=r"gemm: partitions 4 must divide rows 70 \(equal sub-arrays; "
                                         r"gemm.partitions=1 builds one array\)$"):
        load_target("fpga-u280", {"gemm.rows": "70"})
    array = load_target("fpga-u280", {"gemm.rows": "70", "gemm.partitions": "1"}).systolic_array()
    assert isinstance(array, FpgaGemm) and array.partitions == 1


def test_subarray_share_is_what_the_model_prices() -> None:
    """The busiest sub-array's invocations (what `codesign rtl` lists) take exactly the cycles the model charges."""
    from hw.rtl.kernels import invocation_cycles

    for overlap, kernel in ((False, "systolic_gemm"), (True, "systolic_gemm_stream")):
        model = fpga(64, 64, 4, overlap)
        params = {"rows": 16, "cols": 64, "in_bits": 8, "acc_bits": 32}
        for work in (GemmWork(m=197, n=768, k=768), GemmWork(m=197, n=197, k=64, batch=12),
                     GemmWork(m=9, n=5, k=3, batch=3)):
            split, share, count = model.subarray_share(work)
            assert split == model.cost(work).detail["partition_split"]
            assert count * invocation_cycles(kernel, params, share) == model.cost(work).compute_cycles


def test_codesign_rtl_emits_sub_array_instances(tmp_path, capsys) -> None:
    """Kernel mode on a partitioned target: the rows / P kernel, P instances, each GEMM's invocations those of the
    busiest sub-array (so the manifest's cycles are the model's)."""
    import json

    from conftest import model_path

    from codesign.cli import main

    out = tmp_path / "rtl"
    code = main(["rtl", str(model_path("vit_tiny.onnx")), "--quant", "int8", "--set", "gemm.rows=8", "--set",
                 "gemm.cols=4", "--set", "gemm.partitions=2", "--out", str(out), "-q"])
    assert code == 0, capsys.readouterr().err
    manifest = json.loads((out / "manifest.json").read_text())
    arrays = [k for k in manifest["kernels"] if k["name"].startswith("systolic_gemm")]
    assert [(k["parameters"]["rows"], k["parameters"]["cols"], k["instances"]) for k in arrays] == [(4, 4, 2)]
    assert all(k["instances"] == 1 for k in manifest["kernels"] if k not in arrays)
    assert any("gemm.partitions = 2" in note for note in manifest["notes"])


def test_codesign_rtl_system_refuses_asked_sub_arrays(tmp_path, capsys) -> None:
    """--system builds one array: sub-arrays asked for with --set are refused in one line naming the key (the
    bundled target's own sub-arrays compile with gemm.partitions=1, tests/test_cli_rtl_system.py)."""
    from conftest import model_path

    from codesign.cli import main

    code = main(["rtl", str(model_path("vit_tiny.onnx")), "--quant", "int8", "--set", "gemm.rows=4", "--set",
                 "gemm.cols=4", "--set", "gemm.partitions=2", "--system", "--out", str(tmp_path / "rtl")])
    err = capsys.readouterr().err
    assert code == 2
    assert err.strip() == ("codesign: error: gemm.partitions: codesign rtl --system builds one array that runs each "
                           "fold whole (cds1_system), got 2; drop --set gemm.partitions, or emit the kernels without "
                           "--system")
    assert not (tmp_path / "rtl").exists()
    code = main(["rtl", str(model_path("vit_tiny.onnx")), "--quant", "int8", "--set", "gemm.rows=4", "--set",
                 "gemm.cols=4", "--set", "gemm.partitions=1", "--set", "gemm.fold_overlap=true", "--system", "--out",
                 str(tmp_path / "rtl")])
    err = capsys.readouterr().err
    assert code == 2
    assert err.startswith("codesign: error: gemm.fold_overlap: codesign rtl --system builds one array that runs each "
                          "fold whole (cds1_system), got True")
    assert not (tmp_path / "rtl").exists()


@pytest.mark.parametrize("m,n,k", [(197, 768, 768), (9, 5, 3), (64, 64, 64), (1, 1000, 768)])
def test_streaming_sub_arrays_stream_their_share_of_folds(m: int, n: int, k: int) -> None:
    """With ``gemm.fold_overlap`` each sub-array is the streaming array (hw.rtl.systolic_stream): the busiest one's
    share of folds is one invocation of it, the skew paid once."""
    from hw.rtl import systolic_stream

    cost = fpga(64, 64, 4, overlap=True).cost(GemmWork(m=m, n=n, k=k))
    rf, cf = fold_counts(m, n, k, 16, 64, "os")
    share = -(-(rf * cf) // 4)
    assert cost.detail["partition_split"] == "folds"
    assert cost.compute_cycles == systolic_stream.predicted_cycles(share * 16, 64, k, 16, 64)
    assert cost.compute_cycles <= fpga(64, 64, 4).cost(GemmWork(m=m, n=n, k=k)).compute_cycles
