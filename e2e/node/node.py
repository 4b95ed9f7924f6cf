"""A real node in a network namespace of its own, as kind makes a node a container.

The namespace (``e2e.netns``, a veth pair to the host, default route to the host end) holds etcd,
kube-apiserver, kube-controller-manager, kube-scheduler, kubelet, containerd and kube-proxy; pods get network
namespaces of their own behind the node's bridge. Pod and Service ranges come from ``CLUSTER_RANGE``
(198.19.0.0/16). ``stop`` leaves nothing behind: processes, mounts, namespaces, cgroups, sysctls, paths.

    with real_node(images=("pause", "storage-initializer", "runtime")) as node:
        node.kubectl("get", "nodes")
"""

from __future__ import annotations

import contextlib
import ctypes
import fcntl
import os
import subprocess
import tempfile
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from ipaddress import IPv4Network
from pathlib import Path

from e2e import netns
from e2e.localkube import ControlPlane
from e2e.localkube.control_plane import CONTROLLERS
from e2e.node import host
from e2e.node.components import NodeComponents, NodeError, in_namespace, remove_tree
from e2e.node.configs import NodeLayout

REPO_ROOT = Path(__file__).resolve().parents[2]
KUBECTL = REPO_ROOT / ".venv" / "bin" / "kubectl"
CACHE_ROOT = Path(os.environ.get("TORCH_ISVC_CACHE", Path.home() / ".cache" / "torch-isvc"))
CONTAINERD_ROOT = CACHE_ROOT / "node" / "containerd"
WORKDIR_PREFIX = "torch-isvc-node-"
POD_CIDR = IPv4Network("198.19.0.0/24")
SERVICE_CIDR = IPv4Network("198.19.128.0/24")
# What a node needs beyond the stand-in control plane's controllers: the node-lifecycle controller removes
# the kubelet's not-ready taint, endpointslices make Services reach pods, the pod GC removes orphans, the
# HPA controller reports the status of raw-mode predictors' HorizontalPodAutoscalers (it cannot scale them:
# there is no metrics API here, and it says so in their conditions).
NODE_CONTROLLERS = (
    *CONTROLLERS,
    "horizontal-pod-autoscaler-controller",
    "node-lifecycle-controller",
    "endpointslice-controller",
    "endpointslice-mirroring-controller",
    "pod-garbage-collector-controller",
    "ttl-after-finished-controller",
    "job-controller",
)
# Apiserver flags of a node: the Node authorizer before RBAC and the NodeRestriction admission plugin, so that
# a kubelet may touch only its own Node and the objects of its own pods.
NODE_AUTHORIZATION = {"--authorization-mode": "Node,RBAC", "--enable-admission-plugins": "NodeRestriction"}
_CLONE_NEWNET = 0x40000000
_libc = ctypes.CDLL(None, use_errno=True)


@contextlib.contextmanager
def _thread_in(ns: netns.NetworkNamespace) -> Iterator[None]:
    """The calling thread (and what it spawns) in ``ns``'s network namespace, the host's again after."""
    own = os.open("/proc/thread-self/ns/net", os.O_RDONLY)
    target = os.open(f"/run/netns/{ns.name}", os.O_RDONLY)
    try:
        if _libc.setns(target, _CLONE_NEWNET) != 0:
            raise OSError(ctypes.get_errno(), f"setns into {ns.name}")
        yield
    finally:
        _libc.setns(own, _CLONE_NEWNET)
        os.close(own)
        os.close(target)


def namespace_token(ns: netns.NetworkNamespace) -> str:
    """One token names the node's namespace, links, workdir and cgroups: the namespace name's last part."""
    return ns.name.rsplit("-", 1)[1]


