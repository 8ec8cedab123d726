"""Run fuzz cases in worker processes and judge each one against the CLI's contract.

The oracle (``judge``): the run exits 0, or 2 with exactly one non-empty stderr line starting ``codesign: ``; no
exception escapes ``main``; no "Traceback" on stderr; no MemoryError under the workers' address-space limit and a
peak RSS under ``CODESIGN_FUZZ_PEAK_MB``; no child process left alive; no file changed, added or removed in the case
folder outside the outputs it asked for (the sentinel that planted symlinks point at included), in the bundled
targets, or in the worker's TMPDIR; and an answer before the worker has spent ``CODESIGN_FUZZ_CASE_TIMEOUT`` CPU
seconds on the case (a generous bound, ~50x a slow case's CPU time: it catches hangs, it is not a speed test). The
bound is on the worker's CPU time, not the wall clock, so a machine busy with other jobs does not make a slow case a
"hang"; a worker blocked without using CPU (a deadlock) is a hang after ``HANG_WALL_FACTOR`` times the bound in
wall-clock seconds.

``run_cases`` collects every failing case instead of stopping at the first, so one run gives the whole catalogue.
"""

from __future__ import annotations

import json
import os
import re
import select
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.conftest import ROOT
from tests.fuzz_inputs import Case, write_files

__all__ = ["Failure", "Outcome", "WorkerPool", "collect_cases", "examples", "judge", "run_cases"]

CASE_TIMEOUT = float(os.environ.get("CODESIGN_FUZZ_CASE_TIMEOUT", "60"))
HANG_WALL_FACTOR = 20  # a worker using no CPU (blocked) is hung after CASE_TIMEOUT * this many wall seconds
PEAK_MB = float(os.environ.get("CODESIGN_FUZZ_PEAK_MB", "2048"))
RESTART_MB = 1536
# onnxruntime writes $TMPDIR/.ses (a timestamp and a session id) once per machine: not codesign's file.
_THIRD_PARTY_TMP = {".ses"}
_WATCHED = (ROOT / "hw" / "targets",)  # bundled inputs a case may read but never write


def examples(default: int) -> int:
    """Cases per family: ``default`` (the CI budget) scaled by ``CODESIGN_FUZZ_SCALE`` (``make fuzz`` raises it)."""
    return max(1, round(default * float(os.environ.get("CODESIGN_FUZZ_SCALE", "1"))))


@dataclass(frozen=True)
class Failure:
    """One broken promise: ``kind`` (traceback, memory, hang, crash, exit-code, stderr, write-outside, temp-left,
    orphan), a ``signature`` grouping failures of one cause, and the ``detail`` to show."""

    case: Case
    kind: str
    signature: str
    detail: str


@dataclass
class Outcome:
    """Cases run, their failures, and the CPU seconds the workers spent on them (to size the CI budget)."""

    cases: int = 0
    failures: list[Failure] = field(default_factory=list)
    cpu_s: float = 0.0
    exits: dict[str, int] = field(default_factory=dict)
    """How the cases ended: "0", "2", ... or "exception" / "hang" / "crash" (shows what a family reaches)."""
    messages: list[str] = field(default_factory=list)


def collect_cases(strategy: st.SearchStrategy[Case], count: int) -> list[Case]:
    """``count`` cases drawn by hypothesis, derandomized: the same cases on every run and machine."""
    cases: list[Case] = []

    @settings(max_examples=count, derandomize=True, database=None, deadline=None,
              suppress_health_check=list(HealthCheck.__members__.values()))
    @given(strategy)
    def draw(case: Case) -> None:
        cases.append(case)

    draw()
    return cases


# --- Workers ----------------------------------------------------------------------------------------------------------


