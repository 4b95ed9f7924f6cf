"""Several server processes on one port (``--processes N``): each its own event loop, batcher and model
copy, so Python's one-core-per-process limit stops being the server's.

The port is shared with ``SO_REUSEPORT``: every process binds its own listening socket and the kernel
spreads incoming connections over them by a hash of the connection's addresses. A shared socket
inherited from a parent was the other choice; there every process accepts from one queue, and an event
loop that wakes takes every connection waiting (asyncio and libuv accept in a loop), so a burst of
connections (a client pool opening) lands on one process. gRPC shares its port the same way (gRPC's own
``grpc.so_reuseport``), in every process; a gRPC channel is one connection, so one channel reaches one
process. Readiness is the server's: a process answers ready once every process has loaded its models
(each marks it with a file ``ready-<index>`` in the shared directory), so a probe that reaches a loaded
process does not send traffic to one still loading. The metrics port (8082) is served by process 0
alone; every process's ``GET /metrics`` shows the values of all, which prometheus-client's multiprocess
mode keeps in files under ``PROMETHEUS_MULTIPROC_DIR`` (a directory in the server's temporary directory,
or the given one emptied, at start and exit; the readiness marks live there too).

This module's :func:`supervise` is the parent: it starts the processes (``python -m isvc_runtime`` with
the same arguments and ``ISVC_PROCESS_INDEX`` set), forwards SIGTERM and SIGINT, and watches them. A
process killed by a signal (a native crash, the OOM killer) is started again, its gauges dropped; one
that exits with a status (a taken port, a bad config, an error) stops the whole server with that
status, since starting it again would not help. The parent imports neither torch nor the models.
"""

from __future__ import annotations

import ctypes
import logging
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Mapping, MutableMapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import FrameType

log = logging.getLogger("isvc_runtime.processes")

PROCESS_INDEX_ENV = "ISVC_PROCESS_INDEX"
MULTIPROC_DIR_ENV = "PROMETHEUS_MULTIPROC_DIR"
# A process killed more often than this within RESTART_WINDOW_S is not started again: the server stops.
MAX_RESTARTS = 5
RESTART_WINDOW_S = 60.0
POLL_S = 0.2
PR_SET_PDEATHSIG = 1  # linux/prctl.h


def _die_with_parent() -> None:
    """In a server process before it runs: the kernel sends it SIGTERM when the parent dies, even by
    SIGKILL, so no process outlives the server."""
    ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGTERM)


def process_index(env: Mapping[str, str]) -> int | None:
    """This process's index when it is one of several server processes, else None (the parent, or
    the only process)."""
    value = env.get(PROCESS_INDEX_ENV)
    return int(value) if value is not None and value.isdigit() else None


def process_command(argv: Sequence[str], index: int, work_dir: Path | None = None) -> list[str]:
    """The command line of server process ``index``: the parent's arguments, its own ``work_dir`` when
    given; every process but the first leaves the metrics port to the first (``--metrics-port 0``:
    /metrics on the inference port only, where it shows every process's values anyway)."""
    command = [sys.executable, "-m", "isvc_runtime", *argv]
    if work_dir is not None:
        command += ["--work-dir", str(work_dir)]
    return command if index == 0 else [*command, "--metrics-port", "0"]


def listening_socket(host: str, port: int) -> socket.socket:
    """A socket bound to ``host:port`` that other processes may bind as well (``SO_REUSEPORT``);
    uvicorn listens on it."""
    family, kind, proto, _, address = socket.getaddrinfo(
        host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE
    )[0]
    sock = socket.socket(family, kind, proto)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        if family == socket.AF_INET6:
            sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 0)
        sock.bind(address)
    except OSError:
        sock.close()
        raise
    sock.set_inheritable(True)
    return sock


def metrics_directory(env: MutableMapping[str, str], server_dir: Path) -> Path:
    """The multiprocess-mode directory, empty: ``PROMETHEUS_MULTIPROC_DIR`` when given (emptied), else
    ``server_dir/metrics``; set in ``env`` for the processes."""
    given = env.get(MULTIPROC_DIR_ENV)
    path = Path(given) if given else server_dir / "metrics"
    path.mkdir(parents=True, exist_ok=True)
    clear_metrics(path)
    env[MULTIPROC_DIR_ENV] = str(path)
    return path


def clear_metrics(path: Path) -> None:
    """Remove every process's values and readiness mark."""
    for stale in [*path.glob("*.db"), *path.glob("ready-*")]:
        stale.unlink(missing_ok=True)


def ready_mark(directory: Path, index: int) -> Path:
    """The file that says server process ``index`` has loaded its models."""
    return directory / f"ready-{index}"