@dataclass
class RealNode:
    ns: netns.NetworkNamespace
    layout: NodeLayout
    control_plane: ControlPlane
    components: NodeComponents
    store_lock: int | None = None
    timings: dict[str, float] = field(default_factory=dict)

    @property
    def token(self) -> str:
        """The token naming its namespace, links, workdir and cgroups (what :func:`leftovers` looks for)."""
        return namespace_token(self.ns)

    @property
    def kubeconfig(self) -> Path:
        """The admin's kubeconfig from the host: the apiserver through the veth."""
        return self.layout.workdir / "host.kubeconfig"

    def kubectl(self, *args: str, timeout: float = 60.0, check: bool = True,
                input: str | None = None) -> subprocess.CompletedProcess[str]:
        argv = [str(KUBECTL), f"--kubeconfig={self.kubeconfig}",
                f"--cache-dir={self.layout.workdir / 'kubectl-cache'}", *args]
        done = subprocess.run(argv, capture_output=True, text=True, timeout=timeout, input=input, check=False)
        if check and done.returncode != 0:
            raise NodeError(f"kubectl {' '.join(args)} failed: {done.stderr.strip()}")
        return done

    def run_inside(self, argv: Sequence[str], timeout: float = 60.0, input: str | None = None
                   ) -> subprocess.CompletedProcess[str]:
        """``argv`` in the node's network namespace (where pods and Services are reachable)."""
        return subprocess.run(in_namespace(self.ns, argv), capture_output=True, text=True, timeout=timeout,
                              check=False, input=input)

    def wait_ready(self, timeout: float = 60.0) -> None:
        deadline = time.monotonic() + timeout
        query = '{.status.conditions[?(@.type=="Ready")].status}'
        while time.monotonic() < deadline:
            self.components.check_alive("waiting for the node to be Ready")
            done = self.kubectl("get", "node", self.layout.name, "-o", f"jsonpath={query}", check=False)
            if done.stdout.strip() == "True":
                taints = self.kubectl("get", "node", self.layout.name, "-o", "jsonpath={.spec.taints}",
                                      check=False).stdout.strip()
                if not taints:
                    return
            time.sleep(0.2)
        raise NodeError(f"node {self.layout.name} not Ready after {timeout:.0f} s\n{self.components.logs()}")

    @contextlib.contextmanager
    def services_from_host(self) -> Iterator[str]:
        """The node's Service range routed from the host to the node's end of the veth while inside, so that
        a host process (the Knative stand-in's ingress) reaches ClusterIPs: kube-proxy's rules in the node's
        namespace translate them to pods. One node at a time may do so (the range is every node's); the
        route is removed after (and with the veth, should this process die). Yields the range."""
        route = [str(SERVICE_CIDR), "via", str(self.ns.address.ip), "dev", self.ns.host_interface]
        added = subprocess.run(["ip", "route", "add", *route], capture_output=True, text=True, check=False)
        if added.returncode != 0:
            raise NodeError(f"ip route add {' '.join(route)} failed: {added.stderr.strip()}")
        try:
            yield str(SERVICE_CIDR)
        finally:
            subprocess.run(["ip", "route", "del", *route], capture_output=True, check=False)

    def stop(self) -> None:
        self.components.stop()
        self.control_plane.stop()
        netns.delete(self.ns)
        remove_tree(self.layout.workdir)
        if self.store_lock is not None:
            os.close(self.store_lock)
            self.store_lock = None


def node_identities(node_name: str) -> dict[str, tuple[str, tuple[str, ...]]]:
    """Each node component's user and groups, as Kubernetes' bootstrap RBAC and the Node authorizer know them
    (plugin/pkg/auth/authorizer/rbac/bootstrappolicy/policy.go: system:node-proxier is bound to
    system:kube-proxy, system:kube-scheduler to its user; the Node authorizer serves system:node:<name> in
    system:nodes). None is in system:masters."""
    return {
        "kubelet": (f"system:node:{node_name}", ("system:nodes",)),
        "kube-proxy": ("system:kube-proxy", ()),
        "kube-scheduler": ("system:kube-scheduler", ()),
    }


def _claim_image_store() -> int | None:
    """The kept image store is one containerd's at a time: a lock held for the node's life (None: another
    node has it, and this one gets a store of its own in its workdir, filled and removed with it)."""
    CONTAINERD_ROOT.mkdir(parents=True, exist_ok=True)
    lock = os.open(CONTAINERD_ROOT.parent / "containerd.lock", os.O_WRONLY | os.O_CREAT, 0o644)
    try:
        fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(lock)
        return None
    return lock


