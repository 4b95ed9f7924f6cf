"""Child processes of the development harness, which never outlive their owner: the local control plane,
the stand-ins' pods, the demo's servers, and the servers the fast tests and benchmarks start.

Every child runs in its own session, so :func:`stop` ends its whole process group. A child forked from the
main thread (or from a :class:`Spawner`, whose thread lives as long as its owner) also gets
``PR_SET_PDEATHSIG=SIGKILL``: the kernel kills it when the thread that forked it exits, so a SIGKILLed owner
takes its children along. Work directories record their owner's pid (:func:`owned_workdir`), so the next
run removes those of an owner that died without cleaning up (:func:`sweep_stale_workdirs`).
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import queue
import shutil
import signal
import socket
import subprocess
import tempfile
import threading
import time
from collections.abc import Iterator, Mapping, Sequence
from concurrent.futures import Future
from pathlib import Path
from types import FrameType

OWNER_FILE = "owner.pid"
_PR_SET_PDEATHSIG = 1
# Resolved in the parent: the child between fork and exec should do as little as possible.
_prctl = getattr(ctypes.CDLL(None, use_errno=True), "prctl", None)


def free_ports(count: int) -> list[int]:
    """``count`` distinct free loopback ports (all held open while choosing, so no duplicates)."""
    with contextlib.ExitStack() as stack:
        ports = []
        for _ in range(count):
            sock = stack.enter_context(socket.socket(socket.AF_INET, socket.SOCK_STREAM))
            sock.bind(("127.0.0.1", 0))
            ports.append(int(sock.getsockname()[1]))
        return ports


def free_port() -> int:
    """One free loopback port."""
    return free_ports(1)[0]


@contextlib.contextmanager
def refusing_port() -> Iterator[int]:
    """A loopback port that refuses every connection while the block runs: bound, never listening, so that
    no other process (a server another test worker starts meanwhile) can take it, as it could a port closed
    after choosing it."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        yield int(sock.getsockname()[1])


def die_with_parent() -> None:
    """A ``preexec_fn``: runs in the child before exec and asks the kernel to SIGKILL it when the thread
    that forked it exits."""
    if _prctl is not None:
        _prctl(_PR_SET_PDEATHSIG, signal.SIGKILL)


def popen(argv: Sequence[str], *, log: Path | None, env: Mapping[str, str] | None = None,
          cwd: Path | None = None, tie_to_thread: bool | None = None) -> subprocess.Popen[bytes]:
    """Start a child in its own session with stdout and stderr appended to ``log`` (``None``: discarded).

    ``env`` is its whole environment (``None``: this process's). ``tie_to_thread``: kill it when the
    forking thread exits; by default only when that is the main thread (a worker thread may end before the
    child should: use a :class:`Spawner` there)."""
    if tie_to_thread is None:
        tie_to_thread = threading.current_thread() is threading.main_thread()
    with contextlib.ExitStack() as stack:
        out: int | object = subprocess.DEVNULL
        if log is not None:
            log.parent.mkdir(parents=True, exist_ok=True)
            out = stack.enter_context(log.open("ab"))
        return subprocess.Popen(
            list(argv), stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT,  # type: ignore[arg-type]
            env=dict(env) if env is not None else None, cwd=cwd, start_new_session=True,
            preexec_fn=die_with_parent if tie_to_thread else None,
        )


def _leads_group(proc: subprocess.Popen[bytes]) -> bool:
    """Whether the child leads its own process group (asked before it is reaped; a child already reaped
    counts as a leader, so what is left of its group is still stopped)."""
    if proc.returncode is not None:
        return True
    try:
        return os.getpgid(proc.pid) == proc.pid
    except ProcessLookupError:
        return True


def _send(proc: subprocess.Popen[bytes], sig: signal.Signals, group: bool) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        if group:
            os.killpg(proc.pid, sig)
        elif proc.returncode is None:
            proc.send_signal(sig)


def stop(proc: subprocess.Popen[bytes], timeout: float = 10.0, kill_timeout: float | None = None) -> int:
    """SIGTERM the child (its whole process group when it leads one, as :func:`popen`'s children do),
    SIGKILL it when it still runs after ``timeout`` seconds, reap it (waiting ``kill_timeout`` seconds at
    most after the SIGKILL; ``None``: until it is gone), and SIGKILL what is left of its group. Returns its
    exit status."""
    group = _leads_group(proc)
    if proc.poll() is None:
        _send(proc, signal.SIGTERM, group)
        try:
            proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            _send(proc, signal.SIGKILL, group)
            proc.wait(kill_timeout)
    if group:
        _send(proc, signal.SIGKILL, group)  # stragglers in the group (also of a leader already gone)
    return proc.returncode