def peers_loading(directory: Path, processes: int, index: int) -> list[str]:
    """The server's other processes that have not marked themselves loaded."""
    return [
        f"server process {peer}"
        for peer in range(processes)
        if peer != index and not ready_mark(directory, peer).exists()
    ]


@dataclass
class Restarts:
    """When processes were started again, to stop a crash loop."""

    times: list[float] = field(default_factory=list)

    def allow(self, now: float) -> bool:
        self.times = [t for t in self.times if now - t < RESTART_WINDOW_S]
        if len(self.times) >= MAX_RESTARTS:
            return False
        self.times.append(now)
        return True


class Supervisor:
    def __init__(
        self, argv: Sequence[str], processes: int, env: dict[str, str], work_root: Path | None
    ) -> None:
        """``work_root``: where each process gets its work directory (``process-<index>``), emptied
        when a process is started again; None: the processes share the user's ``--work-dir``."""
        self.argv = list(argv)
        self.env = env
        self.work_root = work_root
        self.children: list[subprocess.Popen[bytes] | None] = [None] * processes
        self.stopping = False
        self.restarts = Restarts()

    def start(self, index: int) -> None:
        work_dir = None
        if self.work_root is not None:
            work_dir = self.work_root / f"process-{index}"
            shutil.rmtree(work_dir, ignore_errors=True)  # what a killed process left
        child = subprocess.Popen(
            process_command(self.argv, index, work_dir),
            env={**self.env, PROCESS_INDEX_ENV: str(index)},
            preexec_fn=_die_with_parent,  # safe: the parent runs no other thread
        )
        self.children[index] = child
        log.info("server process %d started (pid %d)", index, child.pid)

    def stop(self, sig: int = signal.SIGTERM) -> None:
        self.stopping = True
        for child in self.children:
            if child is not None and child.poll() is None:
                child.send_signal(sig)

    def on_signal(self, sig: int, frame: FrameType | None) -> None:
        log.info("stopping the %d server processes (%s)", len(self.children), signal.Signals(sig).name)
        self.stop()

    def watch(self, metrics_dir: Path) -> int:
        """Until every process has ended; the server's exit status."""
        status = 0
        while True:
            alive = 0
            for index, child in enumerate(self.children):
                if child is None:
                    continue
                code = child.poll()
                if code is None:
                    alive += 1
                    continue
                self.children[index] = None
                if self.stopping:
                    continue
                status = self.on_exit(index, child.pid, code, metrics_dir)
                alive += self.children[index] is not None
            if not alive:
                return status
            time.sleep(POLL_S)

    def on_exit(self, index: int, pid: int, code: int, metrics_dir: Path) -> int:
        """React to process ``index`` ending while the server runs; the status the server ends with."""
        if code < 0 and self.restarts.allow(time.monotonic()):
            log.error(
                "server process %d (pid %d) was killed by %s; starting it again",
                index,
                pid,
                signal.Signals(-code).name,
            )
            from prometheus_client.multiprocess import mark_process_dead

            mark_process_dead(pid, str(metrics_dir))
            ready_mark(metrics_dir, index).unlink(missing_ok=True)
            self.start(index)
            return 0
        if code < 0:
            log.error(
                "server process %d (pid %d) was killed by %s, the %d-th time in %g s; stopping the server",
                index,
                pid,
                signal.Signals(-code).name,
                MAX_RESTARTS + 1,
                RESTART_WINDOW_S,
            )
        else:
            log.error(
                "server process %d (pid %d) exited with status %d; stopping the server", index, pid, code
            )
        self.stop()
        return code if code > 0 else 1


def supervise(argv: Sequence[str], processes: int, *, work_dir_given: bool) -> int:
    """Run ``processes`` server processes on one port until SIGTERM/SIGINT or a failure (see the module
    docstring); the exit status. Their work directories (unless ``--work-dir`` was given) and the metrics
    directory go in one temporary directory, removed at exit."""
    env = dict(os.environ)
    server_dir = Path(tempfile.mkdtemp(prefix="isvc-runtime-"))
    metrics_dir = metrics_directory(env, server_dir)
    supervisor = Supervisor(argv, processes, env, None if work_dir_given else server_dir)
    previous = {sig: signal.signal(sig, supervisor.on_signal) for sig in (signal.SIGTERM, signal.SIGINT)}
    try:
        for index in range(processes):
            supervisor.start(index)
        status = supervisor.watch(metrics_dir)
    finally:
        supervisor.stop(signal.SIGKILL)  # only a process still running, after an error here
        for sig, handler in previous.items():
            signal.signal(sig, handler)
        clear_metrics(metrics_dir)
        shutil.rmtree(server_dir, ignore_errors=True)
    log.info("server processes stopped")
    return status
