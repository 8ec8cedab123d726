"""Pool workers die with the sweep that started them, whatever kills it (SIGKILL included).

Why a worker cannot rely on its parent: local workers are forked by multiprocessing's fork server, not by the sweep.
Every worker holds the write end of the fork server's "alive" pipe and of its own task queue, so when the sweep is
killed nothing reaches EOF: the fork server waits for its clients (the workers), the workers wait for tasks, and
``os.getppid()`` (the fork server) never changes. So each worker watches the sweep process itself: a pidfd (Linux
>= 5.3) becomes readable the moment that process exits, without polling and without being fooled by a reused pid.
Once the workers are gone, the fork server and the resource tracker see EOF on their pipes and exit on their own.
"""

from __future__ import annotations

import os
import select
import threading
import time

__all__ = ["exit_with"]

_POLL_S = 1.0  # where no pidfd exists (not Linux): how often to ask whether the sweep still runs, s


def exit_with(pid: int) -> None:
    """Pool initializer: end this process as soon as process ``pid`` (the sweep) has exited.

    A sweep already dead when the worker starts (or whose pid was already reused) ends the worker at once: the
    sweep must be an ancestor of this process (its parent, or the fork server's parent)."""
    try:
        fd: int | None = os.pidfd_open(pid)
    except ProcessLookupError:
        os._exit(0)
    except (AttributeError, OSError):  # no pidfd_open here: fall back to polling the pid
        fd = None
    if not _is_ancestor(pid):
        os._exit(0)
    threading.Thread(target=_watch, args=(pid, fd), name="sweep-lifeline", daemon=True).start()


def _watch(pid: int, fd: int | None) -> None:
    if fd is not None:
        poller = select.poll()
        poller.register(fd, select.POLLIN)
        while not poller.poll():  # readable = exited; an empty answer is only a spurious wake-up
            pass
        os._exit(0)
    while True:
        time.sleep(_POLL_S)
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            os._exit(0)
        except PermissionError:  # the pid now belongs to another user's process: the sweep is gone
            os._exit(0)


def _is_ancestor(pid: int) -> bool:
    """True when ``pid`` is this process's parent or grandparent (True where /proc cannot tell)."""
    parent = os.getppid()
    if parent == pid:
        return True
    try:
        with open(f"/proc/{parent}/stat", "rb") as fh:
            stat = fh.read()
    except OSError:
        return True
    # Fields after the command name (which may hold spaces and parentheses): state, ppid, ...
    return int(stat.rsplit(b")", 1)[1].split()[1]) == pid
