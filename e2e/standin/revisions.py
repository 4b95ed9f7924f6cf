"""One revision's pod, played by local processes: init containers in order, then the containers, then
the readiness probe. State goes Pending -> Ready (or Failed); a Ready pod whose serving process exits
becomes Failed. Every change is reported through ``on_change``."""

from __future__ import annotations

import contextlib
import http.client
import logging
import shutil
import socket
import subprocess
import threading
import time
from collections.abc import Callable
from pathlib import Path

from e2e.processes import Spawner, stop, tail

from .pods import PodPlan

log = logging.getLogger(__name__)

PENDING, READY, FAILED = "Pending", "Ready", "Failed"


class RevisionPod:
    def __init__(self, namespace: str, revision: str, plan: PodPlan, root: Path, spawner: Spawner,
                 on_change: Callable[[RevisionPod], None], ready_timeout: float = 300.0) -> None:
        self.namespace = namespace
        self.revision = revision
        self.plan = plan
        self.root = root
        self.logs = root / "logs"
        self.state = PENDING
        self.message = ""
        self.started_at = time.monotonic()
        self._spawner = spawner
        self._on_change = on_change
        self._ready_timeout = ready_timeout
        self._procs: list[subprocess.Popen[bytes]] = []
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self._thread = threading.Thread(target=self._run, name=f"pod-{revision}", daemon=True)

    # -- public --

    def start(self) -> RevisionPod:
        self._thread.start()
        return self

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.plan.ports[self.plan.serving_port]}"

    def port(self, container_port: int) -> int:
        """The loopback port standing in for this pod's ``container_port``."""
        return self.plan.ports[container_port]

    @property
    def pids(self) -> list[int]:
        with self._lock:
            return [p.pid for p in self._procs if p.poll() is None]

    def stop(self) -> None:
        self._stop.set()
        with self._lock:
            procs = list(self._procs)
        for proc in procs:
            stop(proc)
        self._thread.join(timeout=15)
        shutil.rmtree(self.root / "volumes", ignore_errors=True)

    def log_tail(self, lines: int = 15) -> str:
        parts = []
        for path in sorted(self.logs.glob("*.log")):
            parts.append(f"--- {path.name} ---\n{tail(path, lines)}")
        return "\n".join(parts)

    # -- internals --

    def _set(self, state: str, message: str = "") -> None:
        if self.state == state and self.message == message:
            return
        self.state, self.message = state, message
        log.info("revision %s/%s: %s %s", self.namespace, self.revision, state, message)
        with contextlib.suppress(Exception):
            self._on_change(self)

    def _spawn(self, name: str, argv: list[str], env: dict[str, str], cwd: Path) -> subprocess.Popen[bytes]:
        with self._lock:
            if self._stop.is_set():
                raise InterruptedError
            proc = self._spawner.popen(argv, log=self.logs / f"{name}.log", env=env, cwd=cwd)
            self._procs.append(proc)
            return proc

    def _run(self) -> None:
        try:
            self._prepare_volumes()
            for spec in self.plan.init:
                proc = self._spawn(spec.name, spec.argv, spec.env, spec.cwd)
                while proc.poll() is None:
                    if self._stop.wait(0.1):
                        return
                if proc.returncode != 0:
                    last = tail(self.logs / f"{spec.name}.log", 3).strip().splitlines()
                    self._set(FAILED, f"init container {spec.name!r} exited with {proc.returncode}: "
                                      f"{last[-1] if last else ''}")
                    return
            serving = [self._spawn(s.name, s.argv, s.env, s.cwd) for s in self.plan.containers]
            self._wait_ready(serving)
        except InterruptedError:
            return
        except Exception as exc:
            self._set(FAILED, f"{type(exc).__name__}: {exc}")

    def _prepare_volumes(self) -> None:
        for directory in self.plan.volume_dirs.values():
            directory.mkdir(parents=True, exist_ok=True)
        for path, data in self.plan.files.items():
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_bytes(data)
            path.chmod(0o600)

    def _probe(self) -> bool:
        port = self.plan.ports[self.plan.probe_port]
        if self.plan.probe_grpc_service is not None:
            return grpc_serving(port, self.plan.probe_grpc_service)
        try:
            if self.plan.probe_path is None:
                with socket.create_connection(("127.0.0.1", port), timeout=1.0):
                    return True
            conn = http.client.HTTPConnection("127.0.0.1", port, timeout=2.0)
            try:
                conn.request("GET", self.plan.probe_path)
                return 200 <= conn.getresponse().status < 400
            finally:
                conn.close()
        except (OSError, http.client.HTTPException):
            return False

    def _wait_ready(self, procs: list[subprocess.Popen[bytes]]) -> None:
        deadline = time.monotonic() + self._ready_timeout
        while not self._stop.is_set():
            dead = next((p for p in procs if p.poll() is not None), None)
            if dead is not None:
                name = self.plan.containers[procs.index(dead)].name
                last = tail(self.logs / f"{name}.log", 3).strip().splitlines()
                self._set(FAILED, f"container {name!r} exited with {dead.returncode}: "
                                  f"{last[-1] if last else ''}")
                return
            if self.state == PENDING:
                if self._probe():
                    self._set(READY)
                elif time.monotonic() > deadline:
                    self._set(FAILED, f"not ready after {self._ready_timeout:.0f}s")
                    return
            self._stop.wait(0.2 if self.state == PENDING else 1.0)


def grpc_serving(port: int, service: str) -> bool:
    """A ``grpc`` readiness probe: grpc.health.v1 ``Check(service)`` answers SERVING (as Knative's
    queue-proxy probes: knative.dev/serving pkg/queue/health/probe.go, GRPCProbe)."""
    import grpc
    from grpc_health.v1 import health_pb2, health_pb2_grpc

    with grpc.insecure_channel(f"127.0.0.1:{port}") as channel:
        try:
            answer = health_pb2_grpc.HealthStub(channel).Check(
                health_pb2.HealthCheckRequest(service=service), timeout=2.0)
        except grpc.RpcError:
            return False
    return answer.status == health_pb2.HealthCheckResponse.SERVING
