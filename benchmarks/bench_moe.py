"""M3ViT (Edge-MoE's configuration) on an Edge-MoE-like ZCU102 accelerator: cycles vs the ideal compute-bound count,
and attention traffic under the standard, Edge-MoE and flash orders.

The accelerator is ``fpga-zcu102`` with a 16x16 GEMM engine at 300 MHz (``--set gemm.rows=16 --set gemm.cols=16
--set clock_mhz=300``). The model is float32, as exported; Edge-MoE computes in fixed point (32-bit activations,
16-bit weights) with one MAC per PE per cycle, so the bench also sets ``gemm.in_bits = gemm.w_bits = 32`` (acc 64):
one pass per MAC, as in Edge-MoE, instead of the 16 passes an int8 array would need for fp32 operands. The ideal
compute-bound count is the model's MACs (MoE at top-2 only) / 256 MAC per cycle (Edge-MoE's linear unit,
docs/SOURCES.md [2]). MoE routing is the stated uniform assumption (no inputs given).

Run: ``.venv/bin/python benchmarks/bench_moe.py`` (needs examples/models/m3vit.onnx: ``make examples``).
"""

from __future__ import annotations

import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
MODEL = ROOT / "examples" / "models" / "m3vit.onnx"
OVERRIDES = {"gemm.rows": "16", "gemm.cols": "16", "clock_mhz": "300", "gemm.in_bits": "32", "gemm.w_bits": "32",
             "gemm.acc_bits": "64"}


def run(attention: str) -> tuple[dict, float]:
    """The report of one compile and its wall time in seconds."""
    from codesign.api import compile as compile_model

    start = time.perf_counter()
    result = compile_model(str(MODEL), target="fpga-zcu102", overrides=OVERRIDES, attention=attention)
    return result.report, time.perf_counter() - start  # type: ignore[return-value]


def main() -> None:
    """Print cycles vs the ideal count, per-stage cycles, and attention traffic for each attention order."""
    rows = []
    for attention in ("standard", "edge-moe", "flash"):
        report, seconds = run(attention)
        peak = report["peak_macs_per_cycle"]
        ideal = report["macs"] / peak
        attn = [ly for ly in report["layers"] if ly["op"] == "attention"]
        moe = [ly for ly in report["layers"] if ly["op"] == "moe"]
        rows.append((attention, report, ideal, attn, moe, seconds))
    print("M3ViT (129 tokens, D 192, 12 layers, 6 MoE layers x 16 experts top-2) on fpga-zcu102 16x16 @ 300 MHz")
    print(f"{'attention':<10} {'cycles':>11} {'ms':>7} {'ideal':>11} {'x ideal':>8} "
          f"{'attn cycles':>11} {'moe cycles':>11} {'attn off-chip B':>15} {'scores off-chip B':>17} {'compile s':>9}")
    for attention, report, ideal, attn, moe, seconds in rows:
        print(f"{attention:<10} {report['latency_cycles']:>11,} {report['latency_ms']:>7.2f} {ideal:>11,.0f} "
              f"{report['latency_cycles'] / ideal:>8.2f} "
              f"{sum(ly['cycles'] for ly in attn):>11,} {sum(ly['cycles'] for ly in moe):>11,} "
              f"{sum(ly['bytes_offchip'] for ly in attn):>15,} "
              f"{sum(ly['detail']['score_bytes_offchip'] for ly in attn):>17,} {seconds:>9.1f}")
    std = rows[0][3][0]["detail"]["score_bytes_standard"]
    print(f"score matrix per layer (standard order, written + read twice + read): {std:,} B; "
          f"edge-moe / flash keep it on chip")
    report = rows[1][1]
    first = report["moe"]["layers"][0]
    print(f"MoE ({report['moe']['routing']}): per layer tokens/expert {first['tokens_per_expert']}, "
          f"expert weights loaded {first['expert_weight_bytes']:,} B of {first['expert_weight_bytes_all']:,} B")
    edge = next(ly for ly in report["layers"] if ly["op"] == "attention")["detail"]
    print(f"edge-moe lanes {edge['lanes']}: {edge['buffer_bytes_per_step']} B of K+Q buffer reads per step whatever "
          f"the lanes (unshared lanes: {edge['buffer_bytes_per_step_unshared']} B)")
    flash = next(ly for ly in rows[2][1]["layers"] if ly["op"] == "attention")["detail"]
    print(f"flash tiles {flash['tile_q']} x {flash['tile_k']} from the target's buffers, "
          f"K/V passes {flash['kv_passes']}")


if __name__ == "__main__":
    main()
