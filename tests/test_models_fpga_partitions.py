"""An FPGA array built as sub-arrays (``gemm.partitions``): priced as that many instances of the RTL array kernel,
its extra buffer ports counted, and refused where the sub-arrays would not be equal."""

from __future__ import annotations

import pytest

from hw.errors import InputError
from hw.models import FpgaModel, build_model
from hw.perf.systolic import fold_counts
from hw.perf.workload import GemmWork
from hw.rtl import systolic
from hw.targets import load_target


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


def test_codesign_rtl_refuses_sub_arrays(tmp_path, capsys) -> None:
    from conftest import model_path

    from codesign.cli import main

    code = main(["rtl", str(model_path("vit_tiny.onnx")), "--quant", "int8", "--set", "gemm.rows=4", "--set",
                 "gemm.cols=4", "--set", "gemm.partitions=2", "--out", str(tmp_path / "rtl")])
    err = capsys.readouterr().err
    assert code == 2
    assert err.strip() == "codesign: error: gemm.partitions: codesign rtl emits one array (partitions = 1), got 2"
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
