"""The real node's configuration files, as pure functions of where things live and which addresses they use.

Each function returns the file's text; :mod:`e2e.node.node` writes them into the node's work directory. The
settings that this machine needs (cgroup v1 hybrid, no CAP_SYS_RESOURCE, another bridge config possibly in
``/etc/cni/net.d``) are set here, each with the reason beside it. Field names follow:

- containerd v2's CRI config, version 3 (``docs/cri/config.md`` of containerd v2.4.2);
- ``KubeletConfiguration`` v1beta1 (``config/v1beta1/types.go`` of k8s.io/kubelet v0.37.2);
- ``KubeProxyConfiguration`` v1alpha1 (``config/v1alpha1/types.go`` of k8s.io/kube-proxy v0.37.2);
- the CNI bridge and host-local plugins' documented options (containernetworking/plugins).
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from ipaddress import IPv4Address, IPv4Network
from pathlib import Path

CNI_BIN_DIR = Path("/usr/lib/cni")  # Debian's containernetworking-plugins
CNI_NETWORK = "torch-isvc-node"
TomlValue = str | bool | int | list[str] | Mapping[str, "TomlValue"]


@dataclass(frozen=True)
class NodeLayout:
    """Where one node keeps its state, and its addresses. ``workdir`` is removed on stop;
    ``containerd_root`` may outlive it (the image store, kept warm between runs)."""

    name: str
    workdir: Path
    containerd_root: Path
    address: IPv4Address
    pod_cidr: IPv4Network
    service_cidr: IPv4Network
    cgroup_root: str
    pause_image: str

    @property
    def containerd_state(self) -> Path:
        return self.workdir / "containerd-state"

    @property
    def containerd_socket(self) -> Path:
        return self.workdir / "containerd.sock"

    @property
    def cni_conf_dir(self) -> Path:
        return self.workdir / "cni-conf"

    @property
    def kubelet_root(self) -> Path:
        return self.workdir / "kubelet"

    @property
    def pod_logs(self) -> Path:
        return self.workdir / "pod-logs"


def _toml_key(key: str) -> str:
    return key if key.replace("_", "").replace("-", "").isalnum() else f"'{key}'"


def _toml_scalar(value: TomlValue) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, list):
        return "[" + ", ".join(json.dumps(item) for item in value) + "]"
    return json.dumps(value)


def to_toml(document: Mapping[str, TomlValue]) -> str:
    """Nested tables as TOML: scalars of a table first, then its sub-tables with dotted names."""
    lines: list[str] = []

    def table(path: list[str], body: Mapping[str, TomlValue]) -> None:
        scalars = {k: v for k, v in body.items() if not isinstance(v, Mapping)}
        if path:
            lines.append(f"[{'.'.join(_toml_key(p) for p in path)}]")
        lines.extend(f"{_toml_key(k)} = {_toml_scalar(v)}" for k, v in scalars.items())
        lines.append("")
        for key, value in body.items():
            if isinstance(value, Mapping):
                table([*path, key], value)

    table([], document)
    return "\n".join(lines)


def containerd_config(layout: NodeLayout) -> str:
    cri_runtime: dict[str, TomlValue] = {
        # The pause container's oom_score_adj (-998) needs CAP_SYS_RESOURCE, which this machine lacks:
        # without this, sandbox creation fails with "can't get final child's PID from pipe: EOF".
        "restrict_oom_score_adj": True,
        # Pod network namespaces under the node's state dir, not the host's /var/run/netns.
        "netns_mounts_under_state_dir": True,
        "enable_selinux": False,
        "disable_apparmor": True,
        "containerd": {
            "default_runtime_name": "runc",
            "runtimes": {
                "runc": {
                    "runtime_type": "io.containerd.runc.v2",
                    "options": {"BinaryName": "runc", "SystemdCgroup": False},  # cgroupfs, as the kubelet
                },
            },
        },
        # The node's own conf dir: /etc/cni/net.d may hold another bridge config.
        "cni": {"bin_dirs": [str(CNI_BIN_DIR)], "conf_dir": str(layout.cni_conf_dir), "max_conf_num": 1},
    }
    document: dict[str, TomlValue] = {
        "version": 3,
        # NRI would open /var/run/nri/nri.sock and "opt" would make /opt/containerd: the node needs neither.
        "disabled_plugins": ["io.containerd.nri.v1.nri", "io.containerd.internal.v1.opt"],
        "root": str(layout.containerd_root),
        "state": str(layout.containerd_state),
        "grpc": {"address": str(layout.containerd_socket)},
        "ttrpc": {"address": str(layout.containerd_socket) + ".ttrpc"},
        "plugins": {
            "io.containerd.cri.v1.images": {
                "snapshotter": "overlayfs",
                # The image store is kept between runs: no copy of layers beside their unpacked snapshots.
                "discard_unpacked_layers": True,
                "pinned_images": {"sandbox": layout.pause_image},
            },
            "io.containerd.cri.v1.runtime": cri_runtime,
            "io.containerd.grpc.v1.cri": {
                "stream_server_address": "127.0.0.1",
                "stream_server_port": "0",
            },
        },
    }
    return to_toml(document)


def cni_config(layout: NodeLayout) -> str:
    bridge = {
        "type": "bridge",
        "bridge": "tisvc0",
        "isGateway": True,
        "ipMasq": True,
        "hairpinMode": True,
        "ipam": {
            "type": "host-local",
            "ranges": [[{"subnet": str(layout.pod_cidr)}]],
            "routes": [{"dst": "0.0.0.0/0"}],
            "dataDir": str(layout.workdir / "cni-ipam"),  # not the host's /var/lib/cni/networks
        },
    }
    portmap = {"type": "portmap", "capabilities": {"portMappings": True}}
    return json.dumps({"cniVersion": "1.0.0", "name": CNI_NETWORK, "plugins": [bridge, portmap]}, indent=2)


def kubelet_config(layout: NodeLayout, *, client_ca_file: Path) -> str:
    config = {
        "apiVersion": "kubelet.config.k8s.io/v1beta1",
        "kind": "KubeletConfiguration",
        # This machine has cgroup v1 (hybrid); 1.37 refuses it unless told otherwise.
        "failCgroupV1": False,
        "cgroupDriver": "cgroupfs",
        # Every pod's cgroups under one parent of this node's own, removed on stop.
        "cgroupRoot": layout.cgroup_root,
        "failSwapOn": False,
        "containerRuntimeEndpoint": f"unix://{layout.containerd_socket}",
        "address": str(layout.address),
        "port": 10250,
        "readOnlyPort": 0,
        "healthzBindAddress": "127.0.0.1",
        "healthzPort": 10248,
        "podLogsDir": str(layout.pod_logs),
        # The kubelet's API is reachable only inside the node's namespace: the apiserver reaches it for logs
        # and exec without a client certificate of its own (the cluster's CA is still trusted for x509).
        "authentication": {
            "anonymous": {"enabled": True},
            "webhook": {"enabled": False},
            "x509": {"clientCAFile": str(client_ca_file)},
        },
        "authorization": {"mode": "AlwaysAllow"},
        "clusterDomain": "cluster.local",
        "podCIDR": str(layout.pod_cidr),
        # The images are imported, never pulled: garbage collection or disk pressure must not remove them
        # because other work fills this shared disk.
        "imageGCHighThresholdPercent": 100,
        "imageGCLowThresholdPercent": 99,
        "evictionHard": {"nodefs.available": "1%", "imagefs.available": "1%", "memory.available": "100Mi"},
        "serializeImagePulls": False,
        "syncFrequency": "5s",
        "nodeStatusUpdateFrequency": "5s",
        "fileCheckFrequency": "5s",
        "staticPodPath": "",
        "resolvConf": "/etc/resolv.conf",
        "logging": {"verbosity": 1},
    }
    return json.dumps(config, indent=2)


def kube_proxy_config(layout: NodeLayout, *, kubeconfig: Path) -> str:
    config = {
        "apiVersion": "kubeproxy.config.k8s.io/v1alpha1",
        "kind": "KubeProxyConfiguration",
        "clientConnection": {"kubeconfig": str(kubeconfig)},
        "mode": "iptables",
        "hostnameOverride": layout.name,
        "bindAddress": str(layout.address),
        "healthzBindAddress": "127.0.0.1:10256",
        "metricsBindAddress": "127.0.0.1:10249",
        "clusterCIDR": str(layout.pod_cidr),
        # 0: leave the host's conntrack table size and timeouts as they are (kube-proxy would set them).
        "conntrack": {
            "maxPerCore": 0,
            "min": 0,
            "tcpEstablishedTimeout": "0s",
            "tcpCloseWaitTimeout": "0s",
            "udpTimeout": "0s",
            "udpStreamTimeout": "0s",
        },
    }
    return json.dumps(config, indent=2)
