"""A real local Kubernetes control plane: etcd + kube-apiserver + kube-controller-manager.

The binaries are built from the pinned Go modules by ``e2e/cluster/build.sh`` (``make cluster``) into a
cache outside the repository. Everything listens on 127.0.0.1 on free ports, certificates and
service-account keys are generated per instance in a work directory, and ``stop()`` stops every process
group it started and removes that directory.

    with ControlPlane() as cp:
        cp.kubectl("get", "namespaces")

What a cluster needs beyond the defaults is said when it is made, never by editing this module:

- ``apiserver_flags`` / ``controller_manager_flags``: ``{"--flag": "value"}`` merged over the defaults
  (``None`` removes a default);
- ``controllers``: the kube-controller-manager controllers that run;
- ``apiserver_addresses``: further IP addresses its serving certificate names (a veth's, say);
- ``manifests``: files or directories applied (``kubectl apply``) once kube-controller-manager is healthy;
  every CRD is waited for until Established;
- ``components``: further processes (kube-scheduler, a kubelet in a network namespace, ...), each a
  :class:`Component` started in order after that and stopped before the control plane; they find the
  binaries through :meth:`ControlPlane.binary` and get an identity from
  :meth:`ControlPlane.client_kubeconfig`.
"""

from __future__ import annotations

import atexit
import contextlib
import datetime as dt
import http.client
import json
import shutil
import ssl
import subprocess
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Self

from e2e import REPO_ROOT
from e2e.processes import free_ports, owned_workdir, popen, stop, sweep_stale_workdirs, tail

from .certificates import CertificateAuthority, key_pem, new_key, public_key_pem, write_file
from .kubectl import Kubectl, certificate_user, kubeconfig_yaml

BUILD_SCRIPT = REPO_ROOT / "e2e" / "cluster" / "build.sh"
BINARIES = ("etcd", "kube-apiserver", "kube-controller-manager")
WORKDIR_PREFIX = "localkube-"
SERVICE_CIDR = "10.0.0.0/24"
KUBERNETES_SERVICE_IP = "10.0.0.1"
APISERVER_NAMES = ("localhost", "kubernetes", "kubernetes.default", "kubernetes.default.svc",
                   "kubernetes.default.svc.cluster.local")
# The controllers the tests and the operator rely on. Everything that needs a kubelet or a
# scheduler (nodes, volumes, jobs' pods running) is left out: there is no node here.
CONTROLLERS = (
    "garbage-collector-controller",
    "namespace-controller",
    "serviceaccount-controller",
    "serviceaccount-token-controller",
    "root-ca-certificate-publisher-controller",
    "clusterrole-aggregation-controller",
    "deployment-controller",
    "replicaset-controller",
)

Flags = Mapping[str, str | None]


class ControlPlaneError(RuntimeError):
    """The control plane could not be started (message says why, with log tails)."""


class BinariesMissing(ControlPlaneError):
    """The cached binaries are not built yet."""


def bin_dir() -> Path:
    """The cache directory build.sh uses for the pinned versions (without building anything)."""
    out = subprocess.run(
        ["bash", str(BUILD_SCRIPT), "--print-dir"], capture_output=True, text=True, check=True
    )
    return Path(out.stdout.strip())


def find_binaries(directory: Path | None = None, names: Sequence[str] = BINARIES) -> dict[str, Path]:
    directory = directory or bin_dir()
    found = {name: directory / name for name in names}
    missing = [name for name, path in found.items() if not path.is_file() or not path.stat().st_mode & 0o111]
    if missing:
        raise BinariesMissing(
            f"control-plane binaries missing in {directory}: {', '.join(missing)}; run `make cluster` "
            "(bash e2e/cluster/build.sh) to build them"
        )
    return found


def command_line(binary: Path, defaults: Flags, overrides: Flags) -> list[str]:
    """``binary --flag=value ...``: ``overrides`` merged over ``defaults``, a ``None`` value dropping it."""
    merged = {**defaults, **overrides}
    return [str(binary), *(f"{flag}={value}" for flag, value in merged.items() if value is not None)]


@dataclass(frozen=True)
class Component:
    """A further process of the local cluster. ``argv(cp)`` is its command line, built when it starts
    (``cp.workdir``, ``cp.server``, ``cp.binary(...)``, ``cp.client_kubeconfig(...)`` are ready then);
    ``ready(cp)`` is polled until True (within ``startup_timeout``) before the next one starts (None:
    running is enough); ``env`` is its whole environment (None: this process's). Its output goes to
    ``{cp.workdir}/{name}.log`` (``cp.log_tail(name)``)."""

    name: str
    argv: Callable[[ControlPlane], Sequence[str]]
    ready: Callable[[ControlPlane], bool] | None = None
    env: Mapping[str, str] | None = None


