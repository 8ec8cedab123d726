"""Run SCALE-Sim v3 on GEMM layers and print its COMPUTE_REPORT numbers as JSON.

This is a script, not a test module: SCALE-Sim 3.0.0 crashes on numpy 2.4, so it lives in its own
virtualenv (``make .venv-scalesim/.installed``) and ``tests/test_perf_systolic.py`` runs this file
with that venv's interpreter in a subprocess.

Input: a JSON list of ``[m, n, k, rows, cols, dataflow]`` (a file path, or ``-`` / nothing for
stdin). ``rows``/``cols`` are SCALE-Sim's ``ArrayHeight``/``ArrayWidth``; the layer is
A (m x k) times B (k x n), written as one row ``name, M, N, K,`` of a GEMM topology file.

Output (stdout, one JSON list in input order), one object per shape::

    {"cycles": int,              # "Total Cycles" column: compute cycles incl. stalls
     "cycles_incl_prefetch": int, # "Total Cycles (incl. prefetch)" column
     "stall_cycles": int,
     "mapping_efficiency": float, # "Mapping Efficiency %" divided by 100
     "run_seconds": float}        # wall time of the whole SCALE-Sim run this shape was part of

Speed: shapes are grouped by (rows, cols, dataflow) and every group is one SCALE-Sim run whose
topology holds all of that group's shapes as layers, in one process, with traces off
(``save_disk_space=True``). SCALE-Sim's own chatter goes to stderr so stdout stays pure JSON.

The config is the one the figures of docs/SOURCES.md [18] were measured with: 64 KB SRAMs, ``InterfaceBandwidth: CALC``
(bandwidth is estimated, so the memory never stalls the array), no sparsity, default layouts.
SCALE-Sim insists on a layout file even with custom layouts off, so a default one is written.
"""

from __future__ import annotations

import contextlib
import csv
import json
import os
import sys
import tempfile
import time
from collections import defaultdict

_CONFIG = """\
[general]
run_name = oracle

[run_presets]
InterfaceBandwidth = CALC
UseRamulatorTrace = False

[architecture_presets]
ArrayHeight = {rows}
ArrayWidth = {cols}
IfmapSramSzkB = 64
FilterSramSzkB = 64
OfmapSramSzkB = 64
IfmapOffset = 0
FilterOffset = 10000000
OfmapOffset = 20000000
Dataflow = {dataflow}
ReadRequestBuffer = 32
WriteRequestBuffer = 32

[layout]
IfmapCustomLayout = False
IfmapSRAMBankBandwidth = 10
IfmapSRAMBankNum = 10
IfmapSRAMBankPort = 2
FilterCustomLayout = False
FilterSRAMBankBandwidth = 10
FilterSRAMBankNum = 10
FilterSRAMBankPort = 2

[sparsity]
SparsitySupport = false
"""

# Layout rows are parsed but unused while custom layouts are off; one per layer keeps them aligned.
_LAYOUT_HEADER = (
    "Layer name, IFMAP Height Intraline Factor, IFMAP Width Intraline Factor, "
    "Filter Height Intraline Factor, Filter Width Intraline Factor, Channel Intraline Factor, "
    "Num Filter Intraline Factor, IFMAP Height Intraline Order, IFMAP Width Intraline Order, "
    "Channel Intraline Order, IFMAP Height Interline Order, IFMAP Width Interline Order, "
    "Channel Interline Order, Num Filter Intraline Order, Channel Intraline Order, "
    "Filter Height Intraline Order, Filter Width Intraline Order, Num Filter Interline Order, "
    "Channel Interline Order, Filter Height Interline Order, Filter Width Interline Order,\n"
)
_LAYOUT_ROW = "{name}, 1, 1, 1, 1, 1, 1, 0, 1, 2, 0, 1, 2, 0, 1, 2, 3, 0, 1, 2, 3,\n"


def _run_group(workdir: str, rows: int, cols: int, dataflow: str,
               shapes: list[tuple[int, int, int]]) -> list[dict]:
    """One SCALE-Sim run: every (m, n, k) in ``shapes`` is one layer of the topology."""
    from scalesim.scale_sim import scalesim  # pyright: ignore[reportMissingImports]  (imported late: only this venv has it)

    tag = f"{rows}x{cols}_{dataflow}"
    group_dir = os.path.join(workdir, tag)
    os.mkdir(group_dir)
    cfg_path = os.path.join(group_dir, "oracle.cfg")
    topo_path = os.path.join(group_dir, "topology.csv")
    layout_path = os.path.join(group_dir, "layout.csv")
    with open(cfg_path, "w") as f:
        f.write(_CONFIG.format(rows=rows, cols=cols, dataflow=dataflow))
    with open(topo_path, "w") as topo, open(layout_path, "w") as layout:
        # SCALE-Sim drops the last comma-separated field of every row: keep the trailing comma.
        topo.write("Layer, M, N, K,\n")
        layout.write(_LAYOUT_HEADER)
        for i, (m, n, k) in enumerate(shapes):
            topo.write(f"L{i}, {m}, {n}, {k},\n")
            layout.write(_LAYOUT_ROW.format(name=f"L{i}"))

    sim = scalesim(save_disk_space=True, verbose=False, config=cfg_path, topology=topo_path,
                   layout=layout_path, input_type_gemm=True)
    start = time.perf_counter()
    sim.run_scale(top_path=os.path.join(group_dir, "out"))
    seconds = time.perf_counter() - start

    report = os.path.join(group_dir, "out", "oracle", "COMPUTE_REPORT.csv")
    with open(report, newline="") as f:
        table = list(csv.reader(f, skipinitialspace=True))
    header, body = table[0], [r for r in table[1:] if r]
    col = {name.strip(): i for i, name in enumerate(header)}
    if len(body) != len(shapes):
        raise RuntimeError(f"{report}: {len(body)} rows for {len(shapes)} layers")
    return [
        {
            "cycles": int(r[col["Total Cycles"]]),
            "cycles_incl_prefetch": int(r[col["Total Cycles (incl. prefetch)"]]),
            "stall_cycles": int(r[col["Stall Cycles"]]),
            "mapping_efficiency": float(r[col["Mapping Efficiency %"]]) / 100.0,
            "run_seconds": seconds,
        }
        for r in body
    ]


def run(cases: list) -> list[dict]:
    """SCALE-Sim's report numbers for each ``(m, n, k, rows, cols, dataflow)``, in order."""
    groups: dict[tuple[int, int, str], list[int]] = defaultdict(list)
    for idx, (_m, _n, _k, rows, cols, dataflow) in enumerate(cases):
        groups[(int(rows), int(cols), str(dataflow))].append(idx)

    results: list[dict | None] = [None] * len(cases)
    with tempfile.TemporaryDirectory(prefix="scalesim_oracle_") as workdir:
        for (rows, cols, dataflow), idxs in groups.items():
            shapes = [(int(cases[i][0]), int(cases[i][1]), int(cases[i][2])) for i in idxs]
            with contextlib.redirect_stdout(sys.stderr):
                out = _run_group(workdir, rows, cols, dataflow, shapes)
            for i, r in zip(idxs, out):
                results[i] = r
    return results  # type: ignore[return-value]


def main(argv: list[str]) -> int:
    """Read the cases (file argument or stdin), print the JSON results on stdout."""
    if len(argv) > 1 and argv[1] != "-":
        with open(argv[1]) as f:
            cases = json.load(f)
    else:
        cases = json.load(sys.stdin)
    json.dump(run(cases), sys.stdout)
    sys.stdout.write("\n")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
