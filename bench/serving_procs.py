"""Servers the benchmark starts: each in a session of its own, always stopped (also on Ctrl-C/failure).

Every process is started with ``start_new_session=True``, so the server and everything it spawns
(TorchServe's Java frontend and its Python workers) share one process group that is signalled as a
whole; :func:`stop_all` runs from ``atexit`` and from SIGINT/SIGTERM handlers.
"""

from __future__ import annotations

import atexit
import contextlib
import http.client
import os
import signal
import subprocess
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import FrameType
from typing import Any

_RUNNING: list[Server] = []


def post(port: int, path: str, body: bytes, timeout: float = 30.0) -> tuple[int, bytes]:
    """One POST on a fresh connection: (status, body); raises OSError when nothing listens yet."""
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    try:
        connection.request("POST", path, body=body, headers={"Content-Type": "application/json"})
        response = connection.getresponse()
        return response.status, response.read()
    finally:
        connection.close()


def group_alive(pgid: int) -> bool:
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # pragma: no cover - a foreign process took the id
        return False
    return True


def _group_stats(pgid: int) -> dict[int, list[str]]:
    """The /proc/PID/stat fields after the command name, by pid, of the live (not zombie) processes of
    process group ``pgid``."""
    found = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
            fields = stat[stat.rindex(")") + 2 :].split()
            if int(fields[2]) == pgid and fields[0] != "Z":
                found[int(entry.name)] = fields
        except (OSError, ValueError):
            continue
    return found


def group_pids(pgid: int) -> list[int]:
    """The live (not zombie) processes of process group ``pgid``, read from /proc."""
    return list(_group_stats(pgid))


def group_cpu_seconds(pgid: int) -> float:
    """CPU seconds (user + system) used so far by the live processes of group ``pgid``."""
    ticks = sum(int(fields[11]) + int(fields[12]) for fields in _group_stats(pgid).values())
    return ticks / os.sysconf("SC_CLK_TCK")


def group_members(pgid: int) -> list[str]:
    """``pid command`` of the processes still in process group ``pgid`` (read from /proc)."""
    members = []
    for pid in group_pids(pgid):
        try:
            cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
        except OSError:
            continue
        members.append(f"{pid} {cmdline[:120]}")
    return members


@dataclass
class Server:
    """A server process: how to start it, where it answers, how to ask it to stop first."""

    name: str
    command: Sequence[str]
    port: int
    log_path: Path
    env: dict[str, str] = field(default_factory=dict)
    cwd: Path | None = None
    stop_command: Sequence[str] | None = None  # e.g. ``torchserve --stop``, run before the signals
    grpc_port: int | None = None  # where it serves gRPC too, if it does
    process: subprocess.Popen[bytes] | None = None
    started_at: float = 0.0

    def start(self) -> None:
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        log = self.log_path.open("ab")
        self.started_at = time.perf_counter()
        self.process = subprocess.Popen(
            list(self.command),
            stdout=log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            env={**os.environ, **self.env},
            cwd=self.cwd,
            start_new_session=True,
        )
        log.close()
        _RUNNING.append(self)

    def log_tail(self, lines: int = 30) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return ""

    def wait_first_answer(
        self,
        path: str = "",
        body: bytes = b"",
        *,
        timeout: float = 180.0,
        accept: Callable[[bytes], bool] | None = None,
        ask: Callable[[], bytes | None] | None = None,
    ) -> float:
        """Seconds from launch to the first 200 on ``POST path`` (the cold start), or to the first answer
        of ``ask`` (one request of another kind: its answer, None when refused, OSError while nothing
        listens). Asks at least once, so a server checked after others took its whole ``timeout`` still
        gets its chance."""
        assert self.process is not None
        deadline = self.started_at + timeout
        ask = ask or (lambda: self.post_answer(path, body))
        while True:
            if self.process.poll() is not None:
                raise RuntimeError(f"{self.name} exited with {self.process.returncode}:\n{self.log_tail()}")
            try:
                answer = ask()
                if answer is not None and (accept is None or accept(answer)):
                    return time.perf_counter() - self.started_at
            except OSError:
                pass
            if time.perf_counter() >= deadline:
                break
            time.sleep(0.02)
        raise RuntimeError(f"{self.name}: no answer on {path} within {timeout:g} s:\n{self.log_tail()}")

    def post_answer(self, path: str, body: bytes) -> bytes | None:
        status, answer = post(self.port, path, body, timeout=10)
        return answer if status == 200 else None

    def stop(self, timeout: float = 20.0) -> list[str]:
        """Stop the server and its whole process group; return any process that survived."""
        if self.process is None:
            return []
        pgid = self.process.pid
        if self.stop_command is not None and self.process.poll() is None:
            with contextlib.suppress(OSError, subprocess.SubprocessError):
                subprocess.run(
                    list(self.stop_command),
                    env={**os.environ, **self.env},
                    cwd=self.cwd,
                    timeout=timeout,
                    stdout=subprocess.DEVNULL,
                    stderr=subprocess.DEVNULL,
                )
        for sig, grace in ((signal.SIGTERM, timeout), (signal.SIGKILL, 5.0)):
            if not group_alive(pgid):
                break
            with contextlib.suppress(ProcessLookupError):
                os.killpg(pgid, sig)
            deadline = time.monotonic() + grace
            while group_alive(pgid) and time.monotonic() < deadline:
                with contextlib.suppress(ChildProcessError):
                    self.process.poll()
                time.sleep(0.05)
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.process.wait(5)
        if self in _RUNNING:
            _RUNNING.remove(self)
        return group_members(pgid)


def server_in(work: Path, name: str, command: Sequence[str], port: int, **settings: Any) -> Server:
    """A server named ``name`` whose working directory, and log ``server.log``, are ``work/name``;
    ``settings``: :class:`Server`'s other fields."""
    run_dir = work / name
    run_dir.mkdir(parents=True, exist_ok=True)
    return Server(
        name=name, command=command, port=port, log_path=run_dir / "server.log", cwd=run_dir, **settings
    )


def running() -> list[Server]:
    """The servers started and not stopped yet."""
    return list(_RUNNING)


def stop_all() -> list[str]:
    left: list[str] = []
    for server in list(reversed(_RUNNING)):
        left += server.stop()
    return left


def _on_signal(signum: int, frame: FrameType | None) -> None:
    stop_all()
    raise SystemExit(128 + signum)


def install_cleanup() -> None:
    atexit.register(stop_all)
    signal.signal(signal.SIGINT, _on_signal)
    signal.signal(signal.SIGTERM, _on_signal)