@dataclass(frozen=True)
class _Running:
    name: str
    proc: subprocess.Popen[bytes]


@dataclass
class ControlPlane:
    """etcd + kube-apiserver + kube-controller-manager on loopback, owned by this process (see the module
    docstring for what can be added)."""

    binaries_dir: Path | None = None
    startup_timeout: float = 60.0
    cert_validity: dt.timedelta = dt.timedelta(days=7)
    controllers: tuple[str, ...] = CONTROLLERS
    apiserver_flags: Flags = field(default_factory=dict)
    controller_manager_flags: Flags = field(default_factory=dict)
    # The controller manager's client certificate groups: system:masters by default (as in envtest); a node
    # gives () and --use-service-account-credentials, so that the bootstrap RBAC of Kubernetes applies.
    controller_manager_groups: tuple[str, ...] = ("system:masters",)
    apiserver_addresses: tuple[str, ...] = ()
    components: tuple[Component, ...] = ()
    manifests: tuple[Path, ...] = ()

    workdir: Path = field(init=False, repr=False)
    kubeconfig: Path = field(init=False, repr=False)
    server: str = field(init=False, repr=False)
    ca_file: Path = field(init=False, repr=False)
    admin_cert_file: Path = field(init=False, repr=False)
    admin_key_file: Path = field(init=False, repr=False)
    etcd_url: str = field(init=False, repr=False)
    kubectl: Kubectl = field(init=False, repr=False)
    _ca: CertificateAuthority = field(init=False, repr=False)
    _binaries_dir: Path = field(init=False, repr=False)
    _running: list[_Running] = field(init=False, repr=False, default_factory=list)
    _started: bool = field(init=False, repr=False, default=False)

    # -- lifecycle --

    def start(self, attempts: int = 3) -> Self:
        """Start and wait until ready. A port taken between choosing and binding it (another
        instance starting at the same moment) is retried on fresh ports."""
        for attempt in range(1, attempts + 1):
            try:
                return self._start_once()
            except ControlPlaneError as exc:
                if attempt == attempts or "address already in use" not in str(exc):
                    raise
        raise AssertionError("unreachable")

    def _start_once(self) -> Self:
        if self._started:
            raise ControlPlaneError("already started")
        binaries = find_binaries(self.binaries_dir)
        self._binaries_dir = binaries["etcd"].parent
        sweep_stale_workdirs(WORKDIR_PREFIX)
        self._running = []
        self.workdir = owned_workdir(WORKDIR_PREFIX)
        self._started = True
        atexit.register(self.stop)
        try:
            self._write_credentials()
            etcd_port, etcd_peer, api_port, kcm_port = free_ports(4)
            self.etcd_url = f"http://127.0.0.1:{etcd_port}"
            self.server = f"https://127.0.0.1:{api_port}"
            self.kubeconfig = self.client_kubeconfig("admin", "localkube-admin", ("system:masters",))
            self.kubectl = Kubectl(self.kubeconfig, self.workdir / "kubectl-cache")
            self._spawn("etcd", command_line(binaries["etcd"], self._etcd_flags(etcd_port, etcd_peer), {}))
            self._spawn("kube-apiserver", command_line(
                binaries["kube-apiserver"], self._apiserver_flags(api_port), self.apiserver_flags))
            self._wait_ready("kube-apiserver", lambda: self._answers(self.server, "/readyz"))
            self._spawn("kube-controller-manager", command_line(
                binaries["kube-controller-manager"], self._controller_manager_flags(kcm_port),
                self.controller_manager_flags))
            kcm = f"https://127.0.0.1:{kcm_port}"
            self._wait_ready("kube-controller-manager", lambda: self._answers(kcm, "/healthz", verify=False))
            self.kubectl.install(*self.manifests)
            for component in self.components:
                self._spawn(component.name, list(component.argv(self)), component.env)
                if component.ready is not None:
                    self._wait_ready(component.name, lambda c=component: c.ready(self))  # type: ignore[misc]
        except BaseException:
            self.stop()
            raise
        return self

    def stop(self, timeout: float = 10.0) -> None:
        """Stop every process in reverse order of starting (etcd last) and remove the workdir."""
        if not self._started:
            return
        for running in reversed(self._running):
            stop(running.proc, timeout)
        shutil.rmtree(self.workdir, ignore_errors=True)
        self._started = False
        with contextlib.suppress(Exception):
            atexit.unregister(self.stop)

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    @property
    def pids(self) -> dict[str, int]:
        return {c.name: c.proc.pid for c in self._running}

    @property
    def running(self) -> bool:
        return self._started

    def exited(self) -> dict[str, int]:
        """The processes that have exited: name -> exit status."""
        return {c.name: c.proc.returncode for c in self._running if c.proc.poll() is not None}

    def log_tail(self, name: str, lines: int = 30) -> str:
        """The last lines of a process's log (its output goes to ``{workdir}/{name}.log``)."""
        return tail(self.workdir / f"{name}.log", lines)

    # -- for components and clients --

    def binary(self, name: str) -> Path:
        """A binary of the cache ``make cluster`` fills (``BinariesMissing`` when it is not built)."""
        return find_binaries(self._binaries_dir, (name,))[name]

    def client_kubeconfig(self, stem: str, user: str, groups: tuple[str, ...] = ()) -> Path:
        """``{stem}.kubeconfig`` in the workdir: a new client certificate for ``user`` in ``groups``."""
        issued = self._ca.issue_client(user, groups)
        issued.write(self.workdir, stem)
        config = kubeconfig_yaml(self.server, self._ca.cert_pem, certificate_user(issued.cert_pem,
                                                                                  issued.key_pem))
        return write_file(self.workdir / f"{stem}.kubeconfig", config.encode())

    def request(self, method: str, path: str, body: Any = None, timeout: float = 10.0) -> tuple[int, Any]:
        """One HTTPS request to the apiserver as the admin; returns (status, decoded JSON or text)."""
        return _https_request(self.server, self._admin_ssl_context(), method, path, body, timeout=timeout)

    def service_account_token(self, namespace: str, name: str, seconds: int = 24 * 3600) -> str:
        """A bound token for namespace/name from the TokenRequest API."""
        status, out = self.request(
            "POST",
            f"/api/v1/namespaces/{namespace}/serviceaccounts/{name}/token",
            {"apiVersion": "authentication.k8s.io/v1", "kind": "TokenRequest",
             "spec": {"expirationSeconds": seconds}},
        )
        if status != 201:
            raise ControlPlaneError(f"TokenRequest for {namespace}/{name} failed: HTTP {status}: {out}")
        return str(out["status"]["token"])

    def service_account_kubeconfig(self, namespace: str, name: str, path: Path | None = None) -> Path:
        """A kubeconfig that authenticates as the ServiceAccount namespace/name (TokenRequest)."""
        token = self.service_account_token(namespace, name)
        path = path or self.workdir / f"sa-{namespace}-{name}.kubeconfig"
        return write_file(path, kubeconfig_yaml(self.server, self._ca.cert_pem, {"token": token}).encode())

    def server_version(self) -> dict[str, str]:
        status, out = self.request("GET", "/version")
        if status != 200:
            raise ControlPlaneError(f"/version: HTTP {status}: {out}")
        return dict(out)

    # -- internals --

    def _write_credentials(self) -> None:
        d = self.workdir
        self._ca = CertificateAuthority.create(self.cert_validity)
        self.ca_file = write_file(d / "ca.crt", self._ca.cert_pem, 0o644)
        serving = self._ca.issue_server("kube-apiserver", APISERVER_NAMES,
                                        ("127.0.0.1", KUBERNETES_SERVICE_IP, *self.apiserver_addresses))
        serving.write(d, "apiserver", chain=self._ca.cert_pem)
        self.admin_cert_file, self.admin_key_file = d / "admin.crt", d / "admin.key"
        service_accounts = new_key()
        write_file(d / "sa.key", key_pem(service_accounts))
        write_file(d / "sa.pub", public_key_pem(service_accounts), 0o644)

    def _etcd_flags(self, port: int, peer_port: int) -> dict[str, str | None]:
        client = f"http://127.0.0.1:{port}"
        peer = f"http://127.0.0.1:{peer_port}"
        return {
            "--name": "localkube",
            "--data-dir": str(self.workdir / "etcd"),
            "--listen-client-urls": client,
            "--advertise-client-urls": client,
            "--listen-peer-urls": peer,
            "--initial-advertise-peer-urls": peer,
            "--initial-cluster": f"localkube={peer}",
            "--unsafe-no-fsync": "true",  # throwaway data: durability buys nothing here
            "--log-level": "warn",
        }

    def _apiserver_flags(self, port: int) -> dict[str, str | None]:
        d = self.workdir
        return {
            "--etcd-servers": self.etcd_url,
            "--bind-address": "127.0.0.1",
            "--advertise-address": "127.0.0.1",
            "--secure-port": str(port),
            "--cert-dir": str(d / "apiserver-certs"),
            "--tls-cert-file": str(d / "apiserver.crt"),
            "--tls-private-key-file": str(d / "apiserver.key"),
            "--client-ca-file": str(d / "ca.crt"),
            "--service-account-key-file": str(d / "sa.pub"),
            "--service-account-signing-key-file": str(d / "sa.key"),
            "--service-account-issuer": "https://kubernetes.default.svc.cluster.local",
            "--service-cluster-ip-range": SERVICE_CIDR,
            "--authorization-mode": "RBAC",
            "--allow-privileged": "true",
            # The "kubernetes" Service endpoints would have to be a non-loopback IP; nothing here needs them.
            "--endpoint-reconciler-type": "none",
            "--profiling": "false",
            "--v": "1",
        }

    def _controller_manager_flags(self, port: int) -> dict[str, str | None]:
        d = self.workdir
        # Its own identity (in system:masters unless controller_manager_groups says otherwise).
        kubeconfig = str(self.client_kubeconfig("kcm", "system:kube-controller-manager",
                                                self.controller_manager_groups))
        return {
            "--kubeconfig": kubeconfig,
            "--authentication-kubeconfig": kubeconfig,
            "--authorization-kubeconfig": kubeconfig,
            "--bind-address": "127.0.0.1",
            "--secure-port": str(port),
            "--cert-dir": str(d / "kcm-certs"),
            "--leader-elect": "false",
            "--controllers": ",".join(self.controllers),
            "--service-account-private-key-file": str(d / "sa.key"),
            "--root-ca-file": str(d / "ca.crt"),
            "--service-cluster-ip-range": SERVICE_CIDR,
            "--use-service-account-credentials": "false",
            "--profiling": "false",
            "--v": "1",
        }

    def _spawn(self, name: str, argv: list[str], env: Mapping[str, str] | None = None) -> None:
        log = self.workdir / f"{name}.log"
        # PDEATHSIG fires when the forking *thread* exits, so only the main thread ties the processes to
        # itself (popen's default); started from another thread, stop() and atexit are the only cleanup.
        self._running.append(_Running(name, popen(argv, log=log, env=env, cwd=self.workdir)))

    def _admin_ssl_context(self) -> ssl.SSLContext:
        ctx = ssl.create_default_context(cafile=str(self.ca_file))
        ctx.load_cert_chain(str(self.admin_cert_file), str(self.admin_key_file))
        return ctx

    def _answers(self, server: str, path: str, verify: bool = True) -> bool:
        """Whether ``server`` answers ``path`` with 200 (``verify`` False: it serves a self-signed cert)."""
        ctx = self._admin_ssl_context()
        if not verify:
            ctx.check_hostname = False
            ctx.verify_mode = ssl.CERT_NONE
        try:
            status, _ = _https_request(server, ctx, "GET", path, timeout=2.0)
        except (OSError, http.client.HTTPException):
            return False
        return status == 200

    def _wait_ready(self, name: str, ready: Callable[[], bool]) -> None:
        deadline = time.monotonic() + self.startup_timeout
        while time.monotonic() < deadline:
            for exited, status in self.exited().items():
                raise ControlPlaneError(f"{exited} exited with {status} while waiting for {name}:\n"
                                        f"{self.log_tail(exited)}")
            if ready():
                return
            time.sleep(0.1)
        logs = "\n".join(f"--- {c.name} ---\n{self.log_tail(c.name)}" for c in self._running)
        raise ControlPlaneError(f"{name} not ready after {self.startup_timeout:.0f}s\n{logs}")


def _https_request(
    server: str, ctx: ssl.SSLContext, method: str, path: str, body: Any = None, timeout: float = 10.0
) -> tuple[int, Any]:
    host_port = server.removeprefix("https://")
    host, _, port = host_port.partition(":")
    conn = http.client.HTTPSConnection(host, int(port), context=ctx, timeout=timeout)
    try:
        payload = None if body is None else json.dumps(body).encode()
        headers = {"Accept": "application/json"}
        if payload is not None:
            headers["Content-Type"] = "application/json"
        conn.request(method, path, body=payload, headers=headers)
        resp = conn.getresponse()
        raw = resp.read().decode(errors="replace")
        try:
            return resp.status, json.loads(raw)
        except ValueError:
            return resp.status, raw
    finally:
        conn.close()
