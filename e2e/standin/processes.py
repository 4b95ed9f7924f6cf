"""Child processes that never outlive their owner.

Every child runs in its own session (``stop`` kills the whole process group) and gets
``PR_SET_PDEATHSIG=SIGKILL``. The kernel sends that signal when the *thread* that forked the child
exits, so children of worker threads are forked by one long-lived :class:`Spawner` thread that lives
as long as the owner: if the owner is SIGKILLed, every child goes with it.
"""

from __future__ import annotations

import queue
import subprocess
import threading
from collections.abc import Mapping, Sequence
from concurrent.futures import Future
from pathlib import Path

from e2e.processes import die_with_parent


def popen(argv: Sequence[str], *, log: Path, env: Mapping[str, str] | None = None,
          cwd: Path | None = None) -> subprocess.Popen[bytes]:
    """Start a child with stdout+stderr appended to ``log``, in its own process group, killed with the
    forking thread. Call it from a thread that lives as long as the child should (or use Spawner)."""
    log.parent.mkdir(parents=True, exist_ok=True)
    with log.open("ab") as out:
        return subprocess.Popen(
            list(argv), stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT,
            env=dict(env) if env is not None else None, cwd=cwd, start_new_session=True,
            preexec_fn=die_with_parent,
        )


class Spawner:
    """One thread that forks every child (see the module docstring)."""

    def __init__(self) -> None:
        self._requests: queue.Queue[tuple[tuple, dict, Future] | None] = queue.Queue()
        self._thread = threading.Thread(target=self._serve, name="standin-spawner", daemon=True)
        self._thread.start()

    def _serve(self) -> None:
        while (item := self._requests.get()) is not None:
            args, kwargs, future = item
            try:
                future.set_result(popen(*args, **kwargs))
            except BaseException as exc:
                future.set_exception(exc)

    def popen(self, argv: Sequence[str], *, log: Path, env: Mapping[str, str] | None = None,
              cwd: Path | None = None) -> subprocess.Popen[bytes]:
        future: Future[subprocess.Popen[bytes]] = Future()
        self._requests.put(((argv,), {"log": log, "env": env, "cwd": cwd}, future))
        return future.result(timeout=30)

    def close(self) -> None:
        """Stop the thread (children still running are SIGKILLed by the kernel)."""
        self._requests.put(None)
        self._thread.join(timeout=10)
