"""A real local Kubernetes control plane: etcd + kube-apiserver + kube-controller-manager.

The binaries are built from the pinned Go modules by ``e2e/cluster/build.sh`` (``make cluster``)
into a cache outside the repository. Everything listens on 127.0.0.1 on free ports, certificates
and service-account keys are generated per instance in a temporary directory, and ``stop()`` kills
every process group it started and removes that directory.

    with ControlPlane() as cp:
        print(cp.kubeconfig)

Standalone (for the demo and debugging): ``python -m e2e.localkube`` prints the kubeconfig path
and serves until Ctrl-C or SIGTERM.
"""

from __future__ import annotations

import argparse
import atexit
import base64
import contextlib
import datetime as dt
import http.client
import ipaddress
import json
import os
import shutil
import signal
import socket
import ssl
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from types import FrameType
from typing import Any, Self

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from e2e.processes import die_with_parent, tail, terminate

REPO_ROOT = Path(__file__).resolve().parents[1]
BUILD_SCRIPT = REPO_ROOT / "e2e" / "cluster" / "build.sh"
BINARIES = ("etcd", "kube-apiserver", "kube-controller-manager")
WORKDIR_PREFIX = "localkube-"
OWNER_FILE = "owner.pid"
SERVICE_CIDR = "10.0.0.0/24"
KUBERNETES_SERVICE_IP = "10.0.0.1"
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


def find_binaries(directory: Path | None = None) -> dict[str, Path]:
    directory = directory or bin_dir()
    found = {name: directory / name for name in BINARIES}
    missing = [name for name, path in found.items() if not os.access(path, os.X_OK)]
    if missing:
        raise BinariesMissing(
            f"control-plane binaries missing in {directory}: {', '.join(missing)}; run `make cluster` "
            "(bash e2e/cluster/build.sh) to build them"
        )
    return found


def free_port() -> int:
    """One free loopback port (other e2e helpers and benches use this)."""
    return free_ports(1)[0]


def free_ports(count: int) -> list[int]:
    """`count` distinct free loopback ports (all held open while choosing, so no duplicates)."""
    with contextlib.ExitStack() as stack:
        ports = []
        for _ in range(count):
            sock = stack.enter_context(socket.socket(socket.AF_INET, socket.SOCK_STREAM))
            sock.bind(("127.0.0.1", 0))
            ports.append(int(sock.getsockname()[1]))
        return ports


# --- certificates -------------------------------------------------------------------------------


def _pem_key(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )


def _pem_cert(cert: x509.Certificate) -> bytes:
    return cert.public_bytes(serialization.Encoding.PEM)


@dataclass(frozen=True)
class _Issued:
    cert: x509.Certificate
    key: ec.EllipticCurvePrivateKey


def _new_ca(validity: dt.timedelta) -> _Issued:
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "localkube-ca")])
    now = dt.datetime.now(dt.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(hours=1))
        .not_valid_after(now + validity)
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True, key_cert_sign=True, crl_sign=True, content_commitment=False,
                key_encipherment=False, data_encipherment=False, key_agreement=False,
                encipher_only=False, decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .sign(key, hashes.SHA256())
    )
    return _Issued(cert, key)


def _issue(
    ca: _Issued,
    common_name: str,
    validity: dt.timedelta,
    *,
    groups: tuple[str, ...] = (),
    server_names: tuple[str, ...] = (),
    server_ips: tuple[str, ...] = (),
) -> _Issued:
    key = ec.generate_private_key(ec.SECP256R1())
    attrs = [x509.NameAttribute(NameOID.ORGANIZATION_NAME, g) for g in groups]
    attrs.append(x509.NameAttribute(NameOID.COMMON_NAME, common_name))
    now = dt.datetime.now(dt.UTC)
    is_server = bool(server_names or server_ips)
    builder = (
        x509.CertificateBuilder()
        .subject_name(x509.Name(attrs))
        .issuer_name(ca.cert.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(hours=1))
        .not_valid_after(now + validity)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(
            x509.ExtendedKeyUsage(
                [x509.ExtendedKeyUsageOID.SERVER_AUTH if is_server else x509.ExtendedKeyUsageOID.CLIENT_AUTH]
            ),
            critical=False,
        )
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(ca.key.public_key()), critical=False
        )
    )
    if is_server:
        sans: list[x509.GeneralName] = [x509.DNSName(n) for n in server_names]
        sans += [x509.IPAddress(ipaddress.ip_address(ip)) for ip in server_ips]
        builder = builder.add_extension(x509.SubjectAlternativeName(sans), critical=False)
    return _Issued(builder.sign(ca.key, hashes.SHA256()), key)


def _write(path: Path, data: bytes, mode: int = 0o600) -> Path:
    path.write_bytes(data)
    path.chmod(mode)
    return path