def _layout(ns: netns.NetworkNamespace, workdir: Path, token: str, *, shared_store: bool) -> NodeLayout:
    return NodeLayout(
        name=f"tisvc-node-{token}",
        workdir=workdir,
        containerd_root=CONTAINERD_ROOT if shared_store else workdir / "containerd-root",
        address=ns.address.ip,
        pod_cidr=POD_CIDR,
        service_cidr=SERVICE_CIDR,
        cgroup_root=f"/{host.CGROUP_PREFIX}{token}",
        pause_image=subprocess.run(
            ["bash", str(REPO_ROOT / "e2e" / "images" / "build.sh"), "--print-image", "pause"],
            capture_output=True, text=True, check=True).stdout.strip(),
    )


def start_node(images: Sequence[str] = ("pause",), ready_timeout: float = 60.0) -> RealNode:
    began = time.monotonic()
    ns = netns.create("node", default_route=True)
    token = namespace_token(ns)
    workdir = Path(tempfile.mkdtemp(prefix=f"{WORKDIR_PREFIX}{token}-"))
    store_lock = _claim_image_store()
    layout = _layout(ns, workdir, token, shared_store=store_lock is not None)
    address = str(ns.address.ip)
    control_plane = ControlPlane(
        controllers=NODE_CONTROLLERS,
        # Its serving certificate names the veth's address and the "kubernetes" Service's.
        apiserver_addresses=(address, str(SERVICE_CIDR[1])),
        apiserver_flags={
            "--bind-address": "0.0.0.0",  # inside the namespace: its loopback and its veth
            "--advertise-address": address,
            "--service-cluster-ip-range": str(SERVICE_CIDR),
            "--endpoint-reconciler-type": "lease",  # pods reach it through the "kubernetes" Service
            "--kubelet-preferred-address-types": "InternalIP",  # the node's name does not resolve
            **NODE_AUTHORIZATION,
        },
        # Not in system:masters: its own user, each controller with its ServiceAccount's token.
        controller_manager_groups=(),
        controller_manager_flags={"--service-cluster-ip-range": str(SERVICE_CIDR),
                                  "--horizontal-pod-autoscaler-sync-period": "5s",
                                  "--use-service-account-credentials": "true"},
    )
    components = NodeComponents(ns, layout, {}, Path(), images=tuple(images))
    node = RealNode(ns, layout, control_plane, components, store_lock=store_lock)
    try:
        with _thread_in(ns):
            control_plane.start()
        node.timings["control plane"] = time.monotonic() - began
        port = control_plane.server.rsplit(":", 1)[1]
        node.kubeconfig.write_text(control_plane.kubeconfig.read_text().replace(
            control_plane.server, f"https://{address}:{port}"))
        node.kubeconfig.chmod(0o600)
        components.kubeconfigs = {
            component: control_plane.client_kubeconfig(component, user, groups)
            for component, (user, groups) in node_identities(layout.name).items()}
        components.client_ca_file = control_plane.ca_file
        components.start()
        node.wait_ready(ready_timeout)
        node.timings["node Ready"] = time.monotonic() - began
        components.import_images()
        node.timings.update(components.timings)
    except BaseException:
        node.stop()
        raise
    return node


@contextlib.contextmanager
def real_node(images: Sequence[str] = ("pause",), ready_timeout: float = 60.0) -> Iterator[RealNode]:
    node = start_node(images, ready_timeout)
    try:
        yield node
    finally:
        node.stop()


def leftovers(token: str = "") -> list[str]:
    """What nodes (the one named by ``token``, or any) left on the host: a clean stop leaves nothing."""
    found = [item for item in netns.leftovers() if token in item and ("node" in item or token)]
    found += [c for c in host.cgroup_leftovers() if token in c]
    tmp = Path(tempfile.gettempdir())
    found += [f"mount {m}" for m in host.mounts_under(tmp, CONTAINERD_ROOT)
              if f"{WORKDIR_PREFIX}{token}" in str(m) or CONTAINERD_ROOT in m.parents]
    found += [f"workdir {d}" for d in tmp.glob(f"{WORKDIR_PREFIX}{token}*")]
    for proc in Path("/proc").iterdir():
        if proc.name.isdigit():
            with contextlib.suppress(OSError):
                cmdline = (proc / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
                if f"{WORKDIR_PREFIX}{token}" in cmdline or f"/run/netns/tisvc-node-{token}" in cmdline:
                    found.append(f"process {proc.name}: {cmdline[:120]}")
    return found
