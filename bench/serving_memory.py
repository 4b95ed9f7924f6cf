"""Memory of a server: proportional set size (PSS) summed over every process of its process group.

PSS counts a page shared by N processes as 1/N in each, so the sum over a server's processes (TorchServe's
JVM and its Python workers, KServe's spawned uvicorn workers, our runtime) counts every page once, and
servers with different process counts compare fairly. Read from ``/proc/PID/smaps_rollup`` (Linux >= 4.14);
the bench's servers run in process groups of their own (bench/serving_procs.py).
"""

from __future__ import annotations

import threading
from pathlib import Path
from types import TracebackType

import serving_procs


def pss_kib(pid: int) -> int:
    """One process's PSS in KiB; 0 when it exited meanwhile."""
    try:
        for line in Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines():
            if line.startswith("Pss:"):
                return int(line.split()[1])
    except (OSError, ValueError):
        pass
    return 0


def group_pss_mib(pgid: int) -> float:
    """PSS of every live process of group ``pgid``, summed, in MiB."""
    return sum(pss_kib(pid) for pid in serving_procs.group_pids(pgid)) / 1024


def server_pss_mib(server: serving_procs.Server) -> float:
    assert server.process is not None, f"{server.name} is not started"
    return group_pss_mib(server.process.pid)


def server_processes(server: serving_procs.Server) -> int:
    """How many live processes the server has (its whole process group)."""
    assert server.process is not None, f"{server.name} is not started"
    return len(serving_procs.group_pids(server.process.pid))


class PeakPss:
    """A context that samples a server's PSS every ``interval`` s while it is open (e.g. during a load
    point); ``peak`` is the highest sum seen. Inactive (``active=False``), it samples nothing."""

    def __init__(self, server: serving_procs.Server, interval: float = 0.5, *, active: bool = True) -> None:
        self.server, self.interval, self.active = server, interval, active
        self.peak = 0.0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._sample, daemon=True)

    def _sample(self) -> None:
        while True:
            self.peak = max(self.peak, server_pss_mib(self.server))
            if self._stop.wait(self.interval):
                return

    def __enter__(self) -> PeakPss:
        if self.active:
            self._thread.start()
        return self

    def __exit__(
        self, kind: type[BaseException] | None, error: BaseException | None, trace: TracebackType | None
    ) -> None:
        self._stop.set()
        if self.active:
            self._thread.join()
