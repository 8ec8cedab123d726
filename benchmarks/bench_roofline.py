"""Schedules against their roofline bound (issue goals): ViT-Base int8 I-ViT and BERT-base (sequence 128) on the
default fpga-u280 (4 sub-arrays of 16x64, gemm.partitions; its folds streamed, gemm.fold_overlap, and not), with
the per-GEMM mapping search and with the target's fixed mapping, against one 64x64 array and 8 sub-arrays, and a
sequence-first encoder layer against the same layer batch-first (float and int8), and where each attention layer's
cycles go. Printed, never
asserted: tests/test_schedule_mapping.py pins the ratios on one-layer shapes.
"""

from __future__ import annotations

import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
IVIT = {"quant": "int8", "softmax": "shiftmax", "gelu": "shiftgelu", "layernorm": "ilayernorm"}


def _ratio(report: dict) -> float:
    return report["latency_cycles"] / report["roofline_cycles"]


def _attention_line(report: dict) -> None:
    """Where attention's cycles go: per layer, the scheduled cycles against its MACs on the whole array, and the
    busy cycles of the array and the vector lanes in its pipeline (compiler/schedule/attention_pipeline.py)."""
    layers = [ly for ly in report["layers"] if ly["op"] == "attention"]
    if not layers:
        return
    n = len(layers)
    cycles = sum(ly["cycles"] for ly in layers) / n
    ideal = sum(ly["macs"] for ly in layers) / n / report["peak_macs_per_cycle"]
    d = layers[0]["detail"]
    pipe = (f"; tile {d['tile_q']} rows x {d['heads_per_tile']} head(s), array {d['array_cycles']:,} and vector "
            f"{d['vector_cycles']:,} cycles busy" if "tile_q" in d else "")
    print(f"roofline:   attention {cycles:,.0f} cycles per layer vs {ideal:,.0f} for its MACs ({cycles / ideal:.2f}x)"
          f"{pipe}")


def _bert_base(out: Path) -> Path:
    sys.path.insert(0, str(ROOT / "examples"))
    from export_bert import export_bert

    export_bert(out, layers=12, hidden=768, heads=12, intermediate=3072, seq_len=128, vocab=1024, max_positions=128)
    return out


def _layouts(quant: str | None) -> tuple[int, int]:
    """Latency (cycles) of one ViT-Base-sized encoder layer (197 tokens) exported sequence-first and batch-first,
    compiled with ``--quant quant`` (None: float)."""
    import torch

    import codesign

    class Layer(torch.nn.Module):
        def __init__(self, batch_first: bool) -> None:
            super().__init__()
            torch.manual_seed(0)
            self.layer = torch.nn.TransformerEncoderLayer(768, 12, 3072, dropout=0.0, batch_first=batch_first)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.layer(x, is_causal=False)  # a bool, so that tracing for the export keeps it static

    torch.backends.mha.set_fastpath_enabled(False)  # the fused kernel has no ONNX export
    out = []
    for batch_first in (False, True):
        shape = (1, 197, 768) if batch_first else (197, 1, 768)
        model = Layer(batch_first).eval()
        out.append(codesign.compile(model, "fpga-u280", example_inputs=(torch.randn(*shape),),
                                    quant=quant).report["latency_cycles"])
    return out[0], out[1]


def main() -> dict[str, float]:
    from codesign.api import compile as compile_model

    figures: dict[str, float] = {}
    vit = str(ROOT / "examples" / "models" / "vit_base.onnx")
    with tempfile.TemporaryDirectory() as tmp:
        bert = str(_bert_base(Path(tmp) / "bert_base.onnx"))
        for name, path, options, goal in (("ViT-Base int8 I-ViT", vit, IVIT, 1.15),
                                          ("BERT-base seq 128 int8", bert, {"quant": "int8"}, 1.2)):
            for mapping in ("search", "fixed"):
                t = time.perf_counter()
                report = compile_model(path, mapping=mapping, **options).report
                seconds = time.perf_counter() - t
                ratio = _ratio(report)
                figures[f"{name} {mapping}"] = ratio
                print(f"roofline: {name} on {report['target']}, --mapping {mapping}: {report['latency_cycles']:,} "
                      f"cycles vs bound {report['roofline_cycles']:,} ({report['roofline_bound']}-bound): ratio "
                      f"{ratio:.3f} (goal <= {goal}); compile {seconds:.2f} s")
                if mapping == "search":
                    _attention_line(report)
            # The same array with its folds not overlapped (hw/rtl/systolic.py, SCALE-Sim's count per fold).
            plain = compile_model(path, overrides={"gemm.fold_overlap": "false"}, **options).report
            figures[f"{name} plain array"] = _ratio(plain)
            print(f"roofline: {name} with --set gemm.fold_overlap=false: {plain['latency_cycles']:,} cycles, ratio "
                  f"{_ratio(plain):.3f}")
    # The bundled target builds its 64 rows as 4 sub-arrays of 16 (gemm.partitions: 4); one array, and 8 of 8.
    for parts in (1, 4, 8):
        report = compile_model(vit, overrides={"gemm.partitions": str(parts)}, **IVIT).report
        used = report["resources"]
        print(f"roofline: ViT-Base int8 I-ViT on fpga-u280 with --set gemm.partitions={parts} "
              f"({parts} sub-array(s) of {64 // parts}x64): ratio {_ratio(report):.3f}; DSP "
              f"{used['dsp']['fraction']:.0%}, URAM {used['uram']['fraction']:.0%}")
        figures[f"ViT-Base int8 I-ViT partitions={parts}"] = _ratio(report)
        _attention_line(report)
    for quant in (None, "int8"):
        seq, batch = _layouts(quant)
        figures[f"sequence-first / batch-first {quant or 'float'}"] = seq / batch
        print(f"roofline: encoder layer ({quant or 'float'}) sequence-first {seq:,} cycles vs batch-first "
              f"{batch:,}: ratio {seq / batch:.4f} (goal within 5%)")
    return figures


if __name__ == "__main__":
    main()
