"""A fuzz worker: runs ``codesign.cli.main(argv)`` in this process for each case the parent sends, and answers
what happened. Run as ``python -m tests.fuzz.worker CMD_FD RESULT_FD`` by ``tests.fuzz.harness.WorkerPool``.

In-process because a fresh interpreter per case costs ~3 s of imports; a worker still isolates the test process
from what a case can do to its process (an address-space limit turns a memory blow-up into a MemoryError here, a
crash or a hang kills only this worker). Each case runs with fds 0/1/2 pointed at /dev/null and two files, so what
C code writes to the terminal is judged too, exactly as a user would see it.
"""

from __future__ import annotations

import json
import os
import resource
import sys
import traceback
from pathlib import Path


def _rss_kb(field: str) -> int:
    """``VmHWM`` (peak resident set since the last reset) or ``VmRSS`` (now), KiB."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    return 0


def _reset_peak() -> None:
    try:
        Path("/proc/self/clear_refs").write_text("5")  # Linux >= 4.0: VmHWM restarts from the current RSS
    except OSError:
        pass


def _children() -> list[str]:
    import psutil

    found = []
    for child in psutil.Process().children(recursive=True):
        try:
            found.append(f"{child.pid} {' '.join(child.cmdline())[:200]}")
            child.kill()  # leave no orphan behind for the next case, after naming it
        except psutil.Error:
            pass
    return found


def run_case(case_dir: str, argv: list[str], log_base: str) -> dict:
    """Run one case with cwd ``case_dir``; stdout / stderr land in ``log_base``.out / .err."""
    from codesign.cli import main

    saved = [os.dup(fd) for fd in (0, 1, 2)]
    sys.stdout.flush()
    sys.stderr.flush()
    null = os.open(os.devnull, os.O_RDONLY)
    out = os.open(log_base + ".out", os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
    err = os.open(log_base + ".err", os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
    for fd, target in ((0, null), (1, out), (2, err)):
        os.dup2(target, fd)
    for fd in (null, out, err):
        os.close(fd)
    result: dict = {"rc": None, "exc": None, "exc_type": None, "memory": False}
    _reset_peak()
    result["rss_before_kb"] = _rss_kb("VmRSS")
    cpu = resource.getrusage(resource.RUSAGE_SELF)
    os.chdir(case_dir)
    try:
        result["rc"] = main(list(argv))
    except SystemExit as exc:  # argparse's --help exits 0 from inside main
        code = exc.code
        result["rc"] = code if isinstance(code, int) else (0 if code is None else 1)
    except BaseException as exc:  # noqa: BLE001 - every escape is what we are looking for
        result["exc"] = "".join(traceback.format_exception(exc))
        result["exc_type"] = type(exc).__name__
        chain: BaseException | None = exc
        while chain is not None:
            result["memory"] = result["memory"] or isinstance(chain, MemoryError)
            chain = chain.__cause__ or chain.__context__
    finally:
        try:
            sys.stdout.flush()
            sys.stderr.flush()
        except (OSError, ValueError):
            pass
        os.chdir("/")
        for fd, copy in zip((0, 1, 2), saved):
            os.dup2(copy, fd)
            os.close(copy)
    result["peak_rss_kb"] = _rss_kb("VmHWM")
    result["rss_after_kb"] = _rss_kb("VmRSS")
    end = resource.getrusage(resource.RUSAGE_SELF)
    result["cpu_s"] = end.ru_utime - cpu.ru_utime + end.ru_stime - cpu.ru_stime
    result["children"] = _children()
    return result


def serve(cmd_fd: int, result_fd: int) -> None:
    """Answer cases until the parent closes the command pipe."""
    import faulthandler
    import signal

    # On a hang the parent sends SIGUSR1 first: the Python stack lands in this file and names where it hung.
    stacks = open(os.environ["CODESIGN_FUZZ_STACKS"], "w")  # noqa: SIM115 - open for the process's lifetime
    faulthandler.register(signal.SIGUSR1, file=stacks, all_threads=False)
    limit_gb = float(os.environ.get("CODESIGN_FUZZ_MEM_GB", "4"))
    limit = int(limit_gb * 2**30)
    resource.setrlimit(resource.RLIMIT_AS, (limit, limit))
    resource.setrlimit(resource.RLIMIT_CORE, (0, 0))
    # Import once, before the first case, so cases do not pay for it.
    import codesign.cli  # noqa: F401
    import codesign.sweep.cli  # noqa: F401

    commands = os.fdopen(cmd_fd, "r")
    answers = os.fdopen(result_fd, "w")
    answers.write(json.dumps({"ready": os.getpid()}) + "\n")
    answers.flush()
    for line in commands:
        request = json.loads(line)
        answer = run_case(request["dir"], request["argv"], request["log"])
        answers.write(json.dumps(answer) + "\n")
        answers.flush()


if __name__ == "__main__":
    serve(int(sys.argv[1]), int(sys.argv[2]))