def kubeconfig_yaml(server: str, ca_pem: bytes, user: dict[str, str], name: str = "localkube") -> str:
    """A kubeconfig (JSON is YAML) for one user entry (client-certificate-data/... or token)."""
    config = {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [
            {
                "name": name,
                "cluster": {
                    "server": server,
                    "certificate-authority-data": base64.b64encode(ca_pem).decode(),
                },
            }
        ],
        "users": [{"name": name, "user": user}],
        "contexts": [{"name": name, "context": {"cluster": name, "user": name}}],
        "current-context": name,
    }
    return json.dumps(config, indent=2) + "\n"


# --- processes ----------------------------------------------------------------------------------

@dataclass
class _Component:
    name: str
    proc: subprocess.Popen[bytes]
    log: Path

    def tail(self, lines: int = 30) -> str:
        return tail(self.log, lines)


def _pid_alive(pid: int) -> bool:
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


def pid_alive(pid: int) -> bool:
    """Whether a process with this pid is still running (zombies count as gone)."""
    return _pid_alive(pid)


# --- the control plane --------------------------------------------------------------------------


@dataclass
class ControlPlane:
    """etcd + kube-apiserver + kube-controller-manager on loopback, owned by this process."""

    binaries_dir: Path | None = None
    startup_timeout: float = 60.0
    cert_validity: dt.timedelta = dt.timedelta(days=7)
    controllers: tuple[str, ...] = CONTROLLERS

    workdir: Path = field(init=False)
    kubeconfig: Path = field(init=False)
    server: str = field(init=False)
    ca_file: Path = field(init=False)
    admin_cert_file: Path = field(init=False)
    admin_key_file: Path = field(init=False)
    etcd_url: str = field(init=False)
    _components: list[_Component] = field(init=False, default_factory=list)
    _started: bool = field(init=False, default=False)
    _ca_pem: bytes = field(init=False, default=b"")

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
        sweep_stale_workdirs()
        self._components = []
        self.workdir = Path(tempfile.mkdtemp(prefix=WORKDIR_PREFIX))
        (self.workdir / OWNER_FILE).write_text(str(os.getpid()))
        self._started = True
        atexit.register(self.stop)
        try:
            self._write_credentials()
            etcd_port, etcd_peer, api_port, kcm_port = free_ports(4)
            self.etcd_url = f"http://127.0.0.1:{etcd_port}"
            self.server = f"https://127.0.0.1:{api_port}"
            self._spawn("etcd", [str(binaries["etcd"]), *self._etcd_args(etcd_port, etcd_peer)])
            self._spawn("kube-apiserver", [str(binaries["kube-apiserver"]), *self._apiserver_args(api_port)])
            self._write_kubeconfigs()
            self._wait_ready("kube-apiserver", "/readyz")
            self._spawn(
                "kube-controller-manager",
                [str(binaries["kube-controller-manager"]), *self._controller_manager_args(kcm_port)],
            )
            self._wait_ready("kube-controller-manager", "/healthz", server=f"https://127.0.0.1:{kcm_port}")
        except BaseException:
            self.stop()
            raise
        return self

    def stop(self, timeout: float = 10.0) -> None:
        """Stop every component (controller-manager first, etcd last) and remove the workdir."""
        if not self._started:
            return
        for comp in reversed(self._components):
            terminate(comp.proc, timeout)
        for comp in self._components:
            with contextlib.suppress(OSError, subprocess.TimeoutExpired):
                comp.proc.wait(timeout=0)
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
        return {c.name: c.proc.pid for c in self._components}

    @property
    def running(self) -> bool:
        return self._started

    # -- API access (for tokens and readiness) --

    def request(self, method: str, path: str, body: Any = None, timeout: float = 10.0) -> tuple[int, Any]:
        """One HTTPS request to the apiserver as the admin; returns (status, decoded JSON or text)."""
        return _https_request(
            self.server, self._admin_ssl_context(), method, path, body, timeout=timeout
        )

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
        _write(path, kubeconfig_yaml(self.server, self._ca_pem, {"token": token}).encode())
        return path

    def server_version(self) -> dict[str, str]:
        status, out = self.request("GET", "/version")
        if status != 200:
            raise ControlPlaneError(f"/version: HTTP {status}: {out}")
        return dict(out)

    # -- internals --

    def _write_credentials(self) -> None:
        d = self.workdir
        ca = _new_ca(self.cert_validity)
        self._ca_pem = _pem_cert(ca.cert)
        self.ca_file = _write(d / "ca.crt", self._ca_pem, 0o644)
        _write(d / "ca.key", _pem_key(ca.key))
        serving = _issue(
            ca, "kube-apiserver", self.cert_validity,
            server_names=("localhost", "kubernetes", "kubernetes.default", "kubernetes.default.svc",
                          "kubernetes.default.svc.cluster.local"),
            server_ips=("127.0.0.1", KUBERNETES_SERVICE_IP),
        )
        _write(d / "apiserver.crt", _pem_cert(serving.cert) + self._ca_pem, 0o644)
        _write(d / "apiserver.key", _pem_key(serving.key))
        admin = _issue(ca, "localkube-admin", self.cert_validity, groups=("system:masters",))
        self.admin_cert_file = _write(d / "admin.crt", _pem_cert(admin.cert))
        self.admin_key_file = _write(d / "admin.key", _pem_key(admin.key))
        # The controller-manager gets its own identity (also in system:masters, as in envtest).
        kcm = _issue(ca, "system:kube-controller-manager", self.cert_validity, groups=("system:masters",))
        _write(d / "kcm.crt", _pem_cert(kcm.cert))
        _write(d / "kcm.key", _pem_key(kcm.key))
        sa = ec.generate_private_key(ec.SECP256R1())
        _write(d / "sa.key", _pem_key(sa))
        _write(
            d / "sa.pub",
            sa.public_key().public_bytes(
                serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
            ),
            0o644,
        )

    def _write_kubeconfigs(self) -> None:
        d = self.workdir

        def cert_user(prefix: str) -> dict[str, str]:
            return {
                "client-certificate-data": base64.b64encode((d / f"{prefix}.crt").read_bytes()).decode(),
                "client-key-data": base64.b64encode((d / f"{prefix}.key").read_bytes()).decode(),
            }

        self.kubeconfig = _write(d / "admin.kubeconfig", kubeconfig_yaml(
            self.server, self._ca_pem, cert_user("admin")).encode())
        _write(d / "kcm.kubeconfig", kubeconfig_yaml(self.server, self._ca_pem, cert_user("kcm")).encode())

    def _etcd_args(self, port: int, peer_port: int) -> list[str]:
        client = f"http://127.0.0.1:{port}"
        peer = f"http://127.0.0.1:{peer_port}"
        return [
            "--name=localkube",
            f"--data-dir={self.workdir / 'etcd'}",
            f"--listen-client-urls={client}",
            f"--advertise-client-urls={client}",
            f"--listen-peer-urls={peer}",
            f"--initial-advertise-peer-urls={peer}",
            f"--initial-cluster=localkube={peer}",
            "--unsafe-no-fsync=true",  # throwaway data: durability buys nothing here
            "--log-level=warn",
        ]

    def _apiserver_args(self, port: int) -> list[str]:
        d = self.workdir
        return [
            f"--etcd-servers={self.etcd_url}",
            "--bind-address=127.0.0.1",
            "--advertise-address=127.0.0.1",
            f"--secure-port={port}",
            f"--cert-dir={d / 'apiserver-certs'}",
            f"--tls-cert-file={d / 'apiserver.crt'}",
            f"--tls-private-key-file={d / 'apiserver.key'}",
            f"--client-ca-file={d / 'ca.crt'}",
            f"--service-account-key-file={d / 'sa.pub'}",
            f"--service-account-signing-key-file={d / 'sa.key'}",
            "--service-account-issuer=https://kubernetes.default.svc.cluster.local",
            f"--service-cluster-ip-range={SERVICE_CIDR}",
            "--authorization-mode=RBAC",
            "--allow-privileged=true",
            # The "kubernetes" Service endpoints would have to be a non-loopback IP; nothing here needs them.
            "--endpoint-reconciler-type=none",
            "--profiling=false",
            "--v=1",
        ]

    def _controller_manager_args(self, port: int) -> list[str]:
        d = self.workdir
        kubeconfig = d / "kcm.kubeconfig"
        return [
            f"--kubeconfig={kubeconfig}",
            f"--authentication-kubeconfig={kubeconfig}",
            f"--authorization-kubeconfig={kubeconfig}",
            "--bind-address=127.0.0.1",
            f"--secure-port={port}",
            f"--cert-dir={d / 'kcm-certs'}",
            "--leader-elect=false",
            f"--controllers={','.join(self.controllers)}",
            f"--service-account-private-key-file={d / 'sa.key'}",
            f"--root-ca-file={d / 'ca.crt'}",
            f"--service-cluster-ip-range={SERVICE_CIDR}",
            "--use-service-account-credentials=false",
            "--profiling=false",
            "--v=1",
        ]

    def _spawn(self, name: str, argv: list[str]) -> None:
        log = self.workdir / f"{name}.log"
        # PDEATHSIG fires when the forking *thread* exits, so only tie the components to the main
        # thread; started from another thread, stop() and atexit are the only cleanup.
        on_main_thread = threading.current_thread() is threading.main_thread()
        with log.open("wb") as out:
            proc = subprocess.Popen(
                argv,
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
                cwd=self.workdir,
                start_new_session=True,  # its own process group: stop() kills the whole group
                preexec_fn=die_with_parent if on_main_thread else None,
            )
        self._components.append(_Component(name, proc, log))

    def _admin_ssl_context(self) -> ssl.SSLContext:
        ctx = ssl.create_default_context(cafile=str(self.ca_file))
        ctx.load_cert_chain(str(self.admin_cert_file), str(self.admin_key_file))
        return ctx

    def _wait_ready(self, name: str, path: str, server: str | None = None) -> None:
        deadline = time.monotonic() + self.startup_timeout
        ctx = self._admin_ssl_context()
        if server is not None:  # the controller-manager serves a self-signed cert of its own
            ctx.check_hostname = False
            ctx.verify_mode = ssl.CERT_NONE
        last = "no answer yet"
        while time.monotonic() < deadline:
            for comp in self._components:
                if comp.proc.poll() is not None:
                    raise ControlPlaneError(
                        f"{comp.name} exited with {comp.proc.returncode} while waiting for {name}:\n"
                        f"{comp.tail()}"
                    )
            try:
                status, out = _https_request(server or self.server, ctx, "GET", path, timeout=2.0)
                if status == 200:
                    return
                last = f"HTTP {status}: {str(out)[-500:]}"
            except (OSError, http.client.HTTPException) as exc:
                last = repr(exc)
            time.sleep(0.1)
        logs = "\n".join(f"--- {c.name} ---\n{c.tail()}" for c in self._components)
        raise ControlPlaneError(f"{name} not ready after {self.startup_timeout:.0f}s ({last})\n{logs}")


