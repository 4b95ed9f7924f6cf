"""Child processes of the tests: a free loopback port, waiting for a server's port, stopping a child
(SIGTERM, then SIGKILL), and a child whose output goes to a log file."""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import time
from collections.abc import Iterator, Mapping
from pathlib import Path


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def stop(proc: subprocess.Popen[bytes], timeout: float, kill_timeout: float | None = None) -> int:
    """SIGTERM ``proc``, SIGKILL it when it is still running after ``timeout`` seconds, then reap it
    (waiting ``kill_timeout`` seconds at most, ``None``: until it is gone). Returns its exit status."""
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(kill_timeout)
    return proc.returncode


def wait_for_port(port: int, proc: subprocess.Popen[bytes], timeout: float = 30.0) -> None:
    """Until something accepts connections on 127.0.0.1:``port``; ``RuntimeError`` when ``proc`` exits
    first or nothing listens within ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"server exited early with {proc.returncode}: {proc.args}")
        with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), timeout=0.5):
            return
        time.sleep(0.1)
    raise RuntimeError(f"server on port {port} did not start within {timeout}s")


@contextlib.contextmanager
def running(
    cmd: list[str], port: int, env: dict[str, str] | None = None, timeout: float = 30.0
) -> Iterator[subprocess.Popen[bytes]]:
    """A server (output discarded) listening on ``port`` for the ``with`` block; stopped after it."""
    proc = subprocess.Popen(
        cmd, env={**os.environ, **(env or {})}, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    try:
        wait_for_port(port, proc, timeout)
        yield proc
    finally:
        stop(proc, 10)


class LoggedProcess:
    """A child process whose output goes to ``log_path``; stopped with SIGTERM, then SIGKILL."""

    def __init__(self, command: list[str], log_path: Path, env: Mapping[str, str] | None = None) -> None:
        self.log_path = log_path
        self._log = log_path.open("wb")
        self.process = subprocess.Popen(
            command, stdout=self._log, stderr=subprocess.STDOUT, env={**os.environ, **(env or {})}
        )

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def alive(self) -> bool:
        """True while it runs; an ``AssertionError`` with its log once it has exited."""
        if self.process.poll() is not None:
            raise AssertionError(
                f"{self.process.args[0]} exited with {self.process.returncode}:\n{self.log()}"
            )
        return True

    def stop(self, timeout: float = 30) -> int:
        returncode = stop(self.process, timeout, kill_timeout=10)
        self._log.close()
        return returncode