def _cpu_seconds(pid: int) -> float | None:
    """CPU seconds (user + system, its waited-for children's included) process ``pid`` has used, from
    /proc/<pid>/stat; None where there is no /proc (then the wall clock judges hangs)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except (OSError, IndexError):
        return None
    # after the command name: state is field 3, utime..cstime are fields 14..17 (proc(5)), i.e. [11:15] here
    return sum(int(v) for v in fields[11:15]) / os.sysconf("SC_CLK_TCK")


class _Worker:
    def __init__(self, root: Path, index: int) -> None:
        self.tmp = root / f"tmp-{index}"
        self.tmp.mkdir(exist_ok=True)
        self.log = root / f"worker-{index}.log"
        self.stacks = root / f"worker-{index}.stack"
        cmd_r, self.cmd_w = os.pipe()
        self.res_r, res_w = os.pipe()
        env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")]),
               "TMPDIR": str(self.tmp), "PYTHONFAULTHANDLER": "1", "COLUMNS": "160",
               "CODESIGN_FUZZ_STACKS": str(self.stacks)}
        with open(self.log, "ab") as log:
            self.proc = subprocess.Popen([sys.executable, "-m", "tests.fuzz.worker", str(cmd_r), str(res_w)],
                                         cwd=ROOT, env=env, pass_fds=(cmd_r, res_w), stdin=subprocess.DEVNULL,
                                         stdout=log, stderr=log, start_new_session=True)
        os.close(cmd_r)
        os.close(res_w)
        self.buffer = b""
        ready = self.read(timeout=600)
        if ready is None or "ready" not in ready:
            raise RuntimeError(f"fuzz worker did not start; see {self.log}")
        self.case: Case | None = None
        self.folder: Path | None = None
        self.before: dict | None = None
        self.logs = root

    def send(self, request: dict) -> None:
        os.write(self.cmd_w, (json.dumps(request) + "\n").encode())

    def read(self, timeout: float) -> dict | None:
        """The next answer, or None when the worker died or stayed silent ``timeout`` seconds."""
        while b"\n" not in self.buffer:
            ready, _, _ = select.select([self.res_r], [], [], timeout)
            if not ready:
                return None
            chunk = os.read(self.res_r, 1 << 16)
            if not chunk:
                return None
            self.buffer += chunk
        line, self.buffer = self.buffer.split(b"\n", 1)
        return json.loads(line)

    def stack(self) -> str:
        """The hung worker's Python stack (faulthandler on SIGUSR1); waits up to 10 s for it to be written."""
        try:
            os.kill(self.proc.pid, signal.SIGUSR1)
        except ProcessLookupError:
            return ""
        for _ in range(100):
            text = _read(self.stacks)
            if "File" in text and text.endswith("\n"):
                return text
            time.sleep(0.1)  # diagnostics only: nothing is judged on how long this takes
        return _read(self.stacks)

    def kill(self) -> str:
        try:
            os.killpg(self.proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        code = self.proc.wait()
        for fd in (self.cmd_w, self.res_r):
            os.close(fd)
        return f"signal {-code}" if code < 0 else f"exit {code}"

    def close(self) -> None:
        os.close(self.cmd_w)
        try:
            self.proc.wait(timeout=60)
        except subprocess.TimeoutExpired:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait()
        os.close(self.res_r)


class WorkerPool:
    """``size`` worker processes (``CODESIGN_FUZZ_WORKERS``, default: the CPU count, at most 4), restarted when a
    case kills or hangs one."""

    def __init__(self, size: int | None = None) -> None:
        self.root = Path(tempfile.mkdtemp(prefix="codesign-fuzz-"))
        size = size or int(os.environ.get("CODESIGN_FUZZ_WORKERS", "0")) or min(os.cpu_count() or 1, 4)
        self.workers = [_Worker(self.root, i) for i in range(size)]
        self.counter = 0

    def close(self) -> None:
        for w in self.workers:
            w.close()
        shutil.rmtree(self.root, ignore_errors=True)

    def __enter__(self) -> WorkerPool:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def run(self, cases: Iterable[Case], on_failure: Callable[[Failure], None] | None = None) -> Outcome:
        """Run every case (in parallel over the workers) and judge it; never stops at a failure."""
        outcome = Outcome()
        pending = list(cases)[::-1]
        busy: dict[int, _Worker] = {}
        deadline: dict[int, float] = {}
        started: dict[int, tuple[float, float | None]] = {}  # wall time and worker CPU seconds at the case's start
        while pending or busy:
            for w in self.workers:
                while w.case is None and pending:
                    case = pending.pop()
                    try:
                        self._start(w, case)
                    except Exception as exc:  # noqa: BLE001 - a generator bug fails its case, not the whole run
                        outcome.cases += 1
                        outcome.failures.append(Failure(case, "generator", f"generator {type(exc).__name__}",
                                                        repr(exc)[:300]))
                        w.case = None
                        continue
                    busy[w.res_r] = w
                    deadline[w.res_r] = time.monotonic() + CASE_TIMEOUT
                    started[w.res_r] = (time.monotonic(), _cpu_seconds(w.proc.pid))
            if not busy:
                continue
            timeout = max(0.0, min(deadline[fd] for fd in busy) - time.monotonic())
            ready, _, _ = select.select(list(busy), [], [], timeout)
            now = time.monotonic()
            for fd in list(busy):
                w = busy[fd]
                if fd in ready or b"\n" in w.buffer:
                    answer = w.read(timeout=0.0 if b"\n" in w.buffer else CASE_TIMEOUT)
                    died = None if answer is not None else "crash"
                elif now >= deadline[fd]:
                    left = self._cpu_left(w, *started[fd], now)
                    if left > 0:  # slow because the machine is busy, not hung: wait for the CPU it has left
                        deadline[fd] = now + left
                        continue
                    answer, died = None, "hang"
                else:
                    continue
                del busy[fd], deadline[fd], started[fd]
                outcome.cpu_s += (answer or {}).get("cpu_s", CASE_TIMEOUT if died == "hang" else 0.0)
                end = died or ("exception" if (answer or {}).get("exc") else str((answer or {}).get("rc")))
                outcome.exits[end] = outcome.exits.get(end, 0) + 1
                failures = self._finish(w, answer, died, outcome.messages)
                outcome.cases += 1
                outcome.failures += failures
                for failure in failures:
                    if on_failure:
                        on_failure(failure)
        return outcome

    @staticmethod
    def _cpu_left(w: _Worker, wall0: float, cpu0: float | None, now: float) -> float:
        """Seconds to keep waiting for a case past its first deadline: the CPU seconds of its bound it has not used
        (at least one, so a worker that gets little CPU is looked at again), 0 once it has used them all or has
        waited ``HANG_WALL_FACTOR`` bounds of wall time; 0 without /proc (the wall clock judges)."""
        cpu = _cpu_seconds(w.proc.pid)
        if cpu is None or cpu0 is None or now - wall0 >= HANG_WALL_FACTOR * CASE_TIMEOUT:
            return 0.0
        used = cpu - cpu0
        return 0.0 if used >= CASE_TIMEOUT else max(1.0, CASE_TIMEOUT - used)

    def _start(self, w: _Worker, case: Case) -> None:
        self.counter += 1
        folder = self.root / f"case-{self.counter}"
        try:
            write_files(case, folder)
        except Exception:
            shutil.rmtree(folder, ignore_errors=True)
            raise
        w.case, w.folder = case, folder
        w.before = _snapshot(w.folder, case.outputs)
        w.logs = self.root / f"log-{self.counter}"
        w.send({"dir": str(w.folder), "argv": list(case.argv), "log": str(w.logs)})

    def _finish(self, w: _Worker, answer: dict | None, died: str | None, messages: list[str]) -> list[Failure]:
        case, folder, before = w.case, w.folder, w.before
        assert case is not None and folder is not None and before is not None
        log = w.logs
        if died is not None:
            stack = w.stack() if died == "hang" else ""
            answer = {"rc": None, "died": f"{died} ({w.kill()})", "stack": stack}
            self.workers[self.workers.index(w)] = _Worker(self.root, self.workers.index(w))
        elif answer.get("exc_type") == "MemoryError" or answer.get("rss_after_kb", 0) > RESTART_MB * 1024:
            # A case that ran out of memory can leave the heap fragmented or half-freed: the next case gets a
            # fresh worker, so no case is blamed for its predecessor's memory.
            w.close()
            self.workers[self.workers.index(w)] = _Worker(self.root, self.workers.index(w))
        assert answer is not None  # a worker that did not die answered
        out_err = [_read(Path(f"{log}.out")), _read(Path(f"{log}.err"))]
        failures = judge(case, answer, out_err[0], out_err[1])
        if answer.get("rc") == 2:
            messages.append(out_err[1].strip()[:300])
        failures += _changes(case, before, _snapshot(folder, case.outputs))
        leftovers = sorted(p.name for p in w.tmp.iterdir() if p.name not in _THIRD_PARTY_TMP)
        if leftovers:
            failures.append(Failure(case, "temp-left", f"temp-left {len(leftovers)}",
                                    f"left in TMPDIR: {', '.join(leftovers[:5])}"))
        for p in (w.tmp.iterdir() if w.tmp.exists() else ()):
            shutil.rmtree(p, ignore_errors=True) if p.is_dir() and not p.is_symlink() else p.unlink()
        shutil.rmtree(folder, ignore_errors=True)
        for suffix in (".out", ".err"):
            Path(f"{log}{suffix}").unlink(missing_ok=True)
        w.case = w.folder = w.before = None
        return failures


def _read(path: Path) -> str:
    try:
        return path.read_bytes().decode("utf-8", "replace")
    except OSError:
        return ""


# --- The oracle -------------------------------------------------------------------------------------------------------

_OURS = re.compile(r'File "[^"]*?/((?:codesign|compiler|hw)/[^"]+)", line \d+, in (\S+)')
_ANY = re.compile(r'File "[^"]*?([^/"]+)", line \d+, in (\S+)')


def _norm(text: str) -> str:
    """A message reduced to its shape: paths, numbers and quoted names replaced, so one cause is one signature."""
    text = re.sub(r"(/[^\s:'\"]+)+", "PATH", text)
    text = re.sub(r"'[^']*'|\"[^\"]*\"", "'…'", text)
    text = re.sub(r"-?\d[\d.e+_x]*", "N", text)
    return text[:90]


def _traceback_file(stderr: str) -> str:
    """The text of a traceback file the message names (the CLI's exit-3 line says where it wrote it), or ""."""
    for path in re.findall(r"(/[^\s'\"(),;]+)", stderr):
        p = Path(path.rstrip(".:"))
        try:
            text = p.read_text(errors="replace") if p.is_file() and p.stat().st_size < 1 << 20 else ""
        except OSError:
            continue
        if "Traceback" in text:
            return text
    return ""


def judge(case: Case, answer: dict, stdout: str, stderr: str) -> list[Failure]:
    """Every way this finished run broke the contract (see the module doc)."""
    out: list[Failure] = []
    if "died" in answer:
        kind = "hang" if answer["died"].startswith("hang") else "crash"
        # faulthandler prints the innermost frame first: the first of ours is where our code was waiting.
        stack = answer.get("stack", "")
        frames = re.findall(r'File "[^"]*?/((?:codesign|compiler|hw)/[^"]+)", line \d+ in (\S+)', stack)
        inner = re.findall(r'File "[^"]*?([^/"]+)", line \d+ in (\S+)', stack)
        where = f" at {':'.join(frames[0])} (in {':'.join(inner[0])})" if frames and inner else ""
        return [Failure(case, kind, f"{kind} in {case.family}{where}",
                        f"worker {answer['died']}; stack: {' / '.join(':'.join(f) for f in inner[:4])}; "
                        f"stderr: {stderr[-200:]}")]
    if answer.get("exc"):
        tb = answer["exc"]
        ours, anywhere = _OURS.findall(tb), _ANY.findall(tb)
        where = ":".join(ours[-1]) if ours else "?"
        deepest = ":".join(anywhere[-1]) if anywhere else "?"
        kind = "memory" if answer.get("memory") else "traceback"
        last = tb.strip().splitlines()[-1]
        out.append(Failure(case, kind, f"{answer['exc_type']} at {where} (raised in {deepest})", last[:400]))
    else:
        rc = answer["rc"]
        lines = [ln for ln in stderr.splitlines() if ln.strip()]
        if rc not in (0, 2):
            tb = _traceback_file(stderr)
            ours, anywhere = _OURS.findall(tb), _ANY.findall(tb)
            if anywhere:  # exit 3, "a bug; traceback in FILE": group by where it was raised, as for an escape
                where = ":".join(ours[-1]) if ours else "?"
                last = tb.strip().splitlines()[-1]
                out.append(Failure(case, "traceback", f"{last.split(':')[0]} at {where} (raised in "
                                   f"{':'.join(anywhere[-1])}), exit {rc}", f"{stderr.strip()[:200]} / {last[:300]}"))
            else:
                out.append(Failure(case, "exit-code", f"exit {rc}: {_norm(lines[0] if lines else '')}",
                                   f"exit {rc}; stderr: {stderr[-400:]}"))
        elif rc == 2 and (len(lines) != 1 or not lines[0].startswith("codesign: ")):
            first = lines[0] if lines else "<empty>"
            out.append(Failure(case, "stderr", f"{len(lines)} stderr lines: {_norm(first)}",
                               f"exit 2 with {len(lines)} stderr lines: {stderr[-400:]}"))
    if "Traceback (most recent call last)" in stderr and not answer.get("exc"):
        out.append(Failure(case, "traceback", "traceback printed", stderr[-400:]))
    grown = answer.get("peak_rss_kb", 0) - answer.get("rss_before_kb", 0)
    if answer.get("memory") is False and grown > PEAK_MB * 1024:
        out.append(Failure(case, "memory", f"peak RSS grew over {PEAK_MB:.0f} MB",
                           f"peak RSS grew by {grown / 1024:.0f} MB"))
    if answer.get("children"):
        out.append(Failure(case, "orphan", "child process left", "; ".join(answer["children"])))
    return out


def _snapshot(folder: Path, outputs: tuple[str, ...]) -> dict[str, tuple]:
    """(size, mtime_ns, link target) of every path in the case folder except its outputs, and the watched inputs."""
    allowed = tuple(str(folder / o) for o in outputs)
    seen: dict[str, tuple] = {}
    for top in (folder, *_WATCHED):
        for dirpath, dirnames, filenames in os.walk(top):
            if dirpath.startswith(allowed):
                dirnames[:] = []
                continue
            for name in filenames + dirnames:
                p = os.path.join(dirpath, name)
                if p.startswith(allowed) and (p in allowed or p.startswith(tuple(a + os.sep for a in allowed))):
                    continue
                st_ = os.lstat(p)
                seen[p] = (st_.st_size, st_.st_mtime_ns, os.readlink(p) if os.path.islink(p) else None)
    return seen


def _changes(case: Case, before: dict, after: dict) -> list[Failure]:
    changed = sorted(p for p in set(before) | set(after) if before.get(p) != after.get(p)
                     and not (p in before and p in after and os.path.isdir(p)))
    if not changed:
        return []
    names = [re.sub(r".*/case-\d+/", "", p) for p in changed]
    return [Failure(case, "write-outside", f"touched {_norm(names[0])}", f"changed outside the outputs: {names[:5]}")]


def run_cases(pool: WorkerPool, cases: list[Case], log: Path | None = None) -> Outcome:
    """``pool.run`` that also appends each failure to ``log`` (JSON lines) when given (``CODESIGN_FUZZ_LOG``)."""
    sink = None
    if log is not None:
        sink = open(log, "a")

    def record(f: Failure) -> None:
        if sink is not None:
            sink.write(json.dumps({"family": f.case.family, "kind": f.kind, "signature": f.signature,
                                   "argv": list(f.case.argv), "note": f.case.note, "detail": f.detail}) + "\n")
            sink.flush()

    try:
        return pool.run(cases, record)
    finally:
        if sink is not None:
            sink.close()