def sweep_stale_workdirs() -> None:
    """Remove workdirs left by a process that was SIGKILLed (its children died with it through
    PR_SET_PDEATHSIG, but nothing could remove the directory)."""
    for d in Path(tempfile.gettempdir()).glob(f"{WORKDIR_PREFIX}*"):
        try:
            owner = int((d / OWNER_FILE).read_text())
        except (OSError, ValueError):
            continue
        if not _pid_alive(owner):
            shutil.rmtree(d, ignore_errors=True)


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


def _raise_keyboard_interrupt(signum: int, frame: FrameType | None) -> None:
    raise KeyboardInterrupt(f"signal {signum}")


def install_signal_handlers() -> None:
    """Turn SIGTERM/SIGHUP into KeyboardInterrupt (if nobody else handles them) so `finally`
    blocks, pytest fixture teardown and atexit hooks get to stop the control plane."""
    for sig in (signal.SIGTERM, signal.SIGHUP):
        if signal.getsignal(sig) in (signal.SIG_DFL, None):
            signal.signal(sig, _raise_keyboard_interrupt)


@contextlib.contextmanager
def running_control_plane(**kwargs: Any) -> Iterator[ControlPlane]:
    cp = ControlPlane(**kwargs)
    cp.start()
    try:
        yield cp
    finally:
        cp.stop()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m e2e.localkube", description=__doc__.split("\n")[0])
    parser.add_argument(
        "--kubeconfig-out", type=Path, default=None,
        help="also copy the admin kubeconfig here (it is removed again on exit)",
    )
    args = parser.parse_args(argv)
    install_signal_handlers()
    started = time.monotonic()
    try:
        cp = ControlPlane().start()
    except ControlPlaneError as exc:
        print(f"localkube: {exc}", file=sys.stderr)
        return 1
    copied: Path | None = None
    try:
        version = cp.server_version().get("gitVersion", "?")
        kubeconfig = cp.kubeconfig
        if args.kubeconfig_out is not None:
            copied = args.kubeconfig_out
            shutil.copyfile(cp.kubeconfig, copied)
            copied.chmod(0o600)
            kubeconfig = copied
        pids = " ".join(f"{name}={pid}" for name, pid in cp.pids.items())
        print(
            f"localkube: Kubernetes {version} ready in {time.monotonic() - started:.1f}s at {cp.server}\n"
            f"localkube: workdir {cp.workdir} pids {pids}\n"
            f"localkube: Ctrl-C to stop; export KUBECONFIG={kubeconfig}\n"
            f"{kubeconfig}",
            flush=True,
        )
        while all(c.proc.poll() is None for c in cp._components):
            time.sleep(0.5)
        dead = [c for c in cp._components if c.proc.poll() is not None]
        for comp in dead:
            print(f"localkube: {comp.name} exited ({comp.proc.returncode}):\n{comp.tail()}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("localkube: stopping", file=sys.stderr)
        return 0
    finally:
        cp.stop()
        if copied is not None:
            copied.unlink(missing_ok=True)


if __name__ == "__main__":
    sys.exit(main())
