"""The same sweep on a Dask LocalCluster (separate worker processes) gives the same results as the local pool,
accuracy measurements included."""

from __future__ import annotations

import csv
from pathlib import Path

import pytest

from codesign.cli import main

ROOT = Path(__file__).resolve().parents[1]
TINY = ROOT / "examples" / "models" / "vit_tiny.onnx"
DATA = ROOT / "examples" / "data" / "vit_tiny_images.npz"
pytestmark = [pytest.mark.slow]

SPEC = f"""\
models: [{TINY}]
target: fpga-u280
space:
  gemm.rows: [8, 16, 32]
  gemm.cols: [8, 32]
  buffers.act_kb: [32, 256]
  compile.softmax: [exact, shiftmax]
objectives: {{latency_ms: min, energy_mj: min, lut: min}}
constraints: [fits, "accuracy.cosine >= 0.99"]
inputs: {DATA}
"""
_VOLATILE = ("seq", "seconds", "tier")


def _results(out: Path) -> dict[str, dict[str, str]]:
    with (out / "results.csv").open() as fh:
        return {r["key"]: {k: v for k, v in r.items() if k not in _VOLATILE} for r in csv.DictReader(fh)}


def test_dask_cluster_matches_local_pool(tmp_path):
    from distributed import LocalCluster

    spec = tmp_path / "sweep.yaml"
    spec.write_text(SPEC)
    assert main(["sweep", str(spec), "--out", str(tmp_path / "local"), "--workers", "2", "-q"]) == 0
    cluster = LocalCluster(n_workers=2, threads_per_worker=1, processes=True,
                           dashboard_address=None)  # pyright: ignore[reportArgumentType]  (None turns the dashboard off; the stub says str)
    with cluster:
        assert main(["sweep", str(spec), "--out", str(tmp_path / "dask"), "--scheduler", cluster.scheduler_address,
                     "-q"]) == 0
    local, dask = _results(tmp_path / "local"), _results(tmp_path / "dask")
    assert len(local) == 24 and local == dask
    assert len({r["accuracy.cosine"] for r in local.values()}) == 2
    front = {name: {r["key"] for r in csv.DictReader((tmp_path / name / "pareto.csv").read_text().splitlines())}
             for name in ("local", "dask")}
    assert front["local"] == front["dask"] and front["local"]
