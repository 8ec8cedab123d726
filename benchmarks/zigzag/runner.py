"""Run ZigZag (zigzag-dse, in .venv-zigzag) on GEMM layers: reads [[name, m, n, k], ...] as JSON on stdin, writes
per layer and per output-stationary orientation (m on the array rows or n on them) ZigZag's latency-optimal
temporal mapping (LOMA), its own latency estimate and the seconds it took, as JSON on stdout."""

from __future__ import annotations

import json
import logging
import sys
import tempfile
import time
from pathlib import Path

from zigzag.api import get_hardware_performance_zigzag

HERE = Path(__file__).resolve().parent
_LAYER = """- id: 0
  operator_type: Gemm
  equation: O[b][d]+=I[b][c]*W[c][d]
  dimension_relations: []
  loop_dims: [B, C, D]
  loop_sizes: [{m}, {k}, {n}]
  operand_precision: {{W: 8, I: 8, O: 32, O_final: 32}}
  operand_source: {{I: 0}}
"""
_MAPPING = """- name: default
  spatial_mapping:
    D1: ["{rows}, 64"]
    D2: ["{cols}, 64"]
  memory_operand_links: {{O: O, W: I2, I: I1}}
"""


def _walk(found: object):
    """Every (cost model evaluation, extra) pair in ZigZag's nested result lists."""
    if isinstance(found, (list, tuple)):
        if len(found) == 2 and hasattr(found[0], "latency_total2"):
            yield found
        for item in found:
            yield from _walk(item)
    elif hasattr(found, "latency_total2"):
        yield found, None


def main() -> None:
    logging.disable(logging.CRITICAL)
    out = []
    with tempfile.TemporaryDirectory() as tmp:
        for name, m, n, k in json.load(sys.stdin):
            wl = Path(tmp) / "wl.yaml"
            wl.write_text(_LAYER.format(m=m, n=n, k=k))
            for transpose in (False, True):
                mp = Path(tmp) / "map.yaml"
                rows, cols = ("D", "B") if transpose else ("B", "D")
                mp.write_text(_MAPPING.format(rows=rows, cols=cols))
                t = time.perf_counter()
                _, latency, cmes = get_hardware_performance_zigzag(
                    str(wl), str(HERE / "os_array.yaml"), str(mp), opt="latency", dump_folder=f"{tmp}/out",
                    loma_show_progress_bar=False)
                seconds = time.perf_counter() - t
                layer_cme = next((c for c, _ in _walk(cmes) if hasattr(c, "temporal_mapping")), None)
                order = str(layer_cme.temporal_mapping).split("\n") if layer_cme is not None else []
                out.append({"name": name, "m": m, "n": n, "k": k, "transpose": transpose, "latency": float(latency),
                            "seconds": seconds, "temporal": order})
    json.dump(out, sys.stdout)


if __name__ == "__main__":
    main()