def pid_alive(pid: int) -> bool:
    """Whether a process with this pid is still running (zombies count as gone)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    # A zombie still answers kill(0): read its state.
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat.rsplit(")", 1)[1].split()[0] != "Z"


def tail(path: Path, lines: int = 20) -> str:
    """The last ``lines`` lines of a log file ("" when it cannot be read)."""
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return ""


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
    """A server (output discarded) listening on ``port`` for the ``with`` block; stopped after it.
    ``env`` is added to this process's environment."""
    proc = popen(cmd, log=None, env={**os.environ, **(env or {})})
    try:
        wait_for_port(port, proc, timeout)
        yield proc
    finally:
        stop(proc, 10)


class LoggedProcess:
    """A child whose output goes to ``log_path`` (``env`` added to this process's environment)."""

    def __init__(self, command: list[str], log_path: Path, env: Mapping[str, str] | None = None) -> None:
        self.log_path = log_path
        log_path.unlink(missing_ok=True)
        self.process = popen(command, log=log_path, env={**os.environ, **(env or {})})

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def alive(self) -> bool:
        """True while it runs; an ``AssertionError`` with its log once it has exited."""
        if self.process.poll() is not None:
            raise AssertionError(
                f"{self.process.args[0]} exited with {self.process.returncode}:\n{self.log()}"
            )
        return True

    def stop(self, timeout: float = 30) -> int:
        return stop(self.process, timeout, kill_timeout=10)


class Spawner:
    """One long-lived thread that forks children for threads that may end before their children should
    (each child is tied to this thread, which lives until :meth:`close`)."""

    def __init__(self, name: str = "spawner") -> None:
        self._requests: queue.Queue[tuple[tuple, dict, Future] | None] = queue.Queue()
        self._thread = threading.Thread(target=self._serve, name=name, daemon=True)
        self._thread.start()

    def _serve(self) -> None:
        while (item := self._requests.get()) is not None:
            args, kwargs, future = item
            try:
                future.set_result(popen(*args, **kwargs, tie_to_thread=True))
            except BaseException as exc:
                future.set_exception(exc)

    def popen(self, argv: Sequence[str], *, log: Path, env: Mapping[str, str] | None = None,
              cwd: Path | None = None) -> subprocess.Popen[bytes]:
        """:func:`popen`, forked by the spawner's thread."""
        future: Future[subprocess.Popen[bytes]] = Future()
        self._requests.put(((argv,), {"log": log, "env": env, "cwd": cwd}, future))
        return future.result(timeout=30)

    def close(self) -> None:
        """Stop the thread (children still running are SIGKILLed by the kernel)."""
        self._requests.put(None)
        self._thread.join(timeout=10)


def owned_workdir(prefix: str) -> Path:
    """A new temporary directory that names this process as its owner (see :func:`sweep_stale_workdirs`)."""
    directory = Path(tempfile.mkdtemp(prefix=prefix))
    (directory / OWNER_FILE).write_text(str(os.getpid()))
    return directory


def sweep_stale_workdirs(prefix: str) -> None:
    """Remove the :func:`owned_workdir` directories of owners that are gone (SIGKILLed: their children died
    with them, but nothing could remove the directory)."""
    for directory in Path(tempfile.gettempdir()).glob(f"{prefix}*"):
        try:
            owner = int((directory / OWNER_FILE).read_text())
        except (OSError, ValueError):
            continue
        if not pid_alive(owner):
            shutil.rmtree(directory, ignore_errors=True)


def _raise_keyboard_interrupt(signum: int, frame: FrameType | None) -> None:
    raise KeyboardInterrupt(f"signal {signum}")


def install_signal_handlers() -> None:
    """Turn SIGTERM/SIGHUP into KeyboardInterrupt (if nobody else handles them) so ``finally`` blocks,
    pytest fixture teardown and atexit hooks get to stop every child."""
    for sig in (signal.SIGTERM, signal.SIGHUP):
        if signal.getsignal(sig) in (signal.SIG_DFL, None):
            signal.signal(sig, _raise_keyboard_interrupt)
